"""The worker compiles the stages' numba kernels before its first frame (stream.warmup)."""

from __future__ import annotations

from stream.stages import dropouts, qrs, sqi
from stream.warmup import warm_up


def test_warm_up_compiles_the_stage_kernels() -> None:
    seconds = warm_up(seconds=6.0)
    assert seconds > 0
    # every kernel the per-frame path calls has a compiled signature afterwards
    kernels = (sqi._energy_kernel, sqi._quality_kernel, qrs._nb_scan, dropouts._dropout_kernel)
    for kernel in kernels:
        assert kernel.signatures, kernel
