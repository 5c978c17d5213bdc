"""``cae12``: 12-lead convolutional autoencoder, PTB-XL NORM vs not-NORM (see :mod:`training.tasks._ptbxl_anomaly`)."""

from training.tasks._ptbxl_anomaly import OUTPUTS_CAE, build_cae12, make_spec

SPEC = make_spec(
    "cae12",
    "12-lead conv autoencoder, unsupervised anomaly detection on PTB-XL (100 Hz, 10 s)",
    build=build_cae12,
    outputs=OUTPUTS_CAE,
    variational=False,
)
