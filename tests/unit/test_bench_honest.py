"""``ecg-monitor bench``: the pure parts (window summaries, CPU figures from /proc, the pass-through ratio,
the per-minute verdict, record sets and stream shapes)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stream.bench import (
    OUTPUTS_KEY,
    RATIO_DEFINITION,
    RECORD_SETS,
    Snapshot,
    cpu_figures,
    median_or_none,
    minute_verdict,
    parse_proc_stat_cpu,
    passthrough_figures,
    passthrough_ratio,
    proc_cpu_seconds,
    record_set,
    rss_mb,
    stage_ms_per_frame,
    stream_shape,
    summarise_window,
)
from stream.cli import app

# /proc/<pid>/stat of a process whose name holds a space and a parenthesis; utime 250, stime 50 ticks
STAT = "4242 (tansu (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 9 0 123 4096 512"


def test_parse_proc_stat_cpu_reads_utime_plus_stime() -> None:
    assert parse_proc_stat_cpu(STAT, 100) == pytest.approx(3.0)
    assert parse_proc_stat_cpu(STAT, 250) == pytest.approx(1.2)


def test_proc_readers_on_this_process_and_a_missing_one() -> None:
    t0 = proc_cpu_seconds(os.getpid())
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    t1 = proc_cpu_seconds(os.getpid())
    assert t0 is not None and t1 is not None and t1 >= t0
    assert (rss_mb(os.getpid()) or 0) > 0
    assert proc_cpu_seconds(None) is None and rss_mb(None) is None
    assert proc_cpu_seconds(2**22 + 12345) is None  # above pid_max: no such process


def test_summarise_window_counts_only_the_window() -> None:
    rows = [(100.0 + i * 0.1, 0.05 + 0.001 * i, 500) for i in range(200)]  # 10 frames/s for 20 s
    res = summarise_window(rows, 105.0, 10.0, patients=10, frame_s=1.0, leads=12)
    assert res["frames"] == 100 and res["frames_per_s"] == 10.0
    assert res["samples_per_s"] == 5000.0 and res["lead_samples_per_s"] == 60000.0
    assert res["samples_per_frame"] == 500.0
    assert res["offered_frames_per_s"] == 10.0 and res["realtime"] is True
    assert 0.05 < res["p50_s"] < res["p99_s"] <= res["max_s"]
    slow = summarise_window(rows, 105.0, 10.0, patients=20, frame_s=1.0)
    assert slow["realtime"] is False  # half of the offered frames
    late = summarise_window([(r[0], 2.0, r[2]) for r in rows], 105.0, 10.0, 10, 1.0)
    assert late["realtime"] is False  # p99 over 1 s
    empty = summarise_window([], 0.0, 10.0, 10, 1.0)
    assert empty["frames"] == 0 and empty["realtime"] is False and empty["p99_s"] is None


def test_cpu_figures_per_frame_and_share() -> None:
    stages0 = {
        'ecg_stage_duration_seconds_sum{stage="qrs"}': 1.0,
        'ecg_stage_duration_seconds_count{stage="qrs"}': 100.0,
    }
    stages1 = {
        'ecg_stage_duration_seconds_sum{stage="qrs"}': 1.5,
        'ecg_stage_duration_seconds_count{stage="qrs"}': 600.0,
        OUTPUTS_KEY: 1300.0,
    }
    a = Snapshot(t=0.0, worker_cpu_s=10.0, broker_cpu_s=5.0, replay_cpu_s=1.0, stages=stages0)
    b = Snapshot(
        t=20.0,
        worker_cpu_s=20.0,
        broker_cpu_s=9.0,
        replay_cpu_s=2.0,
        worker_rss_mb=200.0,
        broker_rss_mb=50.0,
        replay_rss_mb=100.0,
        stages=stages1,
    )
    res = cpu_figures(a, b, frames=1000, lead_samples=1000 * 6000)
    assert res["worker_cpu_share"] == 0.5 and res["worker_cpu_ms_per_frame"] == 10.0
    assert res["broker_cpu_share"] == 0.2 and res["broker_cpu_ms_per_frame"] == 4.0
    assert res["replay_cpu_ms_per_frame"] == 1.0
    assert res["worker_cpu_us_per_lead_sample"] == pytest.approx(10_000 / 6000, abs=1e-4)
    assert res["broker_rss_mb"] == 50.0 and res["worker_rss_mb"] == 200.0
    assert res["stage_ms_per_frame"] == {"qrs": 1.0}
    assert res["outputs_per_frame"] == 1.3
    # an external broker: no pid, no figures; no frames: no per-frame figures
    ext = cpu_figures(Snapshot(t=0.0, worker_cpu_s=1.0), Snapshot(t=10.0, worker_cpu_s=2.0), 0, 0)
    assert ext["broker_cpu_share"] is None and ext["broker_cpu_ms_per_frame"] is None
    assert ext["broker_rss_mb"] is None and ext["worker_cpu_ms_per_frame"] is None
    assert ext["worker_cpu_share"] == 0.1


def test_stage_ms_per_frame_with_a_stage_new_in_the_window() -> None:
    st1 = {
        'ecg_stage_duration_seconds_sum{stage="scoring"}': 0.2,
        'ecg_stage_duration_seconds_count{stage="scoring"}': 100.0,
    }
    assert stage_ms_per_frame({}, st1) == {"scoring": 2.0}


def test_passthrough_ratio_is_pipeline_over_passthrough_frames_per_cpu_second() -> None:
    # pass-through 0.2 ms/frame = 5000 frames per CPU-s; pipeline 4 ms/frame = 250 frames per CPU-s
    assert passthrough_ratio(0.2, 4.0) == pytest.approx(250 / 5000)
    assert passthrough_ratio(None, 4.0) is None and passthrough_ratio(0.2, None) is None
    assert passthrough_ratio(0.2, 0.0) is None
    res = passthrough_figures(
        {"frames": 1000, "wall_s": 0.5, "cpu_s": 0.2, "frame_bytes_mean": 900.0}, 4.0
    )
    assert res["passthrough_frames_per_s"] == 2000.0
    assert res["passthrough_cpu_ms_per_frame"] == 0.2
    assert res["pipeline_to_passthrough_ratio"] == 0.05
    failed = passthrough_figures({"error": "boom"}, 4.0)
    assert failed["passthrough_frames"] == 0 and failed["pipeline_to_passthrough_ratio"] is None
    assert "passthrough_cpu_ms_per_frame" in RATIO_DEFINITION


def test_minute_verdict_ignores_the_first_minute() -> None:
    rows = [{"minute": 1, "realtime": False}, {"minute": 2, "realtime": True}]
    rows.append({"minute": 3, "realtime": True})
    assert minute_verdict(rows) == {"held": True, "minutes_not_realtime": []}
    rows[2]["realtime"] = False
    assert minute_verdict(rows) == {"held": False, "minutes_not_realtime": [3]}
    assert minute_verdict([{"minute": 1, "realtime": True}])["held"] is True
    assert minute_verdict([{"minute": 1, "realtime": False}])["held"] is False
    assert minute_verdict([])["held"] is False


def test_median_or_none_skips_missing_values() -> None:
    assert median_or_none([1.0, None, 3.0]) == 2.0
    assert median_or_none([None, None]) is None


def test_record_sets_and_unknown_name() -> None:
    assert record_set("ludb") == RECORD_SETS["ludb"]
    with pytest.raises(ValueError, match="unknown record set 'foo'"):
        record_set("foo")


@pytest.mark.parametrize(
    ("name", "fs", "leads"), [("mitdb", 360.0, 2.0), ("ptbxl", 100.0, 12.0), ("ludb", 500.0, 12.0)]
)
def test_stream_shape_of_each_record_set(
    data_dir: Path, name: str, fs: float, leads: float
) -> None:
    shape = stream_shape(record_set(name), data_dir, patients=50, frame_s=1.0)
    assert shape["fs_hz"] == fs and shape["leads"] == leads
    assert shape["lead_samples_per_frame"] == fs * leads
    assert shape["distinct_records"] >= (48 if name == "mitdb" else 50)


def test_bench_cli_rejects_an_unknown_record_set() -> None:
    result = CliRunner().invoke(app, ["bench", "--records", "foo"])
    assert result.exit_code == 2
    assert "--records must be one of mitdb, ptbxl, ludb" in result.output
