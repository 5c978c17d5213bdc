"""ONNX Runtime wrapper of ``beat_vae`` (no torch): encode, reconstruct and generate single beats.

Beats are 400-sample cycles (0.25 s before to 0.45 s after the R peak, resampled), **z-scored per
beat** before they enter the graph (:func:`normalise`); reconstructions and generated beats are in
the same z-scored units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.errors import ModelError
from models.runtime.base import OnnxModel
from models.runtime.protocol import ModelScore, Window, stack_data
from models.runtime.registry import register

BEAT_LENGTH = 400
LATENT = 25


def normalise(beats: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """Per-beat z-score ``(b - mean(b)) / (std(b) + eps)`` of beats [k, 400] in mV."""
    b = np.asarray(beats, dtype=np.float32)
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != BEAT_LENGTH:
        raise ModelError(f"beats must be [k, {BEAT_LENGTH}], got {b.shape}")
    return ((b - b.mean(axis=1, keepdims=True)) / (b.std(axis=1, keepdims=True) + eps)).astype(
        np.float32
    )


@dataclass(frozen=True)
class BeatEncoding:
    """``recon`` [k, 400] (decoded posterior mean, z-scored units), ``mu``/``logvar`` [k, 25], ``mse`` [k]."""

    recon: np.ndarray
    mu: np.ndarray
    logvar: np.ndarray
    mse: np.ndarray


@register("beat_vae")
class BeatVaeModel(OnnxModel):
    """``beat_vae.onnx`` + card. In the stream, ``score(windows)``: the per-beat reconstruction error
    (z-scored units) against the card's threshold (none: never anomalous) and the latent mean as
    ``embedding``."""

    default_name = "beat_vae"

    def score(self, windows: Sequence[Window]) -> list[ModelScore]:
        """Scores of ``beat_400`` cycles (mV, normalised here)."""
        if not windows:
            return []
        enc = self.predict(normalise(stack_data(windows)))
        th = self.card.threshold_value
        name = self.name
        # the latent means rounded to 5 decimals at once: float32 * 1e5 is exact in float64, so
        # rint(mu * 1e5) / 1e5 is the same number as round(float(mu), 5)
        embeddings = np.round(enc.mu.astype(np.float64), 5).tolist()
        mse = enc.mse.tolist()
        flags = [False] * len(mse) if th is None else (enc.mse > th).tolist()
        return [
            ModelScore(
                stream_id=w.stream_id,
                model=name,
                window=w.kind,
                lead=w.lead,
                time=w.start,
                score=e,
                threshold=th,
                anomalous=a,
                embedding=mu,
            )
            for w, e, a, mu in zip(windows, mse, flags, embeddings, strict=True)
        ]

    def predict(self, beats_z: np.ndarray, batch: int = 1024) -> BeatEncoding:
        """Encode and reconstruct z-scored beats [k, 400] (use :func:`normalise` on mV beats)."""
        b = np.asarray(beats_z, dtype=np.float32)
        if b.ndim == 1:
            b = b[None]
        z0 = np.zeros((1, LATENT), dtype=np.float32)
        parts = [
            self.run({"beat": b[s : s + batch], "z": z0}, ["recon", "mu", "logvar"])
            for s in range(0, len(b), batch)
        ]
        recon = np.concatenate([p["recon"] for p in parts])
        return BeatEncoding(
            recon=recon,
            mu=np.concatenate([p["mu"] for p in parts]),
            logvar=np.concatenate([p["logvar"] for p in parts]),
            mse=((recon - b) ** 2).mean(axis=1),
        )

    def decode(self, z: np.ndarray, batch: int = 1024) -> np.ndarray:
        """Latent codes [k, 25] -> beats [k, 400] (z-scored units)."""
        z = np.asarray(z, dtype=np.float32)
        if z.ndim == 1:
            z = z[None]
        dummy = np.zeros((1, BEAT_LENGTH), dtype=np.float32)
        return np.concatenate(
            [
                self.run({"beat": dummy, "z": z[s : s + batch]}, ["decoded"])["decoded"]
                for s in range(0, len(z), batch)
            ]
        )

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` beats generated from the prior N(0, I)."""
        return self.decode(
            np.random.default_rng(seed).standard_normal((n, LATENT)).astype(np.float32)
        )
