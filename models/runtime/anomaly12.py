"""ONNX Runtime runtime of the 12-lead reconstruction anomaly models (cae12, vae_bilstm, vae_bilstm_mha). No torch.

Input: 10 s, 100 Hz, 12 leads (``TWELVE_LEADS`` order) filtered with the stream's causal band-pass,
in mV, shape ``[1000, 12]`` or ``[batch, 1000, 12]`` (:func:`preprocess` builds it from a raw record).
The graph normalises each lead itself. The anomaly score is computed here from the graph's per-lead
errors with the rule stored in the model card (``scoring``: method, per-lead reference errors,
threshold chosen on PTB-XL fold 9).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.card import LEADS_10S, FilterSpec, WindowSpec
from models.errors import ModelError
from models.preprocessing.filtering import filter_signal
from models.preprocessing.segmentation import lead_windows
from models.runtime.base import OnnxModel
from models.runtime.protocol import ModelScore, Window, per_lead, stack_data
from models.runtime.registry import register

SCORING_METHODS = ("mean", "lead_weighted_mean", "lead_max", "top3", "elbo", "elbo_weighted")


def preprocess(
    signal: np.ndarray,
    fs: float,
    window: WindowSpec = LEADS_10S,
    band: FilterSpec = FilterSpec(),  # noqa: B008  (frozen pydantic model)
) -> np.ndarray:
    """Raw 12-lead record ``[n, 12]`` mV at ``fs`` -> model windows ``[k, samples, 12]``: the stream's
    causal band-pass, then consecutive windows at the window's rate (default: 10 s at 100 Hz)."""
    x = np.asarray(signal, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != 12:
        raise ModelError(f"12-lead models take [n_samples, 12], got shape {x.shape}")
    filtered = filter_signal(x, fs, band.highpass_hz, band.lowpass_hz)
    return lead_windows(filtered, fs, window.fs, window.samples)


def anomaly_score(
    lead_error: np.ndarray, kl: np.ndarray | None, scoring: Mapping[str, Any]
) -> np.ndarray:
    """Anomaly score per window from per-lead errors ``[B, 12]`` (and the KL ``[B]`` of VAEs).

    ``scoring["method"]``: ``mean`` (mean error), ``lead_weighted_mean`` (mean of error / per-lead
    reference), ``lead_max`` (max over leads of error / reference), ``top3`` (mean of the 3 largest
    relative errors), ``elbo`` (mean error + beta * KL), ``elbo_weighted`` (lead_weighted_mean +
    beta * KL / reference KL).
    """
    method = scoring["method"]
    ref = np.asarray(scoring.get("lead_reference", np.ones(lead_error.shape[1])), dtype=np.float64)
    rel = lead_error / ref
    if method == "mean":
        return lead_error.mean(axis=1)
    if method == "lead_weighted_mean":
        return rel.mean(axis=1)
    if method == "lead_max":
        return rel.max(axis=1)
    if method == "top3":
        return np.sort(rel, axis=1)[:, -3:].mean(axis=1)
    if kl is None:
        raise ModelError(f"scoring method {method!r} needs the model's KL output")
    beta = float(scoring.get("beta", 1.0))
    if method == "elbo":
        return lead_error.mean(axis=1) + beta * kl
    if method == "elbo_weighted":
        return rel.mean(axis=1) + beta * kl / float(scoring.get("kl_reference", 1.0))
    raise ModelError(f"unknown scoring method {method!r}; known: {SCORING_METHODS}")


@dataclass(frozen=True)
class AnomalyPrediction:
    """Per-window outputs: reconstruction (mV), per-lead errors, score and decision."""

    recon: np.ndarray  # [B, 1000, 12] mV
    lead_error: np.ndarray  # [B, 12] mean squared error, normalised units
    lead_relative_error: (
        np.ndarray
    )  # [B, 12] lead_error / per-lead reference (NORM training median)
    score: np.ndarray  # [B]
    is_anomaly: np.ndarray  # [B] bool, score > threshold
    kl: np.ndarray | None = None  # [B] VAEs only
    lead_attention: np.ndarray | None = None  # [B, 12] attention models only
    time_attention: np.ndarray | None = None  # [B, 1000] attention models only


@register("anomaly12")
class Anomaly12Model(OnnxModel):
    """Any 12-lead reconstruction anomaly model (``cae12``, ``vae_bilstm``, ``vae_bilstm_mha``, ...):
    ``Anomaly12Model.load("cae12").predict(x)`` -> :class:`AnomalyPrediction`; in the stream
    ``score(windows)``. Optional outputs (``kl``, ``lead_attention``, ``time_attention``) are used when the
    graph has them."""

    default_name = "cae12"

    def preprocess(self, signal: np.ndarray, fs: float) -> np.ndarray:
        """Raw 12-lead record ``[n, 12]`` mV at ``fs`` -> this model's windows (its card's filter and window)."""
        pre = self.card.preprocessing
        return preprocess(signal, fs, pre.window, pre.filter)

    def score(self, windows: Sequence[Window]) -> list[ModelScore]:
        """Stream scoring of 12-lead windows: score, per-lead relative error, attention where the graph has it."""
        if not windows:
            return []
        q = self.predict(stack_data(windows))
        th = self.threshold_value
        la, ta = q.lead_attention, q.time_attention
        return [
            ModelScore(
                stream_id=w.stream_id,
                model=self.name,
                window=w.kind,
                lead=None,
                time=w.start,
                score=float(q.score[i]),
                threshold=th,
                anomalous=bool(q.is_anomaly[i]),
                lead_scores=per_lead(q.lead_relative_error[i]),
                lead_attention=None if la is None else per_lead(la[i]),
                attention_peak=None
                if ta is None
                else float(w.start + int(np.argmax(ta[i])) / w.fs),
            )
            for i, w in enumerate(windows)
        ]

    @property
    def scoring(self) -> dict[str, Any]:
        scoring = self.card.get("scoring")
        if not isinstance(scoring, dict) or "method" not in scoring:
            raise ModelError(f"{self.name}: model card has no scoring rule")
        return scoring

    @property
    def threshold_value(self) -> float:
        return self.threshold_or_raise()

    def predict(self, x: np.ndarray, batch: int = 64) -> AnomalyPrediction:
        """Score windows ``[1000, 12]`` or ``[B, 1000, 12]`` (filtered mV)."""
        arr = np.asarray(x, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        parts: dict[str, list[np.ndarray]] = {}
        for s in range(0, arr.shape[0], batch):
            out = self.run({"ecg": arr[s : s + batch]})
            for k, v in out.items():
                parts.setdefault(k, []).append(v)
        res = {k: np.concatenate(v) for k, v in parts.items()}
        scoring = self.scoring
        kl = res.get("kl")
        score = anomaly_score(res["lead_error"], kl, scoring)
        ref = np.asarray(scoring.get("lead_reference", np.ones(12)), dtype=np.float64)
        return AnomalyPrediction(
            recon=res["recon"],
            lead_error=res["lead_error"],
            lead_relative_error=res["lead_error"] / ref,
            score=score,
            is_anomaly=score > self.threshold_value,
            kl=kl,
            lead_attention=res.get("lead_attention"),
            time_attention=res.get("time_attention"),
        )
