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

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from stream.stages.events import DropoutSegment

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


class DropoutDetector:
    """Dropout runs of every lead of one stream; sample indices are absolute (0 = stream start)."""

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
        self._mmax = int(self._m[:3].max()) + 1
        n_leads = len(self.leads)
        # trailing raw masks of nan / saturation / lead_off (flatline keeps run lengths instead)
        self._tails = [np.zeros((self._mmax + 1, n_leads), dtype=bool) for _ in range(3)]
        self._tail_any = [
            False
        ] * 3  # whether a tail holds any True (all-False tails need no shifting)
        # flatline: minimum plateau (samples) = clip(factor * longest natural plateau, floor, cap)
        self._flat_floor = int(self._m[3]) + 1
        self._flat_cap = max(self._flat_floor, round(c.max_flat_s * fs))
        self._flat_warm = round(c.flat_warmup_s * fs)
        self._flat_block = max(1, round(c.flat_history_s * fs))
        # natural plateaus that could raise the minimum, in end order, increasing within a block:
        # end index (first sample after the run), length (samples), block (end // flat_block)
        self._nat_end: list[int] = []
        self._nat_len: list[int] = []
        self._nat_blk: list[int] = []
        self._flat_rl = np.zeros(n_leads, dtype=np.int64)  # equal diffs ending at the last sample
        self._flat_thr = np.zeros(n_leads, dtype=np.int64)  # minimum (samples) of the current run
        self._last = np.full(n_leads, np.nan)  # last raw sample of each lead
        self._xtail = np.full(
            (int(self._m[2]) - 1, n_leads), np.nan
        )  # raw samples for the range test
        # lead_off baseline: medians of the last K active blocks (oldest first, NaN until seen), their
        # median, and the samples of the current, incomplete block
        self._blk = max(2, round(c.lead_off_block_s * fs))
        self._ring = np.full((max(1, int(c.lead_off_baseline_blocks)), n_leads), np.nan)
        self._base = np.full(n_leads, np.nan)
        self._warm = True  # some lead has had fewer than K active blocks
        self._cols = np.arange(n_leads)
        self._kidx = np.arange(self._ring.shape[0])[:, None]
        self._win: dict[int, np.ndarray] = {}  # window row indices per number of blocks
        self._bx = np.empty((0, n_leads))
        self._lo = np.full(n_leads, np.inf)  # running min / max of each lead (estimated rails)
        self._hi = np.full(n_leads, -np.inf)
        self._range: np.ndarray | None = None  # declared ADC range [n_leads, 2] (mV), if any
        self._open: list[tuple[int, int] | None] = [None] * n_leads  # (kind code, start index)
        self._last_end = np.zeros(n_leads, dtype=np.int64)  # end index of each lead's last segment
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
        self._range = r

    def time(self, index: int) -> float:
        """Stream time of absolute sample ``index``."""
        return self.t0 + index / self.fs

    def active(self) -> np.ndarray:
        """Boolean per lead: inside a confirmed dropout at the last processed sample."""
        return np.array([o is not None for o in self._open], dtype=bool)

    def open_since(self) -> list[float | None]:
        """Per lead, the start time of the dropout it is in now (None when clean)."""
        return [None if o is None else self.time(o[1]) for o in self._open]

    def open_runs(self) -> list[tuple[str, int] | None]:
        """Per lead, ``(kind, start sample)`` of the confirmed dropout it is in now (None when clean)."""
        return [None if o is None else (_KINDS[o[0] - 1], o[1]) for o in self._open]

    def settled(self) -> int:
        """Absolute sample index before which every sample's classification is final: a run not yet
        confirmed (dropout-like samples at the end, fewer than its kind's minimum) may later be confirmed
        back to its start, so samples from there on may still turn out to be a dropout."""
        end = self._n
        is_open = np.array([o is not None for o in self._open])
        for k, tail in enumerate(self._tails):
            if not self._tail_any[k]:
                continue
            rev = tail[::-1]
            count = np.where(rev.all(axis=0), rev.shape[0], rev.argmin(axis=0))  # trailing run
            back = np.minimum(count, int(self._m[k]))
            back[(count == 0) | is_open] = 0
            end = min(end, self._n - int(back.max(initial=0)))
        # flat: the unconfirmed plateau's samples (one before its equal diffs)
        back = np.where((self._flat_rl > 0) & ~is_open, self._flat_rl + 1, 0)
        return min(end, self._n - int(back.max(initial=0)))

    def flat_minimum_s(self) -> float:
        """Minimum duration (s) a flatline starting now must last (see the module docstring)."""
        return float(self._flat_min(np.array([self._n - 1]))[0]) / self.fs

    def _flat_min(self, start: np.ndarray) -> np.ndarray:
        """Minimum length (samples) of plateaus starting at absolute samples ``start``: from the
        longest natural plateau ended at or before each start, in its block or the previous one."""
        thr = np.full(start.shape, self._flat_floor, dtype=np.int64)
        if self._nat_end:
            ends = np.asarray(self._nat_end, dtype=np.int64)
            lens = np.asarray(self._nat_len, dtype=np.int64)
            blks = np.asarray(self._nat_blk, dtype=np.int64)
            b = start // self._flat_block
            last = np.searchsorted(ends, start, side="right") - 1  # last run ended by start
            prev = np.searchsorted(blks, b, side="left") - 1  # last run of an earlier block
            ok_last = (last >= 0) & (blks[np.maximum(last, 0)] >= b - 1)
            ok_prev = (prev >= 0) & (blks[np.maximum(prev, 0)] == b - 1) & (prev <= last)
            longest = np.maximum(
                np.where(ok_last, lens[np.maximum(last, 0)], 0),
                np.where(ok_prev, lens[np.maximum(prev, 0)], 0),
            )
            want = np.ceil(self.config.flat_natural_factor * longest).astype(np.int64)
            thr = np.maximum(thr, want)
        thr = np.minimum(thr, self._flat_cap)
        return np.where(start < self._flat_warm, self._flat_cap, thr)

    def _natural(self, end: int, length: int) -> None:
        """Remember a natural plateau of ``length`` samples ended at ``end`` (runs ended in order)."""
        blk = end // self._flat_block
        if self._nat_blk and self._nat_blk[-1] == blk and self._nat_len[-1] >= length:
            return
        self._nat_end.append(end)
        self._nat_len.append(length)
        self._nat_blk.append(blk)

    def _flat(self, flat: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
        """Confirmed flatline samples of a chunk ``[n, leads]`` and the equal-diff run length at each
        sample; updates the natural plateaus and the carried run state."""
        n = flat.shape[0]
        idx = np.arange(n)[:, None]
        lastfalse = np.maximum.accumulate(np.where(flat, -1, idx), axis=0)
        rl = np.where(flat, np.where(lastfalse < 0, idx + 1 + self._flat_rl, idx - lastfalse), 0)
        carried = (lastfalse < 0) & (
            self._flat_rl > 0
        )  # samples of a run begun in an earlier chunk
        # runs ended in this chunk (a non-flat sample after a flat one), in end order
        prev_rl = np.concatenate([self._flat_rl[None, :], rl[:-1]], axis=0)
        ended = ~flat & (prev_rl > 0)
        floor = self._flat_floor / self.config.flat_natural_factor  # shorter runs never matter
        cand = ended & (prev_rl + 1 > floor)
        if cand.any():
            ii, ll = np.nonzero(cand)
            for i, li in zip(ii.tolist(), ll.tolist(), strict=True):  # row-major: end order
                length = int(prev_rl[i, li]) + 1  # equal samples
                end = base + i
                start = end - length
                if i == 0 or carried[i - 1, li]:
                    thr = int(self._flat_thr[li])
                else:
                    thr = int(self._flat_min(np.array([start]))[0])
                if length < thr:
                    self._natural(end, length)
        thr_s = np.zeros(flat.shape, dtype=np.int64)
        if flat.any():
            first = base + idx - rl  # first sample of each sample's plateau
            if not self._nat_end and base - 1 >= self._flat_warm:  # no natural plateau on record
                thr_s[:] = self._flat_floor
            else:
                new = flat & ~carried
                if new.any():
                    thr_s[new] = self._flat_min(first[new])
            thr_s = np.where(carried, self._flat_thr[None, :], thr_s)
        conf = flat & (rl + 1 >= thr_s)
        self._flat_rl = rl[-1].astype(np.int64)
        self._flat_thr = np.where(flat[-1], thr_s[-1], 0).astype(np.int64)
        if self._nat_blk:  # forget blocks no plateau starting from here on can look back to
            keep = (base + n - 1) // self._flat_block - 1
            drop = int(np.searchsorted(np.asarray(self._nat_blk), keep, side="left"))
            if drop:
                del self._nat_end[:drop], self._nat_len[:drop], self._nat_blk[:drop]
        return conf, rl

    def _baseline(self, x: np.ndarray) -> np.ndarray:
        """Baseline ``[n, leads]`` of a chunk's samples. Samples are cut into blocks at absolute
        indices ``[k B, (k + 1) B)``; a block is *active* when its range exceeds ``lead_off_range_mv``
        (ECG on the lead) and it holds no NaN. Each block's baseline is the median of the means of the
        last K active blocks before it (NaN until a first one), so it does not depend on how the stream
        is cut into frames. A flat block (lead-off, flatline, saturation, a quiet stretch of ECG) teaches
        nothing: the baseline holds through a dropout (only the block of its onset step is learned, one
        of K), while a DC offset or a baseline step that carries ECG is learned within K active blocks.
        Updates the ring of block means and the incomplete block carried to the next chunk."""
        n_leads = x.shape[1]
        b = self._blk
        p = self._bx.shape[0]
        xb = np.concatenate([self._bx, x], axis=0) if p else x
        size = xb.shape[0]
        first = b - (self._n - p) % b  # length of the block xb starts with (short after a gap)
        nb = 0 if size < first else 1 + (size - first) // b  # complete blocks in xb
        if nb == 0:
            self._bx = xb
            return np.broadcast_to(self._base, x.shape)
        done = first + (nb - 1) * b
        self._bx = xb[done:]
        with np.errstate(invalid="ignore"):
            if first == b:
                blk = xb[:done].reshape(nb, b, n_leads)
                mean = blk.mean(axis=1)
                active = (blk.max(axis=1) - blk.min(axis=1)) > self.config.lead_off_range_mv
            else:  # after a gap: the first block is short
                parts = np.split(xb[:done], np.arange(first, done, b), axis=0)
                mean = np.stack([q.mean(axis=0) for q in parts])
                rng = np.stack([q.max(axis=0) - q.min(axis=0) for q in parts])
                active = rng > self.config.lead_off_range_mv
        if not active.any():  # nothing learned: every block keeps the baseline
            bases = np.broadcast_to(self._base, (nb + 1, n_leads))
        else:
            bases = self._learn(mean, active)
        lengths = np.full(nb + 1, b)
        lengths[0], lengths[-1] = first, size - done
        return np.repeat(bases, lengths, axis=0)[p:]

    def _learn(self, mean: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Baselines ``[nb + 1, leads]`` before each of ``nb`` complete blocks (``mean``, ``active``:
        ``[nb, leads]``) and after the last; the ring takes the active blocks' means."""
        nb, n_leads = mean.shape
        k = self._ring.shape[0]
        cols = self._cols
        # per lead, the active blocks' means moved to the front (in order) after the ring: the ring
        # after i new active blocks is rows i .. i + K - 1 of ``ext``
        new = mean if active.all() else mean[np.argsort(~active, axis=0, kind="stable"), cols]
        ext = np.concatenate([self._ring, new], axis=0)
        idx = self._win.get(nb)
        if idx is None:
            idx = self._win[nb] = np.arange(1, k + 1)[None, :] + np.arange(nb)[:, None]
        win = np.sort(ext[idx], axis=1)  # [nb, K, leads]: the ring after 1 .. nb new active blocks
        if (
            self._warm
        ):  # median of the values seen (NaN, sorted last) until K active blocks per lead
            v = k - np.isnan(win).sum(axis=1)
            med = 0.5 * (
                win[np.arange(nb)[:, None], np.maximum(v - 1, 0) // 2, cols]
                + win[np.arange(nb)[:, None], np.minimum(v // 2, k - 1), cols]
            )
        else:
            med = 0.5 * (win[:, (k - 1) // 2] + win[:, k // 2])
        med = np.concatenate([self._base[None, :], med], axis=0)  # after 0 .. nb new active blocks
        count = np.cumsum(active, axis=0)
        bases = np.empty((nb + 1, n_leads))
        bases[0] = self._base
        bases[1:] = med[count, cols]
        got = count[-1]
        self._base = bases[-1].copy()
        self._ring = ext[got + self._kidx, cols]
        if self._warm:
            self._warm = bool(np.isnan(self._ring[0]).any())
        return bases

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
        c = self.config
        nan = np.isnan(x)
        ref = self._baseline(x)
        with np.errstate(invalid="ignore"):
            prev = np.concatenate([self._last[None, :], x[:-1]], axis=0)
            step = np.abs(x - prev)
            # running extremes up to and including each sample (NaN ignored): chunking-independent
            hi = np.fmax.accumulate(np.concatenate([self._hi[None, :], x], axis=0), axis=0)[1:]
            lo = np.fmin.accumulate(np.concatenate([self._lo[None, :], x], axis=0), axis=0)[1:]
            self._hi, self._lo = hi[-1], lo[-1]
            if self._range is not None:
                lo_rail, hi_rail = self._range[:, 0], self._range[:, 1]
                sat = (x >= hi_rail - c.sat_tol_mv) | (x <= lo_rail + c.sat_tol_mv)
            else:  # a clipped plateau at the lead's observed extreme, away from its baseline
                sat = (
                    ((x >= hi - c.sat_eps_mv) | (x <= lo + c.sat_eps_mv))
                    & (step <= c.flat_eps_mv)
                    & (np.abs(x - ref) >= c.sat_min_excursion_mv)
                )
            off = np.abs(x - ref) >= c.lead_off_mv
            if self._range is not None:  # at a declared rail: saturation, never lead-off
                off &= ~sat
            # (estimated rails: a sample of a noisy lead-off plateau at the lead's new extreme that
            # happens to repeat its predecessor is raw saturation; it must not cut the lead-off run.
            # A confirmed saturation still wins over lead-off sample by sample, by priority.)
            flat = (step <= c.flat_eps_mv) & ~sat & ~off
        raw = (nan, sat, off, flat)  # NaN compares False in the others
        base = self._n
        self._n += n
        self._last = x[-1]
        xext = np.concatenate([self._xtail, x], axis=0)
        self._xtail = xext[-(int(self._m[2]) - 1) :]
        code = np.zeros((n, n_leads), dtype=np.int8)
        any_conf = False
        flat_rl: np.ndarray | None = None
        if flat.any() or self._flat_rl.any():
            conf, flat_rl = self._flat(flat, base)
            if conf.any():
                code[conf] = 4
                any_conf = True
        for k in (2, 1, 0):  # lowest priority first, overwritten by higher ones
            m = int(self._m[k])
            if not raw[k].any():
                if self._tail_any[k]:  # shift the tail; no run of this kind can be confirmed now
                    ext = np.concatenate([self._tails[k], raw[k]], axis=0)
                    self._tails[k] = ext[-self._mmax :]
                    self._tail_any[k] = bool(self._tails[k].any())
                continue
            ext = np.concatenate([self._tails[k], raw[k]], axis=0)  # [mmax + n, leads]
            self._tails[k] = ext[-self._mmax :]
            self._tail_any[k] = True
            # trailing-window count of the raw mask over m samples (exact integer arithmetic)
            cs = np.cumsum(ext, axis=0, dtype=np.int32)
            L = ext.shape[0]
            conf = (cs[L - n :] - cs[L - n - m : L - m]) == m
            if k == 2 and conf.any():  # lead-off also needs a flat (no-ECG) trailing window
                win = sliding_window_view(xext, m, axis=0)[-n:]
                with np.errstate(invalid="ignore"):
                    conf &= (win.max(axis=-1) - win.min(axis=-1)) <= c.lead_off_range_mv
            if conf.any():
                code[conf] = k + 1
                any_conf = True
        if not any_conf and all(o is None for o in self._open):
            return out
        for li in range(n_leads):
            out += self._runs(li, code[:, li], base, None if flat_rl is None else flat_rl[:, li])
        return out

    def _runs(
        self, lead: int, code: np.ndarray, base: int, flat_rl: np.ndarray | None
    ) -> list[DropoutSegment]:
        out: list[DropoutSegment] = []
        opened = self._open[lead]
        if opened is None and not code.any():
            return out
        change = np.flatnonzero(np.diff(code)) + 1
        starts = np.concatenate([[0], change])
        for s in starts:
            k = int(code[s])
            idx = base + int(s)
            if opened is not None:
                if k == opened[0]:
                    continue
                out.append(self._segment(lead, opened[0], opened[1], idx))
                opened = None
            if k:
                # confirmed m samples into the run (flat: from the plateau's first sample, one
                # before its equal diffs); never start before the previous segment of this lead ended
                if k == 4 and flat_rl is not None:
                    begin = idx - int(flat_rl[s])
                else:
                    begin = idx - int(self._m[k - 1]) + 1
                opened = (k, max(begin, int(self._last_end[lead])))
        self._open[lead] = opened
        return out

    def gap(self, start_sample: int, n: int) -> list[DropoutSegment]:
        """Lost samples ``[start_sample, start_sample + n)``: close open runs and report the gap on
        every lead; the detector's position advances past it."""
        out: list[DropoutSegment] = []
        for lead, opened in enumerate(self._open):
            if opened is not None:
                out.append(self._segment(lead, opened[0], opened[1], start_sample))
                self._open[lead] = None
        for tail in self._tails:
            tail[:] = False
        self._tail_any = [False] * 3
        self._flat_rl[:] = 0
        self._flat_thr[:] = 0
        self._last = np.full(len(self.leads), np.nan)
        self._xtail[:] = np.nan
        self._bx = self._bx[:0]  # the incomplete block's samples; the baseline itself holds
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
        for lead, opened in enumerate(self._open):
            if opened is not None:
                out.append(self._segment(lead, opened[0], opened[1], self._n))
                self._open[lead] = None
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
