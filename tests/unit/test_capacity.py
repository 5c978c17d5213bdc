"""Sizing from a measured per-frame cost (stream.capacity)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stream.capacity import plan_capacity
from stream.cli import app


def test_plan_keeps_each_worker_under_its_share_of_a_core() -> None:
    p = plan_capacity(1000, 2.0, utilisation=0.6)
    assert p.streams_per_worker == 300  # 0.6 core / 2 ms per 1 s frame
    assert p.workers == 4
    assert p.partitions == 16
    assert p.cores_busy == pytest.approx(2.0)
    assert p.workers * p.streams_per_worker >= 1000
    # every worker's planned load stays within the utilisation
    assert (1000 / p.workers) * 2.0 / 1000 <= 0.6 + 1e-9


def test_plan_scales_with_frame_duration_and_cost() -> None:
    a = plan_capacity(250, 1.0)
    b = plan_capacity(250, 1.0, frame_s=0.5)  # twice the frames for the same patients
    assert b.frames_per_s == 2 * a.frames_per_s
    assert b.workers >= a.workers
    assert plan_capacity(10, 0.5).workers == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patients": 0, "cpu_ms_per_frame": 1.0}, "patients"),
        ({"patients": 10, "cpu_ms_per_frame": 0.0}, "cpu_ms_per_frame"),
        ({"patients": 10, "cpu_ms_per_frame": float("nan")}, "cpu_ms_per_frame"),
        ({"patients": 10, "cpu_ms_per_frame": 1.0, "utilisation": 1.5}, "utilisation"),
    ],
)
def test_bad_plans_raise_a_clear_error(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_capacity(**kwargs)  # type: ignore[arg-type]


def test_capacity_cli_reads_a_saved_bench_result(tmp_path: Path) -> None:
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps({"worker_cpu_ms_per_frame": 2.0, "patients": 250}))
    res = CliRunner().invoke(
        app, ["capacity", "--patients", "1000", "--bench", str(saved), "--json"]
    )
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    assert plan["workers"] == 4 and plan["partitions"] == 16 and plan["cpu_ms_per_frame"] == 2.0


def test_capacity_cli_one_clear_line_for_a_wrong_file(tmp_path: Path) -> None:
    bad = tmp_path / "not-bench.json"
    bad.write_text("{}")
    res = CliRunner().invoke(app, ["capacity", "--patients", "10", "--bench", str(bad)])
    assert res.exit_code == 2
    assert "Traceback" not in res.output
