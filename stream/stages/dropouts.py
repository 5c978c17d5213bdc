"""Per-lead dropout detection over a stream of sample chunks (state carried across frame boundaries).

Kinds (:data:`stream.stages.events.DROPOUT_KINDS`), in priority order when several apply to a sample:

- ``nan``: samples missing (NaN) for at least ``min_nan_s``;
- ``saturation``: samples at the amplifier/ADC rail for at least ``min_saturation_s``. The rails are the
  stream's own: with a declared ADC range (:meth:`DropoutDetector.set_adc_range`, from the frames'
  ``adc_range_mv``; MIT-BIH: 11-bit ADC, gain 200/mV, so -5.12/+5.115 mV) a sample is saturated when it
  sits within ``sat_tol_mv`` of (or beyond) its lead's rail; without one, the rails are estimated per lead as
  the running min/max of the stream, and a sample is saturated only inside a clipped plateau: at the lead's
  observed extreme (within ``sat_eps_mv``), with zero variance (as ``flatline``), at least
  ``sat_min_excursion_mv`` away from the lead's baseline. Never because of its absolute value: a DC
  offset or baseline drift of any size is not a dropout;
- ``lead_off``: electrode off -- the lead sits at least ``lead_off_mv`` away from its baseline with no ECG
  activity (peak-to-peak range below ``lead_off_range_mv`` over the run: only a little noise or hum),
  without reaching a declared rail, for ``min_lead_off_s``. The baseline is learned continuously from the
  lead's ECG: the median of the means of its last ``lead_off_baseline_blocks`` *active* blocks of
  ``lead_off_block_s`` (blocks at absolute sample indices whose range exceeds ``lead_off_range_mv``:
  signal with ECG on it; flat blocks -- a lead-off, a flatline, a quiet stretch -- teach nothing, so the
  baseline holds through a dropout). A DC offset, a baseline step or baseline wander that carries ECG is
  learned within those blocks (0.6 s of activity) and is never a lead-off; an instant step that lands in
  a quiet stretch of ECG (the T-P segment) can still look like one until the next beats are learned
  (at most one segment per step). Without a declared range, a sample of the plateau that merely repeats
  its predecessor at the lead's new extreme (raw estimated-rail saturation) does not cut the run;
- ``flatline``: the lead has zero variance (consecutive samples within ``flat_eps_mv``) near its baseline
  (a constant far from it is ``lead_off``) for longer than the stream's own natural plateaus (below);
- ``missing_frames``: lost frames (sequence gap), reported on every lead by :meth:`DropoutDetector.gap`.

Flatline minimum, per stream. A finely quantised, heavily low-pass filtered recording holds exactly the
same value whenever its ECG moves less than one quantisation step: clean PTB-XL (100 Hz, 1 uV steps) has
runs of identical samples up to 0.39 s (30 % of records have one >= 0.15 s), LUDB (500 Hz, ~0.8 uV
steps, 42 % zero differences) up to 0.58 s (82 of 200 records >= 40 samples), while the noisier MIT-BIH
(360 Hz, 5 uV steps) stays under ~30 ms near its baseline (its longer runs are clipping at the ADC rails).
A frozen amplifier or a zeroed lead cannot be told from such a plateau by its values, only by its
length, so a plateau must outlast ``flat_natural_factor`` (4) times the longest *natural* plateau (a run
of equal samples that ended without being confirmed) the stream has shown on any of its leads, that run
having ended before the plateau began, within ``flat_history_s`` (memory 1-2x that), and never less
than ``min_flat_s`` (0.15 s, what MIT-BIH-like streams keep) nor more than ``max_flat_s`` (1 s);
plateaus starting in the first ``flat_warmup_s`` (2 s, no evidence yet) need ``max_flat_s``. Each
plateau's minimum is fixed when it starts, from runs that ended before, so results do not depend on
how the stream is cut into frames. Replayed whole (:func:`detect_dropouts`), 500 PTB-XL records and
all 200 LUDB records gave 0 dropouts (0.15 s fixed: hundreds of flatlines); the factor 4 is the
smallest integer with no natural plateau confirmed on them (3: one PTB-XL record). On streams with long
natural plateaus, flatlines shorter than their minimum (at most 1 s) go unreported and a confirmed one is
reported up to that much later; on MIT-BIH, after the warm-up, it is still 0.15 s.

A run is confirmed once it has lasted its kind's minimum duration, using trailing-window counts
computed with integer cumulative sums over the carried tail plus the new chunk, so results do not depend
on how the stream is cut into frames. Segments are emitted when they end (or at :meth:`flush`);
:meth:`DropoutDetector.active` tells which leads are inside a confirmed dropout right now.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from stream.stages.events import DropoutSegment
from stream.stages.kernels import pairwise_sum

_KINDS = ("nan", "saturation", "lead_off", "flatline")  # priority order, codes 1..4


@dataclass(frozen=True)
class DropoutConfig:
    """Thresholds of the dropout detector (durations in seconds, amplitudes in mV)."""

    min_nan_s: float = 0.05
    min_saturation_s: float = 0.10
    min_lead_off_s: float = 0.18
    #: flatline: shortest plateau ever confirmed (streams without long natural plateaus: MIT-BIH's stay
    #: under ~30 ms near baseline, so 0.15 s there, as before)
    min_flat_s: float = 0.15
    #: flatline: a plateau must last this many times the longest natural plateau (a run of equal samples
    #: that ended unconfirmed) the stream showed on any lead before it began. 4: the smallest integer for
    #: which no plateau of 500 clean PTB-XL (natural runs up to 0.39 s) and 200 LUDB records (up to
    #: 0.58 s) is confirmed (3: one PTB-XL record)
    flat_natural_factor: float = 4.0
    #: flatline: the minimum never exceeds this; it is also the minimum during the warm-up. Above the
    #: longest natural plateau measured (LUDB 0.58 s) with margin
    max_flat_s: float = 1.0
    #: flatline: plateaus starting this early in the stream (no natural plateaus seen yet) need ``max_flat_s``
    flat_warmup_s: float = 2.0
    #: flatline: natural plateaus are remembered for 1-2 times this (blocks of this length: the current
    #: and the previous one), so one long plateau does not raise the minimum for good
    flat_history_s: float = 60.0
    flat_eps_mv: float = 1e-4
    #: declared range: a sample within this of its rail (or beyond) is at the rail
    sat_tol_mv: float = 0.01
    #: estimated rails: a sample within this of the lead's running min/max is at its extreme
    sat_eps_mv: float = 0.002
    #: estimated rails: a plateau nearer than this to the lead's baseline is a flatline, not saturation
    sat_min_excursion_mv: float = 1.0
    lead_off_mv: float = 2.5
    lead_off_range_mv: float = 0.05
    #: lead_off: the baseline is learned per block of this length (absolute sample blocks)
    lead_off_block_s: float = 0.1
    #: lead_off: the baseline is the median of the medians of the last this many blocks that carried
    #: ECG activity (range above ``lead_off_range_mv``, no NaN): 0.6 s of activity
    lead_off_baseline_blocks: int = 6


# ---------------------------------------------------------------------------------------- numba kernels
# Per-lead state rows of the detector (``DropoutDetector._fst`` float64, ``_ist`` int64, ``[rows, leads]``)
_F_LAST, _F_HI, _F_LO, _F_BASE = 0, 1, 2, 3
_I_NAN, _I_SAT, _I_OFF, _I_FLAT, _I_THR, _I_OPEN, _I_START, _I_END = 0, 1, 2, 3, 4, 5, 6, 7
# integer parameters (``_pi``) and float parameters (``_pf``) of the kernel
_P_MNAN, _P_MSAT, _P_MOFF, _P_FLOOR, _P_CAP, _P_WARM, _P_FBLK, _P_BLK = range(8)
_P_FEPS, _P_SATTOL, _P_SATEPS, _P_SATEXC, _P_OFFMV, _P_OFFRNG, _P_FACTOR, _P_NATMIN = range(8)


@numba.njit(cache=True, nogil=True)
def _flat_min_nb(
    first: int,
    nat: np.ndarray,
    cnt: int,
    floor: int,
    cap: int,
    warm: int,
    fblk: int,
    factor: float,
) -> int:
    """Minimum length (samples) of a plateau whose first sample is ``first``: ``factor`` times the
    longest natural plateau ended at or before it, in its block or the previous one (``nat``: rows end,
    length, block of the ``cnt`` natural plateaus, in end order), within ``[floor, cap]``; ``cap``
    during the warm-up."""
    thr = floor
    if cnt > 0:
        b = first // fblk
        last = -1  # last run ended by ``first``
        for j in range(cnt - 1, -1, -1):
            if nat[0, j] <= first:
                last = j
                break
        prev = -1  # last run of an earlier block
        for j in range(cnt - 1, -1, -1):
            if nat[2, j] < b:
                prev = j
                break
        longest = 0
        if last >= 0 and nat[2, last] >= b - 1:
            longest = nat[1, last]
        if prev >= 0 and nat[2, prev] == b - 1 and prev <= last and nat[1, prev] > longest:
            longest = nat[1, prev]
        want = int(np.ceil(factor * longest))
        if want > thr:
            thr = want
    if thr > cap:
        thr = cap
    if first < warm:
        thr = cap
    return thr


@numba.njit(cache=True, nogil=True)
def _learn_block(
    bx: np.ndarray, cnt: int, ring: np.ndarray, base: np.ndarray, range_mv: float, tmp: np.ndarray
) -> None:
    """A complete block of ``cnt`` samples (``bx[:cnt]``, ``[B, leads]``): when active on a lead (no
    NaN, range above ``range_mv``) its mean enters the lead's ring (oldest first) and the baseline
    becomes the median of the ring's values (NaN until seen). Sums in numpy's order: sequential over
    the block for several leads, pairwise for one (a contiguous axis)."""
    n_leads = bx.shape[1]
    k = ring.shape[0]
    for li in range(n_leads):
        mn = bx[0, li]
        mx = bx[0, li]
        nan = False
        for j in range(cnt):
            v = bx[j, li]
            if v != v:
                nan = True
                break
            if v < mn:
                mn = v
            if v > mx:
                mx = v
        if nan or not (mx - mn > range_mv):
            continue
        if n_leads == 1:
            s = pairwise_sum(bx[:, 0], 0, cnt)
        else:
            s = 0.0
            for j in range(cnt):
                s += bx[j, li]
        for r in range(k - 1):
            ring[r, li] = ring[r + 1, li]
        ring[k - 1, li] = s / cnt
        v_n = 0  # values seen, sorted (insertion sort: K is small)
        for r in range(k):
            v = ring[r, li]
            if v == v:
                p = v_n
                while p > 0 and tmp[p - 1] > v:
                    tmp[p] = tmp[p - 1]
                    p -= 1
                tmp[p] = v
                v_n += 1
        base[li] = 0.5 * (tmp[max(v_n - 1, 0) // 2] + tmp[min(v_n // 2, k - 1)])


@numba.njit(cache=True, nogil=True)
def _dropout_kernel(
    x: np.ndarray,
    n0: int,
    has_range: bool,
    rails: np.ndarray,
    fst: np.ndarray,
    ist: np.ndarray,
    ring: np.ndarray,
    bx: np.ndarray,
    bcnt: np.ndarray,
    xtail: np.ndarray,
    nat: np.ndarray,
    nat_cnt: np.ndarray,
    ev: np.ndarray,
    pi: np.ndarray,
    pf: np.ndarray,
) -> int:
    """Classify the chunk ``x [n, leads]`` (float64, absolute samples ``n0 ..``) sample by sample,
    updating the carried state in place; writes the segments that ended (lead, kind code, start, end)
    to ``ev`` in time order and returns their number."""
    n, n_leads = x.shape
    m_nan, m_sat, m_off = pi[_P_MNAN], pi[_P_MSAT], pi[_P_MOFF]
    floor, cap, warm, fblk, blk = pi[_P_FLOOR], pi[_P_CAP], pi[_P_WARM], pi[_P_FBLK], pi[_P_BLK]
    flat_eps, sat_tol, sat_eps = pf[_P_FEPS], pf[_P_SATTOL], pf[_P_SATEPS]
    sat_exc, off_mv, off_rng = pf[_P_SATEXC], pf[_P_OFFMV], pf[_P_OFFRNG]
    factor, nat_min = pf[_P_FACTOR], pf[_P_NATMIN]
    w = xtail.shape[0]
    tmp = np.empty(ring.shape[0])
    base = fst[_F_BASE]
    cnt = nat_cnt[0]
    bc = bcnt[0]
    ne = 0
    blk_end = (n0 // blk + 1) * blk - 1  # last sample of the block at absolute sample n0
    for i in range(n):
        a = n0 + i
        for li in range(n_leads):
            v = x[i, li]
            ref = fst[_F_BASE, li]
            step = abs(v - fst[_F_LAST, li])
            fst[_F_LAST, li] = v
            hi = fst[_F_HI, li]
            if v > hi:  # running extremes up to and including this sample (NaN ignored)
                hi = v
                fst[_F_HI, li] = v
            lo = fst[_F_LO, li]
            if v < lo:
                lo = v
                fst[_F_LO, li] = v
            bx[bc, li] = v
            dev = abs(v - ref)  # NaN (compares False) until a baseline is learned
            if has_range:
                sat = v >= rails[li, 1] - sat_tol or v <= rails[li, 0] + sat_tol
            else:
                sat = (
                    (v >= hi - sat_eps or v <= lo + sat_eps) and step <= flat_eps and dev >= sat_exc
                )
            off = dev >= off_mv
            if has_range and sat:
                off = False
            flat = step <= flat_eps and not sat and not off
            # raw run lengths (the trailing-window counts)
            r_nan = ist[_I_NAN, li] + 1 if v != v else 0
            r_sat = ist[_I_SAT, li] + 1 if sat else 0
            r_off = ist[_I_OFF, li] + 1 if off else 0
            ist[_I_NAN, li] = r_nan
            ist[_I_SAT, li] = r_sat
            ist[_I_OFF, li] = r_off
            code = 0
            # flatline: equal-diff run length, its minimum fixed at its first sample
            rl = ist[_I_FLAT, li]
            if flat:
                if rl == 0:
                    ist[_I_THR, li] = _flat_min_nb(a - 1, nat, cnt, floor, cap, warm, fblk, factor)
                rl += 1
                if rl + 1 >= ist[_I_THR, li]:
                    code = 4
            elif rl > 0:  # a run ended: unconfirmed and long enough to matter, it is natural
                length = rl + 1
                if length > nat_min and length < ist[_I_THR, li]:
                    nb = a // fblk
                    if not (cnt > 0 and nat[2, cnt - 1] == nb and nat[1, cnt - 1] >= length):
                        nat[0, cnt] = a
                        nat[1, cnt] = length
                        nat[2, cnt] = nb
                        cnt += 1
                rl = 0
                ist[_I_THR, li] = 0
            ist[_I_FLAT, li] = rl
            if r_off >= m_off:  # lead-off also needs a flat (no-ECG) trailing window
                wmx = v
                wmn = v
                for j in range(i - m_off + 1, i):
                    u = x[j, li] if j >= 0 else xtail[w + j, li]
                    if u > wmx:
                        wmx = u
                    if u < wmn:
                        wmn = u
                if wmx - wmn <= off_rng:
                    code = 3
            if r_sat >= m_sat:
                code = 2
            if r_nan >= m_nan:
                code = 1
            # runs: close the open one when the kind changes, open the new one
            op = ist[_I_OPEN, li]
            if code != op:
                if op != 0:
                    ev[ne, 0] = li
                    ev[ne, 1] = op
                    ev[ne, 2] = ist[_I_START, li]
                    ev[ne, 3] = a
                    ne += 1
                    ist[_I_END, li] = a
                if code != 0:
                    # flat: from the plateau's first sample; else confirmed m samples into the run
                    begin = a - rl if code == 4 else a - pi[code - 1] + 1
                    ist[_I_START, li] = max(begin, ist[_I_END, li])
                ist[_I_OPEN, li] = code
        bc += 1
        if a == blk_end:  # a block at absolute samples [k B, (k + 1) B) is complete
            _learn_block(bx, bc, ring, base, off_rng, tmp)
            bc = 0
            blk_end += blk
    bcnt[0] = bc
    # raw samples of the lead-off range window carried to the next chunk
    if w > 0:
        if n >= w:
            xtail[:, :] = x[n - w :, :]
        else:
            for j in range(w - n):
                xtail[j, :] = xtail[j + n, :]
            xtail[w - n :, :] = x
    if cnt > 0:  # forget blocks no plateau starting from here on can look back to
        keep = (n0 + n - 1) // fblk - 1
        drop = 0
        while drop < cnt and nat[2, drop] < keep:
            drop += 1
        if drop:
            for j in range(cnt - drop):
                nat[0, j] = nat[0, j + drop]
                nat[1, j] = nat[1, j + drop]
                nat[2, j] = nat[2, j + drop]
            cnt -= drop
    nat_cnt[0] = cnt
    return ne


class DropoutDetector:
    """Dropout runs of every lead of one stream; sample indices are absolute (0 = stream start).

    The per-sample work runs in one numba kernel (:func:`_dropout_kernel`) over state carried in
    arrays; segments, gaps and the queries stay in Python."""

    def __init__(
        self,
        stream_id: str,
        fs: float,
        leads: tuple[str, ...],
        t0: float = 0.0,
        config: DropoutConfig | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.fs = float(fs)
        self.leads = tuple(leads)
        self.t0 = float(t0)
        self.config = config or DropoutConfig()
        c = self.config
        self._m = np.array(
            [
                max(1, round(c.min_nan_s * fs)),
                max(1, round(c.min_saturation_s * fs)),
                max(1, round(c.min_lead_off_s * fs)),
                max(1, round(c.min_flat_s * fs) - 1),  # flat diffs: m diffs = m + 1 equal samples
            ],
            dtype=np.int64,
        )
        n_leads = len(self.leads)
        # flatline: minimum plateau (samples) = clip(factor * longest natural plateau, floor, cap)
        self._flat_floor = int(self._m[3]) + 1
        self._flat_cap = max(self._flat_floor, round(c.max_flat_s * fs))
        self._flat_warm = round(c.flat_warmup_s * fs)
        self._flat_block = max(1, round(c.flat_history_s * fs))
        # lead_off baseline blocks (samples)
        self._blk = max(2, round(c.lead_off_block_s * fs))
        self._pi = np.zeros(8, dtype=np.int64)
        self._pi[:3] = self._m[:3]
        self._pi[_P_FLOOR] = self._flat_floor
        self._pi[_P_CAP] = self._flat_cap
        self._pi[_P_WARM] = self._flat_warm
        self._pi[_P_FBLK] = self._flat_block
        self._pi[_P_BLK] = self._blk
        self._pf = np.array(
            [
                c.flat_eps_mv,
                c.sat_tol_mv,
                c.sat_eps_mv,
                c.sat_min_excursion_mv,
                c.lead_off_mv,
                c.lead_off_range_mv,
                c.flat_natural_factor,
                self._flat_floor / c.flat_natural_factor,  # shorter natural runs never matter
            ],
            dtype=np.float64,
        )
        # per-lead float state: last raw sample, running max / min (estimated rails), baseline
        self._fst = np.empty((4, n_leads))
        self._fst[_F_LAST] = np.nan
        self._fst[_F_HI] = -np.inf
        self._fst[_F_LO] = np.inf
        self._fst[_F_BASE] = np.nan
        # per-lead integer state: raw nan / saturation / lead_off run lengths, the flat run's equal
        # diffs ending at the last sample and its minimum, the open run (kind code, start) and the end
        # index of the lead's last segment
        self._ist = np.zeros((8, n_leads), dtype=np.int64)
        self._flat_rl = self._ist[_I_FLAT]
        self._last_end = self._ist[_I_END]
        # lead_off baseline: means of the last K active blocks (oldest first, NaN until seen) and the
        # samples of the current, incomplete block
        self._ring = np.full((max(1, int(c.lead_off_baseline_blocks)), n_leads), np.nan)
        self._bx = np.empty((self._blk, n_leads))
        self._bcnt = np.zeros(1, dtype=np.int64)
        self._xtail = np.full((int(self._m[2]) - 1, n_leads), np.nan)  # raw samples: range test
        # natural plateaus that could raise the minimum, in end order, increasing within a block:
        # rows end index (first sample after the run), length (samples), block (end // flat_block)
        self._nat = np.zeros((3, 64), dtype=np.int64)
        self._nat_cnt = np.zeros(1, dtype=np.int64)
        self._ev = np.zeros((0, 4), dtype=np.int64)
        self._range: np.ndarray | None = None  # declared ADC range [n_leads, 2] (mV), if any
        self._no_range = np.zeros((n_leads, 2))
        self._n = 0

    def set_adc_range(self, adc_range_mv: object) -> None:
        """Declare each lead's representable range ``[[lo, hi], ...]`` (mV); ``None`` goes back to the
        running min/max estimate. Saturation is then judged against these rails."""
        if adc_range_mv is None:
            self._range = None
            return
        r = np.asarray(adc_range_mv, dtype=np.float64)
        if (
            r.shape != (len(self.leads), 2)
            or not np.all(np.isfinite(r))
            or np.any(r[:, 0] >= r[:, 1])
        ):
            raise ValueError(f"adc_range_mv must be {len(self.leads)} [lo, hi] pairs with lo < hi")
        self._range = np.ascontiguousarray(r)

    def time(self, index: int) -> float:
        """Stream time of absolute sample ``index``."""
        return self.t0 + index / self.fs

    def active(self) -> np.ndarray:
        """Boolean per lead: inside a confirmed dropout at the last processed sample."""
        return self._ist[_I_OPEN] != 0

    def open_since(self) -> list[float | None]:
        """Per lead, the start time of the dropout it is in now (None when clean)."""
        return [None if o is None else self.time(o[1]) for o in self._opened()]

    def open_runs(self) -> list[tuple[str, int] | None]:
        """Per lead, ``(kind, start sample)`` of the confirmed dropout it is in now (None when clean)."""
        return [None if o is None else (_KINDS[o[0] - 1], o[1]) for o in self._opened()]

    def _opened(self) -> list[tuple[int, int] | None]:
        """Per lead, (kind code, start index) of the open run, None when clean."""
        kinds = self._ist[_I_OPEN].tolist()
        starts = self._ist[_I_START].tolist()
        return [(k, s) if k else None for k, s in zip(kinds, starts, strict=True)]

    def settled(self) -> int:
        """Absolute sample index before which every sample's classification is final: a run not yet
        confirmed (dropout-like samples at the end, fewer than its kind's minimum) may later be confirmed
        back to its start, so samples from there on may still turn out to be a dropout."""
        clean = self._ist[_I_OPEN] == 0
        # trailing raw runs of nan / saturation / lead_off, at most their minimum
        back = np.where(clean, np.minimum(self._ist[:3], self._m[:3, None]).max(axis=0), 0)
        # flat: the unconfirmed plateau's samples (one before its equal diffs)
        flat = np.where(clean & (self._flat_rl > 0), self._flat_rl + 1, 0)
        return self._n - int(max(back.max(initial=0), flat.max(initial=0)))

    def flat_minimum_s(self) -> float:
        """Minimum duration (s) a flatline starting now must last (see the module docstring)."""
        return self._flat_min(self._n - 1) / self.fs

    def _flat_min(self, start: int) -> int:
        """Minimum length (samples) of a plateau starting at absolute sample ``start``."""
        return int(
            _flat_min_nb(
                start,
                self._nat,
                int(self._nat_cnt[0]),
                self._flat_floor,
                self._flat_cap,
                self._flat_warm,
                self._flat_block,
                float(self.config.flat_natural_factor),
            )
        )

    def _segment(self, lead: int, code: int, start: int, end: int) -> DropoutSegment:
        self._last_end[lead] = end
        return DropoutSegment(
            self.stream_id, self.leads[lead], self.time(start), self.time(end), _KINDS[code - 1]
        )

    def process(self, x: np.ndarray, start_sample: int | None = None) -> list[DropoutSegment]:
        """Feed raw samples ``[n, n_leads]`` (mV, NaN = missing); returns dropout segments that ended."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        n, n_leads = x.shape
        if n_leads != len(self.leads):
            raise ValueError(f"chunk has {n_leads} leads, detector was built for {len(self.leads)}")
        out: list[DropoutSegment] = []
        if start_sample is not None and start_sample > self._n:
            out += self.gap(self._n, start_sample - self._n)
        if n == 0:
            return out
        x = np.ascontiguousarray(x)
        most = n * n_leads  # at most one segment end / natural plateau per sample and lead
        if self._ev.shape[0] < most:
            self._ev = np.zeros((max(most, 2 * self._ev.shape[0]), 4), dtype=np.int64)
        cnt = int(self._nat_cnt[0])
        if self._nat.shape[1] < cnt + most:
            nat = np.zeros((3, max(cnt + most, 2 * self._nat.shape[1])), dtype=np.int64)
            nat[:, :cnt] = self._nat[:, :cnt]
            self._nat = nat
        has_range = self._range is not None
        ne = _dropout_kernel(
            x,
            self._n,
            has_range,
            self._range if self._range is not None else self._no_range,
            self._fst,
            self._ist,
            self._ring,
            self._bx,
            self._bcnt,
            self._xtail,
            self._nat,
            self._nat_cnt,
            self._ev,
            self._pi,
            self._pf,
        )
        self._n += n
        if ne:
            ev = self._ev[:ne]
            order = np.argsort(ev[:, 0], kind="stable")  # lead by lead, each in time order
            for li, code, start, end in ev[order].tolist():
                out.append(
                    DropoutSegment(
                        self.stream_id,
                        self.leads[li],
                        self.time(start),
                        self.time(end),
                        _KINDS[code - 1],
                    )
                )
        return out

    def gap(self, start_sample: int, n: int) -> list[DropoutSegment]:
        """Lost samples ``[start_sample, start_sample + n)``: close open runs and report the gap on
        every lead; the detector's position advances past it."""
        out: list[DropoutSegment] = []
        for lead, opened in enumerate(self._opened()):
            if opened is not None:
                out.append(self._segment(lead, opened[0], opened[1], start_sample))
        self._ist[_I_OPEN] = 0
        self._ist[_I_NAN : _I_OFF + 1] = 0  # raw runs
        self._ist[_I_FLAT] = 0
        self._ist[_I_THR] = 0
        self._fst[_F_LAST] = np.nan
        self._xtail[:] = np.nan
        self._bcnt[0] = 0  # the incomplete block's samples; the baseline itself holds
        self._n = max(self._n, start_sample + n)
        if n > 0:
            for name in self.leads:
                out.append(
                    DropoutSegment(
                        self.stream_id,
                        name,
                        self.time(start_sample),
                        self.time(start_sample + n),
                        "missing_frames",
                    )
                )
            self._last_end[:] = start_sample + n
        return out

    def flush(self) -> list[DropoutSegment]:
        """End of stream: close every open run at the last sample."""
        out: list[DropoutSegment] = []
        for lead, opened in enumerate(self._opened()):
            if opened is not None:
                out.append(self._segment(lead, opened[0], opened[1], self._n))
        self._ist[_I_OPEN] = 0
        return out


def detect_dropouts(
    x: np.ndarray,
    fs: float,
    leads: tuple[str, ...],
    stream_id: str = "record",
    config: DropoutConfig | None = None,
    chunk: int | None = None,
) -> list[DropoutSegment]:
    """Dropout segments of a whole record ``[n, leads]`` (times in seconds from its start), chunked as
    the stream does."""
    det = DropoutDetector(stream_id, fs, leads, 0.0, config)
    step = int(chunk or round(fs))
    out: list[DropoutSegment] = []
    for s in range(0, x.shape[0], step):
        out += det.process(x[s : s + step], s)
    return out + det.flush()
