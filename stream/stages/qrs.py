"""Causal, chunked R-peak (QRS) detector and heart rate.

A Pan-Tompkins style detector (Pan & Tompkins 1985; Hamilton & Tompkins 1986) written for streaming:

1. band-pass 5-15 Hz (4th-order Butterworth, ``lfilter`` with carried state), five-point derivative,
   squaring, moving-window integration (150 ms), square root -- all linear/pointwise over carried history,
   so chunked output equals whole-record output;
2. candidates = local maxima of the integrated signal that dominate a +-``dominance_s`` neighbourhood,
   decided once that much look-ahead has arrived (fixed decision delay);
3. adaptive signal/noise peak levels (SPKI/NPKI) with threshold ``NPKI + k (SPKI - NPKI)``, a 200 ms
   refractory period, T-wave rejection by slope (within 360 ms of the previous beat), and search-back for a
   missed beat at half threshold (but at least ``searchback_floor x SPKI``, so a true pause does not turn
   a P wave into a beat) once ``1.66 x`` the mean RR (capped at ``max_rr_s``) has elapsed;
4. no beat for ``decay_after_s`` (3 s): the signal level decays by ``decay`` per second, so the detector
   recovers after an artefact inflated it or the amplitude dropped;
5. the R peak is located at the largest absolute band-passed deflection in the 250 ms before the
   integrated peak (corrected for the band-pass group delay), then refined to the largest 1-30 Hz
   deflection within +-30 ms (the R-wave apex, where MIT-BIH annotations sit).

Latency: a beat is reported ``latency_samples`` (dominance look-ahead + integration + filter delay,
~0.4 s at 360 Hz) after its R peak, or up to ``max_latency_samples`` when found by search-back.

Python loops run only over candidate peaks (a few per beat); every per-sample step is vectorised.
``QrsDetector(fs).process(chunk, start_sample)`` returns the absolute indices of the R peaks decided in
that call; feeding a record in chunks of any size gives exactly the peaks of ``detect_qrs`` on it.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from scipy import signal as sps
from scipy.ndimage import maximum_filter1d

try:  # the C routine behind scipy.signal.lfilter, without its per-call array-API dispatch (~10 us)
    from scipy.signal._sigtools import _linear_filter as _c_lfilter
except ImportError:  # pragma: no cover - another scipy layout: the public function
    _c_lfilter = None


def lfilter_state(
    b: np.ndarray, a: np.ndarray, x: np.ndarray, zi: np.ndarray, axis: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.signal.lfilter(b, a, x, axis, zi)`` for float64 ``b``, ``a`` (``a[0] == 1``), ``x`` and
    ``zi`` of the exact state shape: the same C routine, called directly (streaming stages filter
    small chunks, where the public wrapper's overhead exceeds the filtering)."""
    if _c_lfilter is not None:
        y, zf = _c_lfilter(b, a, x, axis, zi)
    else:
        y, zf = sps.lfilter(b, a, x, axis=axis, zi=zi)
    return y, zf


def _check_c_lfilter() -> None:
    """Fall back to the public function unless the direct call gives its exact result."""
    global _c_lfilter
    if _c_lfilter is None:
        return
    b, a = sps.butter(2, [0.1, 0.3], btype="bandpass")
    x = np.sin(np.arange(64.0))
    zi = sps.lfilter_zi(b, a) * 0.5
    try:
        y, zf = _c_lfilter(b, a, x, -1, zi)
        y0, zf0 = sps.lfilter(b, a, x, zi=zi)
        if not (np.array_equal(y, y0) and np.array_equal(zf, zf0)):
            _c_lfilter = None
    except Exception:  # pragma: no cover - signature changed
        _c_lfilter = None


_check_c_lfilter()


class QrsDetector:
    """Stateful causal R-peak detector for one lead sampled at ``fs``."""

    def __init__(
        self,
        fs: float,
        *,
        band_hz: tuple[float, float] = (5.0, 15.0),
        integration_s: float = 0.150,
        dominance_s: float = 0.20,
        refractory_s: float = 0.200,
        twave_s: float = 0.360,
        learn_s: float = 2.0,
        threshold_k: float = 0.25,
        searchback_rr: float = 1.66,
        locate_s: float = 0.25,
        max_rr_s: float = 2.0,
        locate_band_hz: tuple[float, float] | None = (1.0, 30.0),
        refine_s: float = 0.03,
        searchback_floor: float = 0.2,
        decay_after_s: float | None = 3.0,
        decay: float = 0.7,
    ) -> None:
        if fs <= 0:
            raise ValueError(f"fs must be positive, got {fs}")
        self.fs = float(fs)
        nyq = self.fs / 2.0
        hi = min(band_hz[1], 0.45 * self.fs)
        self.sos = sps.butter(2, [band_hz[0] / nyq, hi / nyq], btype="bandpass", output="sos")
        # a 4th-order band-pass is well conditioned in direct form; lfilter has far less per-call overhead
        self._b, self._a = sps.sos2tf(self.sos)
        self._zi_unit = sps.lfilter_zi(self._b, self._a)
        self._w = max(1, round(integration_s * self.fs))
        self._h = max(1, round(dominance_s * self.fs))
        self._refractory = round(refractory_s * self.fs)
        self._twave = round(twave_s * self.fs)
        self._learn = round(learn_s * self.fs)
        self._k = threshold_k
        self._sb = searchback_rr
        self._locate = round(locate_s * self.fs)
        self._max_rr = round(max_rr_s * self.fs)
        self._refine = round(refine_s * self.fs)
        self._sb_floor = searchback_floor
        self._decay_after = None if decay_after_s is None else round(decay_after_s * self.fs)
        self._decay = decay
        # group delay (samples) of the band-pass around the QRS energy band, removed from peak positions
        _, gd = sps.group_delay(sps.sos2tf(self.sos), w=[10.0], fs=self.fs)
        self._delay = round(float(gd[0]))
        # R peaks are located on a wider band than the detection band (keeps the R-wave shape)
        if locate_band_hz is None:
            self._lb, self._la, self._ldelay = None, None, self._delay
        else:
            lsos = sps.butter(
                1,
                [locate_band_hz[0] / nyq, min(locate_band_hz[1], 0.45 * self.fs) / nyq],
                btype="bandpass",
                output="sos",
            )
            self._lb, self._la = sps.sos2tf(lsos)
            _, lgd = sps.group_delay((self._lb, self._la), w=[10.0], fs=self.fs)
            self._ldelay = round(float(lgd[0]))
            self._lzi_unit = sps.lfilter_zi(self._lb, self._la)
        self._ones = np.full(self._w, 1.0 / self._w)
        self._span = np.arange(-self._h, self._h + 1)
        self._keep = self._h + self._locate + self._w + int(4.0 * self.fs)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self, start_sample: int = 0) -> None:
        """Forget all state; the next sample fed is absolute index ``start_sample`` (re-learns thresholds)."""
        pad = self._h + 1
        self._origin = int(start_sample)
        self._zi: np.ndarray | None = None
        self._lzi: np.ndarray | None = None
        self._last_x = 0.0
        # history of the band-passed, location, integrated and |derivative| signals, preallocated;
        # row 0 is absolute sample self._off; the first `pad` rows are zeros before the stream start
        self._cap = self._keep + round(8.0 * self.fs)
        self._hist = np.zeros((4, self._cap))
        self._bp, self._loc, self._mwi, self._slope = self._hist
        self._off = self._origin - pad
        self._len = pad
        self._n = self._origin  # absolute index of the next sample
        self._scan = self._origin  # next absolute index to scan for candidates
        self._init = False
        self._spki = 0.0
        self._npki = 0.0
        self._last_beat: int | None = None  # integrated-peak index of the last beat
        self._last_slope = 0.0
        self._last_r = -(10**12)
        self._rr: deque[int] = deque(maxlen=8)
        self._rr_sum = 0
        self._pending: list[tuple[int, float, float]] = []  # noise candidates since the last beat
        self._sb_done = False
        self._decay_from: int | None = None

    @property
    def latency_samples(self) -> int:
        """Nominal decision delay (samples) between an R peak and its report, search-back aside."""
        return self._h + self._w + self._delay

    @property
    def max_latency_samples(self) -> int:
        """Worst-case delay: a beat found by search-back is reported once 1.66 x the mean RR (RR capped
        at ``max_rr_s``) has elapsed after the previous beat."""
        return self._h + int(self._sb * self._max_rr) + self._delay

    @property
    def samples_seen(self) -> int:
        return self._n

    def mean_rr(self) -> float | None:
        """Mean of the last (up to 8) RR intervals in samples, or None before two beats."""
        return self._rr_sum / len(self._rr) if self._rr else None

    # --------------------------------------------------------------- process
    def process(self, chunk: np.ndarray, start_sample: int | None = None) -> np.ndarray:
        """Feed the next samples of the lead; returns absolute R-peak indices decided during this call.

        ``start_sample`` is the absolute index of ``chunk[0]``; a jump forward is filled by holding the
        last value (missing samples), overlap with already-seen samples is dropped. NaN samples are held
        at the last finite value.
        """
        x = np.asarray(chunk, dtype=np.float64).reshape(-1)
        if start_sample is not None:
            if start_sample > self._n:
                x = np.concatenate([np.full(start_sample - self._n, np.nan), x])
            elif start_sample < self._n:
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
        bp, self._zi = lfilter_state(self._b, self._a, x, self._zi)
        n = x.size
        self._reserve(n)
        w0, w1 = self._len, self._len + n
        hb = self._bp
        hb[w0:w1] = bp
        # five-point derivative over the history (the rows before w0 hold the previous samples)
        d = (
            2.0 * hb[w0:w1] + hb[w0 - 1 : w1 - 1] - hb[w0 - 3 : w1 - 3] - 2.0 * hb[w0 - 4 : w1 - 4]
        ) * (self.fs / 8.0)
        hs = self._slope
        np.abs(d, out=hs[w0:w1])
        sq = hs[w0 - self._w + 1 : w1]
        # integrated energy, kept as its square root (amplitude scale: PVCs do not swamp the levels)
        np.sqrt(np.convolve(sq * sq, self._ones, mode="valid"), out=self._mwi[w0:w1])
        if self._lb is not None:
            if self._lzi is None:
                self._lzi = self._lzi_unit * x[0]
            self._loc[w0:w1], self._lzi = lfilter_state(self._lb, self._la, x, self._lzi)  # type: ignore[arg-type]
        self._len = w1
        self._n += n

        out: list[int] = []
        if not self._init:
            if self._n - self._origin < self._learn + self._h + 1:
                return np.zeros(0, dtype=np.int64)
            seg = self._mwi[self._origin - self._off : self._origin + self._learn - self._off]
            self._spki = 0.5 * float(seg.max())
            self._npki = 0.5 * float(np.sqrt(np.mean(seg * seg)))
            self._init = True
        stop = self._n - self._h  # candidates need h samples of look-ahead
        if stop > self._scan:
            a, b = self._scan - self._off, stop - self._off
            mwi = self._mwi
            core = mwi[a:b]
            # local maxima (rising into, not rising after), then keep those dominating +-h samples
            loc = np.flatnonzero((core > mwi[a - 1 : b - 1]) & (core >= mwi[a + 1 : b + 1])) + a
            if loc.size > 16:  # many: one running-max pass (same values as the gather below)
                dom = maximum_filter1d(mwi[a - self._h : b + self._h], size=2 * self._h + 1)
                loc = loc[mwi[loc] >= dom[loc - a + self._h]]
            elif loc.size:
                win = mwi[loc[:, None] + self._span[None, :]]
                loc = loc[mwi[loc] >= win.max(axis=1)]
            for j in loc.tolist():
                i = j + self._off
                self._searchback_until(i, out)
                self._candidate(i, out)
            self._scan = stop
            self._searchback_until(stop, out)
        return np.asarray(out, dtype=np.int64) if out else np.zeros(0, dtype=np.int64)

    def flush(self) -> np.ndarray:
        """End of stream: peaks still waiting for look-ahead are not reported (the stream has no future)."""
        return np.zeros(0, dtype=np.int64)

    # -------------------------------------------------------------- internals
    def _reserve(self, n: int) -> None:
        """Make room for ``n`` more history rows, keeping the last ``_keep`` (compacting or growing)."""
        if self._len + n <= self._cap:
            return
        keep = min(self._keep, self._len)
        drop = self._len - keep
        if keep + n > self._cap:
            self._cap = keep + n + round(8.0 * self.fs)
            hist = np.zeros((4, self._cap))
            hist[:, :keep] = self._hist[:, drop : self._len]
            self._hist = hist
        else:
            self._hist[:, :keep] = self._hist[:, drop : self._len].copy()
        self._bp, self._loc, self._mwi, self._slope = self._hist
        self._len = keep
        self._off += drop

    def _threshold(self) -> float:
        return self._npki + self._k * (self._spki - self._npki)

    def _max_slope(self, i: int) -> float:
        a = max(i - self._w - self._off, 0)
        return float(self._slope[a : i - self._off + 1].max())

    def _locate_r(self, i: int) -> int:
        # the R wave is the largest band-passed deflection in the locate_s before the integrated peak ...
        a = max(i - self._locate - self._off, 0)
        seg = self._bp[a : i - self._off + 1]
        r = self._off + a + int(np.argmax(np.abs(seg))) - self._delay
        if self._lb is not None:
            # ... refined to the largest wide-band deflection within +-refine_s (R-wave apex)
            c = r + self._ldelay - self._off
            lo, hi = max(c - self._refine, 0), min(c + self._refine + 1, self._len)
            if hi > lo:
                r = self._off + lo + int(np.argmax(np.abs(self._loc[lo:hi]))) - self._ldelay
        return max(r, 0)

    def _beat(self, i: int, val: float, slope: float, out: list[int], searchback: bool) -> None:
        if searchback:
            self._spki = 0.25 * val + 0.75 * self._spki
        else:
            self._spki = 0.125 * val + 0.875 * self._spki
        if self._last_beat is not None:
            if len(self._rr) == self._rr.maxlen:
                self._rr_sum -= self._rr[0]
            self._rr.append(i - self._last_beat)
            self._rr_sum += i - self._last_beat
        r = self._locate_r(i)
        if r > self._last_r:
            out.append(r)
            self._last_r = r
        self._last_beat = i
        self._last_slope = slope
        self._pending = [p for p in self._pending if p[0] > i]
        self._sb_done = False

    def _candidate(self, i: int, out: list[int]) -> None:
        val = float(self._mwi[i - self._off])
        last = self._last_beat
        if last is not None and i - last < self._refractory:
            return
        if self._decay_after is not None:
            # no beat for a long time (pause, or levels inflated by an artefact): lower the signal level
            # by `decay` per second past `decay_after`, counted at candidates (chunking-invariant)
            since = self._origin + self._learn if last is None else last
            if self._decay_from is None or self._decay_from < since + self._decay_after:
                self._decay_from = since + self._decay_after
            while i > self._decay_from:
                self._spki *= self._decay
                self._decay_from += round(self.fs)
        slope = self._max_slope(i)
        if val > self._threshold():
            if last is not None and i - last < self._twave and slope < 0.5 * self._last_slope:
                self._npki = 0.125 * val + 0.875 * self._npki
                self._pending.append((i, val, slope))
                return
            self._beat(i, val, slope, out, searchback=False)
        else:
            self._npki = 0.125 * val + 0.875 * self._npki
            self._pending.append((i, val, slope))
        if len(self._pending) > 1024:  # no beat for a very long time: keep the recent candidates
            del self._pending[:512]

    def _searchback_until(self, now: int, out: list[int]) -> None:
        """Search back for a missed beat once 1.66 x mean RR has elapsed before ``now``."""
        while not self._sb_done and self._last_beat is not None and self._rr:
            deadline = self._last_beat + int(
                self._sb * min(self._rr_sum / len(self._rr), self._max_rr)
            )
            if deadline >= now:
                return
            thr2 = max(0.5 * self._threshold(), self._sb_floor * self._spki)
            best: tuple[int, float, float] | None = None
            for p in self._pending:
                if p[0] > deadline:
                    break
                if (
                    p[0] - self._last_beat >= self._refractory
                    and p[1] > thr2
                    and (best is None or p[1] > best[1])
                ):
                    best = p
            if best is None:
                self._sb_done = True
                self._pending = [
                    p for p in self._pending if p[0] > deadline
                ]  # never searched again
                return
            self._beat(best[0], best[1], best[2], out, searchback=True)


def detect_qrs(x: np.ndarray, fs: float, chunk: int | None = None, **kwargs: float) -> np.ndarray:
    """R-peak indices of a whole 1-D record, computed exactly as the stream does (chunks of ``chunk``
    samples, default 1 s) with a :class:`QrsDetector`."""
    x = np.asarray(x).reshape(-1)
    step = int(chunk or round(fs))
    if step <= 0:
        raise ValueError(f"chunk must be positive, got {chunk}")
    det = QrsDetector(fs, **kwargs)  # type: ignore[arg-type]
    parts = [det.process(x[s : s + step], s) for s in range(0, x.size, step)]
    parts.append(det.flush())
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def heart_rate_bpm(peaks: np.ndarray, fs: float, n_last: int = 8) -> float | None:
    """Heart rate from the median of the last ``n_last`` RR intervals (None with fewer than 2 peaks)."""
    p = np.asarray(peaks)
    if p.size < 2:
        return None
    rr = np.diff(p[-(n_last + 1) :]) / fs
    med = float(np.median(rr))
    return 60.0 / med if med > 0 else None
