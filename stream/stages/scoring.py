"""Model scoring stage: ONNX Runtime models applied to the windows the processor cuts.

- ``beat_720`` windows (2 s at 360 Hz around a beat) -> ``cae`` anomaly score per beat (log
  reconstruction error plus the card's weight times the beat's rhythm score, from its ``rr`` context);
- ``beat_400`` cycles -> ``beat_vae`` morphology score (reconstruction error) and 25-dim embedding;
- ``leads_10s`` windows (10 s, 12 leads at 100 Hz) -> ``cae12`` anomaly score.

All windows of one call are batched per model (one ONNX Runtime call each). A window holding NaN
(a dropout) is not scored: it is returned in ``skipped`` with its reason, so nothing is lost silently.
No torch here; models come from ``Settings.models_dir`` (the committed artifacts by default).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stream.errors import ModelError
from stream.stages.events import ModelWindow

#: Window kind -> the model that scores it.
MODEL_FOR_WINDOW: dict[str, str] = {"beat_720": "cae", "beat_400": "beat_vae", "leads_10s": "cae12"}


@dataclass(frozen=True)
class ModelScore:
    """One model's verdict on one window; ``embedding`` only for ``beat_vae``."""

    stream_id: str
    model: str
    window: str
    lead: str | None
    time: float
    score: float
    threshold: float | None
    anomalous: bool
    embedding: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "model": self.model,
            "window": self.window,
            "lead": self.lead,
            "time": float(self.time),
            "score": float(self.score),
            "threshold": None if self.threshold is None else float(self.threshold),
            "anomalous": bool(self.anomalous),
            "embedding": None if self.embedding is None else [round(float(v), 5) for v in self.embedding],
        }


@dataclass
class ScoringResult:
    """Scores, windows not scored with their reason, and seconds spent per model."""

    scores: list[ModelScore] = field(default_factory=list)
    skipped: list[tuple[ModelWindow, str]] = field(default_factory=list)
    model_seconds: dict[str, float] = field(default_factory=dict)


class WindowScorer:
    """Scores :class:`ModelWindow` batches with the ONNX models named in ``models``."""

    def __init__(self, models: Sequence[str] = ("cae", "beat_vae", "cae12"), models_dir: str | Path | None = None) -> None:
        # imported here so that a stream without models never loads onnxruntime
        from models.runtime.beat_vae import BeatVaeModel
        from models.runtime.beat_vae import normalise as beat_normalise
        from models.runtime.cae import CaeScorer
        from models.runtime.cae12 import Cae12Model

        unknown = set(models) - set(MODEL_FOR_WINDOW.values())
        if unknown:
            raise ModelError(f"unknown stream models {sorted(unknown)}; known: {sorted(MODEL_FOR_WINDOW.values())}")
        self.models = tuple(models)
        self._cae = CaeScorer.load("cae", models_dir) if "cae" in models else None
        self._vae = BeatVaeModel.load("beat_vae", models_dir) if "beat_vae" in models else None
        self._vae_threshold = self._vae.card.threshold if self._vae is not None else None
        self._beat_normalise = beat_normalise
        self._cae12 = Cae12Model.load("cae12", models_dir) if "cae12" in models else None

    @property
    def window_kinds(self) -> frozenset[str]:
        """The window kinds this scorer consumes (others need not be cut)."""
        return frozenset(k for k, m in MODEL_FOR_WINDOW.items() if m in self.models)

    def score(self, windows: Iterable[ModelWindow]) -> ScoringResult:
        """Score every window whose model is loaded; NaN windows go to ``skipped`` (reason ``dropout``)."""
        res = ScoringResult()
        groups: dict[str, list[ModelWindow]] = {}
        for w in windows:
            if MODEL_FOR_WINDOW.get(w.kind) not in self.models:
                continue
            if not np.isfinite(w.data).all():
                res.skipped.append((w, "dropout"))
                continue
            groups.setdefault(w.kind, []).append(w)
        for kind, group in groups.items():
            t0 = time.perf_counter()
            try:
                res.scores += self._score_group(kind, group)
            except ModelError as exc:
                res.skipped += [(w, f"model_error: {exc}") for w in group]
            model = MODEL_FOR_WINDOW[kind]
            res.model_seconds[model] = res.model_seconds.get(model, 0.0) + time.perf_counter() - t0
        return res

    def _score_group(self, kind: str, group: list[ModelWindow]) -> list[ModelScore]:
        data = np.stack([w.data for w in group]).astype(np.float32)
        if kind == "beat_720" and self._cae is not None:
            rp = self._cae.rhythm
            rhythm = None if rp is None else np.array([w.rr.score(rp.history, rp.quantile) if w.rr is not None else 0.0 for w in group])
            p = self._cae.predict(data, rhythm)
            return [ModelScore(w.stream_id, "cae", kind, w.lead, w.start, float(s), p.threshold, bool(a))
                    for w, s, a in zip(group, p.scores, p.anomalous, strict=True)]
        if kind == "beat_400" and self._vae is not None:
            enc = self._vae.predict(self._beat_normalise(data))
            th = self._vae_threshold
            return [ModelScore(w.stream_id, "beat_vae", kind, w.lead, w.start, float(e), th,
                               bool(th is not None and e > th), tuple(float(v) for v in mu))
                    for w, e, mu in zip(group, enc.mse, enc.mu, strict=True)]
        if kind == "leads_10s" and self._cae12 is not None:
            q = self._cae12.predict(data)
            th12 = self._cae12.threshold_value
            return [ModelScore(w.stream_id, "cae12", kind, None, w.start, float(s), th12, bool(a))
                    for w, s, a in zip(group, q.score, q.is_anomaly, strict=True)]
        return []
