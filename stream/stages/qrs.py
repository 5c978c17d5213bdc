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

import numba
import numpy as np
from scipy import signal as sps

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


def _moving_sum(x: np.ndarray, ones: np.ndarray) -> np.ndarray:
    """Moving sums of ``x`` over the (symmetric) window ``ones``, ``mode="valid"``."""
    return np.convolve(x, ones, mode="valid")


# compiled per-sample loops: one pass instead of a dozen numpy calls per chunk


@numba.njit(cache=True, nogil=True)
def _nb_derivative(hist, w0, w1, k):  # pragma: no cover
    """|five-point derivative| (row 3) and its square (row 4) of the band-passed rows ``w0:w1`` (row 0),
    in the order of operations of the previous numpy implementation (same rounding)."""
    hb, slope, sq = hist[0], hist[3], hist[4]
    for j in range(w0, w1):
        d = (((2.0 * hb[j] + hb[j - 1]) - hb[j - 3]) - 2.0 * hb[j - 4]) * k
        slope[j] = abs(d)
        sq[j] = d * d


@numba.njit(cache=True, nogil=True)
def _nb_max(x, lo, hi):  # pragma: no cover
    """``x[lo:hi].max()`` (NaN propagates)."""
    m = x[lo]
    for q in range(lo + 1, hi):
        v = x[q]
        if v != v:
            return v
        if v > m:
            m = v
    return m


@numba.njit(cache=True, nogil=True)
def _nb_argmax_abs(x, lo, hi):  # pragma: no cover
    """``np.abs(x[lo:hi]).argmax()`` (first maximum; first NaN)."""
    best = 0
    m = abs(x[lo])
    if m != m:
        return 0
    for q in range(lo + 1, hi):
        v = abs(x[q])
        if v != v:
            return q - lo
        if v > m:
            m = v
            best = q - lo
    return best


@numba.njit(cache=True, nogil=True)
def _nb_scan(hist, a, b, h, w, locate, delay, ldelay, refine, end, has_loc):  # pragma: no cover
    """Candidates in rows ``a:b``: local maxima of the integrated signal (row 2) that are >= every
    value within +-h (NaN: not), as rows ``(row, value, max slope, R row, lowest row read, located)``;
    the R location (:meth:`QrsDetector._locate_r`) is left to the beat (located 0) where its windows
    would be clipped at the history edges."""
    bp, lrow, mwi, slope = hist[0], hist[1], hist[2], hist[3]
    out = np.empty((max(b - a, 0), 6))
    k = 0
    for j in range(a, b):
        v = mwi[j]
        if not (v > mwi[j - 1] and v >= mwi[j + 1]):
            continue
        ok = True
        for q in range(j - h, j + h + 1):
            if not mwi[q] <= v:
                ok = False
                break
        if not ok:
            continue
        out[k, 0] = j
        out[k, 1] = v
        out[k, 2] = _nb_max(slope, max(j - w, 0), j + 1)
        out[k, 5] = 0.0
        st = j - locate
        if st >= 0:
            r = st + _nb_argmax_abs(bp, st, j + 1) - delay
            if not has_loc:
                out[k, 3], out[k, 4], out[k, 5] = r, st, 1.0
            else:
                lo = r + ldelay - refine
                hi = lo + 2 * refine + 1
                if lo >= 0 and hi <= end:
                    r = lo + _nb_argmax_abs(lrow, lo, hi) - ldelay
                    out[k, 3], out[k, 4], out[k, 5] = r, min(st, lo), 1.0
        k += 1
    return out[:k]


#: Inputs longer than this are processed in blocks of this many samples (same peaks: the detector is
#: chunk-invariant), so the history and the temporaries stay in cache.
_BLOCK = 16384


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
        self._second = round(self.fs)
        self._fs8 = self.fs / 8.0
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
        # history of the band-passed, location, integrated, |derivative| and squared-derivative signals,
        # preallocated; row 0 is absolute sample self._off; the first `pad` rows are zeros before the start
        self._cap = self._keep + round(8.0 * self.fs)
        self._hist = np.zeros((5, self._cap))
        self._bp, self._loc, self._mwi, self._slope, self._sq = self._hist
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
        # noise candidates since the last beat: (index, value, slope, R location or None, lowest history
        # index the location read)
        self._pending: list[tuple[int, float, float, int | None, int]] = []
        # search-back deadline (integrated-peak index), None once searched (or before two beats)
        self._deadline: int | None = None
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
        x = np.asarray(chunk, dtype=np.float64)
        if x.ndim != 1:
            x = x.reshape(-1)
        if start_sample is not None:
            if start_sample > self._n:
                x = np.concatenate([np.full(start_sample - self._n, np.nan), x])
            elif start_sample < self._n:
                x = x[self._n - start_sample :]
        n = x.size
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        if np.isnan(x.sum()):  # NaN somewhere (or +inf and -inf): hold the last finite value
            nan = np.isnan(x)
            if nan.any():
                idx = np.where(~nan, np.arange(n), -1)
                np.maximum.accumulate(idx, out=idx)
                x = np.where(idx >= 0, x[np.maximum(idx, 0)], self._last_x)
        self._last_x = float(x[-1])
        out: list[int] = []
        if n <= _BLOCK:
            self._run(x, out)
        else:
            for s in range(0, n, _BLOCK):
                self._run(x[s : s + _BLOCK], out)
        return np.array(out, dtype=np.int64) if out else np.zeros(0, dtype=np.int64)

    def flush(self) -> np.ndarray:
        """End of stream: peaks still waiting for look-ahead are not reported (the stream has no future)."""
        return np.zeros(0, dtype=np.int64)

    # -------------------------------------------------------------- internals
    def _run(self, x: np.ndarray, out: list[int]) -> None:
        """Process one block of at most ``_BLOCK`` finite samples, appending the decided R peaks."""
        n = x.size
        if self._zi is None:
            self._zi = self._zi_unit * x[0]
            if self._lb is not None:
                self._lzi = self._lzi_unit * x[0]
        bp, self._zi = lfilter_state(self._b, self._a, x, self._zi)
        if self._len + n > self._cap:
            self._reserve(n)
        w0, w1 = self._len, self._len + n
        hb = self._bp
        hb[w0:w1] = bp
        # five-point derivative over the history (the rows before w0 hold the previous samples):
        # (2 x[i] + x[i-1] - x[i-3] - 2 x[i-4]) fs / 8, evaluated in that order without temporaries
        sq = self._sq
        _nb_derivative(self._hist, w0, w1, self._fs8)
        # integrated energy, kept as its square root (amplitude scale: PVCs do not swamp the levels)
        np.sqrt(_moving_sum(sq[w0 - self._w + 1 : w1], self._ones), out=self._mwi[w0:w1])
        if self._lb is not None:
            self._loc[w0:w1], self._lzi = lfilter_state(self._lb, self._la, x, self._lzi)  # type: ignore[arg-type]
        self._len = w1
        self._n += n

        if not self._init:
            if self._n - self._origin < self._learn + self._h + 1:
                return
            seg = self._mwi[self._origin - self._off : self._origin + self._learn - self._off]
            self._spki = 0.5 * float(seg.max())
            self._npki = 0.5 * float(np.sqrt(np.mean(seg * seg)))
            self._init = True
        stop = self._n - self._h  # candidates need h samples of look-ahead
        if stop <= self._scan:
            return
        off = self._off
        a, b = self._scan - off, stop - off
        self._scan = stop
        # local maxima (rising into, not rising after), then keep those dominating +-h samples
        rows = _nb_scan(
            self._hist, a, b, self._h, self._w, self._locate, self._delay, self._ldelay,
            self._refine, self._len, self._lb is not None,
        )  # fmt: skip
        if rows.shape[0]:
            self._decide(rows.tolist(), out)
        if self._deadline is not None and self._deadline < stop:
            self._searchback_until(stop, out)

    def _decide(self, rows: list[list[float]], out: list[int]) -> None:
        """Decide the candidates of :func:`_nb_scan`, in order: threshold, refractory period, T-wave
        check, search-back bookkeeping."""
        off = self._off
        refractory, twave = self._refractory, self._twave
        decay_after = self._decay_after
        pending = self._pending
        for jf, val, slope, rf, lowf, located in rows:
            i = int(jf) + off
            if self._deadline is not None and self._deadline < i:
                self._searchback_until(i, out)
                pending = self._pending
            last = self._last_beat
            if last is not None and i - last < refractory:
                continue
            if decay_after is not None:
                since = self._origin + self._learn if last is None else last
                if self._decay_from is None or self._decay_from < since + decay_after:
                    self._decay_from = since + decay_after
                while i > self._decay_from:
                    self._spki *= self._decay
                    self._decay_from += self._second
            r = max(int(rf) + off, 0) if located else None
            low = int(lowf) + off
            npki = self._npki
            if val > npki + self._k * (self._spki - npki):
                if last is not None and i - last < twave and slope < 0.5 * self._last_slope:
                    self._npki = 0.125 * val + 0.875 * npki
                    pending.append((i, val, slope, r, low))
                    continue
                self._beat(i, val, slope, out, False, r, low)
                pending = self._pending
            else:
                self._npki = 0.125 * val + 0.875 * npki
                pending.append((i, val, slope, r, low))
            if len(pending) > 1024:  # no beat for a very long time: keep the recent candidates
                del pending[:512]

    def _reserve(self, n: int) -> None:
        """Make room for ``n`` more history rows, keeping the last ``_keep`` (compacting or growing)."""
        if self._len + n <= self._cap:
            return
        keep = min(self._keep, self._len)
        drop = self._len - keep
        if keep + n > self._cap:
            self._cap = keep + n + round(8.0 * self.fs)
            hist = np.zeros((5, self._cap))
            hist[:, :keep] = self._hist[:, drop : self._len]
            self._hist = hist
        else:
            self._hist[:, :keep] = self._hist[:, drop : self._len].copy()
        self._bp, self._loc, self._mwi, self._slope, self._sq = self._hist
        self._len = keep
        self._off += drop

    def _threshold(self) -> float:
        return self._npki + self._k * (self._spki - self._npki)

    def _max_slope(self, i: int) -> float:
        a = max(i - self._w - self._off, 0)
        return float(_nb_max(self._slope, a, i - self._off + 1))

    def _locate_r(self, i: int) -> int:
        # the R wave is the largest band-passed deflection in the locate_s before the integrated peak ...
        a = max(i - self._locate - self._off, 0)
        r = self._off + a + int(_nb_argmax_abs(self._bp, a, i - self._off + 1)) - self._delay
        if self._lb is not None:
            # ... refined to the largest wide-band deflection within +-refine_s (R-wave apex)
            c = r + self._ldelay - self._off
            lo, hi = max(c - self._refine, 0), min(c + self._refine + 1, self._len)
            if hi > lo:
                j = int(_nb_argmax_abs(self._loc, lo, hi))
                r = self._off + lo + j - self._ldelay
        return max(r, 0)

    def _beat(
        self,
        i: int,
        val: float,
        slope: float,
        out: list[int],
        searchback: bool,
        r: int | None = None,
        low: int = 0,
    ) -> None:
        if searchback:
            self._spki = 0.25 * val + 0.75 * self._spki
        else:
            self._spki = 0.125 * val + 0.875 * self._spki
        if self._last_beat is not None:
            if len(self._rr) == self._rr.maxlen:
                self._rr_sum -= self._rr[0]
            self._rr.append(i - self._last_beat)
            self._rr_sum += i - self._last_beat
        if r is None or low < self._off:  # not located yet (or its window left the history since)
            r = self._locate_r(i)
        if r > self._last_r:
            out.append(r)
            self._last_r = r
        self._last_beat = i
        self._last_slope = slope
        # the pending candidates all precede a candidate beat; a search-back beat keeps the later ones
        self._pending = [p for p in self._pending if p[0] > i] if searchback else []
        self._deadline = (
            i + int(self._sb * min(self._rr_sum / len(self._rr), self._max_rr))
            if self._rr
            else None
        )

    def _searchback_until(self, now: int, out: list[int]) -> None:
        """Search back for a missed beat once 1.66 x mean RR has elapsed before ``now``."""
        while self._deadline is not None and self._last_beat is not None:
            deadline = self._deadline
            if deadline >= now:
                return
            thr2 = max(0.5 * self._threshold(), self._sb_floor * self._spki)
            best: tuple[int, float, float, int | None, int] | None = None
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
                self._deadline = None
                self._pending = [
                    p for p in self._pending if p[0] > deadline
                ]  # never searched again
                return
            self._beat(best[0], best[1], best[2], out, True, best[3], best[4])


def detect_qrs(x: np.ndarray, fs: float, chunk: int | None = None, **kwargs: float) -> np.ndarray:
    """R-peak indices of a whole 1-D record, computed exactly as the stream does (chunks of ``chunk``
    samples, default 1 s) with a :class:`QrsDetector`."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)  # converted once, not per chunk (same values)
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
