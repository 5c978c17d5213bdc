"""ONNX Runtime wrapper of the CAE anomaly scorer (no torch): beat windows -> anomaly scores -> flags.

Pre-processing (identical in training, which imports :func:`normalise_windows` from here): each 720-sample
window (2 s at 360 Hz, the stream's causally filtered lead, centred on a beat) is normalised on its own
(``zscore``: minus its mean, divided by its standard deviation + ``eps``). The graph returns the
reconstruction and a weighted mean-squared reconstruction error (the morphology score).

When the card has a ``rhythm`` section (weight, reference history and quantile, all chosen on validation
data), the decision score is ``log(morphology) + weight * rhythm`` where ``rhythm`` is
:func:`stream.stages.rhythm.rhythm_score` of the beat's RR intervals: a premature beat with a normal
shape (most supraventricular ectopy) is then caught too. A window is anomalous when its decision score
exceeds the card's threshold (chosen on validation data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.runtime.base import OnnxModel
from stream.errors import ModelError
from stream.stages.rhythm import RhythmParams

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
    """Per-window decision ``scores``, ``anomalous`` flags (score > ``threshold``), the threshold, and the
    morphology (reconstruction) part of the score."""

    scores: np.ndarray
    anomalous: np.ndarray
    threshold: float
    morphology: np.ndarray | None = None


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
        rh = card.get("rhythm")
        self.rhythm: RhythmParams | None = None
        if isinstance(rh, dict) and rh.get("weight") is not None:
            self.rhythm = RhythmParams(
                int(rh["history"]), float(rh["quantile"]), float(rh["weight"])
            )

    @classmethod
    def load(cls, name: str = "cae", models_dir: str | Path | None = None) -> CaeScorer:
        return cls(OnnxModel.load(name, models_dir))

    def scores(self, windows: np.ndarray, batch: int = 512) -> np.ndarray:
        """Anomaly scores of raw (filtered, mV) windows ``[k, 720]`` or one window ``[720]``."""
        x = np.asarray(windows, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.width:
            raise ModelError(
                f"{self.model.name}: windows must be [k, {self.width}] at {self.fs:g} Hz, got {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ModelError(
                f"{self.model.name}: windows hold NaN or inf (dropout); score only clean windows"
            )
        z = normalise_windows(x, self.method, self.eps)
        out = [
            self.model.run({"window": z[s : s + batch]}, ["score"])["score"]
            for s in range(0, z.shape[0], batch)
        ]
        return np.concatenate(out).astype(np.float32)

    def decision_scores(self, morphology: np.ndarray, rhythm: np.ndarray | None) -> np.ndarray:
        """Decision score from morphology scores and (when the card uses rhythm) the beats' rhythm scores."""
        m = np.asarray(morphology, dtype=np.float64)
        if self.rhythm is None:
            return m
        if rhythm is None:
            raise ModelError(
                f"{self.model.name}: this model's score needs the beats' rhythm scores (card 'rhythm')"
            )
        r = np.asarray(rhythm, dtype=np.float64)
        if r.shape != m.shape:
            raise ModelError(
                f"{self.model.name}: {r.shape[0] if r.ndim else 1} rhythm scores for {m.shape[0]} windows"
            )
        return np.log(np.maximum(m, 1e-12)) + self.rhythm.weight * np.nan_to_num(r, nan=0.0)

    def predict(self, windows: np.ndarray, rhythm: np.ndarray | None = None) -> CaePrediction:
        """Decision scores and anomaly flags of raw windows; ``rhythm`` = the beats' rhythm scores."""
        m = self.scores(windows)
        s = self.decision_scores(m, rhythm)
        return CaePrediction(
            scores=s, anomalous=s > self.threshold, threshold=self.threshold, morphology=m
        )
