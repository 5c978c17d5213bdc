"""``vae_bilstm_mha``: VAE-BiLSTM with lead-wise and temporal multi-head attention (see :mod:`training.tasks._ptbxl_anomaly`)."""

from training.tasks._ptbxl_anomaly import make_spec

SPEC = make_spec(
    "vae_bilstm_mha",
    "12-lead VAE-BiLSTM with lead-wise + temporal multi-head attention, anomaly detection on PTB-XL",
)
