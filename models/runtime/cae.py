"""ONNX Runtime wrapper of the CAE anomaly scorer (no torch): beat windows -> anomaly scores -> flags.

Pre-processing (identical in training, which imports :func:`normalise_windows` from here): each 720-sample
window (2 s at 360 Hz, the stream's causally filtered lead, centred on a beat) is normalised on its own
(``zscore``: minus its mean, divided by its standard deviation + ``eps``). The graph returns the
reconstruction and a weighted mean-squared reconstruction error; a window is anomalous when its score
exceeds the card's threshold (chosen on validation data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.runtime.base import OnnxModel
from stream.errors import ModelError

NORMALISATIONS = ("zscore", "center", "none")


def normalise_windows(windows: np.ndarray, method: str = "zscore", eps: float = 0.05) -> np.ndarray:
    """Per-window normalisation ``[k, n] -> [k, n]`` float32 (``zscore``, ``center`` = minus mean, ``none``)."""
    x = np.asarray(windows, dtype=np.float32)
    if x.ndim != 2:
        raise ModelError(f"windows must be [k, n], got shape {x.shape}")
    if method == "none":
        return x.copy()
    centred = x - x.mean(axis=1, keepdims=True)
    if method == "center":
        return centred.astype(np.float32)
    if method == "zscore":
        return (centred / (x.std(axis=1, keepdims=True) + eps)).astype(np.float32)
    raise ModelError(f"unknown normalisation {method!r}; known: {NORMALISATIONS}")


@dataclass(frozen=True)
class CaePrediction:
    """Per-window anomaly ``scores``, ``anomalous`` flags (score > ``threshold``) and the threshold."""

    scores: np.ndarray
    anomalous: np.ndarray
    threshold: float


class CaeScorer:
    """``CaeScorer.load().predict(windows)`` -> :class:`CaePrediction`."""

    def __init__(self, model: OnnxModel) -> None:
        self.model = model
        card = model.card
        norm: dict[str, Any] = card.get("normalisation") or {}
        self.method = str(norm.get("method", "zscore"))
        self.eps = float(norm.get("eps", 0.05))
        self.width = int(card.get("window_samples", 720))
        self.fs = float(card.get("sampling_rate_hz", 360.0))
        th = card.threshold
        if th is None:
            raise ModelError(f"{model.name}: card has no decision threshold")
        self.threshold = th

    @classmethod
    def load(cls, name: str = "cae", models_dir: str | Path | None = None) -> CaeScorer:
        return cls(OnnxModel.load(name, models_dir))

    def scores(self, windows: np.ndarray, batch: int = 512) -> np.ndarray:
        """Anomaly scores of raw (filtered, mV) windows ``[k, 720]`` or one window ``[720]``."""
        x = np.asarray(windows, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.width:
            raise ModelError(f"{self.model.name}: windows must be [k, {self.width}] at {self.fs:g} Hz, got {x.shape}")
        if not np.isfinite(x).all():
            raise ModelError(f"{self.model.name}: windows hold NaN or inf (dropout); score only clean windows")
        z = normalise_windows(x, self.method, self.eps)
        out = [self.model.run({"window": z[s : s + batch]}, ["score"])["score"] for s in range(0, z.shape[0], batch)]
        return np.concatenate(out).astype(np.float32)

    def predict(self, windows: np.ndarray) -> CaePrediction:
        """Scores and anomaly flags of raw windows."""
        s = self.scores(windows)
        return CaePrediction(scores=s, anomalous=s > self.threshold, threshold=self.threshold)
