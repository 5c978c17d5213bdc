"""``run_bench`` on its own local stack: 4 LUDB streams for a few seconds report broker, worker and
pass-through figures beside the throughput and latency."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.bench import run_bench
from stream.settings import Settings

pytestmark = pytest.mark.integration


def test_bench_reports_broker_and_passthrough(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECG_KAFKA_BOOTSTRAP", "")  # local mode: the bench starts its own broker
    monkeypatch.setenv("ECG_DATA_DIR", str(data_dir))
    monkeypatch.setenv("ECG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ECG_BIND_HOST", "127.0.0.1")
    res = run_bench(
        Settings(),
        patients=4,
        runs=1,
        seconds=6.0,
        warmup=2.0,
        progress=False,
        records="ludb",
        models="none",
    )
    assert res["fs_hz"] == 500.0 and res["leads"] == 12.0
    for key in ("frames_per_s", "p50_s", "p99_s", "worker_cpu_ms_per_frame", "realtime", "per_run"):
        assert key in res
    assert res["frames_per_s"] > 0 and res["lead_samples_per_s"] > 0
    assert res["broker_rss_mb"] > 0 and res["worker_rss_mb"] > 0
    assert res["broker_cpu_share"] is not None and res["broker_cpu_share"] >= 0
    assert res["passthrough_frames_per_s"] > 0
    assert res["pipeline_to_passthrough_ratio"] > 0
    run = res["per_run"][0]
    assert "passthrough_error" not in run
    assert run["passthrough_frames"] >= run["frames"] > 0
    assert "ratio_definition" in res and res["external_broker"] is False
