"""Issue 17 item 5: the downstream R-peak check of the LSTM-AE (peak matching, F1 in spans, gap layout)."""

from __future__ import annotations

import numpy as np
import pytest

from training.tasks.lstm_ae import (
    DOWNSTREAM,
    downstream_gaps,
    goal_flags,
    match_peaks,
    peak_f1,
)


def test_match_peaks_is_one_to_one_and_closest_first():
    ref = np.array([100, 200, 400])
    test = np.array([105, 110, 390, 700])
    rm, tm = match_peaks(ref, test, tol=20)
    assert rm.tolist() == [True, False, True]
    assert tm.tolist() == [True, False, True, False]  # 110 is not matched twice to 100


def test_peak_f1_counts_only_peaks_inside_the_spans():
    ref = np.array([100, 460, 820, 1180])
    test = np.array([104, 470, 600, 1500])  # 820 missed, 600 spurious, 1180/1500 outside the span
    f = peak_f1(ref, test, [(0, 1000)], tol=54)
    assert (f["tp"], f["fp"], f["fn"]) == (2, 1, 1)
    assert f["se"] == pytest.approx(2 / 3) and f["ppv"] == pytest.approx(2 / 3)
    assert f["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # a reference peak in the span matched by a test peak just outside it is a true positive
    assert peak_f1(np.array([995]), np.array([1010]), [(900, 1000)], tol=54)["tp"] == 1
    # nothing in the span: perfect agreement
    assert peak_f1(ref, test, [(2000, 2100)], tol=54)["f1"] == 1.0


def test_peak_f1_identical_detections_score_one():
    p = np.arange(50, 5000, 300)
    assert peak_f1(p, p, [(0, 5000)], tol=54) == {
        "tp": p.size,
        "fp": 0,
        "fn": 0,
        "se": 1.0,
        "ppv": 1.0,
        "f1": 1.0,
    }


def test_downstream_gaps_one_window_per_block_after_warmup():
    fs, length = 360.0, 720
    g = downstream_gaps(360 * 120, fs, length, (36, 288), np.random.default_rng(0), DOWNSTREAM)
    block = round(DOWNSTREAM["block_s"] * fs)
    assert len(g) == (360 * 120 - round(DOWNSTREAM["warmup_s"] * fs)) // block
    w, a, b = g[:, 0], g[:, 1], g[:, 2]
    assert (w >= round(DOWNSTREAM["warmup_s"] * fs)).all() and (w + length <= 360 * 120).all()
    assert ((b - a >= 36) & (b - a <= 288)).all()
    assert ((a - w >= 16) & (w + length - b >= 16)).all()
    assert (np.diff(w) >= length).all()  # windows never overlap


def test_goal_flags_read_the_restated_goals():
    out = {
        "seed": {"rmse_ratio_to_linear": 0.8},
        "stream": {"rmse_ratio_to_linear": 0.75, "beats_every_baseline": True},
        "downstream_r_peaks": {
            "in_gaps": {"model": {"f1": 0.96}, "linear": {"f1": 0.2}},
            "in_windows": {"model": {"f1": 0.99}},
        },
    }
    g = goal_flags(out)
    assert g["seed_protocol_ds2_rmse_ratio_to_linear"]["met"] is True
    assert g["stream_protocol_ds2_rmse_ratio_to_linear"]["met"] is False
    assert g["downstream_r_peak_f1_in_recovered_gaps"]["met"] is True
    assert g["downstream_r_peak_f1_in_recovered_gaps"]["linear_interpolation"] == 0.2
    assert g["all_met"] is False
