"""One module per trainable model, each exposing ``SPEC: training.registry.ModelSpec``."""
