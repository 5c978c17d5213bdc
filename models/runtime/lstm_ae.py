"""ONNX Runtime wrapper of the masked-segment recovery model (no torch): fill gaps in an ECG segment.

Pre-processing (identical in training, which imports :func:`normalise_observed` from here): the segment
is normalised with the mean and standard deviation of its OBSERVED samples only (``observed_zscore``), the
gap is zeroed, the model predicts the whole segment and the output is mapped back to the input's units.
Observed samples come back unchanged; only masked ones are filled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from models.card import WindowSpec
from models.errors import ModelError
from models.runtime.base import OnnxModel
from models.runtime.protocol import Recovered, Window
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
class Recovery:
    """``signal``: the input with its gaps filled (same units); ``mask``: True where samples were filled."""

    signal: np.ndarray
    mask: np.ndarray


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
        out = [
            Recovered(replace(w, data=s), self.name, float(m.mean()))
            for w, s, m in zip(fit, rec.signal, rec.mask, strict=True)
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
        return Recovery(signal=y[0] if one else y, mask=m[0] if one else m)
