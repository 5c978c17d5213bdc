"""Patient-specific lead transfer: rebuild a lost lead of a 2-lead stream from the other.

A patient-independent model cannot know a patient's electrode placement (the PTB-XL-trained 12-lead
network transfers poorly to MIT-BIH's modified leads and is withheld). :class:`LeadTransfer` learns the
mapping online from the stream's own clean signal instead: while every lead is finite it accumulates
the sufficient statistics (Gram matrix ``Z^T Z`` with exponential forgetting) of a linear FIR mapping,
at an internal rate of ``rate_hz`` (subsampled, the band-passed signal is band-limited), from each lead's
lags within +-``taps_s`` to every lead at lag 0; the ridge solution of each direction comes out of
the one Gram matrix. When a lead drops out (NaN) it is rebuilt from the other leads with the fitted
filter applied at the stream rate (taps dilated by the subsampling factor).

The 90 % interval is split-conformal, online and per stream: each learned frame is first predicted
with the current filter (fitted on earlier frames only), its residuals normalised by
``floor + envelope(prediction)`` (floor: ``floor_frac`` times the target lead's RMS) go to a bounded
ring, and the ``coverage`` quantile with the finite-sample correction is the multiplier of the scale.
Everything is causal; memory and per-frame cost are constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d

from models.runtime.protocol import MEASURED, MODEL, UNRECOVERABLE
from stream.stages.recovery import true_runs

BY = "lead_transfer"


@dataclass(frozen=True)
class TransferConfig:
    """Lead-transfer settings (chosen on MIT-BIH DS1 only, see ``training.recovery.evaluate_lead_transfer``).

    ``tau_s``: forgetting time constant of the statistics (s); ``taps_s``: FIR support +- (s);
    ``rate_hz``: internal rate (the stream is subsampled by ``round(fs / rate_hz)``); ``ridge``: ridge
    lambda relative to the mean diagonal of the Gram block; ``min_learned_s``: seconds of clean all-lead
    signal learned before rebuilding; ``learn_every``: learn from every Nth frame (cost bound);
    ``refit_every``: refit the filter used for the conformal residuals every Nth learned frame;
    ``calibrate_every``: compute the conformal residuals of every Nth learned frame;
    ``coverage``: interval coverage; ``residual_memory_s``: seconds of learned residuals kept for the
    quantile; ``row_step``: learn from every Nth internal-rate sample; ``residual_step``: keep every Nth
    residual sample; ``envelope_half_s``: half width of the
    prediction envelope (s); ``floor_frac``: scale floor as a fraction of the target lead's RMS.

    Chosen on DS1 (first 10 min, a masked 2-10 s span every 60 s): support +-0.3 s (about one beat
    either side: median r 0.82 at +-0.1 s, 0.87-0.88 at +-0.3 s, +-0.4 s little better at twice the
    cost), 60 Hz (as good as 90/120 Hz, half the features), tau 120 s, learning every 4th second
    (no loss against every second, a quarter of the cost), floor 0.4 (narrower intervals than 0.1-0.2
    at the same pooled coverage); Gram from every 2nd row (r unchanged, half the cost); the calibration
    filter refit every 3rd learned frame (every 15th: residuals of a staler filter, 92 % coverage);
    ridge and residual memory barely matter.
    """

    tau_s: float = 120.0
    taps_s: float = 0.3
    rate_hz: float = 60.0
    ridge: float = 1e-3
    min_learned_s: float = 20.0
    learn_every: int = 4
    refit_every: int = 3
    calibrate_every: int = 2
    coverage: float = 0.9
    residual_memory_s: float = 120.0
    residual_step: int = 2
    row_step: int = 2
    envelope_half_s: float = 0.1
    floor_frac: float = 0.4

    def __post_init__(self) -> None:
        for name in ("tau_s", "taps_s", "rate_hz", "min_learned_s", "residual_memory_s"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"TransferConfig.{name} must be a finite number > 0, got {v!r}")
        for name in ("ridge", "envelope_half_s", "floor_frac"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"TransferConfig.{name} must be a finite number >= 0, got {v!r}")
        for name in ("learn_every", "refit_every", "calibrate_every", "residual_step", "row_step"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"TransferConfig.{name} must be an integer >= 1, got {v!r}")
        if not 0.0 < self.coverage < 1.0:
            raise ValueError(f"TransferConfig.coverage must be in (0, 1), got {self.coverage!r}")


@dataclass(frozen=True)
class TransferResult:
    """:meth:`LeadTransfer.rebuild`'s answer: ``filled`` [n, k] (measured samples unchanged, NaN where
    unrecoverable), ``provenance`` uint8 [n, k] (MEASURED / MODEL / UNRECOVERABLE), ``half_width_90``
    float32 [n, k] (mV; 0 where measured, NaN where unrecoverable), ``reason`` (why samples were left
    missing, None when none were) and ``by``."""

    filled: np.ndarray
    provenance: np.ndarray
    half_width_90: np.ndarray
    reason: str | None
    by: str = BY


def _conformal_q(norm: np.ndarray, coverage: float) -> float:
    """The ceil((n + 1) * coverage)-th smallest value (inf when n is too small for it)."""
    n = norm.size
    k = math.ceil((n + 1) * coverage) - 1
    if k >= n:
        return math.inf
    return float(np.partition(norm, k)[k])


class LeadTransfer:
    """Online patient-specific FIR mapping between the leads of one stream (see module docstring)."""

    def __init__(
        self, fs: float, leads: tuple[str, ...], config: TransferConfig | None = None
    ) -> None:
        if not (isinstance(fs, int | float) and math.isfinite(fs) and fs > 0):
            raise ValueError(f"fs must be a finite sampling rate > 0 Hz, got {fs!r}")
        leads = tuple(leads)
        if not leads:
            raise ValueError("leads must name at least one lead")
        self.fs = float(fs)
        self.leads = leads
        self.config = cfg = config or TransferConfig()
        self.k = len(leads)
        self.dec = max(1, round(self.fs / cfg.rate_hz))
        self.rate = self.fs / self.dec
        self.h = max(1, round(cfg.taps_s * self.rate))  # taps each side
        self.p = 2 * self.h + 1
        self.dim = self.p * self.k  # feature (j, lead) at j * k + lead
        self._env_size = 2 * round(cfg.envelope_half_s * self.rate) + 1
        self._env_size_fs = 2 * round(cfg.envelope_half_s * self.fs) + 1
        rows_per_s = self.rate / (cfg.residual_step * cfg.calibrate_every)
        self._ring_n = max(16, round(cfg.residual_memory_s * rows_per_s))
        # source feature indices and target column per target lead
        lead_of = np.arange(self.dim) % self.k
        self._src = [np.flatnonzero(lead_of != t) for t in range(self.k)]
        self._tgt = [self.h * self.k + t for t in range(self.k)]
        self._blocks = [np.ix_(s, s) for s in self._src]
        self._eye = np.eye(len(self._src[0]))
        self.reset()

    # ----------------------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget everything (statistics, residuals, stream position)."""
        self.forget()
        self._n = 0  # stream samples seen
        self._frames = 0

    def forget(self) -> None:
        """Drop the learned mapping and residuals (e.g. after an electrode change); keep the position."""
        self._G = np.zeros((self.dim, self.dim))
        self._w = 0.0  # forgotten-weighted row count
        self._tail = np.full((0, self.k), np.nan)
        self._learned_s = 0.0
        self._since_s = 0.0  # stream seconds since the last learned frame
        self._learned_frames = 0
        self._W: np.ndarray | None = None  # [dim, k] filters, zero rows at each target's own lead
        self._ring = np.full((self._ring_n, self.k), np.nan, dtype=np.float32)
        self._ring_pos = 0
        self._ring_count = 0

    @property
    def learned_s(self) -> float:
        """Seconds of clean all-lead signal in the statistics (before forgetting)."""
        return self._learned_s

    # ----------------------------------------------------------------------------- input checks
    def _check(self, block: np.ndarray, what: str) -> np.ndarray:
        x = np.asarray(block)
        if x.ndim != 2 or x.shape[1] != self.k:
            raise ValueError(
                f"{what} must be [samples, {self.k}] (leads {', '.join(self.leads)}), "
                f"got shape {x.shape}"
            )
        if x.dtype.kind not in "fiu":
            raise ValueError(f"{what} must hold real numbers, got dtype {x.dtype}")
        x = x.astype(np.float64, copy=False)
        if not math.isfinite(x.sum()) and np.isinf(x).any():
            raise ValueError(f"{what} holds +-inf; mark missing samples with NaN instead")
        return x

    # ----------------------------------------------------------------------------- learning
    def learn(self, block: np.ndarray) -> None:
        """Learn from one frame ``[n, k]`` of band-passed samples (NaN where masked); only samples whose
        whole FIR support is finite in every lead count. Frames must be consecutive."""
        x = self._check(block, "block")
        n0 = self._n
        n = x.shape[0]
        self._n = n0 + n
        self._since_s += n / self.fs
        if self.k < 2 or n == 0:
            return
        sub = x[(-n0) % self.dec :: self.dec]
        self._frames += 1
        if self._frames % self.config.learn_every:
            # not learned: keep only the support the next frame's first rows need
            buf = np.concatenate((self._tail, sub)) if sub.shape[0] < 2 * self.h else sub
            self._tail = buf[-2 * self.h :]
            return
        buf = np.concatenate((self._tail, sub))
        self._tail = buf[-2 * self.h :]
        m = buf.shape[0] - 2 * self.h
        if m <= 0:
            return
        buf = np.ascontiguousarray(buf)
        # row c of z is buf[c : c + p] flattened: a strided view, no copy
        z = np.array(np.ndarray((m, self.dim), np.float64, buf, 0, (self.k * 8, 8)))
        fin = np.isfinite(buf).all(axis=1)
        step = self.config.row_step
        ok: np.ndarray | slice = slice(None)
        if not fin.all():
            bad = np.concatenate(([0], np.cumsum(~fin)))
            good = bad[self.p :] - bad[:m] == 0
            if not good.any():
                return
            ok = good
        if self._W is not None and self._learned_frames % self.config.calibrate_every == 0:
            self._residuals(z[ok])
        # the Gram update dominates the cost: every ``row_step``-th row (neighbours are nearly redundant)
        z = z[::step] if isinstance(ok, slice) else z[::step][ok[::step]]
        rows = z.shape[0]
        f = math.exp(-self._since_s / self.config.tau_s)
        self._G *= f
        self._G += z.T @ z
        self._w = self._w * f + rows
        self._since_s = 0.0
        self._learned_s += rows * step / self.rate
        self._learned_frames += 1
        if self._W is None or self._learned_frames % self.config.refit_every == 0:
            self._fit()

    def _fit(self) -> None:
        """Ridge solution of every direction from the Gram matrix (one batched solve)."""
        ns = len(self._src[0])
        a = np.stack([self._G[blk] for blk in self._blocks])  # [k, ns, ns]
        b = np.stack([self._G[s, c] for s, c in zip(self._src, self._tgt, strict=True)])
        lam = self.config.ridge * np.trace(a, axis1=1, axis2=2) / ns + 1e-12
        a += lam[:, None, None] * self._eye
        try:
            sol = np.linalg.solve(a, b[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            sol = np.zeros_like(b)
        W = np.zeros((self.dim, self.k))
        for t, s in enumerate(self._src):
            W[s, t] = sol[t]
        self._W = W

    def _floor(self) -> np.ndarray:
        """Per-lead scale floor: ``floor_frac`` times the lead's RMS in the statistics."""
        diag = np.array([self._G[t, t] for t in self._tgt])
        return self.config.floor_frac * np.sqrt(np.maximum(diag, 0.0) / max(self._w, 1e-12))

    def _residuals(self, z: np.ndarray) -> None:
        assert self._W is not None
        yhat = z @ self._W
        err = np.abs(z[:, self._tgt] - yhat)
        env = maximum_filter1d(np.abs(yhat), size=self._env_size, axis=0, mode="nearest")
        norm = (err / (env + self._floor() + 1e-9))[:: self.config.residual_step]
        r = norm.shape[0]
        if r >= self._ring_n:
            norm = norm[-self._ring_n :]
            r = self._ring_n
        end = self._ring_pos + r
        if end <= self._ring_n:
            self._ring[self._ring_pos : end] = norm
        else:
            cut = self._ring_n - self._ring_pos
            self._ring[self._ring_pos :] = norm[:cut]
            self._ring[: r - cut] = norm[cut:]
        self._ring_pos = end % self._ring_n
        self._ring_count = min(self._ring_n, self._ring_count + r)

    # ----------------------------------------------------------------------------- rebuilding
    def why_not(self) -> str | None:
        """Why nothing can be rebuilt now (None when the mapping is ready)."""
        cfg = self.config
        if self.k < 2:
            return "unrecoverable: a single-lead stream has no other lead to rebuild from"
        if self._learned_s < cfg.min_learned_s or self._W is None:
            return (
                f"unrecoverable: {self._learned_s:.0f} s of clean {self.k}-lead signal learned, "
                f"{cfg.min_learned_s:.0f} s needed"
            )
        need = math.ceil(1.0 / (1.0 - cfg.coverage))
        if self._ring_count < need:
            return (
                f"unrecoverable: {self._ring_count} calibration residuals, {need} needed "
                f"for a {cfg.coverage:.0%} interval"
            )
        return None

    def quantiles(self) -> np.ndarray:
        """The current conformal multiplier per lead (inf while too few residuals)."""
        cnt = self._ring_count
        return np.array(
            [_conformal_q(self._ring[:cnt, t], self.config.coverage) for t in range(self.k)]
        )

    def _predict(self, seg: np.ndarray, t: int, ok_src: np.ndarray) -> np.ndarray:
        """Prediction of lead ``t`` over the segment (NaN where the sources are missing): the dilated
        filter over each run of finite source samples, reflected at the run's edges."""
        assert self._W is not None
        out = np.full(seg.shape[0], np.nan)
        src_leads = [lead for lead in range(self.k) if lead != t]
        pad = self.h * self.dec
        kernels = []
        for lead in src_leads:
            ker = np.zeros(2 * pad + 1)
            ker[:: self.dec] = self._W[np.arange(self.p) * self.k + lead, t]
            kernels.append(ker)
        for a, b in true_runs(ok_src):
            run = seg[a:b][:, src_leads]
            if b - a > 1:
                xp = np.pad(run, ((pad, pad), (0, 0)), mode="reflect")
            else:
                xp = np.pad(run, ((pad, pad), (0, 0)), mode="edge")
            y = np.zeros(b - a)
            for i, ker in enumerate(kernels):
                y += np.correlate(xp[:, i], ker, mode="valid")
            out[a:b] = y
        return out

    def rebuild(self, segment: np.ndarray) -> TransferResult:
        """Fill the missing (NaN) samples of ``segment`` [n, k] (band-passed) from the other leads."""
        seg = self._check(segment, "segment")
        miss = np.isnan(seg)
        filled = seg.astype(np.float32)
        prov = np.where(miss, UNRECOVERABLE, MEASURED).astype(np.uint8)
        hw = np.where(miss, np.nan, 0.0).astype(np.float32)
        if not miss.any():
            return TransferResult(filled, prov, hw, None)
        why = self.why_not()
        if why is not None:
            return TransferResult(filled, prov, hw, why)
        self._fit()  # the freshest filter (statistics up to now)
        q = self.quantiles()
        floor = self._floor()
        left = 0
        for t in range(self.k):
            if not miss[:, t].any():
                continue
            ok_src = ~np.delete(miss, t, axis=1).any(axis=1)
            target = miss[:, t] & ok_src
            left += int((miss[:, t] & ~ok_src).sum())
            if not target.any():
                continue
            y = self._predict(seg, t, ok_src)
            env = maximum_filter1d(np.abs(np.nan_to_num(y)), size=self._env_size_fs, mode="nearest")
            filled[target, t] = y[target]
            prov[target, t] = MODEL
            hw[target, t] = q[t] * (env[target] + floor[t])
        reason = None
        if left:
            reason = (
                f"unrecoverable: every lead missing at these samples ({left / self.fs:.2f} s "
                "of lead samples without a measured source lead)"
            )
        return TransferResult(filled, prov, hw, reason)
