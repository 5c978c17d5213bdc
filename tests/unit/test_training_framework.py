"""Training framework: config overrides, registry, splits (patient-disjoint), dataset cache, fit loop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream.errors import ConfigError, DataError
from training.config import apply_overrides, load_config
from training.datasets import content_hash
from training.datasets.mitdb import load_beats
from training.datasets.mitdb_split import MITDB_DS2, MITDB_PACED
from training.registry import get_spec, model_names
from training.splits import assert_disjoint, group_split, mitdb_inter_patient, mitdb_patient


def test_overrides_parse_json_and_dotted_keys():
    cfg = {"epochs": 10, "model": {"latent": 32}, "name": "x"}
    out = apply_overrides(cfg, ["epochs=3", "model.latent=16", "name=abc"])
    assert out == {"epochs": 3, "model": {"latent": 16}, "name": "abc"}
    assert cfg["epochs"] == 10  # input untouched


def test_unknown_override_key_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides({"epochs": 1}, ["epoch=2"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({"epochs": 1}, ["epochs"])


def test_config_file_merges_over_defaults(tmp_path):
    user = tmp_path / "c.json"
    user.write_text(json.dumps({"train": {"epochs": 2}}))
    cfg = load_config("cae", user, ["seed=7"])
    assert cfg["train"]["epochs"] == 2 and cfg["seed"] == 7
    assert "lr" in cfg["train"]  # defaults kept


def test_registry_lists_and_resolves_models():
    assert {"cae", "lstm_ae"} <= set(model_names())
    assert get_spec("cae").name == "cae"
    with pytest.raises(ConfigError, match="unknown model"):
        get_spec("nope")


def test_inter_patient_split_is_patient_disjoint_and_excludes_paced():
    split = mitdb_inter_patient(n_val=5, seed=0)
    assert_disjoint(split, mitdb_patient)  # raises if a patient is in two splits
    allr = [r for part in split.values() for r in part]
    assert len(allr) == len(set(allr))
    assert not set(allr) & set(MITDB_PACED)
    assert split["test"] == sorted(r for r in MITDB_DS2 if r not in MITDB_PACED)
    # 201 and 202 are one subject: 202 is in the test set, so 201 is in no other split
    assert "202" in split["test"] and "201" not in allr
    with pytest.raises(DataError):
        assert_disjoint({"train": ["201"], "test": ["202"]}, mitdb_patient)


def test_group_split_is_seeded_and_disjoint():
    groups = [f"p{i}" for i in range(40)]
    a, b = group_split(groups, seed=3), group_split(groups, seed=3)
    assert a == b
    assert_disjoint(a)
    assert sum(len(v) for v in a.values()) == 40


def test_prepared_beats_are_cached_and_labelled(data_dir, tmp_path):
    beats = load_beats(data_dir, tmp_path, records=["100", "119"], progress=False)
    assert beats.windows.shape[1] == 720 and beats.windows.dtype == np.float32
    assert set(np.unique(beats.record)) == {"100", "119"}
    assert {"N", "V"} <= set(np.unique(beats.aami))
    assert (beats.abnormal == (beats.aami != "N")).all()
    files = list((tmp_path / "datasets").glob("mitdb-beats-*.npz"))
    assert len(files) == 1
    again = load_beats(data_dir, tmp_path, records=["100", "119"], progress=False)
    np.testing.assert_array_equal(again.windows, beats.windows)
    # the key changes with the parameters
    h1 = content_hash([data_dir / "mitdb" / "100.hea"], {"w": 720})
    h2 = content_hash([data_dir / "mitdb" / "100.hea"], {"w": 360})
    assert h1 != h2


def _linear_problem():
    """A seeded least-squares problem: inputs, targets and 4 batches of 16."""
    import torch

    from training.trainer import seed_everything

    seed_everything(0)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    return x, y, [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]


def test_fit_can_select_the_checkpoint_by_a_validation_metric(tmp_path):
    import torch

    from training.trainer import FitConfig, fit

    _, _, data = _linear_problem()
    model = torch.nn.Linear(4, 1)
    metrics = iter([0.1, 0.9, 0.3, 0.2, 0.5])  # best at epoch 2, whatever the loss does

    def loss_fn(m, batch):
        return ((m(batch[0]).squeeze(-1) - batch[1]) ** 2).mean()

    snapshots = {}

    def select_fn(m):
        snapshots[len(snapshots) + 1] = m.weight.detach().clone()
        return next(metrics)

    cfg = FitConfig.from_dict({"epochs": 5, "lr": 0.05, "patience": 10, "lr_plateau_factor": 1.0})
    res = fit(
        model,
        data,
        data,
        loss_fn,
        cfg,
        tmp_path,
        torch.device("cpu"),
        progress=False,
        select_fn=select_fn,
    )
    assert res.best_epoch == 2 and res.best_val_metric == 0.9
    assert res.history["val_metric"] == [0.1, 0.9, 0.3, 0.2, 0.5]
    assert torch.equal(model.weight, snapshots[2])  # the chosen epoch's weights are loaded back


def test_threshold_can_target_a_published_operating_point():
    from training.metrics import binary_report, choose_threshold

    rng = np.random.default_rng(0)
    y = (rng.random(5000) < 0.2).astype(int)
    s = rng.normal(size=5000) + 2.5 * y
    targets = {"accuracy": 0.85, "sensitivity": 0.85, "specificity": 0.85, "f1": 0.6}
    rep = binary_report(y, s, choose_threshold(y, s, "targets", targets))
    assert all(rep[k] > v for k, v in targets.items())
    # unreachable targets fall back to the F1 rule
    assert choose_threshold(
        y, s, "targets", {"sensitivity": 0.99, "specificity": 0.99}
    ) == choose_threshold(y, s, "f1")


def test_fit_with_ema_validates_and_keeps_the_averaged_weights(tmp_path):
    import torch

    from training.trainer import FitConfig, fit

    x, y, data = _linear_problem()
    start = torch.nn.Linear(4, 1)
    seen = []

    def loss_fn(m, batch):
        return ((m(batch[0]).squeeze(-1) - batch[1]) ** 2).mean()

    def select_fn(m):
        seen.append(m.weight.detach().clone())
        return -float(loss_fn(m, (x, y)))

    runs = {}
    for decay in (0.0, 0.9):
        model = torch.nn.Linear(4, 1)
        model.load_state_dict(start.state_dict())
        cfg = FitConfig.from_dict(
            {"epochs": 3, "lr": 0.05, "patience": 10, "lr_plateau_factor": 1.0, "ema_decay": decay}
        )
        seen.clear()
        (tmp_path / str(decay)).mkdir()
        res = fit(
            model,
            data,
            data,
            loss_fn,
            cfg,
            tmp_path / str(decay),
            torch.device("cpu"),
            progress=False,
            select_fn=select_fn,
        )
        runs[decay] = (model.weight.detach().clone(), [w.clone() for w in seen], res)
    raw, ema = runs[0.0], runs[0.9]
    assert not torch.allclose(raw[1][-1], ema[1][-1])  # the averaged weights lag the raw ones
    # what fit returns is the validated (averaged) weights of the best epoch
    assert torch.equal(ema[0], ema[1][ema[2].best_epoch - 1])
