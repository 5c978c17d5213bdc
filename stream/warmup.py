"""Compile (or load from numba's cache) the stages' kernels before a worker takes its first frame.

The stages' per-sample loops are numba functions compiled on first use; without this, the first frame of the
first stream would wait for the compiler (seconds). :func:`warm_up` runs the stream processor over a few
seconds of a synthetic two-lead and a synthetic twelve-lead signal, which calls every kernel once with the
argument types the stream uses. With numba's on-disk cache (``NUMBA_CACHE_DIR`` or the package's
``__pycache__``), later starts load the compiled code in well under a second.
"""

from __future__ import annotations

import time

import numpy as np

from stream.stages.frame import Frame
from stream.stages.processor import StageConfig, StreamProcessor

#: The shapes warmed up: MIT-BIH-like two leads at 360 Hz and PTB-XL-like twelve leads at 100 Hz.
_SHAPES: tuple[tuple[float, tuple[str, ...]], ...] = (
    (360.0, ("MLII", "V1")),
    (100.0, ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")),
)


def _synthetic(fs: float, n_leads: int, seconds: float) -> np.ndarray:
    """A regular 72 bpm signal of narrow Gaussian beats with a little noise, [n, n_leads] mV."""
    t = np.arange(round(seconds * fs)) / fs
    phase = (t * 1.2) % 1.0
    beat = 1.2 * np.exp(-(((phase - 0.5) / 0.012) ** 2)) + 0.2 * np.exp(
        -(((phase - 0.75) / 0.05) ** 2)
    )
    rng = np.random.default_rng(0)
    x = beat[:, None] * np.linspace(1.0, 0.6, n_leads)[None, :]
    return (x + 0.01 * rng.standard_normal(x.shape)).astype(np.float32)


def warm_up(seconds: float = 12.0) -> float:
    """Run the processor over ``seconds`` of each warmed-up shape (1 s frames, one missing second); returns
    the wall seconds it took."""
    t0 = time.perf_counter()
    for fs, leads in _SHAPES:
        x = _synthetic(fs, len(leads), seconds)
        x[round(4 * fs) : round(5 * fs), 0] = np.nan  # the missing-sample paths too
        sp = StreamProcessor("warm-up", fs, leads, StageConfig())
        n = round(fs)
        for i, s in enumerate(range(0, x.shape[0] - n + 1, n)):
            sp.process(Frame("warm-up", i, fs, leads, 1.0e9 + i, x[s : s + n]))
        sp.flush()
    return time.perf_counter() - t0


__all__ = ["warm_up"]
