"""Beat and window segmentation: exactly the inputs the models take.

- ``beat_windows``: single-lead windows centred on beats (default 2 s at 360 Hz = 720 samples), CAE input;
- ``lead_windows``: multi-lead windows (default 10 s at 100 Hz, 12 leads), 12-lead model input;
- ``beat_cycles``: single beats resampled to a fixed length (default 400), beat VAE input;
- ``resample``: polyphase resampling when the source rate differs from the model's.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy import signal as sps

from models.errors import ModelError

CAE_FS = 360.0
CAE_WINDOW = 720
TWELVE_LEAD_FS = 100.0
TWELVE_LEAD_WINDOW = 1000
BEAT_LENGTH = 400


def resample(x: np.ndarray, fs: float, target_fs: float, axis: int = 0) -> np.ndarray:
    """Resample ``x`` from ``fs`` to ``target_fs`` along ``axis`` (polyphase, anti-aliased)."""
    if fs <= 0 or target_fs <= 0:
        raise ModelError(f"sampling rates must be positive, got fs={fs}, target_fs={target_fs}")
    if abs(fs - target_fs) < 1e-9:
        return np.asarray(x, dtype=np.float32)
    ratio = Fraction(target_fs / fs).limit_denominator(1000)
    up, down = ratio.numerator, ratio.denominator
    y = sps.resample_poly(
        np.asarray(x, dtype=np.float64), up, down, axis=axis, window=_fir(up, down)
    )
    return y.astype(np.float32)


@lru_cache(maxsize=64)
def _fir(up: int, down: int) -> np.ndarray:
    """The anti-aliasing FIR ``resample_poly`` designs for ``up / down`` by default (Kaiser, beta 5),
    designed once per ratio instead of on every call (it cost more than the filtering on one beat)."""
    max_rate = max(up, down) // math.gcd(up, down)
    h = sps.firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    h.setflags(write=False)
    return h


def beat_windows(
    x: np.ndarray,
    peaks: np.ndarray,
    fs: float,
    target_fs: float = CAE_FS,
    width: int = CAE_WINDOW,
) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``width`` samples at ``target_fs`` centred on each peak of a 1-D signal.

    ``peaks`` are sample indices at ``fs``. Returns ``(windows [k, width] float32, kept)`` where
    ``kept`` indexes the peaks whose window lies fully inside the signal.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ModelError(f"beat_windows takes a 1-D signal, got shape {x.shape}")
    peaks = np.asarray(peaks, dtype=np.int64)
    if abs(fs - target_fs) > 1e-9:
        x = resample(x, fs, target_fs)
        peaks = np.round(peaks * (target_fs / fs)).astype(np.int64)
    half = width // 2
    kept = np.flatnonzero((peaks - half >= 0) & (peaks + (width - half) <= x.shape[0]))
    if kept.size == 0:
        return np.zeros((0, width), dtype=np.float32), kept
    idx = peaks[kept, None] + np.arange(-half, width - half)[None, :]
    return x[idx], kept


def lead_windows(
    x: np.ndarray,
    fs: float,
    target_fs: float = TWELVE_LEAD_FS,
    width: int = TWELVE_LEAD_WINDOW,
    hop: int | None = None,
) -> np.ndarray:
    """Multi-lead windows ``[k, width, n_leads]`` at ``target_fs`` (hop defaults to ``width``)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ModelError(f"lead_windows takes [n_samples, n_leads], got shape {x.shape}")
    x = resample(x, fs, target_fs, axis=0)
    hop = hop or width
    if x.shape[0] < width:
        return np.zeros((0, width, x.shape[1]), dtype=np.float32)
    starts = np.arange(0, x.shape[0] - width + 1, hop)
    return np.stack([x[s : s + width] for s in starts]).astype(np.float32)


def beat_cycles(
    x: np.ndarray,
    peaks: np.ndarray,
    fs: float,
    length: int = BEAT_LENGTH,
    before_s: float = 0.25,
    after_s: float = 0.45,
) -> tuple[np.ndarray, np.ndarray]:
    """Single cardiac cycles around each R peak (``before_s`` .. ``after_s``), resampled to ``length``.

    Returns ``(cycles [k, length] float32, kept)``.
    """
    x = np.asarray(x, dtype=np.float32)
    peaks = np.asarray(peaks, dtype=np.int64)
    b, a = round(before_s * fs), round(after_s * fs)
    kept = np.flatnonzero((peaks - b >= 0) & (peaks + a <= x.shape[0]))
    if kept.size == 0:
        return np.zeros((0, length), dtype=np.float32), kept
    segs = np.stack([x[p - b : p + a] for p in peaks[kept]])
    cycles = sps.resample(segs, length, axis=1) if segs.shape[1] != length else segs
    return np.asarray(cycles, dtype=np.float32), kept
