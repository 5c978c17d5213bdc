"""ONNX Runtime wrapper of the masked-segment recovery model (no torch): fill gaps in an ECG segment.

Pre-processing (identical in training, which imports :func:`normalise_observed` from here): the segment
is normalised with the mean and standard deviation of its OBSERVED samples only (``observed_zscore``), the
gap is zeroed, the model predicts the whole segment and the output is mapped back to the input's units.
Observed samples come back unchanged; only masked ones are filled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.runtime.base import OnnxModel
from stream.errors import ModelError


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


class GapFiller:
    """``GapFiller.load().predict(segment_with_nans)`` -> :class:`Recovery`."""

    def __init__(self, model: OnnxModel) -> None:
        self.model = model
        card = model.card
        norm = card.get("normalisation") or {}
        self.method = str(norm.get("method", "observed_zscore"))
        self.eps = float(norm.get("eps", 0.05))
        self.length = int(card.get("segment_samples", 720))
        self.fs = float(card.get("sampling_rate_hz", 360.0))
        self.max_gap_fraction = float(card.get("max_gap_fraction", 0.4))

    @classmethod
    def load(cls, name: str = "lstm_ae", models_dir: str | Path | None = None) -> GapFiller:
        return cls(OnnxModel.load(name, models_dir))

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
