"""Compiled helpers shared by the stream stages' numba kernels.

numba's on-disk cache (``cache=True``) keys a function on its own module's source file only: after editing
this module, clear the stages' ``__pycache__`` (or ``NUMBA_CACHE_DIR``) so that the kernels calling these
helpers are compiled again.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def pairwise_leaf(a: np.ndarray, lo: int, n: int) -> float:
    """``a[lo:lo + n]`` (``n <= 128``) summed as numpy's pairwise sum does: 8 accumulators."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - (n % 8):
        j = lo + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@numba.njit(cache=True, nogil=True)
def pairwise_sum(a: np.ndarray, lo: int, n: int) -> float:
    """``a[lo:lo + n]`` summed as numpy sums a contiguous float64 axis: halves (multiples of 8) split
    down to leaves of at most 128 values (the recursion, post-order on an explicit stack)."""
    if n <= 128:
        return pairwise_leaf(a, lo, n)
    st = np.empty((64, 3), dtype=np.int64)  # lo, n, stage
    vals = np.empty(64)
    top = 0
    nv = 0
    st[0, 0], st[0, 1], st[0, 2] = lo, n, 0
    while top >= 0:
        s_lo, s_n, stage = st[top, 0], st[top, 1], st[top, 2]
        if s_n <= 128:
            vals[nv] = pairwise_leaf(a, s_lo, s_n)
            nv += 1
            top -= 1
            continue
        n2 = s_n // 2
        n2 -= n2 % 8
        if stage == 0:
            st[top, 2] = 1
            top += 1
            st[top, 0], st[top, 1], st[top, 2] = s_lo, n2, 0
        elif stage == 1:
            st[top, 2] = 2
            top += 1
            st[top, 0], st[top, 1], st[top, 2] = s_lo + n2, s_n - n2, 0
        else:
            vals[nv - 2] = vals[nv - 2] + vals[nv - 1]
            nv -= 1
            top -= 1
    return vals[0]


__all__ = ["pairwise_leaf", "pairwise_sum"]
