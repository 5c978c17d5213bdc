"""Model scoring stage: ONNX Runtime models applied to the windows the processor cuts.

- ``beat_720`` windows (2 s at 360 Hz around a beat) -> ``cae`` anomaly score per beat (log
  reconstruction error plus the card's weight times the beat's rhythm score, from its ``rr`` context);
- ``beat_400`` cycles -> ``beat_vae`` morphology score (reconstruction error) and 25-dim embedding;
- ``leads_10s`` windows (10 s, 12 leads at 100 Hz) -> a 12-lead anomaly score from any of ``cae12``,
  ``vae_bilstm`` and ``vae_bilstm_mha`` (each one loaded scores every window), with the per-lead relative
  reconstruction error (which lead deviates); the attention model adds its lead-wise attention weights and
  the stream time where its temporal attention peaks (where, and in which lead, the anomaly is).

Recovery before scoring (``recover=True``, the default when the artifacts are there): a ``beat_720`` window
with missing (NaN) samples, at most the gap filler's card limit (40 %), is filled by the LSTM-AE
(``lstm_ae.onnx``, the stream protocol: 2 s at 360 Hz); a ``leads_10s`` window whose missing samples sit in
some leads, with at least one lead complete, gets those leads rebuilt from the complete ones by
``lead_recon`` (limb leads computed exactly where two limb leads are present). Each score says which
model recovered its input and what fraction (``recovered_by``, ``recovered_fraction``).

All windows of one call are batched per model (one ONNX Runtime call each). A window that holds NaN and
cannot be recovered (a dropout) is not scored: it is returned in ``skipped`` with its reason, so nothing is
lost silently. No torch here; models come from ``Settings.models_dir`` (the committed artifacts by default).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.errors import ModelError
from stream.records import TWELVE_LEADS
from stream.stages.events import ModelWindow

if TYPE_CHECKING:
    from models.runtime.cae12 import Cae12Model
    from models.runtime.lead_recon import LeadReconModel
    from models.runtime.lstm_ae import GapFiller

#: Window kind -> the models that can score it (the 12-lead anomaly models share one window kind).
MODELS_FOR_WINDOW: dict[str, tuple[str, ...]] = {
    "beat_720": ("cae",),
    "beat_400": ("beat_vae",),
    "leads_10s": ("cae12", "vae_bilstm", "vae_bilstm_mha"),
}
#: Every model the scorer knows.
KNOWN_MODELS: tuple[str, ...] = tuple(m for ms in MODELS_FOR_WINDOW.values() for m in ms)
#: Window kind -> the model that can recover its missing samples before scoring.
RECOVERY_FOR_WINDOW: dict[str, str] = {"beat_720": "lstm_ae", "leads_10s": "lead_recon"}


@dataclass(frozen=True)
class ModelScore:
    """One model's verdict on one window; ``embedding`` only for ``beat_vae``; ``lead_scores`` (per-lead
    reconstruction error relative to normal training records, TWELVE_LEADS order) for the 12-lead models;
    ``lead_attention`` (12 weights) and ``attention_peak`` (stream time, s, of the temporal attention
    maximum) for ``vae_bilstm_mha``."""

    stream_id: str
    model: str
    window: str
    lead: str | None
    time: float
    score: float
    threshold: float | None
    anomalous: bool
    embedding: tuple[float, ...] | None = None
    recovered_by: str | None = None  # the model that filled missing input before scoring
    recovered_fraction: float = (
        0.0  # share of the window's samples (beat) or leads (12-lead) it filled
    )
    lead_scores: tuple[float, ...] | None = None
    lead_attention: tuple[float, ...] | None = None
    attention_peak: float | None = None

    def to_dict(self) -> dict[str, Any]:
        def per_lead(v: tuple[float, ...] | None) -> dict[str, float] | None:
            return (
                None
                if v is None
                else {lead: round(float(x), 5) for lead, x in zip(TWELVE_LEADS, v, strict=True)}
            )

        return {
            "stream_id": self.stream_id,
            "model": self.model,
            "window": self.window,
            "lead": self.lead,
            "time": float(self.time),
            "score": float(self.score),
            "threshold": None if self.threshold is None else float(self.threshold),
            "anomalous": bool(self.anomalous),
            "embedding": None
            if self.embedding is None
            else [round(float(v), 5) for v in self.embedding],
            "recovered_by": self.recovered_by,
            "recovered_fraction": round(float(self.recovered_fraction), 5),
            "lead_scores": per_lead(self.lead_scores),
            "lead_attention": per_lead(self.lead_attention),
            "attention_peak": None if self.attention_peak is None else float(self.attention_peak),
        }


@dataclass
class ScoringResult:
    """Scores, windows not scored with their reason, windows recovered per recovery model, and seconds
    spent per model."""

    scores: list[ModelScore] = field(default_factory=list)
    skipped: list[tuple[ModelWindow, str]] = field(default_factory=list)
    recovered: dict[str, int] = field(default_factory=dict)
    model_seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Input:
    """What a scoring model gets for one window: its data, filled by ``recovered_by`` where samples were
    missing (``None`` for an intact window), and the fraction filled."""

    window: ModelWindow
    data: np.ndarray
    recovered_by: str | None = None
    recovered_fraction: float = 0.0


class WindowScorer:
    """Scores :class:`ModelWindow` batches with the ONNX models named in ``models``."""

    def __init__(
        self,
        models: Sequence[str] = ("cae", "beat_vae", "cae12"),
        models_dir: str | Path | None = None,
        recover: bool = True,
    ) -> None:
        # imported here so that a stream without models never loads onnxruntime
        from models.runtime.beat_vae import BeatVaeModel
        from models.runtime.beat_vae import normalise as beat_normalise
        from models.runtime.cae import CaeScorer
        from models.runtime.cae12 import Cae12Model
        from models.runtime.vae_bilstm import VaeBiLstmMhaModel, VaeBiLstmModel

        unknown = set(models) - set(KNOWN_MODELS)
        if unknown:
            raise ModelError(
                f"unknown stream models {sorted(unknown)}; known: {list(KNOWN_MODELS)}"
            )
        self.models = tuple(models)
        self._cae = CaeScorer.load("cae", models_dir) if "cae" in models else None
        self._vae = BeatVaeModel.load("beat_vae", models_dir) if "beat_vae" in models else None
        self._vae_threshold = self._vae.card.threshold if self._vae is not None else None
        self._beat_normalise = beat_normalise
        twelve = {
            "cae12": Cae12Model,
            "vae_bilstm": VaeBiLstmModel,
            "vae_bilstm_mha": VaeBiLstmMhaModel,
        }
        self._twelve: dict[str, Cae12Model] = {
            m: cls.load(m, models_dir) for m, cls in twelve.items() if m in models
        }
        self._filler: GapFiller | None = None
        self._lead_recon: LeadReconModel | None = None
        if recover and self._cae is not None:
            from models.runtime.lstm_ae import GapFiller

            self._filler = GapFiller.load("lstm_ae", models_dir)
        if recover and self._twelve:
            from models.runtime.lead_recon import LeadReconModel

            self._lead_recon = LeadReconModel.load("lead_recon", models_dir)

    @property
    def window_kinds(self) -> frozenset[str]:
        """The window kinds this scorer consumes (others need not be cut)."""
        return frozenset(k for k, ms in MODELS_FOR_WINDOW.items() if set(ms) & set(self.models))

    def score(self, windows: Iterable[ModelWindow]) -> ScoringResult:
        """Score every window whose model is loaded; NaN windows are recovered when they can be, the others
        go to ``skipped`` (reason ``dropout``)."""
        res = ScoringResult()
        groups: dict[str, list[_Input]] = {}
        damaged: dict[str, list[ModelWindow]] = {}
        kinds = self.window_kinds
        for w in windows:
            if w.kind not in kinds:
                continue
            if np.isfinite(w.data).all():
                groups.setdefault(w.kind, []).append(_Input(w, w.data))
            else:
                damaged.setdefault(w.kind, []).append(w)
        for kind, group in damaged.items():
            t0 = time.perf_counter()
            ok, lost = self._recover(kind, group)
            res.skipped += lost
            if ok:
                groups.setdefault(kind, []).extend(ok)
                by = RECOVERY_FOR_WINDOW[kind]
                res.recovered[by] = res.recovered.get(by, 0) + len(ok)
                res.model_seconds[by] = res.model_seconds.get(by, 0.0) + time.perf_counter() - t0
        for kind, items in groups.items():
            for model in (m for m in MODELS_FOR_WINDOW[kind] if m in self.models):
                t0 = time.perf_counter()
                try:
                    res.scores += self._score_group(model, kind, items)
                except ModelError as exc:
                    res.skipped += [(r.window, f"model_error: {exc}") for r in items]
                res.model_seconds[model] = (
                    res.model_seconds.get(model, 0.0) + time.perf_counter() - t0
                )
        return res

    def _recover(
        self, kind: str, group: list[ModelWindow]
    ) -> tuple[list[_Input], list[tuple[ModelWindow, str]]]:
        """Fill what the recovery model of ``kind`` can; the rest are dropouts (or model errors)."""
        lost: list[tuple[ModelWindow, str]] = []
        if kind == "beat_720" and self._filler is not None:
            fit: list[ModelWindow] = []
            for (
                w
            ) in group:  # a gap within the filler's limit, and no inf among the observed samples
                gap = np.isnan(w.data)
                recoverable = (
                    gap.mean() <= self._filler.max_gap_fraction and np.isfinite(w.data[~gap]).all()
                )
                if recoverable:
                    fit.append(w)
                else:
                    lost.append((w, "dropout"))
            if not fit:
                return [], lost
            try:
                rec = self._filler.predict(np.stack([w.data for w in fit]).astype(np.float32))
            except ModelError as exc:
                return [], lost + [(w, f"model_error: {exc}") for w in fit]
            return [
                _Input(w, s, "lstm_ae", float(m.mean()))
                for w, s, m in zip(fit, rec.signal, rec.mask, strict=True)
            ], lost
        if kind == "leads_10s" and self._lead_recon is not None:
            present = [
                np.isfinite(w.data).all(axis=0) for w in group
            ]  # [12] per window: complete leads
            pairs = [(w, p) for w, p in zip(group, present, strict=True) if p.any()]
            lost = [(w, "dropout") for w, p in zip(group, present, strict=True) if not p.any()]
            if not pairs:
                return [], lost
            try:
                pred = self._lead_recon.predict(
                    np.stack([w.data for w, _ in pairs]), np.stack([p for _, p in pairs])
                )
            except ModelError as exc:
                return [], lost + [(w, f"model_error: {exc}") for w, _ in pairs]
            return [
                _Input(w, x, "lead_recon", float(1.0 - p.mean()))
                for (w, p), x in zip(pairs, pred.leads, strict=True)
            ], lost
        return [], [(w, "dropout") for w in group]

    def _score_group(self, model: str, kind: str, items: list[_Input]) -> list[ModelScore]:
        group = [r.window for r in items]
        data = np.stack([r.data for r in items]).astype(np.float32)
        scores = self._score_arrays(model, kind, group, data)
        return [
            s
            if r.recovered_by is None
            else replace(s, recovered_by=r.recovered_by, recovered_fraction=r.recovered_fraction)
            for s, r in zip(scores, items, strict=True)
        ]

    def _score_arrays(
        self, model: str, kind: str, group: list[ModelWindow], data: np.ndarray
    ) -> list[ModelScore]:
        if kind == "beat_720" and self._cae is not None:
            rp = self._cae.rhythm
            rhythm = (
                None
                if rp is None
                else np.array(
                    [
                        w.rr.score(rp.history, rp.quantile) if w.rr is not None else 0.0
                        for w in group
                    ]
                )
            )
            p = self._cae.predict(data, rhythm)
            return [
                ModelScore(
                    w.stream_id, "cae", kind, w.lead, w.start, float(s), p.threshold, bool(a)
                )
                for w, s, a in zip(group, p.scores, p.anomalous, strict=True)
            ]
        if kind == "beat_400" and self._vae is not None:
            enc = self._vae.predict(self._beat_normalise(data))
            th = self._vae_threshold
            return [
                ModelScore(
                    w.stream_id,
                    "beat_vae",
                    kind,
                    w.lead,
                    w.start,
                    float(e),
                    th,
                    bool(th is not None and e > th),
                    tuple(float(v) for v in mu),
                )
                for w, e, mu in zip(group, enc.mse, enc.mu, strict=True)
            ]
        if kind == "leads_10s" and model in self._twelve:
            net = self._twelve[model]
            q = net.predict(data)
            th12 = net.threshold_value
            la, ta = q.lead_attention, q.time_attention
            return [
                ModelScore(
                    w.stream_id,
                    model,
                    kind,
                    None,
                    w.start,
                    float(q.score[i]),
                    th12,
                    bool(q.is_anomaly[i]),
                    lead_scores=tuple(float(v) for v in q.lead_relative_error[i]),
                    lead_attention=None if la is None else tuple(float(v) for v in la[i]),
                    attention_peak=None
                    if ta is None
                    else float(w.start + int(np.argmax(ta[i])) / w.fs),
                )
                for i, w in enumerate(group)
            ]
        return []
