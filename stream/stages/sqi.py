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
from typing import Any

import numpy as np
from scipy import signal as sps

from stream.stages.qrs import QrsDetector, lfilter_state

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
        self.reset()

    @property
    def latency_samples(self) -> int:
        """Nominal delay between a peak and its report."""
        return self._h2 + self._h1 + self._delay

    def reset(self, start_sample: int = 0) -> None:
        """Forget all state; the next sample fed is absolute index ``start_sample``."""
        self._zi: np.ndarray | None = None
        self._n = int(start_sample)
        # history of the band-passed signal (row 0) and its square (row 1); column 0 is absolute sample
        # ``_off``; the first h2 columns are zeros before the start
        self._cap = 2 * self._h2 + self._max_block + self._slack
        self._hist = np.zeros((2, self._cap))
        self._len = self._h2
        self._off = self._n - self._h2
        self._done = self._n  # next absolute index whose averages are not evaluated yet
        self._open: int | None = None  # start of the block of interest open at ``_done``
        self._energy: float | None = None
        self._last = -(10**12)
        self._last_x = 0.0

    def _reserve(self, n: int) -> None:
        """Room for ``n`` more history columns: drop the ones no later call reads (averages, open block)."""
        if self._len + n <= self._cap:
            return
        keep_from = self._done - self._h2
        if self._open is not None:
            keep_from = min(keep_from, self._open)
        drop = max(0, min(keep_from - self._off, self._len))
        keep = self._len - drop
        if keep + n > self._cap:
            self._cap = keep + n + self._slack
            hist = np.zeros((2, self._cap))
            hist[:, :keep] = self._hist[:, drop : self._len]
            self._hist = hist
        else:
            self._hist[:, :keep] = self._hist[:, drop : self._len].copy()
        self._len = keep
        self._off += drop

    def process(
        self, chunk: np.ndarray, start_sample: int | None = None, *, finite: bool = False
    ) -> np.ndarray:
        """Feed the next samples; returns the absolute beat indices decided in this call (``finite``:
        the caller has checked that ``chunk`` holds no NaN)."""
        x = np.asarray(chunk, dtype=np.float64).reshape(-1)
        if start_sample is not None and start_sample != self._n:
            finite = False
            if start_sample > self._n:
                x = np.concatenate([np.full(start_sample - self._n, np.nan), x])
            else:
                x = x[self._n - start_sample :]
        n = x.size
        if n == 0:
            return _NO_BEATS
        if not finite and np.isnan(x).any():
            nan = np.isnan(x)
            idx = np.where(~nan, np.arange(n), -1)
            np.maximum.accumulate(idx, out=idx)
            x = np.where(idx >= 0, x[np.maximum(idx, 0)], self._last_x)
        self._last_x = float(x[-1])
        if self._zi is None:
            self._zi = self._zi_unit * x[0]
        self._reserve(n)
        w0, w1 = self._len, self._len + n
        hf, hz = self._hist
        hf[w0:w1], self._zi = lfilter_state(self._b, self._a, x, self._zi)
        z = hz[w0:w1]
        np.multiply(hf[w0:w1], hf[w0:w1], out=z)
        e = float(z.sum()) / n
        if self._energy is None:
            self._energy = e
        else:
            self._energy += (1.0 - math.exp(-n / self._tau)) * (e - self._energy)
        self._len = w1
        self._n += n
        stop = self._n - self._h2  # averages need h2 samples of look-ahead
        if stop <= self._done:
            return _NO_BEATS
        h1, h2 = self._h1, self._h2
        done = self._done
        a0 = done - h2 - self._off  # first history column the averages read (>= 0)
        m = stop - done
        c = np.empty(m + 2 * h2 + 1)
        c[0] = 0.0
        np.cumsum(hz[a0:w1], out=c[1:])
        ma1 = c[h2 + h1 + 1 : h2 + h1 + 1 + m] - c[h2 - h1 : h2 - h1 + m]
        ma1 /= 2 * h1 + 1
        ma2 = c[2 * h2 + 1 : 2 * h2 + 1 + m] - c[:m]
        ma2 /= 2 * h2 + 1
        ma2 += self._beta * self._energy
        blk = ma1 > ma2
        out: list[int] = []
        # block starts and ends (absolute), the open block carried over from the last call; the edges
        # alternate, the first one rising when the first sample is outside a block
        b0 = bool(blk[0])
        edges = np.flatnonzero(blk[1:] != blk[:-1])
        if edges.size or b0 or self._open is not None:
            el = (edges + (1 + done)).tolist()
            starts, ends = (el[1::2], el[0::2]) if b0 else (el[0::2], el[1::2])
            if b0:
                starts.insert(0, done if self._open is None else self._open)
            elif self._open is not None:
                ends.insert(0, done)
                starts.insert(0, self._open)
            for s, t in zip(starts, ends, strict=False):
                self._block(s, t, out)
            self._open = starts[-1] if len(starts) > len(ends) else None
            if self._open is not None and stop - self._open > self._max_block:
                self._open = None  # a block this long is noise, not a QRS
        self._done = stop
        return np.asarray(out, dtype=np.int64) if out else _NO_BEATS

    def _block(self, s: int, t: int, out: list[int]) -> None:
        if t - s < self._w1 or t - s > self._max_block:
            return
        seg = self._hist[0, max(s - self._off, 0) : t - self._off]
        if seg.size == 0:
            return
        r = s + int(np.argmax(np.abs(seg))) - self._delay
        if r - self._last >= self._refractory:
            out.append(r)
            self._last = r


# ---------------------------------------------------------------------------- per-stream quality
_ROWS = 9  # per-second sums kept per lead (see SignalQuality.reset)


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
        # periodogram of the 5-40 Hz bins by one product with their DFT rows (cos, sin): [sec, 2 bins],
        # and the sums of the QRS band (5-15 Hz) and the ECG band (5-40 Hz) bins: [2 bins, 2]
        f = np.fft.rfftfreq(self._sec, 1.0 / self.fs)
        kk = np.flatnonzero((f >= 5.0) & (f <= hi))
        ang = (2.0 * np.pi / self._sec) * (np.outer(np.arange(self._sec), kk) % self._sec)
        self._dft = np.concatenate([np.cos(ang), np.sin(ang)], axis=1)
        qrs = np.tile((f[kk] >= 5.0) & (f[kk] <= 15.0), 2)
        self._bands = np.stack([qrs, np.ones_like(qrs)], axis=1).astype(np.float64)
        self._ones = np.ones(self._sec)
        self._block = max(1, round(cfg.flat_block_s * self.fs))
        self._clip_run = max(3, round(cfg.clip_run_s * self.fs))
        self._tol = round(cfg.match_s * self.fs)
        self._m = np.empty((6, nl, self._sec))  # per-second moment terms (see _second)
        # per ring slot, the slots of the last fast_s seconds ending with it
        self._recent_rows = [
            np.arange(s - self._fast + 1, s + 1) % self._wsec for s in range(self._wsec)
        ]
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
        self.reset(0)

    def reset(self, start_sample: int) -> None:
        """Forget the window (after a long outage); counting resumes at ``start_sample``."""
        nl = self._nl
        self._n = int(start_sample)
        self._zi: np.ndarray | None = None
        self._part = np.zeros((nl, 0))  # raw samples of the second being filled (NaN = missing)
        self._partf = np.zeros((nl, 0))  # their band-passed values
        # per completed second and lead: Σf, Σf², Σf³, Σf⁴, Σd, Σd², P(5-15), P(5-40), n (f: 1-40 Hz
        # band-passed; d: raw minus the lead's first value after the reset)
        self._ring = np.zeros((self._wsec, _ROWS, nl))
        self._anchor: np.ndarray | None = None
        self._count = 0
        self._ref = [float("nan")] * nl  # per lead, running psqi of its usable seconds
        self._last_x = np.zeros(nl)
        self._hist_from = self._n  # first absolute sample of the lazy leads' history
        self._scored: list[tuple[int, float, list[tuple[Any, ...]]]] = []  # last call's seconds
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
            args, ref_p, full = rows[li]
            self._ref[li] = ref_p
            out.append(self._score(li, end, start_t, args, ref_p, full))
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
        nan = np.isnan(xt)
        any_nan = bool(nan.any())
        for li in self.qrs_leads:
            if not self._awake[li]:
                continue
            bt = self._beats[li]
            col = xt[li]
            bt.other.extend(self._energy[li].process(col, start, finite=not any_nan).tolist())
            if li in self._own:
                bt.main.extend(self._own[li].process(col, start).tolist())
            elif peaks is not None and li in peaks:
                bt.main.extend(int(p) for p in peaks[li])
        if self.lazy_leads:
            self._record(xt, start)
        xf = xt
        if any_nan:  # hold the last finite value (the filter and the moments stay finite)
            idx = np.where(~nan, np.arange(n)[None, :], -1)
            np.maximum.accumulate(idx, axis=1, out=idx)
            held = np.take_along_axis(xt, np.maximum(idx, 0), axis=1)
            xf = np.where(idx >= 0, held, self._last_x[:, None])
        self._last_x = xf[:, -1].copy()
        if self._zi is None:
            self._zi = xf[:, :1] * self._zi_unit[None, :]
        filt, self._zi = lfilter_state(self._b, self._a, xf, self._zi, 1)
        self._n += n
        if self._part.shape[1]:
            xt = np.concatenate([self._part, xt], axis=1)
            filt = np.concatenate([self._partf, filt], axis=1)
            any_nan = any_nan or bool(np.isnan(self._part).any())
        out: list[LeadQuality] = []
        sec = self._sec
        k = xt.shape[1] // sec
        base = self._n - xt.shape[1]
        for j in range(k):
            a, b = j * sec, (j + 1) * sec
            out += self._second(xt[:, a:b], filt[:, a:b], base + b, any_nan)
        self._part = xt[:, k * sec :]
        self._partf = filt[:, k * sec :]
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

    def _second(
        self, raw: np.ndarray, filt: np.ndarray, end: int, any_nan: bool
    ) -> list[LeadQuality]:
        """Close the second ending at absolute sample ``end``: update the ring, score every lead."""
        cfg = self.config
        nl, n = raw.shape
        if any_nan and np.isnan(raw).any():
            # missing samples count as the lead's mean (0 where all are missing)
            nan = np.isnan(raw)
            ms = nan.mean(axis=1).tolist()
            fill = np.nanmean(np.where(nan.all(axis=1, keepdims=True), 0.0, raw), axis=1)
            xr = np.where(nan, fill[:, None], raw)
        else:
            xr = raw
            ms = [0.0] * nl
        if self._anchor is None:  # raw sums about the first value: a DC offset costs no precision
            self._anchor = xr[:, :1].copy()
        m = self._m
        m[0] = filt
        np.multiply(filt, filt, out=m[1])
        np.multiply(m[1], filt, out=m[2])
        np.multiply(m[1], m[1], out=m[3])
        np.subtract(xr, self._anchor, out=m[4])
        np.multiply(m[4], m[4], out=m[5])
        c = filt @ self._dft  # the DFT of the 5-40 Hz bins (as rfft's, unscaled)
        c *= c
        slot = self._count % self._wsec
        row = self._ring[slot]
        row[:6] = (m.reshape(6 * nl, n) @ self._ones).reshape(6, nl)
        row[6:8] = (c @ self._bands).T
        row[8] = n
        # flat blocks (ptp of 100 ms blocks), and the second's extremes from the same block extremes
        bl = self._block
        kb = max(1, n // bl)
        blocks = xr[:, : kb * bl].reshape(nl, kb, -1)
        bmax, bmin = blocks.max(axis=2), blocks.min(axis=2)
        hi, lo = bmax.max(axis=1).tolist(), bmin.min(axis=1).tolist()
        bmax -= bmin
        fl = ((bmax <= cfg.flat_range_mv).sum(axis=1) / kb).tolist()
        self._count += 1
        nr = min(self._count, self._wsec)
        ws = self._ring[:nr].sum(axis=0).T.tolist()  # per lead: the window's sums
        cl = _plateaus(xr, hi, lo, cfg.clip_tol_mv, self._clip_run, cfg.clip_min_range_mv)
        # the QRS band share of the last fast_s seconds and of the seconds before them
        fast = self._fast
        recent = (
            self._ring[self._recent_rows[slot], 6:8].sum(axis=0).T.tolist() if nr > fast else None
        )
        now_pe = row[7].tolist()
        start_t = self.t0 + (end - n) / self.fs
        full = nr >= self._wsec
        psqi_min, psqi_drop = cfg.psqi_min, cfg.psqi_drop
        out = []
        rows: list[tuple[Any, ...]] = []
        for li in range(nl):
            s1, s2, s3, s4, sx, sxx, pq, pe, nn = ws[li]
            mf = s1 / nn
            m2 = s2 / nn - mf * mf
            m4 = s4 / nn - 4 * mf * s3 / nn + 6 * mf * mf * s2 / nn - 3 * mf**4
            ksqi = m4 / (m2 * m2) if m2 > 1e-12 else 0.0
            psqi = pq / pe if pe > 0 else 0.0
            mx = sx / nn
            var_raw = sxx / nn - mx * mx  # the raw variance over the window
            bassqi = min(max(m2 / var_raw, 0.0), 1.0) if var_raw > 1e-12 else 1.0
            fla = 0.0 if ms[li] >= 1.0 else fl[li]
            if recent is not None:
                rq, rp = recent[li]
                oq, op = pq - rq, pe - rp
                drop = rq < psqi_min * rp and rq * op < psqi_drop * oq * rp
                active = rp / fast >= self._rms_floor
            else:
                drop = False
                active = now_pe[li] >= self._rms_floor
            ref_p = self._ref[li]
            low = drop or (ref_p == ref_p and psqi < psqi_drop * ref_p)
            args = (n, ms[li], fla, cl[li], psqi, ksqi, bassqi, low, active)
            rows.append((args, ref_p, full))
            out.append(self._score(li, end, start_t, args, ref_p, full))
        self._scored.append((end, start_t, rows))
        return out

    def _score(
        self, li: int, end: int, start_t: float, args: tuple[Any, ...], ref_p: float, full: bool
    ) -> LeadQuality:
        """Verdict of lead ``li`` for the second ending at ``end`` from its indices ``args``; updates
        the lead's psqi reference."""
        n, missing, fla, clip, psqi, ksqi, bassqi, low, active = args
        bsqi = self._bsqi(li, end) if self._awake.get(li, False) else None
        reason = self._reason(missing, fla, clip, bsqi, psqi, ksqi, bassqi, low, active)
        if reason is None and full:
            cfg = self.config
            self._ref[li] = psqi if ref_p != ref_p else ref_p + (psqi - ref_p) / cfg.reference_s
        return LeadQuality(
            self.stream_id,
            self.leads[li],
            start_t,
            n / self.fs,
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
