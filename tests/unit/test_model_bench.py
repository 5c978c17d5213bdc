"""``python -m training bench-models``: cost per window through the stream scorer and ONNX Runtime alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from training.model_bench import bench_models, format_table

DATA = Path(os.environ.get("ECG_DATA_DIR", "../shared/data"))


@pytest.mark.skipif(not (DATA / "mitdb").is_dir(), reason="needs MIT-BIH (ECG_DATA_DIR)")
def test_bench_models_times_the_scorer_and_the_session_per_window() -> None:
    res = bench_models(
        DATA,
        ["cae"],
        runs=1,
        session_batches=(8,),
        scorer_batches=(8,),
        levels=("all",),
        threads=(1,),
        seconds=200,
    )
    cae = res["models"]["cae"]
    assert cae["scorer"] and cae["session"]
    text = format_table(res)
    assert "cae" in text and "ms per window" in text
    # every figure is a positive time per window
    flat = [v for v in _numbers(cae)]
    assert flat and all(v > 0 for v in flat)


def _numbers(obj: object) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, int | float):
        return [float(obj)]
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _numbers(v)]
    return []
