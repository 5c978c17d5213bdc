"""Signal quality per lead, per second: established ECG signal quality indices over a trailing window.

Indices (Li, Clark & Clifford 2008; Clifford et al. 2012; Behar et al. 2013), each over the trailing
``QualityConfig.window_s`` (10 s) and evaluated once per completed second of the stream:

- ``bsqi``: agreement of two QRS detectors of different principle on the same lead, as an F1 score of the
  beats matched within 150 ms (Behar et al. 2013): the stream's Pan-Tompkins style
  :class:`~stream.stages.qrs.QrsDetector` and :class:`EnergyQrsDetector`, a streaming version of
  Elgendi's two-moving-average block detector (Elgendi 2013). Only on the QRS candidate leads;
- ``ksqi``: kurtosis of the 1-40 Hz band-passed lead (a clean ECG is peaky: > 5, Clifford et al. 2012);
- ``psqi``: power in the QRS band over power in the ECG band, P(5-15 Hz) / P(5-40 Hz) (Li et al. 2008),
  Welch-style: the average of the 1 s periodograms of the band-passed lead over the window;
- ``bassqi``: 1 - P(0-1 Hz) / P(0-40 Hz) (Li et al. 2008), as the share of the raw lead's variance over
  the window that the 1-40 Hz band carries (baseline wander lowers it; a DC offset does not change it);
- ``flat``: share of the last second in 100 ms blocks of (almost) no activity;
- ``clipped``: share of the last second's samples in plateaus at its extremes (runs of at least
  ``clip_run_s`` at the second's max or min value, the same ADC code) while the lead does swing; a
  clean R wave or T wave apex is never that flat.

``flat``, ``clipped`` and the missing-sample share are taken over the last second so a fault is seen at
once; the other indices need the window. :class:`SignalQuality` keeps, per stream, a ring of per-second
sums (moments and band powers) so a second costs one small ``lfilter`` and one 1 s ``rfft`` for all
leads at once. The second detector runs only on the leads whose bSQI is wanted now (``lazy_leads``
sleep until woken, then replay a short raw history).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numba
import numpy as np
from scipy import signal as sps

from stream.stages.kernels import pairwise_sum
from stream.stages.qrs import QrsDetector

#: Every value :attr:`LeadQuality.reason` takes (None when the lead is usable), in priority order.
QUALITY_REASONS: tuple[str, ...] = (
    "dropout",
    "flat",
    "clipped",
    "noise",
    "no_agreement",
    "baseline",
)


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the signal quality stage (seconds, mV, fractions).

    Literature values: the 10 s window and the 150 ms match tolerance of bSQI (Li et al. 2008; Clifford
    et al. 2012; Behar et al. 2013). Thresholds marked DS1 were chosen on MIT-BIH DS1 records (101, 106,
    108, 109, 112, 114, 115, 116, 118, 119, 122, 124, 201, 203, 205, 207, 208, 209, 215, 220, 223, 230),
    clean and with NSTDB ``ma``/``bw`` noise added at -6..+6 dB; never on DS2.
    """

    window_s: float = 10.0  # trailing analysis window (Li et al. 2008: 10 s)
    match_s: float = 0.150  # bSQI beat-match tolerance (Li et al. 2008; Behar et al. 2013)
    #: bSQI below this: the two detectors disagree (Behar et al. 2013 treat F1 < 0.8-0.9 as bad; DS1:
    #: 0.8 keeps >= 99 % of clean 10 s windows of both leads usable, ma at -6 dB falls below it)
    bsqi_min: float = 0.8
    #: with bSQI low, the lead is ``noise`` (not only ``no_agreement``) when psqi or ksqi is low too; a
    #: lead without a detector is ``noise`` when both are (DS1 1st percentiles of clean windows)
    psqi_min: float = 0.40  # Li et al. 2008 give 0.5-0.8 for a clean QRS band; DS1: V1 runs lower
    ksqi_min: float = 5.0  # Clifford et al. 2012: kurtosis > 5 for a clean ECG
    #: psqi below this is ``noise`` whatever the kurtosis (bursts of muscle noise are peaky too); DS1:
    #: below the 0.5th percentile of clean 10 s windows of either lead (0.31 for V1, 0.39 for MLII)
    psqi_noise: float = 0.28
    #: a sudden drop: psqi over the last ``fast_s`` seconds below ``psqi_min`` and below ``psqi_drop`` x
    #: psqi over the rest of the window is ``noise`` at once (DS1 + NSTDB ``ma``: the two detectors agree
    #: on big muscle bursts for several seconds, while the QRS band share falls within the first second)
    fast_s: float = 2.0
    psqi_drop: float = 0.6
    #: ... and while the window's psqi stays below ``psqi_drop`` x the lead's own reference (a running
    #: mean of its psqi over usable seconds, time constant ``reference_s``), it stays ``noise``
    reference_s: float = 30.0
    #: noise is activity: a low QRS band share counts only while the lead's 5-40 Hz RMS over the last
    #: ``fast_s`` is at least ``noise_rms_mv``. A quiet line (asystole: an isoelectric line with a little
    #: noise, 0.01 mV) is never ``noise``, so asystole stays detectable (the rules see usable signal)
    noise_rms_mv: float = 0.05
    #: heavy baseline wander (DS1: clean windows stay above it; NSTDB ``bw`` at -6 dB goes below)
    bassqi_min: float = 0.05
    #: flat: a 100 ms block whose peak-to-peak range is at most ``flat_range_mv`` (MIT-BIH quantum 5 uV)
    flat_block_s: float = 0.1
    flat_range_mv: float = 0.005
    flat_max: float = 0.5  # a second with at least this share flat is ``flat``
    #: clipped: samples in plateaus at the second's max or min (runs of at least ``clip_run_s`` at the
    #: extreme value: within ``clip_tol_mv``, below the quantisation step (MIT-BIH 5 uV), so the same
    #: ADC code) on a lead swinging at least ``clip_min_range_mv``; a second with at least
    #: ``clipped_max`` of them is ``clipped``. DS1 clean leads: runs at the extreme value of at most 5
    #: samples (14 ms) at 360 Hz; within a whole step of it, up to 10
    clip_tol_mv: float = 0.001
    clip_run_s: float = 0.02
    clip_min_range_mv: float = 0.2
    clipped_max: float = 0.05
    dropout_max: float = (
        0.5  # share of missing (NaN) samples in the second that makes it ``dropout``
    )
    band_hz: tuple[float, float] = (1.0, 40.0)  # the ECG band (ksqi, bassqi, psqi's spectrum)


@dataclass(frozen=True)
class LeadQuality:
    """Quality of one lead over the trailing window ending with the second starting at ``start``."""

    stream_id: str
    lead: str
    start: float
    seconds: float
    bsqi: float | None
    ksqi: float
    psqi: float
    bassqi: float
    flat: float
    clipped: float
    usable: bool
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (floats rounded)."""
        return {
            "stream_id": self.stream_id,
            "lead": self.lead,
            "start": round(float(self.start), 3),
            "seconds": round(float(self.seconds), 3),
            "bsqi": None if self.bsqi is None else round(float(self.bsqi), 3),
            "ksqi": round(float(self.ksqi), 3),
            "psqi": round(float(self.psqi), 3),
            "bassqi": round(float(self.bassqi), 3),
            "flat": round(float(self.flat), 3),
            "clipped": round(float(self.clipped), 3),
            "usable": bool(self.usable),
            "reason": self.reason,
        }


# ------------------------------------------------------------------------------------- pure indices
def kurtosis(x: np.ndarray) -> np.ndarray:
    """Pearson kurtosis (normal = 3) of each column of ``x`` [n, leads] (NaN-free); 0 for a constant."""
    d = x - x.mean(axis=0)
    m2 = np.einsum("ij,ij->j", d, d) / x.shape[0]
    d2 = d * d
    m4 = np.einsum("ij,ij->j", d2, d2) / x.shape[0]
    return np.where(m2 > 0, m4 / np.where(m2 > 0, m2 * m2, 1.0), 0.0)


def band_power_ratio(
    x: np.ndarray, fs: float, num: tuple[float, float], den: tuple[float, float]
) -> np.ndarray:
    """Per column of ``x`` [n, leads]: periodogram power in ``num`` Hz over power in ``den`` Hz (mean
    removed; pSQI with (5, 15) over (5, 40), Li et al. 2008). 0 where ``den`` holds no power."""
    d = x - x.mean(axis=0)
    p = np.abs(np.fft.rfft(d, axis=0)) ** 2
    f = np.fft.rfftfreq(x.shape[0], 1.0 / fs)
    pn = p[(f >= num[0]) & (f <= num[1])].sum(axis=0)
    pd = p[(f >= den[0]) & (f <= den[1])].sum(axis=0)
    return np.where(pd > 0, pn / np.where(pd > 0, pd, 1.0), 0.0)


def baseline_sqi(x: np.ndarray, fs: float, cut_hz: float = 1.0, top_hz: float = 40.0) -> np.ndarray:
    """basSQI per column of ``x`` [n, leads]: 1 - P(0-``cut_hz``) / P(0-``top_hz``) of the periodogram,
    DC excluded (Li et al. 2008)."""
    d = x - x.mean(axis=0)
    p = np.abs(np.fft.rfft(d, axis=0)) ** 2
    f = np.fft.rfftfreq(x.shape[0], 1.0 / fs)
    low = p[(f > 0) & (f <= cut_hz)].sum(axis=0)
    tot = p[(f > 0) & (f <= top_hz)].sum(axis=0)
    return np.where(tot > 0, 1.0 - low / np.where(tot > 0, tot, 1.0), 1.0)


def flat_fraction(
    x: np.ndarray, fs: float, block_s: float = 0.1, range_mv: float = 0.005
) -> np.ndarray:
    """Per column of ``x`` [n, leads]: share of ``block_s`` blocks whose peak-to-peak range is at most
    ``range_mv`` (NaN blocks are not flat)."""
    b = max(1, round(block_s * fs))
    k = x.shape[0] // b
    if k == 0:
        return np.zeros(x.shape[1])
    blocks = x[: k * b].reshape(k, b, x.shape[1])
    ptp = blocks.max(axis=1) - blocks.min(axis=1)
    return np.asarray((ptp <= range_mv).mean(axis=0), dtype=np.float64)


def clipped_fraction(
    x: np.ndarray,
    hi: np.ndarray,
    lo: np.ndarray,
    tol_mv: float = 0.001,
    min_run: int = 7,
    min_range_mv: float = 0.2,
) -> np.ndarray:
    """Per column of ``x`` [n, leads]: share of samples in plateaus at ``hi`` or ``lo`` (the lead's
    extremes, e.g. over the second): runs of at least ``min_run`` consecutive samples within ``tol_mv``
    of the extreme (less than the quantisation step: the same ADC code); 0 where the lead swings less
    than ``min_range_mv``."""
    xt = np.ascontiguousarray(np.asarray(x, dtype=np.float64).T)
    his, los = (
        np.broadcast_to(hi, xt.shape[:1]).tolist(),
        np.broadcast_to(lo, xt.shape[:1]).tolist(),
    )
    return np.asarray(_plateaus(xt, his, los, tol_mv, min_run, min_range_mv))


def _plateaus(
    xt: np.ndarray,
    hi: Sequence[float],
    lo: Sequence[float],
    tol_mv: float,
    min_run: int,
    min_range: float,
) -> list[float]:
    """:func:`clipped_fraction` on rows of ``xt`` [leads, n]."""
    n = xt.shape[1]
    out = [0.0] * xt.shape[0]
    for li, row in enumerate(xt):
        if hi[li] - lo[li] < min_range:
            continue
        at = row >= hi[li] - tol_mv
        at |= row <= lo[li] + tol_mv
        if np.count_nonzero(at) < min_run:
            continue
        d = np.diff(at.astype(np.int8), prepend=0, append=0)
        runs = np.flatnonzero(d < 0) - np.flatnonzero(d > 0)
        out[li] = float(runs[runs >= min_run].sum()) / n
    return out


def match_f1(a: np.ndarray | Sequence[int], b: np.ndarray | Sequence[int], tol: int) -> float:
    """F1 agreement of two sorted beat lists (samples) matched within ``tol`` samples (1 when both are
    empty: the detectors agree there is no beat)."""
    la = a.tolist() if isinstance(a, np.ndarray) else list(a)
    lb = b.tolist() if isinstance(b, np.ndarray) else list(b)
    return _f1(la, lb, tol)


def _f1(a: list[int], b: list[int], tol: int) -> float:
    """:func:`match_f1` on lists: a beat of ``a`` is matched when its nearest beat of ``b`` is within
    ``tol`` (one merge pass; a 10 s window holds a few dozen beats)."""
    na, nb = len(a), len(b)
    if na + nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    j = matched = 0
    for p in a:
        while j < nb and b[j] < p:
            j += 1
        if (j < nb and b[j] - p <= tol) or (j > 0 and p - b[j - 1] <= tol):
            matched += 1
    return 2.0 * min(matched, na, nb) / (na + nb)


#: the empty beat list the detectors return (read-only, shared)
_NO_BEATS = np.zeros(0, dtype=np.int64)
_NO_BEATS.flags.writeable = False

# integer state of EnergyQrsDetector (``_st``)
_E_ZI_SET, _E_HAS_ENERGY, _E_DONE, _E_OFF, _E_HAS_OPEN, _E_OPEN, _E_LAST, _E_N, _E_LEN = range(9)
_E_SIZE = 9
# integer state of SignalQuality (``_st``): samples of the second being filled, seconds completed, flags
_Q_PLEN, _Q_COUNT, _Q_ZI_SET, _Q_ANCHOR_SET = range(4)
_Q_SIZE = 4
# SignalQuality's kernel configuration (``_cfg``)
(
    _C_BLOCK,
    _C_CLIP_RUN,
    _C_FAST,
    _C_FLAT_RANGE,
    _C_CLIP_MIN_RANGE,
    _C_CLIP_TOL,
    _C_RMS_FLOOR,
    _C_PSQI_MIN,
    _C_PSQI_DROP,
    _C_PSQI_NOISE,
    _C_KSQI_MIN,
    _C_BSQI_MIN,
    _C_BASSQI_MIN,
    _C_DROPOUT_MAX,
    _C_FLAT_MAX,
    _C_CLIPPED_MAX,
    _C_REFERENCE_S,
) = range(17)
_C_SIZE = 17
# per second and lead, the kernel's results (``res[second, lead]``)
(
    _F_MISSING,
    _F_FLAT,
    _F_CLIPPED,
    _F_PSQI,
    _F_KSQI,
    _F_BASSQI,
    _F_LOW,
    _F_ACTIVE,
    _F_CODE,
    _F_REF,
    _F_FULL,
) = range(11)
_F_SIZE = 11
_ROWS = 9  # per-second sums kept per lead (see SignalQuality.reset)


# ------------------------------------------------------------------------------- compiled kernels
# Per-sample loops of both classes below, each fusing what were a dozen numpy passes per call. They
# reproduce the numpy path's arithmetic operation by operation: scipy's ``lfilter`` (direct form II
# transposed, the same products and sums in the same order), numpy's pairwise ``sum`` (the detector's
# mean energy, ``nanmean``), ``cumsum``, ``argmax``; only the per-second sums of the quality ring (a
# BLAS product before) are summed in another order (within ~1e-15 relative).


@numba.njit(cache=True, nogil=True)
def _filter_held(
    x: np.ndarray, b: np.ndarray, a: np.ndarray, z: np.ndarray, y: np.ndarray, y0: int, last: float
) -> float:  # pragma: no cover - compiled
    """``y[y0:y0 + x.size]`` = ``x`` through the IIR filter ``b``/``a`` (``a[0] == 1``) with state ``z``
    (updated), NaN samples holding the last finite value (``last`` before the first; returned): scipy's
    ``lfilter`` (direct form II transposed) operation by operation, so bit-identical. The orders the
    stages use (5 and 7 coefficients) keep the state in registers."""
    n = x.size
    nb = b.size
    if nb == 7:
        b0, b1, b2, b3, b4, b5, b6 = b[0], b[1], b[2], b[3], b[4], b[5], b[6]
        a1, a2, a3, a4, a5, a6 = a[1], a[2], a[3], a[4], a[5], a[6]
        z0, z1, z2, z3, z4, z5 = z[0], z[1], z[2], z[3], z[4], z[5]
        for k in range(n):
            v = x[k]
            if v != v:
                v = last
            last = v
            yn = z0 + b0 * v
            z0 = z1 + v * b1 - yn * a1
            z1 = z2 + v * b2 - yn * a2
            z2 = z3 + v * b3 - yn * a3
            z3 = z4 + v * b4 - yn * a4
            z4 = z5 + v * b5 - yn * a5
            z5 = v * b6 - yn * a6
            y[y0 + k] = yn
        z[0], z[1], z[2], z[3], z[4], z[5] = z0, z1, z2, z3, z4, z5
    elif nb == 5:
        b0, b1, b2, b3, b4 = b[0], b[1], b[2], b[3], b[4]
        a1, a2, a3, a4 = a[1], a[2], a[3], a[4]
        z0, z1, z2, z3 = z[0], z[1], z[2], z[3]
        for k in range(n):
            v = x[k]
            if v != v:
                v = last
            last = v
            yn = z0 + b0 * v
            z0 = z1 + v * b1 - yn * a1
            z1 = z2 + v * b2 - yn * a2
            z2 = z3 + v * b3 - yn * a3
            z3 = v * b4 - yn * a4
            y[y0 + k] = yn
        z[0], z[1], z[2], z[3] = z0, z1, z2, z3
    else:
        for k in range(n):
            v = x[k]
            if v != v:
                v = last
            last = v
            yn = z[0] + b[0] * v
            for i in range(nb - 2):
                z[i] = z[i + 1] + v * b[i + 1] - yn * a[i + 1]
            z[nb - 2] = v * b[nb - 1] - yn * a[nb - 1]
            y[y0 + k] = yn
    return last


@lru_cache(maxsize=32)
def _dft_rows(sec: int, fs: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """The 5..``hi`` Hz DFT rows (cos, sin) of a 1 s window of ``sec`` samples, ``[sec, 2 bins]``, and which
    bins are in the QRS band (5-15 Hz); one read-only copy per rate, shared by every stream."""
    f = np.fft.rfftfreq(sec, 1.0 / fs)
    kk = np.flatnonzero((f >= 5.0) & (f <= hi))
    ang = (2.0 * np.pi / sec) * (np.outer(np.arange(sec), kk) % sec)
    dft = np.ascontiguousarray(np.concatenate([np.cos(ang), np.sin(ang)], axis=1))
    qmask = np.tile((f[kk] >= 5.0) & (f[kk] <= 15.0), 2).astype(np.float64)
    dft.setflags(write=False)
    qmask.setflags(write=False)
    return dft, qmask


@numba.njit(cache=True, nogil=True)
def _energy_kernel(
    x: np.ndarray,
    hist: np.ndarray,
    csum: np.ndarray,
    b: np.ndarray,
    a: np.ndarray,
    zi_unit: np.ndarray,
    zi: np.ndarray,
    st: np.ndarray,
    fst: np.ndarray,
    par: np.ndarray,
    out: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """One :meth:`EnergyQrsDetector.process` call on the chunk ``x`` (NaN = missing, held): band-pass
    into history row 0 and square into row 1 from column ``st[_E_LEN]``, update the mean energy, then
    the two moving averages, the blocks of interest and their beats (written to ``out``; returns how
    many). ``st``/``fst``: the detector's integer and float state (see ``EnergyQrsDetector.reset``)."""
    n = x.size
    h1, h2, w1q, max_block, refractory, delay = par[0], par[1], par[2], par[3], par[4], par[5]
    hf = hist[0]
    hz = hist[1]
    w0 = st[_E_LEN]
    if st[_E_ZI_SET] == 0:  # the first sample's steady state
        v = x[0] if x[0] == x[0] else fst[0]
        for i in range(zi.size):
            zi[i] = zi_unit[i] * v
        st[_E_ZI_SET] = 1
    last_x = _filter_held(x, b, a, zi, hf, w0, fst[0])  # missing samples hold the last value
    for k in range(w0, w0 + n):
        hz[k] = hf[k] * hf[k]
    fst[0] = last_x
    e = pairwise_sum(hz, w0, n) / n
    if st[_E_HAS_ENERGY] == 0:
        fst[1] = e
        st[_E_HAS_ENERGY] = 1
    else:
        fst[1] += (1.0 - math.exp(-n / fst[2])) * (e - fst[1])
    w1 = w0 + n
    st[_E_LEN] = w1
    st[_E_N] += n
    stop = st[_E_N] - h2  # averages need h2 samples of look-ahead
    done = st[_E_DONE]
    if stop <= done:
        return 0
    off = st[_E_OFF]
    a0 = done - h2 - off
    m = stop - done
    csum[0] = 0.0
    acc = 0.0
    for i in range(m + 2 * h2):
        acc += hz[a0 + i]
        csum[i + 1] = acc
    thr = fst[3] * fst[1]
    d1 = float(2 * h1 + 1)
    d2 = float(2 * h2 + 1)
    inside = st[_E_HAS_OPEN] != 0
    s = st[_E_OPEN]
    last = st[_E_LAST]
    cnt = 0
    for i in range(m):
        ma1 = (csum[h2 + h1 + 1 + i] - csum[h2 - h1 + i]) / d1
        ma2 = (csum[2 * h2 + 1 + i] - csum[i]) / d2 + thr
        blk = ma1 > ma2
        if blk and not inside:
            s = done + i
        elif inside and not blk:  # a block [s, t): a beat at its largest deflection
            t = done + i
            if w1q <= t - s <= max_block:
                lo = max(s - off, 0)
                hi = t - off
                if hi > lo:
                    best = lo
                    vb = abs(hf[lo])
                    for j in range(lo + 1, hi):
                        vj = abs(hf[j])
                        if vj > vb:
                            vb = vj
                            best = j
                    r = s + (best - lo) - delay
                    if r - last >= refractory:
                        out[cnt] = r
                        cnt += 1
                        last = r
        inside = blk
    if inside and stop - s > max_block:
        inside = False  # a block this long is noise, not a QRS
    st[_E_HAS_OPEN] = 1 if inside else 0
    st[_E_OPEN] = s if inside else 0
    st[_E_LAST] = last
    st[_E_DONE] = stop
    return cnt


@numba.njit(cache=True, nogil=True)
def _quality_kernel(
    xt: np.ndarray,
    part: np.ndarray,
    partf: np.ndarray,
    xr: np.ndarray,
    st: np.ndarray,
    last_x: np.ndarray,
    zi: np.ndarray,
    zi_unit: np.ndarray,
    b: np.ndarray,
    a: np.ndarray,
    anchor: np.ndarray,
    ring: np.ndarray,
    ref: np.ndarray,
    dft: np.ndarray,
    qmask: np.ndarray,
    bsqi: np.ndarray,
    cfg: np.ndarray,
    res: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """One :meth:`SignalQuality.process` call on ``xt`` [leads, n] (NaN = missing): band-pass (missing
    samples hold the last value) into the second being filled (``part``/``partf``, ``st[_Q_PLEN]``
    samples so far) and close each second completed: its sums into the ring, its indices, verdicts
    (``bsqi`` [second, lead], NaN = none) and the leads' psqi reference (``ref``), into ``res``
    [second, lead, _F_*]. ``xr``: scratch [leads, sec]."""
    nl, n = xt.shape
    sec = part.shape[1]
    wsec = ring.shape[0]
    nk = dft.shape[1]
    block = int(cfg[_C_BLOCK])
    clip_run = int(cfg[_C_CLIP_RUN])
    fast = int(cfg[_C_FAST])
    pos = 0
    k = 0
    while pos < n:
        plen = st[_Q_PLEN]
        take = min(sec - plen, n - pos)
        init = st[_Q_ZI_SET] == 0 and take > 0
        for li in range(nl):
            z = zi[li]
            seg = xt[li, pos : pos + take]
            if init:  # the first sample's steady state
                v = seg[0] if seg[0] == seg[0] else last_x[li]
                for i in range(z.size):
                    z[i] = zi_unit[i] * v
            part[li, plen : plen + take] = seg
            last_x[li] = _filter_held(seg, b, a, z, partf[li], plen, last_x[li])
        if take > 0:
            st[_Q_ZI_SET] = 1
        pos += take
        st[_Q_PLEN] = plen + take
        if st[_Q_PLEN] < sec:
            break
        st[_Q_PLEN] = 0
        # ---- close the second: missing samples count as the lead's mean (0 where all are missing)
        slot = st[_Q_COUNT] % wsec
        miss = np.zeros(nl)
        for li in range(nl):
            cnt = 0
            for j in range(sec):
                v = part[li, j]
                if v != v:
                    cnt += 1
                    xr[li, j] = 0.0
                else:
                    xr[li, j] = v
            if cnt:
                fill = 0.0 if cnt == sec else pairwise_sum(xr[li], 0, sec) / (sec - cnt)
                for j in range(sec):
                    if part[li, j] != part[li, j]:
                        xr[li, j] = fill
            miss[li] = cnt / sec
        if st[_Q_ANCHOR_SET] == 0:  # raw sums about the first value: a DC offset costs no precision
            for li in range(nl):
                anchor[li] = xr[li, 0]
            st[_Q_ANCHOR_SET] = 1
        row = ring[slot]
        spec = np.dot(partf, dft)  # the DFT of the 5-40 Hz bins (as rfft's, unscaled)
        for li in range(nl):
            s1 = s2 = s3 = s4 = sx = sxx = 0.0
            an = anchor[li]
            for j in range(sec):
                f = partf[li, j]
                f2 = f * f
                s1 += f
                s2 += f2
                s3 += f2 * f
                s4 += f2 * f2
                d = xr[li, j] - an
                sx += d
                sxx += d * d
            pq = 0.0
            pe = 0.0
            for q in range(nk):
                c2 = spec[li, q] * spec[li, q]
                pq += c2 * qmask[q]
                pe += c2
            row[0, li] = s1
            row[1, li] = s2
            row[2, li] = s3
            row[3, li] = s4
            row[4, li] = sx
            row[5, li] = sxx
            row[6, li] = pq
            row[7, li] = pe
            row[8, li] = sec
        st[_Q_COUNT] += 1
        nr = min(st[_Q_COUNT], wsec)
        full = nr >= wsec
        kb = max(1, sec // block)
        blen = block if sec >= block else sec
        for li in range(nl):
            # flat blocks (ptp of 100 ms blocks), and the second's extremes from the same blocks
            hi = -np.inf
            lo = np.inf
            nflat = 0
            for bi in range(kb):
                bmax = -np.inf
                bmin = np.inf
                for j in range(bi * blen, (bi + 1) * blen):
                    v = xr[li, j]
                    if v > bmax:
                        bmax = v
                    if v < bmin:
                        bmin = v
                if bmax - bmin <= cfg[_C_FLAT_RANGE]:
                    nflat += 1
                hi = max(hi, bmax)
                lo = min(lo, bmin)
            fl = nflat / kb
            # clipped: samples in plateaus (runs of >= clip_run) at the second's extremes
            clip = 0.0
            if hi - lo >= cfg[_C_CLIP_MIN_RANGE]:
                top = hi - cfg[_C_CLIP_TOL]
                bot = lo + cfg[_C_CLIP_TOL]
                run = 0
                tot = 0
                for j in range(sec):
                    v = xr[li, j]
                    if v >= top or v <= bot:
                        run += 1
                    else:
                        if run >= clip_run:
                            tot += run
                        run = 0
                if run >= clip_run:
                    tot += run
                clip = tot / sec
            # the window's sums (ring slots in slot order)
            s1 = s2 = s3 = s4 = sx = sxx = pq = pe = nn = 0.0
            for r in range(nr):
                rr = ring[r]
                s1 += rr[0, li]
                s2 += rr[1, li]
                s3 += rr[2, li]
                s4 += rr[3, li]
                sx += rr[4, li]
                sxx += rr[5, li]
                pq += rr[6, li]
                pe += rr[7, li]
                nn += rr[8, li]
            mf = s1 / nn
            m2 = s2 / nn - mf * mf
            m4 = s4 / nn - 4 * mf * s3 / nn + 6 * mf * mf * s2 / nn - 3 * math.pow(mf, 4.0)
            ksqi = m4 / (m2 * m2) if m2 > 1e-12 else 0.0
            psqi = pq / pe if pe > 0 else 0.0
            mx = sx / nn
            var_raw = sxx / nn - mx * mx  # the raw variance over the window
            bassqi = min(max(m2 / var_raw, 0.0), 1.0) if var_raw > 1e-12 else 1.0
            fla = 0.0 if miss[li] >= 1.0 else fl
            # the QRS band share of the last fast_s seconds and of the seconds before them
            if nr > fast:
                rq = 0.0
                rp = 0.0
                for r in range(slot - fast + 1, slot + 1):
                    rr = ring[r % wsec]
                    rq += rr[6, li]
                    rp += rr[7, li]
                oq = pq - rq
                op = pe - rp
                drop = rq < cfg[_C_PSQI_MIN] * rp and rq * op < cfg[_C_PSQI_DROP] * oq * rp
                active = rp / fast >= cfg[_C_RMS_FLOOR]
            else:
                drop = False
                active = row[7, li] >= cfg[_C_RMS_FLOOR]
            ref_p = ref[li]
            low = drop or (ref_p == ref_p and psqi < cfg[_C_PSQI_DROP] * ref_p)
            bs = bsqi[k, li]
            # the verdict (QUALITY_REASONS index, -1 = usable), as SignalQuality._reason
            if miss[li] >= cfg[_C_DROPOUT_MAX]:
                code = 0
            elif fla >= cfg[_C_FLAT_MAX]:
                code = 1
            elif clip >= cfg[_C_CLIPPED_MAX]:
                code = 2
            else:
                spectral_bad = psqi < cfg[_C_PSQI_MIN] or ksqi < cfg[_C_KSQI_MIN]
                if bs == bs and bs < cfg[_C_BSQI_MIN]:
                    code = 3 if spectral_bad else 4
                elif active and (
                    low
                    or psqi < cfg[_C_PSQI_NOISE]
                    or (psqi < cfg[_C_PSQI_MIN] and ksqi < cfg[_C_KSQI_MIN])
                ):
                    code = 3
                elif bassqi < cfg[_C_BASSQI_MIN]:
                    code = 5
                else:
                    code = -1
            if code < 0 and full:
                ref[li] = psqi if ref_p != ref_p else ref_p + (psqi - ref_p) / cfg[_C_REFERENCE_S]
            out = res[k, li]
            out[_F_MISSING] = miss[li]
            out[_F_FLAT] = fla
            out[_F_CLIPPED] = clip
            out[_F_PSQI] = psqi
            out[_F_KSQI] = ksqi
            out[_F_BASSQI] = bassqi
            out[_F_LOW] = 1.0 if low else 0.0
            out[_F_ACTIVE] = 1.0 if active else 0.0
            out[_F_CODE] = code
            out[_F_REF] = ref_p
            out[_F_FULL] = 1.0 if full else 0.0
        k += 1


# ------------------------------------------------------------------------- second QRS detector
class EnergyQrsDetector:
    """Streaming two-moving-average QRS detector (Elgendi 2013), the second opinion of bSQI.

    Band-pass 8-20 Hz, square, then a QRS-wide (97 ms) and a beat-wide (611 ms) centred moving average;
    where the first exceeds the second plus ``beta`` x the mean energy, a block of interest; a block at
    least QRS-wide is a beat, at its largest band-passed deflection. Decided ``latency_samples`` after the
    peak (half the beat window plus the block's end). The band-passed signal and its square are kept in
    preallocated history (compacted every few seconds, never reallocated per call).
    """

    def __init__(
        self,
        fs: float,
        *,
        band_hz: tuple[float, float] = (8.0, 20.0),
        qrs_s: float = 0.097,
        beat_s: float = 0.611,
        beta: float = 0.08,
        refractory_s: float = 0.2,
        energy_tau_s: float = 10.0,
        max_block_s: float = 1.0,
    ) -> None:
        if fs <= 0:
            raise ValueError(f"fs must be positive, got {fs}")
        self.fs = float(fs)
        nyq = self.fs / 2.0
        hi = min(band_hz[1], 0.45 * self.fs)
        lo = min(band_hz[0], 0.5 * hi)
        self._b, self._a = sps.butter(3, [lo / nyq, hi / nyq], btype="bandpass")
        self._zi_unit = sps.lfilter_zi(self._b, self._a)
        _, gd = sps.group_delay((self._b, self._a), w=[(lo + hi) / 2.0], fs=self.fs)
        self._delay = round(float(gd[0]))
        self._h1 = max(1, round(qrs_s * self.fs / 2))
        self._h2 = max(self._h1 + 1, round(beat_s * self.fs / 2))
        self._w1 = 2 * self._h1 + 1
        self._beta = beta
        self._refractory = round(refractory_s * self.fs)
        self._tau = energy_tau_s * self.fs
        self._max_block = round(max_block_s * self.fs)
        self._slack = round(8.0 * self.fs)  # history rows added at a compaction
        self._par = np.array(
            [self._h1, self._h2, self._w1, self._max_block, self._refractory, self._delay],
            dtype=np.int64,
        )
        self.reset()

    @property
    def latency_samples(self) -> int:
        """Nominal delay between a peak and its report."""
        return self._h2 + self._h1 + self._delay

    def reset(self, start_sample: int = 0) -> None:
        """Forget all state; the next sample fed is absolute index ``start_sample``."""
        n = int(start_sample)
        # history of the band-passed signal (row 0) and its square (row 1); column 0 is absolute sample
        # ``off``; the first h2 columns are zeros before the start
        self._cap = 2 * self._h2 + self._max_block + self._slack
        self._hist = np.zeros((2, self._cap))
        self._csum = np.empty(self._cap + 1)  # the averages' cumulative sums (scratch)
        self._zi = np.zeros(self._b.size - 1)  # filter state (set from the first sample)
        # integer state (_E_*): filter state set, energy set, next absolute index whose averages are not
        # evaluated yet (done), history offset, block of interest open at done and its start, last beat,
        # next absolute sample, history columns used
        st = np.zeros(_E_SIZE, dtype=np.int64)
        st[_E_DONE] = n
        st[_E_OFF] = n - self._h2
        st[_E_LAST] = -(10**12)
        st[_E_N] = n
        st[_E_LEN] = self._h2
        self._st = st
        # float state: last finite sample, mean energy, its time constant (samples), beta
        self._fst = np.array([0.0, 0.0, self._tau, self._beta])

    def _reserve(self, n: int) -> None:
        """Room for ``n`` more history columns: drop the ones no later call reads (averages, open block)."""
        st = self._st
        length = int(st[_E_LEN])
        if length + n <= self._cap:
            return
        keep_from = int(st[_E_DONE]) - self._h2
        if st[_E_HAS_OPEN]:
            keep_from = min(keep_from, int(st[_E_OPEN]))
        drop = max(0, min(keep_from - int(st[_E_OFF]), length))
        keep = length - drop
        if keep + n > self._cap:
            self._cap = keep + n + self._slack
            hist = np.zeros((2, self._cap))
            hist[:, :keep] = self._hist[:, drop:length]
            self._hist = hist
            self._csum = np.empty(self._cap + 1)
        else:
            self._hist[:, :keep] = self._hist[:, drop:length].copy()
        st[_E_LEN] = keep
        st[_E_OFF] += drop

    def process(
        self, chunk: np.ndarray, start_sample: int | None = None, *, finite: bool = False
    ) -> np.ndarray:
        """Feed the next samples; returns the absolute beat indices decided in this call (``finite``:
        the caller has checked that ``chunk`` holds no NaN)."""
        x = np.asarray(chunk, dtype=np.float64).reshape(-1)
        st = self._st
        now = int(st[_E_N])
        if start_sample is not None and start_sample != now:
            if start_sample > now:
                x = np.concatenate([np.full(start_sample - now, np.nan), x])
            else:
                x = x[now - start_sample :]
        n = x.size
        if n == 0:
            return _NO_BEATS
        self._reserve(n)
        m = now + n - self._h2 - int(st[_E_DONE])  # samples whose averages this call evaluates
        out = np.empty(max(m, 0) // self._w1 + 2, dtype=np.int64)  # blocks >= w1 long
        k = _energy_kernel(
            x,
            self._hist,
            self._csum,
            self._b,
            self._a,
            self._zi_unit,
            self._zi,
            st,
            self._fst,
            self._par,
            out,
        )
        return out[:k] if k else _NO_BEATS


# ---------------------------------------------------------------------------- per-stream quality


@dataclass
class _Beats:
    """Recent beats of one candidate lead from both detectors (absolute samples)."""

    main: deque[int] = field(default_factory=lambda: deque(maxlen=256))
    other: deque[int] = field(default_factory=lambda: deque(maxlen=256))


class SignalQuality:
    """Per-stream signal quality: one :class:`LeadQuality` per lead per completed second.

    ``qrs_leads`` are the lead indices that get a bSQI (the QRS candidate leads). Their primary beats come
    from the caller (``peaks`` of :meth:`process`: the stream's :class:`QrsDetector` output) or, when the
    caller passes none, from a :class:`QrsDetector` run here. Seconds are counted from absolute sample 0
    of the stream; ``t0`` is its time.

    ``lazy_leads`` (a subset of ``qrs_leads``) get their bSQI only while awake (:meth:`wake`,
    :meth:`sleep`; they start asleep): asleep, their second detector does not run, their raw samples
    are kept ``history_s`` back, and their entries have no bSQI (judged as a lead without a detector).
    :meth:`wake` replays that history through the detectors and re-scores the lead's seconds of the
    last :meth:`process` call with its bSQI, so a caller can wake a lead on what a second shows.
    """

    def __init__(
        self,
        stream_id: str,
        fs: float,
        leads: Sequence[str],
        t0: float = 0.0,
        config: QualityConfig | None = None,
        qrs_leads: Sequence[int] = (),
        own_detectors: bool = False,
        lazy_leads: Sequence[int] = (),
        history_s: float = 20.0,
    ) -> None:
        if fs <= 0:
            raise ValueError(f"fs must be positive, got {fs}")
        self.stream_id = stream_id
        self.fs = float(fs)
        self.leads = tuple(leads)
        self.t0 = float(t0)
        self.config = cfg = config or QualityConfig()
        self.qrs_leads = tuple(qrs_leads)
        self.lazy_leads = tuple(li for li in lazy_leads if li in self.qrs_leads)
        nl = len(self.leads)
        self._sec = max(1, round(self.fs))
        self._wsec = max(1, round(cfg.window_s))
        self._fast = max(1, min(round(cfg.fast_s), self._wsec - 1))
        # the one-sided 1 s periodogram (rfft, unscaled) of a band signal of RMS r sums to about n² r² / 2
        self._rms_floor = self._sec * self._sec * cfg.noise_rms_mv**2 / 2.0
        nyq = self.fs / 2.0
        lo, hi = cfg.band_hz[0], min(cfg.band_hz[1], 0.45 * self.fs)
        self._b, self._a = sps.butter(2, [lo / nyq, hi / nyq], btype="bandpass")
        self._zi_unit = sps.lfilter_zi(self._b, self._a)
        # periodogram of the 5-40 Hz bins from their DFT rows (cos, sin): [sec, 2 bins], and which of
        # them are in the QRS band (5-15 Hz; the ECG band is all of them)
        self._dft, self._qmask = _dft_rows(self._sec, self.fs, hi)
        self._block = max(1, round(cfg.flat_block_s * self.fs))
        self._clip_run = max(3, round(cfg.clip_run_s * self.fs))
        self._tol = round(cfg.match_s * self.fs)
        cf = np.zeros(_C_SIZE)
        cf[_C_BLOCK], cf[_C_CLIP_RUN], cf[_C_FAST] = self._block, self._clip_run, self._fast
        cf[_C_FLAT_RANGE], cf[_C_CLIP_MIN_RANGE] = cfg.flat_range_mv, cfg.clip_min_range_mv
        cf[_C_CLIP_TOL], cf[_C_RMS_FLOOR] = cfg.clip_tol_mv, self._rms_floor
        cf[_C_PSQI_MIN], cf[_C_PSQI_DROP] = cfg.psqi_min, cfg.psqi_drop
        cf[_C_PSQI_NOISE], cf[_C_KSQI_MIN] = cfg.psqi_noise, cfg.ksqi_min
        cf[_C_BSQI_MIN], cf[_C_BASSQI_MIN] = cfg.bsqi_min, cfg.bassqi_min
        cf[_C_DROPOUT_MAX], cf[_C_FLAT_MAX] = cfg.dropout_max, cfg.flat_max
        cf[_C_CLIPPED_MAX], cf[_C_REFERENCE_S] = cfg.clipped_max, cfg.reference_s
        self._cfg = cf
        self._energy = {li: EnergyQrsDetector(self.fs) for li in self.qrs_leads}
        self._own = {li: QrsDetector(self.fs) for li in self.qrs_leads} if own_detectors else {}
        lat = [d.latency_samples for d in self._energy.values()]
        lat += [QrsDetector(self.fs).latency_samples] if self.qrs_leads else []
        self._lag = max(lat, default=0) + self._tol
        self._beats = {li: _Beats() for li in self.qrs_leads}
        self._nl = nl
        self._hlen = max(self._sec, round(history_s * self.fs))
        self._hist = np.zeros(
            (len(self.lazy_leads), self._hlen)
        )  # ring of the lazy leads' raw samples
        self._xr = np.empty((nl, self._sec))  # the kernel's scratch: a second's raw samples, filled
        self._res1 = np.empty((1, nl, _F_SIZE))  # its per-second results (one second)
        self._nan1 = np.full((1, nl), np.nan)  # no bSQI (one second)
        self._seconds = self._sec / self.fs
        self.reset(0)

    def reset(self, start_sample: int) -> None:
        """Forget the window (after a long outage); counting resumes at ``start_sample``."""
        nl = self._nl
        self._n = int(start_sample)
        # integer state (_Q_*): samples of the second being filled, seconds completed, filter state set,
        # anchor set
        self._st = np.zeros(_Q_SIZE, dtype=np.int64)
        self._zi = np.zeros((nl, self._b.size - 1))
        self._part = np.zeros(
            (nl, self._sec)
        )  # raw samples of the second being filled (NaN: missing)
        self._partf = np.zeros((nl, self._sec))  # their band-passed values
        # per completed second and lead: Σf, Σf², Σf³, Σf⁴, Σd, Σd², P(5-15), P(5-40), n (f: 1-40 Hz
        # band-passed; d: raw minus the lead's first value after the reset)
        self._ring = np.zeros((self._wsec, _ROWS, nl))
        self._anchor = np.zeros(nl)
        self._ref = np.full(nl, np.nan)  # per lead, running psqi of its usable seconds
        self._last_x = np.zeros(nl)
        self._hist_from = self._n  # first absolute sample of the lazy leads' history
        # last call's seconds: (end, start time, per lead [_F_*] results)
        self._scored: list[tuple[int, float, list[list[float]]]] = []
        self._awake = {li: li not in self.lazy_leads for li in self.qrs_leads}
        for li in self.qrs_leads:
            self._beats[li] = _Beats()
            self._energy[li].reset(start_sample)
            if li in self._own:
                self._own[li].reset(start_sample)

    def awake(self, li: int) -> bool:
        """Whether QRS candidate lead ``li`` gets a bSQI now."""
        return self._awake.get(li, False)

    def history(self, li: int) -> tuple[np.ndarray, int]:
        """Raw samples (NaN = missing) of lazy lead ``li`` kept up to the last one fed, and the absolute
        index of the first."""
        k = self.lazy_leads.index(li)
        h0 = max(self._hist_from, self._n - self._hlen)
        a, b = h0 % self._hlen, self._n % self._hlen
        row = self._hist[k]
        if self._n - h0 == self._hlen:
            seg = np.concatenate([row[a:], row[:a]]) if a else row.copy()
        elif a <= b:
            seg = row[a:b].copy()
        else:
            seg = np.concatenate([row[a:], row[:b]])
        return seg, h0

    def wake(
        self, li: int, peaks: Sequence[int] | np.ndarray | None = None, chunk: int | None = None
    ) -> list[LeadQuality]:
        """Start the bSQI of lazy lead ``li``: its second detector replays :meth:`history` (in chunks of
        ``chunk`` samples, default 1 s), ``peaks`` are the stream detector's beats over that history (run
        here from the history when this object owns the detectors). Returns the lead's entries of the
        last :meth:`process` call, re-scored with its bSQI (replace the ones it returned)."""
        if self._awake.get(li, True):
            return []
        hist, h0 = self.history(li)
        step = max(1, int(chunk or self._sec))
        det = self._energy[li]
        det.reset(h0)
        bt = self._beats[li] = _Beats()
        own = self._own.get(li)
        if own is not None:
            own.reset(h0)
        for s in range(0, hist.size, step):
            bt.other.extend(det.process(hist[s : s + step], h0 + s).tolist())
            if own is not None:
                bt.main.extend(own.process(hist[s : s + step], h0 + s).tolist())
        if own is None and peaks is not None:
            bt.main.extend(int(p) for p in peaks)
        self._awake[li] = True
        out = []
        for end, start_t, rows in self._scored:
            vals = rows[li]
            ref_p = vals[_F_REF]
            self._ref[li] = ref_p
            out.append(self._score(li, end, start_t, vals, ref_p))
        return out

    def sleep(self, li: int) -> None:
        """Stop the bSQI of lazy lead ``li`` (its history keeps being recorded)."""
        if li in self.lazy_leads:
            self._awake[li] = False
            self._beats[li] = _Beats()

    def process(
        self,
        x: np.ndarray,
        start_sample: int | None = None,
        peaks: Mapping[int, Sequence[int] | np.ndarray] | None = None,
    ) -> list[LeadQuality]:
        """Feed the next samples ``x`` [n, leads] (raw or filtered; NaN = missing) from absolute index
        ``start_sample``; returns a :class:`LeadQuality` per lead per second completed in this call.

        ``peaks``: the stream detector's R peaks decided in this call, per QRS candidate lead index.
        A jump forward longer than the window restarts the quality state; a shorter one is missing data.
        """
        xt = np.asarray(x, dtype=np.float64)
        if xt.ndim == 1:
            xt = xt[:, None]
        xt = np.ascontiguousarray(xt.T)  # [leads, n]: every per-lead operation on contiguous rows
        if start_sample is not None and start_sample != self._n:
            if start_sample > self._n + self._wsec * self._sec or start_sample < self._n:
                self.reset(start_sample)
            else:
                gap = np.full((self._nl, start_sample - self._n), np.nan)
                xt = np.concatenate([gap, xt], axis=1)
        n = xt.shape[1]
        self._scored = []
        if n == 0:
            return []
        start = self._n
        for li in self.qrs_leads:
            if not self._awake[li]:
                continue
            bt = self._beats[li]
            col = xt[li]
            beats = self._energy[li].process(col, start)
            if beats.size:
                bt.other.extend(beats.tolist())
            if li in self._own:
                bt.main.extend(self._own[li].process(col, start).tolist())
            elif peaks is not None and li in peaks:
                bt.main.extend(int(p) for p in peaks[li])
        if self.lazy_leads:
            self._record(xt, start)
        sec = self._sec
        plen = int(self._st[_Q_PLEN])
        k = (plen + n) // sec  # seconds completed in this call
        first = start - plen + sec  # the first one's end
        res = self._res1 if k == 1 else np.empty((k, self._nl, _F_SIZE))
        if not k:
            bsqi = self._nan1
        elif any(self._awake.values()):
            bsqi = np.full((k, self._nl), np.nan)
            for li, on in self._awake.items():
                if on:
                    for j in range(k):
                        bsqi[j, li] = self._bsqi(li, first + j * sec)
        else:
            bsqi = self._nan1 if k == 1 else np.full((k, self._nl), np.nan)
        _quality_kernel(
            xt,
            self._part,
            self._partf,
            self._xr,
            self._st,
            self._last_x,
            self._zi,
            self._zi_unit,
            self._b,
            self._a,
            self._anchor,
            self._ring,
            self._ref,
            self._dft,
            self._qmask,
            bsqi,
            self._cfg,
            res,
        )
        self._n += n
        if not k:
            return []
        out: list[LeadQuality] = []
        sid, leads, seconds = self.stream_id, self.leads, self._seconds
        scored = self._scored
        bl = bsqi.tolist()
        for j, rows in enumerate(res.tolist()):
            end = first + j * sec
            start_t = self.t0 + (end - sec) / self.fs
            scored.append((end, start_t, rows))
            bj = bl[j]
            for li, v in enumerate(rows):
                b = bj[li]
                code = int(v[_F_CODE])
                reason = None if code < 0 else QUALITY_REASONS[code]
                out.append(
                    LeadQuality(
                        sid,
                        leads[li],
                        start_t,
                        seconds,
                        None if b != b else b,
                        v[_F_KSQI],
                        v[_F_PSQI],
                        v[_F_BASSQI],
                        v[_F_FLAT],
                        v[_F_CLIPPED],
                        reason is None,
                        reason,
                    )
                )
        return out

    def _record(self, xt: np.ndarray, start: int) -> None:
        """Keep the lazy leads' raw samples of this call in the history ring."""
        n, hl = xt.shape[1], self._hlen
        if n > hl:
            xt, start, n = xt[:, n - hl :], start + n - hl, hl
        a = start % hl
        b = min(hl, a + n)
        for k, li in enumerate(self.lazy_leads):
            row = self._hist[k]
            row[a:b] = xt[li, : b - a]
            if b - a < n:
                row[: n - (b - a)] = xt[li, b - a :]

    def _score(
        self, li: int, end: int, start_t: float, vals: list[float], ref_p: float
    ) -> LeadQuality:
        """Verdict of lead ``li`` for the second ending at ``end`` from its indices ``vals`` (the
        kernel's ``_F_*`` results) with its bSQI now; updates the lead's psqi reference (as the kernel)."""
        psqi, ksqi, bassqi = vals[_F_PSQI], vals[_F_KSQI], vals[_F_BASSQI]
        fla, clip = vals[_F_FLAT], vals[_F_CLIPPED]
        bsqi = self._bsqi(li, end) if self._awake.get(li, False) else None
        reason = self._reason(
            vals[_F_MISSING],
            fla,
            clip,
            bsqi,
            psqi,
            ksqi,
            bassqi,
            bool(vals[_F_LOW]),
            bool(vals[_F_ACTIVE]),
        )
        if reason is None and vals[_F_FULL]:
            cfg = self.config
            self._ref[li] = psqi if ref_p != ref_p else ref_p + (psqi - ref_p) / cfg.reference_s
        return LeadQuality(
            self.stream_id,
            self.leads[li],
            start_t,
            self._seconds,
            bsqi,
            ksqi,
            psqi,
            bassqi,
            fla,
            clip,
            reason is None,
            reason,
        )

    def _bsqi(self, li: int, end: int) -> float:
        bt = self._beats[li]
        hi = end - self._lag
        lo = hi - self._wsec * self._sec
        main, other = bt.main, bt.other
        while main and main[0] < lo:
            main.popleft()
        while other and other[0] < lo:
            other.popleft()
        return _f1([p for p in main if p < hi], [p for p in other if p < hi], self._tol)

    def _reason(
        self,
        missing: float,
        flat: float,
        clipped: float,
        bsqi: float | None,
        psqi: float,
        ksqi: float,
        bassqi: float,
        drop: bool = False,
        active: bool = True,
    ) -> str | None:
        cfg = self.config
        if missing >= cfg.dropout_max:
            return "dropout"
        if flat >= cfg.flat_max:
            return "flat"
        if clipped >= cfg.clipped_max:
            return "clipped"
        spectral_bad = psqi < cfg.psqi_min or ksqi < cfg.ksqi_min
        if bsqi is not None and bsqi < cfg.bsqi_min:
            return "noise" if spectral_bad else "no_agreement"
        if active and (
            drop or psqi < cfg.psqi_noise or (psqi < cfg.psqi_min and ksqi < cfg.ksqi_min)
        ):
            return "noise"
        if bassqi < cfg.bassqi_min:
            return "baseline"
        return None
