"""The detector evaluations on a few real records: figures, JSON keys and matching."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.eval_detectors import (
    bench_processor,
    evaluate_dropouts,
    evaluate_qrs,
    match_beats,
    vfl_mask,
)


def test_match_beats_is_one_to_one_within_tolerance():
    ref = np.array([100, 200, 300, 400])
    test = np.array([98, 104, 260, 300, 520])
    assert match_beats(ref, test, 10) == (2, 2, 3)  # 98->100 (closest), 300->300; 104 unused
    assert match_beats(ref, np.array([], dtype=int), 10) == (0, 4, 0)
    inside = vfl_mask(np.array([5, 15, 25]), np.array([10, 20]), np.array(["[", "]"]))
    assert inside.tolist() == [False, True, False]


@pytest.mark.slow  # full detector comparison on two whole records
def test_evaluate_qrs_on_two_records(data_dir):
    res = evaluate_qrs(data_dir, records=["114", "119"], peers=True)
    json.dumps(res)  # JSON-able
    for key in (
        "sensitivity",
        "ppv",
        "sensitivity_50ms",
        "ppv_50ms",
        "samples_per_s",
        "seconds",
        "per_record",
        "xqrs",
        "gqrs",
        "neurokit2",
        "neurokit2_pantompkins",
    ):
        assert key in res, key
    assert res["units"] == "percent"
    assert res["sensitivity"] > 99.0 and res["ppv"] > 99.0
    assert set(res["per_record"]) == {"114", "119"}
    assert res["per_record"]["114"]["tp"] > 1800  # record 114 has MLII on channel 1
    for peer in ("xqrs", "gqrs"):
        assert res[peer]["sensitivity"] > 90 and res[peer]["samples_per_s"] > 0
    assert res["samples_per_s"] > res["xqrs"]["samples_per_s"]


def test_evaluate_dropouts_small_run(data_dir):
    res = evaluate_dropouts(
        data_dir,
        records=["100", "213"],
        minutes=2.0,
        clean_records=["101"],
        clean_minutes=3.0,
        seed=1,
    )
    json.dumps(res)
    assert res["events"] >= 10 and res["recall"] >= 99.0
    assert set(res["recall_by_kind"]) == {
        "flatline",
        "zero",
        "nan",
        "lead_off",
        "saturation",
        "lost_frames",
    }
    assert res["false_per_hour"] == 0.0 and res["clean_hours"] == 0.05


def test_bench_processor_reports_medians(data_dir):
    res = bench_processor(data_dir, seconds=20, runs=2)
    assert res["frames_per_run"] == 20 and res["median_frame_ms"] > 0
    assert set(res["stage_median_ms"]) == {"filter", "qrs", "dropouts", "rules", "windows"}
