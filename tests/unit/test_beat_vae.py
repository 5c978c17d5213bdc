"""Beat VAE: MMD estimator and permutation test, tiny train/export/evaluate, committed artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.runtime.base import DEFAULT_ARTIFACTS_DIR
from models.runtime.beat_vae import BeatVaeModel, normalise
from training.config import load_config
from training.datasets.ludb import record_beats
from training.mmd import median_bandwidth, mmd2_unbiased, mmd_test
from training.registry import TaskContext, get_spec

pytestmark = pytest.mark.train


def test_mmd_separates_shifted_distributions():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((150, 10)), rng.standard_normal((150, 10))
    c = rng.standard_normal((150, 10)) + 0.5
    s = median_bandwidth(np.concatenate([a, b]))
    same, p_same = mmd_test(a, b, s, permutations=100)
    diff, p_diff = mmd_test(a, c, s, permutations=100)
    assert abs(same) < 0.01 and p_same > 0.05
    assert diff > 10 * abs(same) and p_diff < 0.02
    assert mmd2_unbiased(a, c, s) == pytest.approx(diff)


@pytest.mark.slow
def test_train_export_evaluate_tiny(data_dir, tmp_path: Path):
    ctx = TaskContext(
        model="beat_vae",
        config=load_config(
            "beat_vae",
            overrides=["data.limit=3", "train.epochs=2", "mmd.permutations=20", "mmd.n=100"],
        ),
        data_dir=data_dir,
        cache_dir=tmp_path / "cache",
        runs_dir=tmp_path / "runs",
        artifacts_dir=tmp_path / "artifacts",
        progress=False,
        extra={"source": "onnx"},
    )
    spec = get_spec("beat_vae")
    spec.train(ctx)
    spec.export(ctx)
    res = spec.evaluate(ctx)
    assert {"mmd_reconstruction", "mmd_prior", "p_value", "protocol"} <= set(res)
    assert 0 < res["p_value"]["prior"] <= 1 and res["protocol"]["kernel"].startswith("Gaussian")


@pytest.mark.skipif(
    not (DEFAULT_ARTIFACTS_DIR / "beat_vae.onnx").is_file(), reason="beat_vae not exported yet"
)
def test_committed_artifact_matches_card_and_runs_on_real_beats(data_dir):
    model = BeatVaeModel.load()
    assert (DEFAULT_ARTIFACTS_DIR / "beat_vae.onnx").stat().st_size < 3_000_000
    beats, _ = record_beats(data_dir, 1)
    z = normalise(beats)
    enc = model.predict(z)
    assert enc.recon.shape == z.shape and enc.mu.shape == (len(z), 25)
    assert float(np.median(enc.mse)) < 0.5  # reconstructs real beats (unit-variance units)
    assert model.sample(4).shape == (4, 400)
