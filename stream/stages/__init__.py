"""Pure numpy/scipy stage functions of the pipeline. No Kafka, no Faust, no torch here."""
