"""Beat rhythm features: how premature a beat is and whether a compensatory pause follows it.

A supraventricular premature beat often has a normal QRS, so a morphology model (the CAE) cannot see it;
its timing gives it away. For beat ``k`` with R-peak times ``t``:

- ``pre`` = t[k] - t[k-1] and ``post`` = t[k+1] - t[k] (seconds);
- ``ref`` = the ``quantile`` of the ``history`` RR intervals before beat ``k`` (causal: only earlier
  beats). A high quantile of the recent intervals is the patient's own "unhurried" interval, robust to
  runs of ectopic beats that would pull a median down;
- ``score`` = max(log(ref / pre), 0) + max(log(post / pre), 0): prematurity plus compensation, zero for a
  beat on time. The CAE task adds ``weight * score`` to the log reconstruction error (weight chosen on
  validation data); the stream computes the same from its detected peaks.

Pure numpy; the same functions serve the offline evaluation (training) and :class:`RRContext` in the stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

#: Shortest RR interval accepted (s); shorter intervals are clipped before taking logs.
MIN_RR_S = 0.15


@dataclass(frozen=True)
class RhythmParams:
    """Reference-interval rule: ``quantile`` of the last ``history`` RR intervals, and the score's ``weight``."""

    history: int = 128
    quantile: float = 0.9
    weight: float = 1.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "history": int(self.history),
            "quantile": float(self.quantile),
            "weight": float(self.weight),
        }


def rr_pre_post(peak_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pre and post RR interval (s) of each beat of one record; the ends repeat their neighbour's interval."""
    t = np.asarray(peak_times, dtype=np.float64)
    if t.size < 2:
        return np.full(t.size, np.nan), np.full(t.size, np.nan)
    rr = np.diff(t)
    return np.r_[rr[0], rr], np.r_[rr, rr[-1]]


def reference_rr(pre: np.ndarray, history: int, quantile: float) -> np.ndarray:
    """Causal reference interval per beat: ``quantile`` of the up-to-``history`` ``pre`` intervals before it."""
    pre = np.asarray(pre, dtype=np.float64)
    n = pre.size
    ref = np.empty(n)
    if n == 0:
        return ref
    ref[0] = pre[0]
    head = min(history, n)
    for k in range(1, head):  # warm-up: fewer than `history` intervals seen
        ref[k] = np.quantile(pre[:k], quantile)
    if n > history:
        # beat k >= history sees pre[k-history:k]: window j = k - history of the sliding view
        windows = sliding_window_view(pre[:-1], history)
        ref[history:] = np.quantile(windows, quantile, axis=1)
    return ref


def rhythm_score(pre: np.ndarray, post: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """max(log(ref/pre), 0) + max(log(post/pre), 0); NaN inputs give 0 (no rhythm evidence)."""
    pre = np.maximum(np.asarray(pre, dtype=np.float64), MIN_RR_S)
    post = np.maximum(np.asarray(post, dtype=np.float64), MIN_RR_S)
    ref = np.maximum(np.asarray(ref, dtype=np.float64), MIN_RR_S)
    s = np.maximum(np.log(ref / pre), 0.0) + np.maximum(np.log(post / pre), 0.0)
    return np.nan_to_num(s, nan=0.0)


def record_rhythm_scores(peak_times: np.ndarray, history: int, quantile: float) -> np.ndarray:
    """Rhythm score of every beat of one record from its ordered R-peak times (s)."""
    pre, post = rr_pre_post(peak_times)
    return rhythm_score(pre, post, reference_rr(pre, history, quantile))


def grouped_rhythm_scores(
    peak_times: np.ndarray, groups: np.ndarray, history: int, quantile: float
) -> np.ndarray:
    """:func:`record_rhythm_scores` per group (record) of beats, in the input's order (times sorted per group)."""
    peak_times = np.asarray(peak_times, dtype=np.float64)
    out = np.zeros(peak_times.size)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        idx = idx[np.argsort(peak_times[idx], kind="stable")]
        out[idx] = record_rhythm_scores(peak_times[idx], history, quantile)
    return out


@dataclass(frozen=True)
class RRContext:
    """A beat's timing as the stream saw it: pre and post RR (s, ``None`` when unknown) and the RR
    intervals before it (oldest first). ``post_s`` may be a lower bound when the next beat came late."""

    pre_s: float | None
    post_s: float | None
    history: tuple[float, ...]

    def score(self, history: int, quantile: float) -> float:
        """:func:`rhythm_score` with the reference from the last ``history`` intervals; 0 without a pre-RR."""
        if self.pre_s is None or not self.history:
            return 0.0
        ref = float(np.quantile(np.asarray(self.history[-history:]), quantile))
        post = self.post_s if self.post_s is not None else self.pre_s
        return float(rhythm_score(np.array([self.pre_s]), np.array([post]), np.array([ref]))[0])


def context_scores(
    contexts: Sequence[RRContext | None], history: int, quantile: float
) -> np.ndarray:
    """:meth:`RRContext.score` of many beats at once (float64 ``[k]``, 0 for a beat without a context or
    a pre-RR): the reference intervals are computed in one ``np.quantile`` per history length (in steady
    state every beat has the full ``history``), the scores in one :func:`rhythm_score`. Equal to the
    per-beat scores, number for number."""
    k = len(contexts)
    out = np.zeros(k)
    if k == 0:
        return out
    pre = np.empty(k)
    post = np.empty(k)
    ref = np.empty(k)
    rows: dict[int, tuple[list[int], list[tuple[float, ...]]]] = {}
    for i, c in enumerate(contexts):
        if c is None or c.pre_s is None or not c.history:
            continue
        h = c.history[-history:]
        group = rows.get(len(h))
        if group is None:
            group = rows[len(h)] = ([], [])
        group[0].append(i)
        group[1].append(h)
        pre[i] = c.pre_s
        post[i] = c.post_s if c.post_s is not None else c.pre_s
    if not rows:
        return out
    for length, (idx, hist) in rows.items():
        flat = np.fromiter(chain.from_iterable(hist), dtype=np.float64, count=len(idx) * length)
        ref[idx] = np.quantile(flat.reshape(len(idx), length), quantile, axis=1)
    have = np.concatenate([np.asarray(idx, dtype=np.intp) for idx, _ in rows.values()])
    out[have] = rhythm_score(pre[have], post[have], ref[have])
    return out
