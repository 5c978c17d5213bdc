"""Lead reconstruction: exact limb-lead derivation, masks, tiny train/export/evaluate, committed artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.runtime.base import DEFAULT_ARTIFACTS_DIR
from models.runtime.lead_recon import LeadReconModel, derive_limb_leads
from stream.errors import ConfigError, ModelError
from training.config import load_config
from training.datasets.ptbxl import load_ptbxl
from training.registry import TaskContext, get_spec
from training.tasks.lead_recon import IDX, sample_masks

pytestmark = pytest.mark.train


def _ctx(data_dir: Path, tmp: Path, overrides: list[str]) -> TaskContext:
    return TaskContext(
        model="lead_recon",
        config=load_config("lead_recon", overrides=overrides),
        data_dir=data_dir,
        cache_dir=tmp / "cache",
        runs_dir=tmp / "runs",
        artifacts_dir=tmp / "artifacts",
        progress=False,
        extra={"source": "onnx"},
    )


def test_limb_leads_derived_exactly_on_real_records(data_dir, tmp_path):
    x = load_ptbxl(data_dir, tmp_path, limit=2, progress=False).x
    mask = np.zeros((len(x), 12), dtype=np.float32)
    mask[:, [IDX["aVL"], IDX["aVF"]]] = 1  # any two limb leads determine the six
    garbage = np.where(mask[:, None, :] > 0, x, 0.0)
    out, derived = derive_limb_leads(garbage, mask)
    assert derived[:, :6].sum() == 4 * len(x) and not derived[:, 6:].any()
    for lead in ("I", "II", "III", "aVR"):
        np.testing.assert_allclose(
            out[:, :, IDX[lead]], x[:, :, IDX[lead]], atol=0.01
        )  # PTB-XL stores 1 uV steps


def test_masks_cover_evaluated_configurations():
    m = sample_masks(
        400,
        np.random.default_rng(0),
        {"I_II_V4": 1, "II_only": 1, "leave_one_out": 1, "bernoulli": 1},
    )
    rows = {tuple(r) for r in m.astype(int)}
    a = np.zeros(12, int)
    a[[IDX["I"], IDX["II"], IDX["V4"]]] = 1
    b = np.zeros(12, int)
    b[IDX["II"]] = 1
    assert tuple(a) in rows and tuple(b) in rows
    assert (m.sum(axis=1) >= 1).all() and (m.sum(axis=1) <= 11).all()


@pytest.mark.slow
def test_train_export_evaluate_tiny(data_dir, tmp_path):
    ctx = _ctx(
        data_dir,
        tmp_path,
        [
            "data.limit=6",
            "train.epochs=1",
            "contrastive.epochs=1",
            "model.width=8",
            "model.stem=8",
            "train.batch_size=8",
        ],
    )
    spec = get_spec("lead_recon")
    general = spec.train(ctx)
    spec.export(ctx)
    res = spec.evaluate(ctx)
    assert (
        res["II_only"]["artifact"] == "lead_recon.onnx"
    )  # no dedicated model yet: the general one serves II
    single_overrides = [
        "variant=single",
        "data.limit=6",
        "single.train.epochs=1",
        "single.model.width=8",
        "single.model.stem=8",
        "single.model.head=2",
        "single.model.dilations=[1,2]",
        "single.train.augment.rotate_deg=20",
        "single.model.film=true",
        "single.train.ema_decay=0.9",
    ]
    single = _ctx(data_dir, tmp_path, single_overrides)
    first = spec.train(single)
    assert spec.export(single).name == "lead_recon_ii.onnx"
    assert (
        json.loads((tmp_path / "artifacts" / "lead_recon_ii.card.json").read_text())["ensemble"]
        is None
    )
    res_single = spec.evaluate(ctx)["II_only"]["mean_pearson"]
    # a second seed, and the export of the two as an ensemble chosen on fold 9
    seed1 = _ctx(data_dir, tmp_path, [*single_overrides, "single.train.seed=1"])
    second = spec.train(seed1)
    assert second != first
    # a continuation of the first run that gains the recurrent context (new weights start at zero)
    gru = spec.train(
        _ctx(
            data_dir,
            tmp_path,
            [*single_overrides, "single.model.gru=4", f"single.train.init_from={first}"],
        )
    )
    alone = _ctx(data_dir, tmp_path, single_overrides)
    alone.run_dir = gru
    assert (
        spec.export(alone).name == "lead_recon_ii.onnx"
    )  # the GRU model passes the ONNX parity check
    assert (
        json.loads((tmp_path / "artifacts" / "lead_recon_ii.card.json").read_text())["config"][
            "single"
        ]["model"]["gru"]
        == 4
    )
    ens = _ctx(data_dir, tmp_path, [*single_overrides, f'single.ensemble=["{first}", "{gru}"]'])
    ens.run_dir = second
    assert (
        spec.export(ens).name == "lead_recon_ii.onnx"
    )  # parity-checked ONNX, GRU member included when chosen
    card = json.loads((tmp_path / "artifacts" / "lead_recon_ii.card.json").read_text())
    info = card["ensemble"]
    assert set(info["candidates_validation_mean_pearson"]) == {str(first), str(second), str(gru)}
    assert 1 <= len(info["members"]) <= 3 and info["validation_mean_pearson"] >= max(
        info["candidates_validation_mean_pearson"].values()
    )
    assert card["metrics"]["validation"]["II_only"]["mean_pearson"] == pytest.approx(
        info["validation_mean_pearson"], abs=1e-4
    )
    for not_ii in (
        general,
        tmp_path / "runs" / "lead_recon" / "none",
    ):  # the general model, or no run at all
        bad = _ctx(data_dir, tmp_path, [*single_overrides, f'single.ensemble=["{not_ii}"]'])
        bad.run_dir = second
        with pytest.raises(ConfigError, match=r"lead-II run|not a trained"):
            spec.export(bad)
    assert np.isfinite(res_single)
    res = spec.evaluate(ctx)
    assert (
        res["II_only"]["artifact"] == "lead_recon_ii.onnx"
        and res["II_only"]["use_contrastive"] is False
    )
    assert res["I_II_V4"]["artifact"] == res["leave_one_out"]["artifact"] == "lead_recon.onnx"
    assert set(res["I_II_V4"]["per_lead"]) == {"V1", "V2", "V3", "V5", "V6"}
    assert set(res["I_II_V4"]["derived"]) == {"III", "aVR", "aVL", "aVF"}
    assert len(res["II_only"]["per_lead"]) == 11
    assert all(v["pearson"] > 0.99 for v in res["leave_one_out"]["derived"].values())
    for conf in ("I_II_V4", "II_only", "leave_one_out"):
        assert set(next(iter(res[conf]["per_lead"].values()))) == {"rmse", "r2", "pearson"}


@pytest.mark.skipif(
    not (DEFAULT_ARTIFACTS_DIR / "lead_recon.onnx").is_file(), reason="lead_recon not exported yet"
)
def test_committed_artifact_matches_card_and_runs_on_real_record(data_dir, tmp_path):
    model = LeadReconModel.load()
    assert (DEFAULT_ARTIFACTS_DIR / "lead_recon.onnx").stat().st_size < 3_000_000
    x = load_ptbxl(data_dir, tmp_path, limit=1, progress=False).folds([10]).x[0]
    mask = np.zeros(12, dtype=np.float32)
    mask[[IDX["I"], IDX["II"], IDX["V4"]]] = 1
    pred = model.predict(x, mask)
    assert pred.leads.shape == (1, 1000, 12)
    np.testing.assert_array_equal(pred.leads[0, :, IDX["V4"]], x[:, IDX["V4"]])
    assert pred.derived[0, IDX["III"]] and pred.learned[0, IDX["V1"]]
    assert np.corrcoef(pred.leads[0, :, IDX["V5"]], x[:, IDX["V5"]])[0, 1] > 0.5
    with pytest.raises(ModelError):
        model.predict(x, np.zeros(12))


@pytest.mark.skipif(
    not (DEFAULT_ARTIFACTS_DIR / "lead_recon_ii.onnx").is_file(),
    reason="lead_recon_ii not exported yet",
)
def test_lead_ii_alone_is_routed_to_the_dedicated_model(data_dir, tmp_path):
    model = LeadReconModel.load()
    assert (
        DEFAULT_ARTIFACTS_DIR / "lead_recon_ii.onnx"
    ).stat().st_size < 8_000_000  # an ensemble of a few 1.4 MB networks
    x = load_ptbxl(data_dir, tmp_path, limit=1, progress=False).folds([10]).x[:1]
    only_ii = np.zeros(12, dtype=np.float32)
    only_ii[IDX["II"]] = 1
    three = np.zeros(12, dtype=np.float32)
    three[[IDX["I"], IDX["II"], IDX["V4"]]] = 1
    assert model.model_for(only_ii).onnx_path.name == "lead_recon_ii.onnx"
    assert model.model_for(three) is model
    masks = np.stack([only_ii, three])
    pred = model.predict(np.concatenate([x, x]), masks)  # one batch, two models
    lead = pred.leads[0]
    np.testing.assert_array_equal(lead[:, IDX["II"]], x[0, :, IDX["II"]])
    assert pred.learned[0].sum() == 11 and not pred.derived[0].any()
    # limb leads of the dedicated model follow Einthoven/Goldberger from the predicted I and recorded II
    np.testing.assert_allclose(
        lead[:, IDX["III"]], lead[:, IDX["II"]] - lead[:, IDX["I"]], atol=1e-5
    )
    np.testing.assert_allclose(
        lead[:, IDX["aVR"]], -(lead[:, IDX["I"]] + lead[:, IDX["II"]]) / 2, atol=1e-5
    )
    assert np.corrcoef(lead[:, IDX["aVF"]], x[0, :, IDX["aVF"]])[0, 1] > 0.5
    # the same window alone gives the same reconstruction (routing is per window)
    np.testing.assert_allclose(model.predict(x[0], only_ii).leads[0], lead, atol=1e-5)
