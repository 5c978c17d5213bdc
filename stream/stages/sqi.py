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
- ``clipped``: share of the last second's samples at its extremes while the lead does swing.

``flat``, ``clipped`` and the missing-sample share are taken over the last second so a fault is seen at
once; the other indices need the window. :class:`SignalQuality` keeps, per stream, a ring of per-second
sums (moments and band powers) so a second costs one small ``lfilter`` and one 1 s ``rfft`` per lead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import signal as sps

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
    #: clipped: samples within ``clip_tol`` x the window's range of its max or min, on a lead swinging at
    #: least ``clip_min_range_mv``; a second with at least ``clipped_max`` of them is ``clipped``
    clip_tol: float = 0.005
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
    x: np.ndarray, hi: np.ndarray, lo: np.ndarray, tol: float = 0.005, min_range_mv: float = 0.2
) -> np.ndarray:
    """Per column of ``x`` [n, leads]: share of samples within ``tol`` x (``hi`` - ``lo``) of ``hi`` or
    ``lo`` (the lead's extremes, e.g. over the second), 0 where the lead swings less than ``min_range_mv``."""
    rng = hi - lo
    eps = tol * rng
    at = (x >= (hi - eps)) | (x <= (lo + eps))
    frac = at.mean(axis=0)
    return np.where(rng >= min_range_mv, frac, 0.0)


def match_f1(a: np.ndarray, b: np.ndarray, tol: int) -> float:
    """F1 agreement of two sorted beat lists (samples) matched within ``tol`` samples (1 when both are
    empty: the detectors agree there is no beat)."""
    na, nb = a.size, b.size
    if na + nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    pos = np.searchsorted(b, a)
    left = np.abs(a - b[np.clip(pos - 1, 0, nb - 1)])
    right = np.abs(b[np.clip(pos, 0, nb - 1)] - a)
    matched = min(int((np.minimum(left, right) <= tol).sum()), na, nb)
    return 2.0 * matched / (na + nb)


# ------------------------------------------------------------------------- second QRS detector
class EnergyQrsDetector:
    """Streaming two-moving-average QRS detector (Elgendi 2013), the second opinion of bSQI.

    Band-pass 8-20 Hz, square, then a QRS-wide (97 ms) and a beat-wide (611 ms) centred moving average;
    where the first exceeds the second plus ``beta`` x the mean energy, a block of interest; a block at
    least QRS-wide is a beat, at its largest band-passed deflection. Decided ``latency_samples`` after the
    peak (half the beat window plus the block's end).
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
        self.reset()

    @property
    def latency_samples(self) -> int:
        """Nominal delay between a peak and its report."""
        return self._h2 + self._h1 + self._delay

    def reset(self, start_sample: int = 0) -> None:
        """Forget all state; the next sample fed is absolute index ``start_sample``."""
        self._zi: np.ndarray | None = None
        self._n = int(start_sample)
        # history of the band-passed signal; row 0 is absolute sample ``_off`` (zeros before the start)
        self._f = np.zeros(self._h2)
        self._off = self._n - self._h2
        self._done = self._n  # next absolute index whose averages are not evaluated yet
        self._open: int | None = None  # start of the block of interest open at ``_done``
        self._energy: float | None = None
        self._last = -(10**12)
        self._last_x = 0.0

    def process(self, chunk: np.ndarray, start_sample: int | None = None) -> np.ndarray:
        """Feed the next samples; returns the absolute beat indices decided in this call."""
        x = np.asarray(chunk, dtype=np.float64).reshape(-1)
        if start_sample is not None and start_sample != self._n:
            if start_sample > self._n:
                x = np.concatenate([np.full(start_sample - self._n, np.nan), x])
            else:
                x = x[self._n - start_sample :]
        if x.size == 0:
            return np.zeros(0, dtype=np.int64)
        nan = np.isnan(x)
        if nan.any():
            idx = np.where(~nan, np.arange(x.size), -1)
            np.maximum.accumulate(idx, out=idx)
            x = np.where(idx >= 0, x[np.maximum(idx, 0)], self._last_x)
        self._last_x = float(x[-1])
        if self._zi is None:
            self._zi = self._zi_unit * x[0]
        f, self._zi = sps.lfilter(self._b, self._a, x, zi=self._zi)
        e = float(np.mean(f * f))
        if self._energy is None:
            self._energy = e
        else:
            self._energy += (1.0 - np.exp(-x.size / self._tau)) * (e - self._energy)
        self._f = np.concatenate([self._f, f])
        self._n += x.size
        out: list[int] = []
        stop = self._n - self._h2  # averages need h2 samples of look-ahead
        if stop > self._done:
            h1, h2 = self._h1, self._h2
            a0 = self._done - h2 - self._off  # first history row the averages read
            seg = self._f[max(a0, 0) :]
            z = seg * seg
            if a0 < 0:
                z = np.concatenate([np.zeros(-a0), z])
            c = np.concatenate([[0.0], np.cumsum(z)])
            m = stop - self._done
            i = np.arange(m) + h2  # positions in z of the evaluated samples
            ma1 = (c[i + h1 + 1] - c[i - h1]) / (2 * h1 + 1)
            ma2 = (c[i + h2 + 1] - c[i - h2]) / (2 * h2 + 1)
            blk = ma1 > ma2 + self._beta * self._energy
            # block starts and ends (absolute), the open block carried over from the last call
            edges = np.flatnonzero(np.diff(blk.astype(np.int8)))
            starts = (edges[blk[edges + 1]] + 1 + self._done).tolist()
            ends = (edges[~blk[edges + 1]] + 1 + self._done).tolist()
            if blk[0]:
                starts.insert(0, self._done if self._open is None else self._open)
            elif self._open is not None:
                ends.insert(0, self._done)
                starts.insert(0, self._open)
            for s, t in zip(starts, ends, strict=False):
                self._block(s, t, out)
            self._open = starts[-1] if len(starts) > len(ends) else None
            if self._open is not None and stop - self._open > self._max_block:
                self._open = None  # a block this long is noise, not a QRS
            self._done = stop
        # keep the rows the next call reads (averages and an open block)
        keep_from = min(self._done - self._h2, self._open if self._open is not None else self._n)
        drop = keep_from - self._off
        if drop > 4 * round(self.fs):
            self._f = self._f[drop:]
            self._off += drop
        return np.asarray(out, dtype=np.int64)

    def _block(self, s: int, t: int, out: list[int]) -> None:
        if t - s < self._w1 or t - s > self._max_block:
            return
        seg = self._f[max(s - self._off, 0) : t - self._off]
        if seg.size == 0:
            return
        r = s + int(np.argmax(np.abs(seg))) - self._delay
        if r - self._last >= self._refractory:
            out.append(r)
            self._last = r


# ---------------------------------------------------------------------------- per-stream quality
_ROWS = 12  # per-second sums kept per lead (see SignalQuality.reset)


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
    ) -> None:
        if fs <= 0:
            raise ValueError(f"fs must be positive, got {fs}")
        self.stream_id = stream_id
        self.fs = float(fs)
        self.leads = tuple(leads)
        self.t0 = float(t0)
        self.config = cfg = config or QualityConfig()
        self.qrs_leads = tuple(qrs_leads)
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
        f = np.fft.rfftfreq(self._sec, 1.0 / self.fs)
        self._bands = np.stack([(f >= 5.0) & (f <= 15.0), (f >= 5.0) & (f <= hi)]).astype(
            np.float64
        )
        self._ones = np.ones(self._sec)
        self._block = max(1, round(cfg.flat_block_s * self.fs))
        self._tol = round(cfg.match_s * self.fs)
        self._energy = {li: EnergyQrsDetector(self.fs) for li in self.qrs_leads}
        self._own = {li: QrsDetector(self.fs) for li in self.qrs_leads} if own_detectors else {}
        lat = [d.latency_samples for d in self._energy.values()]
        lat += [QrsDetector(self.fs).latency_samples] if self.qrs_leads else []
        self._lag = max(lat, default=0) + self._tol
        self._beats = {li: _Beats() for li in self.qrs_leads}
        self._nl = nl
        self.reset(0)

    def reset(self, start_sample: int) -> None:
        """Forget the window (after a long outage); counting resumes at ``start_sample``."""
        nl = self._nl
        self._n = int(start_sample)
        self._zi: np.ndarray | None = None
        self._part = np.zeros((0, nl))  # raw samples of the second being filled (NaN = missing)
        self._partf = np.zeros((0, nl))  # their band-passed values
        # per completed second and lead: Σf, Σf², Σf³, Σf⁴, Σd, Σd² (d = x - ref), P(5-15), P(5-40),
        # n, max x, min x, ref (f: 1-40 Hz band-passed, x: raw)
        self._ring = np.zeros((self._wsec, _ROWS, nl))
        self._count = 0
        self._ref = [float("nan")] * nl  # per lead, running psqi of its usable seconds
        self._last_x = np.zeros(nl)
        for li in self.qrs_leads:
            self._beats[li] = _Beats()
            self._energy[li].reset(start_sample)
            if li in self._own:
                self._own[li].reset(start_sample)

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
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if start_sample is not None and start_sample != self._n:
            if start_sample > self._n + self._wsec * self._sec or start_sample < self._n:
                self.reset(start_sample)
            else:
                gap = np.full((start_sample - self._n, self._nl), np.nan)
                x = np.concatenate([gap, x])
        if x.shape[0] == 0:
            return []
        start = self._n
        for li in self.qrs_leads:
            bt = self._beats[li]
            col = x[:, li]
            bt.other.extend(self._energy[li].process(col, start).tolist())
            if li in self._own:
                bt.main.extend(self._own[li].process(col, start).tolist())
            elif peaks is not None and li in peaks:
                bt.main.extend(int(p) for p in peaks[li])
        nan = np.isnan(x)
        xf = x
        if nan.any():  # hold the last finite value (the filter and the moments stay finite)
            idx = np.where(~nan, np.arange(x.shape[0])[:, None], -1)
            np.maximum.accumulate(idx, axis=0, out=idx)
            held = np.take_along_axis(x, np.maximum(idx, 0), axis=0)
            xf = np.where(idx >= 0, held, self._last_x[None, :])
        self._last_x = xf[-1].copy()
        if self._zi is None:
            self._zi = self._zi_unit[:, None] * xf[0][None, :]
        filt, self._zi = sps.lfilter(self._b, self._a, xf, axis=0, zi=self._zi)
        self._n += x.shape[0]
        if self._part.shape[0]:
            x = np.concatenate([self._part, x])
            filt = np.concatenate([self._partf, filt])
        out: list[LeadQuality] = []
        k = x.shape[0] // self._sec
        for j in range(k):
            a, b = j * self._sec, (j + 1) * self._sec
            out += self._second(x[a:b], filt[a:b], self._n - x.shape[0] + b)
        self._part = x[k * self._sec :]
        self._partf = filt[k * self._sec :]
        return out

    def _second(self, raw: np.ndarray, filt: np.ndarray, end: int) -> list[LeadQuality]:
        """Close the second ending at absolute sample ``end``: update the ring, score every lead."""
        cfg = self.config
        n, nl = raw.shape
        nan = np.isnan(raw)
        any_nan = bool(nan.any())
        if any_nan:  # missing samples count as the lead's mean (0 where all are missing)
            missing = nan.mean(axis=0)
            fill = np.nanmean(np.where(nan.all(axis=0), 0.0, raw), axis=0)
            xr = np.where(nan, fill, raw)
        else:
            missing = np.zeros(nl)
            xr = raw
        ref = xr[0]  # raw sums about the first value: a DC offset costs no precision
        d = xr - ref
        f2 = filt * filt
        m = np.concatenate([filt, f2, f2 * filt, f2 * f2, d, d * d], axis=1)
        spec = np.fft.rfft(filt, axis=0)
        p = spec.real**2 + spec.imag**2
        row = self._ring[self._count % self._wsec]
        row[:6] = (self._ones[:n] @ m).reshape(6, nl)
        row[6:8] = self._bands @ p
        row[8] = n
        # flat blocks (ptp of 100 ms blocks), and the second's extremes from the same block extremes
        bmax, bmin = self._block_extremes(xr)
        row[9], row[10], row[11] = bmax.max(axis=0), bmin.min(axis=0), ref
        self._count += 1
        ring = self._ring[: min(self._count, self._wsec)]
        w = ring.sum(axis=0)
        hi, lo = row[9], row[10]  # clipping: samples at this second's extremes
        flat = ((bmax - bmin) <= cfg.flat_range_mv).mean(axis=0)
        clipped = clipped_fraction(xr, hi, lo, cfg.clip_tol, cfg.clip_min_range_mv)
        # the raw variance over the window: per-second sums about each second's ref, recombined
        refs = ring[:, 11]
        sx = ring[:, 4] + ring[:, 8] * refs
        sxx = ring[:, 5] + 2 * refs * ring[:, 4] + ring[:, 8] * refs * refs
        sx_w, sxx_w = sx.sum(axis=0), sxx.sum(axis=0)
        start_t = self.t0 + (end - n) / self.fs
        out = []
        ws, sxl, sxxl = w.T.tolist(), sx_w.tolist(), sxx_w.tolist()
        # the QRS band share of the last fast_s seconds and of the seconds before them (None: too early)
        nr = ring.shape[0]
        if nr > self._fast:
            last = (np.arange(self._count - self._fast, self._count) % self._wsec).tolist()
            recent = self._ring[last, 6:8].sum(axis=0)
            rpow = (recent[1] / self._fast).tolist()
            older = w[6:8] - recent
            drop = (recent[0] < cfg.psqi_min * recent[1]) & (
                recent[0] * older[1] < cfg.psqi_drop * older[0] * recent[1]
            )
        else:
            drop = np.zeros(nl, dtype=bool)
            rpow = (self._ring[(self._count - 1) % self._wsec, 7]).tolist()
        drops = drop.tolist()
        fl, cl, ms = flat.tolist(), clipped.tolist(), missing.tolist()
        for li, name in enumerate(self.leads):
            s1, s2, s3, s4, _, _, pq, pe, nn = ws[li][:9]
            mf = s1 / nn
            m2 = s2 / nn - mf * mf
            m4 = s4 / nn - 4 * mf * s3 / nn + 6 * mf * mf * s2 / nn - 3 * mf**4
            ksqi = m4 / (m2 * m2) if m2 > 1e-12 else 0.0
            psqi = pq / pe if pe > 0 else 0.0
            mx = sxl[li] / nn
            var_raw = sxxl[li] / nn - mx * mx
            bassqi = min(max(m2 / var_raw, 0.0), 1.0) if var_raw > 1e-12 else 1.0
            fla = 0.0 if ms[li] >= 1.0 else fl[li]
            bsqi = self._bsqi(li, end) if li in self._beats else None
            ref_p = self._ref[li]
            active = rpow[li] >= self._rms_floor
            low = drops[li] or (ref_p == ref_p and psqi < cfg.psqi_drop * ref_p)
            reason = self._reason(ms[li], fla, cl[li], bsqi, psqi, ksqi, bassqi, low, active)
            if reason is None and nr >= self._wsec:
                self._ref[li] = psqi if ref_p != ref_p else ref_p + (psqi - ref_p) / cfg.reference_s
            out.append(
                LeadQuality(
                    self.stream_id,
                    name,
                    start_t,
                    n / self.fs,
                    bsqi,
                    ksqi,
                    psqi,
                    bassqi,
                    fla,
                    cl[li],
                    reason is None,
                    reason,
                )
            )
        return out

    def _block_extremes(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Max and min of each ``flat_block_s`` block of the second ``x`` [n, leads]."""
        b = self._block
        k = max(1, x.shape[0] // b)
        blocks = x[: k * b].reshape(k, -1, x.shape[1])
        return blocks.max(axis=1), blocks.min(axis=1)

    def _bsqi(self, li: int, end: int) -> float:
        bt = self._beats[li]
        hi = end - self._lag
        lo = hi - self._wsec * self._sec
        while bt.main and bt.main[0] < lo:
            bt.main.popleft()
        while bt.other and bt.other[0] < lo:
            bt.other.popleft()
        a = np.fromiter((p for p in bt.main if p < hi), dtype=np.int64)
        b = np.fromiter((p for p in bt.other if p < hi), dtype=np.int64)
        return match_f1(a, b, self._tol)

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
