"""``vae_bilstm``: 12-lead VAE with conv front-end + BiLSTM, PTB-XL NORM vs not-NORM (see :mod:`training.tasks._ptbxl_anomaly`)."""

from training.tasks._ptbxl_anomaly import OUTPUTS_VAE, build_vae_bilstm, make_spec

SPEC = make_spec(
    "vae_bilstm",
    "12-lead VAE-BiLSTM, unsupervised anomaly detection on PTB-XL (100 Hz, 10 s)",
    build=build_vae_bilstm(attention=False),
    outputs=OUTPUTS_VAE,
    variational=True,
)
