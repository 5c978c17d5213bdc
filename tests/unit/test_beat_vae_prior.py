"""Issue 17 item 6: the beat VAE's per-beat threshold rule and its detection figures."""

from __future__ import annotations

import numpy as np
import pytest

from training.tasks.beat_vae import best_f1_threshold, detection_figures


def test_best_f1_threshold_separates_separable_scores():
    scores = np.array([0.1, 0.2, 0.3, 0.9, 1.0])
    v = np.array([0, 0, 0, 1, 1], bool)
    th = best_f1_threshold(scores, v)
    assert 0.3 < th < 0.9
    f = detection_figures(scores, v, th)
    assert f["sensitivity"] == 1.0 and f["specificity"] == 1.0 and f["f1"] == 1.0
    assert f["roc_auc"] == 1.0


def test_best_f1_threshold_maximises_f1_over_every_cut():
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.1
    s = rng.normal(size=400) + 1.5 * y
    th = best_f1_threshold(s, y)
    best = detection_figures(s, y, th)["f1"]
    for cut in np.unique(s):
        assert detection_figures(s, y, float(cut))["f1"] <= best + 1e-12


def test_best_f1_threshold_ties_and_fallback():
    # tied scores are flagged together: the cut never falls between equal scores
    s = np.array([1.0, 1.0, 0.5, 0.2])
    th = best_f1_threshold(s, np.array([1, 0, 0, 0], bool))
    assert th < 1.0 and not (s[:2] > th).tolist().count(False)
    # no positive beat: the 99th percentile of the scores
    s = np.linspace(0, 1, 101)
    assert best_f1_threshold(s, np.zeros(101, bool)) == pytest.approx(0.99)


def test_detection_figures_counts():
    f = detection_figures(np.array([0.0, 2.0, 2.0, 0.0]), np.array([1, 1, 0, 0], bool), 1.0)
    assert (f["sensitivity"], f["specificity"], f["ppv"]) == (0.5, 0.5, 0.5)
    assert (f["positives"], f["negatives"]) == (2, 2)
