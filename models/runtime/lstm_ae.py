"""ONNX Runtime wrapper of the masked-segment recovery model (no torch): fill gaps in an ECG segment.

Pre-processing (identical in training, which imports :func:`normalise_observed` from here): the segment
is normalised with the mean and standard deviation of its OBSERVED samples only (``observed_zscore``), the
gap is zeroed, the model predicts the whole segment and the output is mapped back to the input's units.
Observed samples come back unchanged; only masked ones are filled.

Calibrated uncertainty (the card's ``uncertainty``, written by ``training.recovery.calibrate_recovery``):
each filled sample gets the half width of a 90 % interval ``q * (std_obs + eps) * (floor + envelope +
distance_weight * min(d, distance_cap_s) / distance_cap_s)`` (:func:`gap_scale`): ``std_obs`` the observed
samples' standard deviation, ``envelope`` the local amplitude envelope of the normalised filled segment,
``d`` the distance in seconds to the nearest observed sample; ``q`` is the 90 % quantile of
``|true - filled| / scale`` on the validation records (split conformal). Observed samples get 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from models.card import ModelCard, WindowSpec
from models.errors import ModelError
from models.runtime.base import OnnxModel
from models.runtime.protocol import MEASURED, MODEL, Recovered, Window, amplitude_envelope
from models.runtime.registry import register


def normalise_observed(
    x: np.ndarray, mask: np.ndarray, method: str = "observed_zscore", eps: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z, mean, scale)`` with ``z = (x - mean) / scale`` from observed samples (mask 0); gap set to 0.

    ``method`` ``none`` returns ``x`` with the gap zeroed, mean 0 and scale 1 (the seed protocol's [0, 1] beats).
    """
    x = np.asarray(x, dtype=np.float32)
    m = np.asarray(mask, dtype=np.float32)
    obs = 1.0 - m
    if method == "none":
        z = np.where(m > 0, 0.0, x).astype(np.float32)
        return z, np.zeros((x.shape[0], 1), np.float32), np.ones((x.shape[0], 1), np.float32)
    if method != "observed_zscore":
        raise ModelError(f"unknown normalisation {method!r}")
    n = np.maximum(obs.sum(axis=1, keepdims=True), 1.0)
    xo = np.where(m > 0, 0.0, x)
    mean = xo.sum(axis=1, keepdims=True) / n
    var = (np.where(m > 0, 0.0, x - mean) ** 2).sum(axis=1, keepdims=True) / n
    scale = np.sqrt(var) + eps
    z = np.where(m > 0, 0.0, (x - mean) / scale).astype(np.float32)
    return z, mean.astype(np.float32), scale.astype(np.float32)


@dataclass(frozen=True)
class GapCalibration:
    """A card's ``uncertainty`` section (see the module docstring)."""

    quantile: float
    floor: float
    distance_weight: float
    distance_cap_s: float
    envelope_half_s: float
    coverage: float = 0.9

    @classmethod
    def from_card(cls, card: ModelCard) -> GapCalibration | None:
        raw = card.get("uncertainty")
        if not isinstance(raw, dict) or raw.get("quantile") is None:
            return None
        sc = raw.get("scale") or {}
        try:
            q = raw["quantile"]
            return cls(
                quantile=float(q["all"] if isinstance(q, dict) else q),
                floor=float(sc["floor"]),
                distance_weight=float(sc["distance_weight"]),
                distance_cap_s=float(sc["distance_cap_s"]),
                envelope_half_s=float(sc["envelope_half_s"]),
                coverage=float(raw.get("coverage", 0.9)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{card.name}: malformed uncertainty section: {exc!r}") from exc


def gap_distance(mask: np.ndarray, fs: float) -> np.ndarray:
    """Seconds from each sample of ``mask`` [k, L] (True = missing) to the nearest observed sample
    (0 on observed samples; L / fs where a row has none)."""
    m = np.asarray(mask, dtype=bool)
    k, n = m.shape
    idx = np.arange(n)
    out = np.zeros((k, n), dtype=np.float32)
    for r in range(k):
        obs = np.flatnonzero(~m[r])
        if obs.size == 0:
            out[r] = n / fs
            continue
        pos = np.clip(np.searchsorted(obs, idx), 0, obs.size - 1)
        prev = obs[np.clip(pos - 1, 0, obs.size - 1)]
        out[r] = np.minimum(np.abs(obs[pos] - idx), np.abs(prev - idx)) / fs
    return out


def gap_scale(
    filled: np.ndarray,
    mask: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    fs: float,
    floor: float,
    distance_weight: float,
    distance_cap_s: float,
    envelope_half_s: float,
) -> np.ndarray:
    """Difficulty scale [k, L] of filled samples (see the module docstring): ``filled``, ``mask`` [k, L];
    ``mean``, ``scale`` [k, 1] the observed mean and ``std + eps`` (:func:`normalise_observed`)."""
    z = (np.asarray(filled, dtype=np.float32) - mean) / scale
    env = amplitude_envelope(z, fs, envelope_half_s, axis=1)
    d = np.minimum(gap_distance(mask, fs), distance_cap_s) / max(distance_cap_s, 1e-9)
    return (scale * (floor + env + distance_weight * d)).astype(np.float32)


@dataclass(frozen=True)
class Recovery:
    """``signal``: the input with its gaps filled (same units); ``mask``: True where samples were filled;
    ``half_width_90``: 90 % interval half width per sample (0 where observed), None uncalibrated;
    ``mean``/``scale``: the observed mean and ``std + eps`` per segment ([k, 1])."""

    signal: np.ndarray
    mask: np.ndarray
    half_width_90: np.ndarray | None = None
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None


def _filler_from_path(path: Path) -> GapFiller:
    return GapFiller(OnnxModel(path))


@register("gap_filler", _filler_from_path)
class GapFiller:
    """``GapFiller.load().predict(segment_with_nans)`` -> :class:`Recovery`."""

    def __init__(self, model: OnnxModel) -> None:
        self.model = model
        card = model.card
        self.card = card
        norm = card.preprocessing.normalisation
        self.method = norm.method
        self.eps = 0.05 if norm.eps is None else float(norm.eps)
        self.length = card.window.samples
        self.fs = card.window.fs
        self.max_gap_fraction = float(card.get("max_gap_fraction", 0.4))
        self.calibration = GapCalibration.from_card(card)

    @classmethod
    def load(cls, name: str = "lstm_ae", models_dir: str | Path | None = None) -> GapFiller:
        return cls(OnnxModel.load(name, models_dir))

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def window(self) -> WindowSpec:
        return self.card.window

    def recover(
        self, windows: Sequence[Window]
    ) -> tuple[list[Recovered], list[tuple[Window, str]]]:
        """Fill windows whose gap is within the card's limit (and no inf among observed samples); the
        others are dropouts."""
        lost: list[tuple[Window, str]] = []
        fit: list[Window] = []
        for w in windows:
            gap = np.isnan(w.data)
            if gap.mean() <= self.max_gap_fraction and np.isfinite(w.data[~gap]).all():
                fit.append(w)
            else:
                lost.append((w, "dropout"))
        if not fit:
            return [], lost
        try:
            rec = self.predict(np.stack([w.data for w in fit]).astype(np.float32))
        except ModelError as exc:
            return [], lost + [(w, f"model_error: {exc}") for w in fit]
        prov = np.where(rec.mask, MODEL, MEASURED).astype(np.uint8)
        hw = rec.half_width_90
        out = [
            Recovered(
                replace(w, data=s),
                self.name,
                float(m.mean()),
                provenance=prov[i],
                half_width_90=None if hw is None else hw[i],
            )
            for i, (w, s, m) in enumerate(zip(fit, rec.signal, rec.mask, strict=True))
        ]
        return out, lost

    def predict(
        self, signal: np.ndarray, mask: np.ndarray | None = None, batch: int = 256
    ) -> Recovery:
        """Fill the gaps of ``signal`` ``[k, L]`` (or ``[L]``): samples where ``mask`` is true, or NaN when no mask."""
        x = np.asarray(signal, dtype=np.float32)
        one = x.ndim == 1
        if one:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.length:
            raise ModelError(
                f"{self.model.name}: segments must be [k, {self.length}] at {self.fs:g} Hz, got {np.shape(signal)}"
            )
        m = np.isnan(x) if mask is None else np.asarray(mask, dtype=bool).reshape(x.shape)
        if not np.isfinite(x[~m]).all():
            raise ModelError(
                f"{self.model.name}: observed samples hold NaN or inf outside the mask"
            )
        frac = m.mean(axis=1)
        if (frac > self.max_gap_fraction + 1e-9).any() or (frac == 1).any():
            raise ModelError(
                f"{self.model.name}: a segment is {frac.max():.0%} missing; at most {self.max_gap_fraction:.0%} can be recovered"
            )
        x = np.where(m, 0.0, x).astype(np.float32)
        mf = m.astype(np.float32)
        z, mean, scale = normalise_observed(x, mf, self.method, self.eps)
        outs = [
            self.model.run({"signal": z[s : s + batch], "mask": mf[s : s + batch]}, ["recovered"])[
                "recovered"
            ]
            for s in range(0, z.shape[0], batch)
        ]
        y = np.concatenate(outs) * scale + mean
        y = np.where(m, y, x).astype(np.float32)
        hw = None
        cal = self.calibration
        if cal is not None:
            sc = gap_scale(
                y,
                m,
                mean,
                scale,
                self.fs,
                cal.floor,
                cal.distance_weight,
                cal.distance_cap_s,
                cal.envelope_half_s,
            )
            hw = np.where(m, cal.quantile * sc, 0.0).astype(np.float32)
        if one:
            return Recovery(y[0], m[0], None if hw is None else hw[0], mean[0], scale[0])
        return Recovery(y, m, hw, mean, scale)
