"""ONNX Runtime wrappers of ``vae_bilstm`` and ``vae_bilstm_mha`` (no torch).

Same input and scoring as :mod:`models.runtime.cae12`; the VAEs also output the KL term per window,
and the attention model its lead-wise (``[B, 12]``) and temporal (``[B, 1000]``) attention weights,
returned in :class:`~models.runtime.cae12.AnomalyPrediction`.
"""

from __future__ import annotations

from models.runtime.cae12 import AnomalyPrediction, Cae12Model, anomaly_score, preprocess

__all__ = [
    "AnomalyPrediction",
    "VaeBiLstmMhaModel",
    "VaeBiLstmModel",
    "anomaly_score",
    "preprocess",
]


class VaeBiLstmModel(Cae12Model):
    """``vae_bilstm.onnx`` + card; ``predict(x)`` -> AnomalyPrediction (with ``kl``)."""

    default_name = "vae_bilstm"


class VaeBiLstmMhaModel(Cae12Model):
    """``vae_bilstm_mha.onnx`` + card; ``predict(x)`` -> AnomalyPrediction (with attention weights)."""

    default_name = "vae_bilstm_mha"
