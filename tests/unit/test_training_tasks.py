"""Short real training runs (tiny configs, a few MIT-BIH records), ONNX export with parity, and evaluation
through the ONNX Runtime wrappers, for the CAE and the LSTM-AE."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.config import load_config
from training.registry import TaskContext, get_spec

pytestmark = [pytest.mark.train, pytest.mark.slow]  # trains, exports and evaluates models

# DS1: 101 106 108 (train/val), DS2: 100 103 (test)
RECORDS = ["100", "101", "103", "106", "108"]


def _ctx(model: str, data_dir: Path, tmp_path: Path, overrides: list[str]) -> TaskContext:
    return TaskContext(
        model=model,
        config=load_config(model, overrides=overrides),
        data_dir=data_dir,
        cache_dir=tmp_path / "cache",
        runs_dir=tmp_path / "runs",
        artifacts_dir=tmp_path / "artifacts",
        device="cpu",
        progress=False,
        command=f"pytest {model}",
    )


_CAE_TINY = [
    'protocols=["inter_patient"]',
    f"data.records={json.dumps(RECORDS)}",
    "data.n_val_records=1",
    "data.max_train_windows=512",
    "data.max_val_loss_windows=256",
    "model.channels=[4,4,4,4]",
    "model.latent=8",
    "train.epochs=1",
    "score_grid.center_seconds=[0.5]",
    "score_grid.center_weight=[1.0, 2.0]",
    "rhythm_grid.history=[16, 64]",
]


def test_cae_train_export_evaluate(data_dir, tmp_path):
    ctx = _ctx("cae", data_dir, tmp_path, _CAE_TINY)
    spec = get_spec("cae")
    run_dir = spec.train(ctx)
    for f in (
        "config.json",
        "metrics.json",
        "inter_patient/checkpoint.pt",
        "inter_patient/history.json",
        "inter_patient/loss_curve.png",
        "inter_patient/roc.png",
    ):
        assert (run_dir / f).is_file(), f
    metrics = json.loads((run_dir / "inter_patient" / "metrics.json").read_text())
    assert set(metrics["split"]["records"]["test"]) == {"100", "103"}
    assert 0.0 <= metrics["test"]["roc_auc"] <= 1.0
    rh = metrics["rhythm"]  # reference rule and weight chosen without the test records
    assert (
        rh["history"] in ctx.config["rhythm_grid"]["history"]
        and rh["weight"] in ctx.config["rhythm_grid"]["weight"]
    )
    assert (
        "train + validation" in rh["chosen_on"]["history, quantile"]
        and "validation" in rh["chosen_on"]["weight"]
    )

    # re-calibration of the same networks (no epochs) reproduces the run's choices and figures
    ctx2 = _ctx("cae", data_dir, tmp_path, [*_CAE_TINY, f"init_from={run_dir}", "train.epochs=0"])
    run2 = spec.train(ctx2)
    m2 = json.loads((run2 / "inter_patient" / "metrics.json").read_text())
    assert m2["rhythm"] == rh and m2["test"]["roc_auc"] == pytest.approx(metrics["test"]["roc_auc"])
    assert m2["fit"]["init_from"].startswith(str(run_dir))

    onnx_path = spec.export(ctx2)
    card = json.loads(onnx_path.with_name("cae.card.json").read_text())
    assert card["rhythm"]["weight"] == rh["weight"]
    assert card["parity"]["max_abs_diff"] <= 1e-4
    assert card["inputs"][0]["name"] == "window" and card["inputs"][0]["shape"][1] == 720
    assert card["threshold"]["chosen_on"] == "validation"

    ev = spec.evaluate(ctx)  # from the exported ONNX via the runtime wrapper
    assert ev["inter_patient"]["roc_auc"] == pytest.approx(
        card["metrics"]["test"]["roc_auc"], abs=1e-9
    )
    assert set(ev["inter_patient"]["recall_by_class"]) == {"N", "S", "V", "F", "Q"}
    assert "error" in ev["pooled"]  # no pooled artifact exported in this tiny run


def test_lstm_ae_train_export_evaluate(data_dir, tmp_path):
    ctx = _ctx(
        "lstm_ae",
        data_dir,
        tmp_path,
        [
            f"records={json.dumps(RECORDS)}",
            "n_val_records=1",
            "seed_protocol.max_train_segments=128",
            "seed_protocol.max_val_segments=64",
            "seed_protocol.max_test_segments=64",
            "seed_protocol.train.epochs=2",
            "seed_protocol.train.select_on=val_fixed_mask_rmse",
            "seed_protocol.train_eval_mask_fraction=0.5",
            "stream_protocol.segments_per_record=40",
            "stream_protocol.max_train_segments=64",
            "stream_protocol.max_val_segments=32",
            "stream_protocol.max_test_segments=32",
            "stream_protocol.train.epochs=1",
            "seed_protocol.model.hidden=8",
            "stream_protocol.model.hidden=8",
            "seed_pooled_protocol.max_train_segments=128",
            "seed_pooled_protocol.max_val_segments=64",
            "seed_pooled_protocol.max_test_segments=64",
            "seed_pooled_protocol.train.epochs=1",
            "seed_pooled_protocol.model.hidden=8",
            "seed_pooled_protocol.model.channels=8",
            "baseline.max_train_segments=32",
            "baseline.train.epochs=1",
        ],
    )
    spec = get_spec("lstm_ae")
    run_dir = spec.train(ctx)
    assert (run_dir / "stream" / "recovery_examples.png").is_file()
    # select_on: the seed checkpoint follows the validation RMSE on the evaluation mask, which is reported
    hist = json.loads((run_dir / "seed" / "history.json").read_text())
    assert len(hist["history"]["val_metric"]) == 2 and hist["best_val_metric"] == max(
        hist["history"]["val_metric"]
    )
    val = json.loads((run_dir / "seed" / "metrics.json").read_text())["validation_evaluation_mask"]
    assert -hist["best_val_metric"] == pytest.approx(val["model"], rel=1e-5)
    assert val["rmse_ratio_to_linear"] == pytest.approx(val["model"] / val["linear"])
    spec.export(ctx)
    for name in ("lstm_ae", "lstm_ae_seed", "lstm_ae_seed_pooled"):
        card = json.loads((ctx.artifacts_dir / f"{name}.card.json").read_text())
        assert card["parity"]["max_abs_diff"] <= 1e-4
        assert [i["name"] for i in card["inputs"]] == ["signal", "mask"]
    pooled = json.loads((ctx.artifacts_dir / "lstm_ae_seed_pooled.card.json").read_text())
    assert "NOT patient-wise" in pooled["data"]["split"]
    ev = spec.evaluate(ctx)
    for proto in ("seed", "seed_pooled", "stream"):
        figs = ev[proto]
        assert {
            "zero_fill",
            "linear",
            "cubic_spline",
            "model",
            "seed_lstm_ae",
            "rmse_ratio_to_linear",
        } <= set(figs)
        assert np.isfinite(figs["model"]["rmse"])
    assert "goals" in ev
