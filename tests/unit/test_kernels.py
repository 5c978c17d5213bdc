"""Compiled helpers shared by the stages' kernels (stream.stages.kernels)."""

from __future__ import annotations

import numpy as np

from stream.stages.kernels import pairwise_sum


def test_pairwise_sum_is_numpys_sum_of_a_contiguous_axis() -> None:
    rng = np.random.default_rng(0)
    for n in (*range(0, 300), 360, 500, 1023, 1111, 5000, 12345):
        a = rng.normal(size=n + 3) * 10.0 ** rng.uniform(-4, 4, size=n + 3)
        assert pairwise_sum(a, 3, n) == float(a[3:].sum()), n
        # the reduction of one column of a 2-D block (a contiguous axis) is the same pairwise sum
        want = a[3:].reshape(1, n, 1).sum(axis=1)[0, 0] if n else 0.0
        assert pairwise_sum(a, 3, n) == want, n
