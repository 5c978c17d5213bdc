"""PTB-XL preparation and the three 12-lead anomaly models (cae12, vae_bilstm, vae_bilstm_mha).

Real data, small subsets (a few records per fold), tiny configs, one epoch; plus the committed
artifacts: sha256 against their cards and the ORT wrapper on a real PTB-XL record.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.preprocessing.filtering import filter_signal
from models.runtime.anomaly12 import Anomaly12Model, anomaly_score, preprocess
from models.runtime.base import DEFAULT_ARTIFACTS_DIR
from stream.errors import ModelError
from stream.records import TWELVE_LEADS, read_record
from training.config import load_config
from training.datasets.ptbxl import load_metadata, load_ptbxl
from training.registry import TaskContext, get_spec
from training.tasks._ptbxl_anomaly import metrics, youden_threshold

pytestmark = pytest.mark.train


def _ctx(model: str, data_dir: Path, tmp: Path, overrides: list[str]) -> TaskContext:
    return TaskContext(
        model=model,
        config=load_config(model, overrides=overrides),
        data_dir=data_dir,
        cache_dir=tmp / "cache",
        runs_dir=tmp / "runs",
        artifacts_dir=tmp / "artifacts",
        progress=False,
        extra={"source": "onnx"},
    )


def test_superclasses_from_scp_statements(data_dir):
    df = load_metadata(data_dir)
    assert df.loc[1, "superclasses"] == (
        "NORM",
    )  # {'NORM': 100, 'LVOLT': 0, 'SR': 0}; LVOLT/SR not diagnostic
    assert set(df["strat_fold"]) == set(range(1, 11))
    allowed = {"NORM", "MI", "STTC", "CD", "HYP"}
    assert all(set(s) <= allowed for s in df["superclasses"])


def test_prepared_window_is_stream_filter_of_record(data_dir, tmp_path):
    d = load_ptbxl(data_dir, tmp_path, limit=2, progress=False)
    assert d.x.shape == (20, 1000, 12) and d.x.dtype == np.float32
    i = 0
    rel = load_metadata(data_dir).loc[int(d.ecg_id[i]), "filename_lr"]
    rec = read_record(data_dir / "ptbxl" / rel)
    assert rec.leads == TWELVE_LEADS
    np.testing.assert_allclose(d.x[i], filter_signal(rec.signal, rec.fs)[:1000], atol=1e-5)
    assert set(d.folds([10]).fold) == {10}


def test_threshold_and_metrics_on_known_scores(data_dir, tmp_path):
    d = load_ptbxl(data_dir, tmp_path, limit=3, progress=False)
    keep = d.has_label
    score = (~d.normal).astype(float) + 0.01 * np.arange(len(d))  # perfect separation
    y = (~d.normal[keep]).astype(int)
    t = youden_threshold(y, score[keep])
    m = metrics(d, score, t)
    assert m["auroc"] == 1.0 and m["sensitivity"] == 1.0 and m["specificity"] == 1.0
    assert set(m) >= {"auroc", "auprc", "auroc_by_superclass", "sensitivity", "specificity"}


def test_scoring_rules():
    err = np.array([[1.0, 2.0, 4.0], [1.0, 1.0, 1.0]])
    ref = {"lead_reference": [1.0, 2.0, 1.0]}
    assert np.allclose(anomaly_score(err, None, {**ref, "method": "lead_max"}), [4.0, 1.0])
    assert np.allclose(anomaly_score(err, None, {**ref, "method": "mean"}), [7 / 3, 1.0])
    with pytest.raises(ModelError):
        anomaly_score(err, None, {**ref, "method": "elbo"})


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cae12", "vae_bilstm_mha"])
def test_train_export_evaluate_tiny(model, data_dir, tmp_path):
    over = ["data.limit=6", "train.epochs=1", "train.batch_size=8"]
    over += ["model.channels=[8,8,8]"] if model == "cae12" else ["model.hidden=8", "model.conv=8"]
    ctx = _ctx(model, data_dir, tmp_path, over)
    spec = get_spec(model)
    run_dir = spec.train(ctx)
    assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "scoring.json").is_file()
    onnx_path = spec.export(ctx)
    card = json.loads(onnx_path.with_name(f"{model}.card.json").read_text())
    assert card["parity"]["max_abs_diff"] <= card["parity"]["tolerance"]
    res = spec.evaluate(ctx)
    assert 0.0 <= res["auroc"] <= 1.0 and set(res["auroc_by_superclass"]) <= {
        "MI",
        "STTC",
        "CD",
        "HYP",
    }
    wrapper = Anomaly12Model.load(model, ctx.artifacts_dir)
    pred = wrapper.predict(load_ptbxl(data_dir, tmp_path, limit=1, progress=False).x[:2])
    assert pred.recon.shape == (2, 1000, 12) and pred.score.shape == (2,)
    if model == "vae_bilstm_mha":
        assert pred.lead_attention.shape == (2, 12) and pred.time_attention.shape == (2, 1000)
        np.testing.assert_allclose(pred.lead_attention.sum(axis=1), 1.0, atol=1e-4)


COMMITTED = [
    m
    for m in ("cae12", "vae_bilstm", "vae_bilstm_mha")
    if (DEFAULT_ARTIFACTS_DIR / f"{m}.onnx").is_file()
]


@pytest.mark.parametrize("model", COMMITTED)
def test_committed_artifact_matches_card_and_runs_on_real_record(model, data_dir):
    wrapper = Anomaly12Model.load(model)  # verifies sha256 against the card
    assert (DEFAULT_ARTIFACTS_DIR / f"{model}.onnx").stat().st_size < 3_000_000
    rec = read_record(data_dir / "ptbxl" / "records100" / "00000" / "00001_lr")
    pred = wrapper.predict(preprocess(rec.signal, rec.fs))
    assert pred.score.shape == (1,) and np.isfinite(pred.score).all()
    assert np.corrcoef(pred.recon[0, :, 1], preprocess(rec.signal, rec.fs)[0, :, 1])[0, 1] > 0.5
    with pytest.raises(ModelError):
        wrapper.predict(np.full((1000, 12), np.nan, dtype=np.float32))
