"""Gap masks, classical baselines and metrics of the LSTM-AE evaluation (pure numpy/scipy)."""

from __future__ import annotations

import numpy as np

from training.config import load_config
from training.tasks.lstm_ae import eval_masks, gap_metrics, linear_fill, random_masks, spline_fill


def test_random_masks_are_one_contiguous_gap_in_range():
    m = random_masks(500, 720, 36, 288, np.random.default_rng(0), margin=16)
    lens = m.sum(axis=1)
    assert lens.min() >= 36 and lens.max() <= 288
    for row in m[:50]:
        idx = np.flatnonzero(row)
        assert idx[0] >= 16 and idx[-1] < 720 - 16
        assert np.all(np.diff(idx) == 1)


def test_seed_protocol_mask_is_100_to_137():
    cfg = load_config("lstm_ae")
    m = eval_masks(cfg, "seed", 3)
    assert m.shape == (3, 187)
    assert np.flatnonzero(m[0]).tolist() == list(range(100, 137))


def test_linear_and_spline_recover_smooth_signals():
    t = np.linspace(0, 1, 200)
    x = np.stack([np.sin(2 * np.pi * t), t**2]).astype(np.float32)
    m = np.zeros_like(x)
    m[:, 80:110] = 1
    masked = np.where(m > 0, 0, x)
    lin = gap_metrics(x, linear_fill(masked, m), m)
    spl = gap_metrics(x, spline_fill(masked, m), m)
    zero = gap_metrics(x, masked, m)
    assert spl["rmse"] < lin["rmse"] < zero["rmse"]
    assert spl["pearson_r"] > 0.99
    assert zero["pearson_r"] is None  # constant fill has no correlation
