"""``vae_bilstm_mha``: VAE-BiLSTM with lead-wise and temporal multi-head attention (see :mod:`training.tasks._ptbxl_anomaly`)."""

from training.tasks._ptbxl_anomaly import OUTPUTS_MHA, build_vae_bilstm, make_spec

SPEC = make_spec(
    "vae_bilstm_mha",
    "12-lead VAE-BiLSTM with lead-wise + temporal multi-head attention, anomaly detection on PTB-XL",
    build=build_vae_bilstm(attention=True),
    outputs=OUTPUTS_MHA,
    variational=True,
)
