"""Adding a model is adding its training task module and its config, nothing else.

The test writes a toy 12-lead model's task module (its own tiny torch network) and config into a
temporary directory, registers nothing anywhere, trains it one epoch on a few PTB-XL records, exports ONNX
with a typed card, and then checks that the stream scores it on windows the processor cuts because the
card declares them, that the dashboard lists it, and that the worker's ``--models`` accepts its name.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from models.card import load_card
from stream.cli import parse_models
from stream.records import read_record
from stream.settings import Settings
from stream.stages.processor import StageConfig, StreamProcessor
from stream.stages.scoring import WindowScorer, scoring_models
from stream.testing import record_frames, run_processor

pytestmark = [pytest.mark.train, pytest.mark.slow]

TOY_TASK = '''
"""``toy12``: a one-layer 12-lead conv autoencoder (a test of the model contract)."""

from typing import Any

import torch
from torch import nn

from models.cae12 import LeadNorm
from training.tasks._ptbxl_anomaly import OUTPUTS_CAE, make_spec


class Toy12(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = LeadNorm()
        self.enc = nn.Conv1d(12, width, 9, padding=4)
        self.dec = nn.Conv1d(width, 12, 9, padding=4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xn = self.norm(x)
        rn = self.dec(torch.tanh(self.enc(xn.transpose(1, 2)))).transpose(1, 2)
        return self.norm.inverse(rn), ((rn - xn) ** 2).mean(dim=1)


def build(mcfg: dict[str, Any]) -> Any:
    return Toy12(int(mcfg.get("width", 4)))


SPEC = make_spec("toy12", "toy 12-lead autoencoder", build=build, outputs=OUTPUTS_CAE, variational=False)
'''

TOY_CONFIG = {
    "data": {"limit": 6},
    "model": {"width": 4},
    "train": {"epochs": 1, "batch_size": 8, "lr": 0.001, "patience": 1},
    "scoring": {"candidates": ["mean", "lead_weighted_mean"]},
}


@pytest.fixture
def toy_task(tmp_path, monkeypatch):
    """``toy12``'s task module and config, in a directory of their own added to ``training.tasks``."""
    import training.tasks

    pkg = tmp_path / "toy_tasks"
    pkg.mkdir()
    (pkg / "toy12.py").write_text(textwrap.dedent(TOY_TASK))
    (pkg / "toy12.json").write_text(json.dumps(TOY_CONFIG))
    monkeypatch.setattr(training.tasks, "__path__", [*training.tasks.__path__, str(pkg)])
    yield pkg
    import sys

    sys.modules.pop("training.tasks.toy12", None)


def test_a_toy_model_needs_only_its_task_module_and_config(toy_task, data_dir, tmp_path):
    from training.registry import TaskContext, get_spec, model_names

    assert "toy12" in model_names()
    artifacts = tmp_path / "artifacts"
    ctx = TaskContext(
        model="toy12",
        config=json.loads((toy_task / "toy12.json").read_text()),
        data_dir=data_dir,
        cache_dir=tmp_path / "cache",
        runs_dir=tmp_path / "runs",
        artifacts_dir=artifacts,
        progress=False,
        command="python -m training export toy12",
    )
    spec = get_spec("toy12")
    spec.train(ctx)
    onnx_path = spec.export(ctx)
    card = load_card(onnx_path.with_name("toy12.card.json"))
    assert (card.role, card.runtime, card.window.name) == ("scorer", "anomaly12", "leads_10s")
    assert card.threshold_value is not None and card.metrics["validation"]["auroc"] >= 0.0

    # the stream: the worker's --models accepts it, the processor cuts the window its card declares,
    # the scorer scores it
    # the stream's lead reconstruction beside it (the record's V6 has a short flatline, masked and rebuilt)
    import shutil

    from models.card import DEFAULT_ARTIFACTS_DIR

    for f in DEFAULT_ARTIFACTS_DIR.glob("lead_recon*"):
        shutil.copy(f, artifacts / f.name)
    assert "toy12" in scoring_models(artifacts)
    assert parse_models("toy12", artifacts) == ("toy12",)
    scorer = WindowScorer(("toy12",), models_dir=artifacts)
    assert [s.name for s in scorer.window_specs] == ["leads_10s"]
    rec = read_record(data_dir / "ptbxl" / "records100" / "00000" / "00001_lr")
    proc = StreamProcessor("toy", rec.fs, rec.leads, StageConfig(windows=scorer.window_specs))
    windows = run_processor(proc, record_frames(rec, stream_id="toy"), flush=False).windows
    res = scorer.score(windows)
    assert res.scores and all(s.model == "toy12" and np.isfinite(s.score) for s in res.scores)
    assert all(set(s.lead_scores or {}) == set(rec.leads) for s in res.scores)

    # the dashboard lists it
    from fastapi.testclient import TestClient

    from stream.dashboard.app import create_dashboard

    app = create_dashboard(Settings(models_dir=artifacts))
    listed = TestClient(app).get("/api/models").json()
    assert [m["name"] for m in listed["models"]] == ["toy12"]


def test_unknown_model_names_are_refused_with_the_known_ones():
    from stream.errors import ConfigError

    with pytest.raises(ConfigError, match=r"known: .*cae"):
        parse_models("cae,nope", Path(Settings().models_dir))
