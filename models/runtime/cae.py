"""ONNX Runtime wrapper of the CAE anomaly scorer (no torch): beat windows -> anomaly scores -> flags.

Pre-processing (identical in training, which imports :func:`normalise_windows` from here): each 720-sample
window (2 s at 360 Hz, the stream's causally filtered lead, centred on a beat) is normalised on its own
(``zscore``: minus its mean, divided by its standard deviation + ``eps``). The graph returns the
reconstruction and a weighted mean-squared reconstruction error (the morphology score).

When the card has a ``rhythm`` section (weight, reference history and quantile, all chosen on validation
data), the decision score is ``log(morphology) + weight * rhythm`` where ``rhythm`` is
:func:`models.preprocessing.rhythm.rhythm_score` of the beat's RR intervals: a premature beat with a normal
shape (most supraventricular ectopy) is then caught too. A window is anomalous when its decision score
exceeds the card's threshold (chosen on validation data).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.card import WindowSpec
from models.errors import ModelError
from models.preprocessing.rhythm import RhythmParams, context_scores
from models.runtime.base import OnnxModel
from models.runtime.protocol import ModelScore, Window, stack_data
from models.runtime.registry import register

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


def _cae_from_path(path: Path) -> CaeScorer:
    return CaeScorer(OnnxModel(path))


@register("cae_beat", _cae_from_path)
class CaeScorer:
    """Single-lead window scorer whose graph outputs a ``score`` (the CAE):
    ``CaeScorer.load().predict(windows)`` -> :class:`CaePrediction`; in the stream, ``score(windows)``.

    Serves any card with ``runtime: cae_beat``: per-window normalisation from the card's preprocessing,
    the graph's first input, its ``score`` output, an optional ``rhythm`` section and the threshold.
    """

    def __init__(self, model: OnnxModel) -> None:
        self.model = model
        card = model.card
        self.card = card
        norm = card.preprocessing.normalisation
        self.method = norm.method
        self.eps = 0.05 if norm.eps is None else float(norm.eps)
        self.width = card.window.samples
        self.fs = card.window.fs
        self.input_name = card.inputs[0].name
        self.threshold = model.threshold_or_raise()
        rh = card.get("rhythm")
        self.rhythm: RhythmParams | None = None
        if isinstance(rh, dict) and rh.get("weight") is not None:
            self.rhythm = RhythmParams(
                int(rh["history"]), float(rh["quantile"]), float(rh["weight"])
            )

    @classmethod
    def load(cls, name: str = "cae", models_dir: str | Path | None = None) -> CaeScorer:
        return cls(OnnxModel.load(name, models_dir))

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def window(self) -> WindowSpec:
        return self.card.window

    def score(self, windows: Sequence[Window]) -> list[ModelScore]:
        """Stream scoring: decision score per window, with the rhythm part from each window's RR context."""
        if not windows:
            return []
        rp = self.rhythm
        rhythm = (
            None if rp is None else context_scores([w.rr for w in windows], rp.history, rp.quantile)
        )
        p = self.predict(stack_data(windows), rhythm)
        name, threshold = self.name, p.threshold
        return [
            ModelScore(
                stream_id=w.stream_id,
                model=name,
                window=w.kind,
                lead=w.lead,
                time=w.start,
                score=s,
                threshold=threshold,
                anomalous=a,
            )
            for w, s, a in zip(windows, p.scores.tolist(), p.anomalous.tolist(), strict=True)
        ]

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
            self.model.run({self.input_name: z[s : s + batch]}, ["score"])["score"]
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
