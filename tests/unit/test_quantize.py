"""``python -m training quantize``: an int8 copy with its own card, loadable by the runtime, evaluated in
the model's place through ``artifact_dir_for`` (training.quantize)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.errors import ModelError
from models.runtime.base import OnnxModel, sha256_file
from training.quantize import artifact_dir_for, quantize

ARTIFACTS = Path(__file__).resolve().parents[2] / "models" / "artifacts"


@pytest.fixture()
def models_dir(tmp_path: Path) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    for name in ("cae.onnx", "cae.card.json"):
        shutil.copy(ARTIFACTS / name, d / name)
    return d


def test_dynamic_int8_copy_has_its_own_card_and_runs(models_dir: Path, tmp_path: Path) -> None:
    out = quantize("cae", tmp_path / "no-data-needed", models_dir, "dynamic")
    onnx = models_dir / "cae_int8.onnx"
    card = json.loads((models_dir / "cae_int8.card.json").read_text())
    assert onnx.is_file() and card["onnx_sha256"] == sha256_file(onnx)
    assert card["quantized_from"]["method"] == "dynamic"
    assert card["quantized_from"]["onnx_sha256"] == sha256_file(models_dir / "cae.onnx")
    assert out["quantized_from"]["model"] == "cae" and out["onnx_bytes"] < out["parent_onnx_bytes"]
    m = OnnxModel(onnx)  # integrity-checked like any artifact
    x = np.zeros([1, *m._input_shapes[m.input_names[0]][1:]], dtype=np.float32)
    assert np.isfinite(m.session.run(None, {m.input_names[0]: x})[0]).all()
    # evaluated in the model's place: a models dir where "cae" is the int8 copy
    (tmp_path / "eval").mkdir()
    d = artifact_dir_for("cae", "cae_int8", models_dir, tmp_path / "eval")
    assert sha256_file(d / "cae.onnx") == card["onnx_sha256"]


def test_unknown_model_or_method_is_a_clear_error(models_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot quantize"):
        quantize("lead_recon", tmp_path, models_dir, "dynamic")
    with pytest.raises(ModelError, match="unknown quantization method"):
        quantize("cae", tmp_path, models_dir, "float8")
