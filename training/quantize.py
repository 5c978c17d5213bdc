"""``python -m training quantize MODEL``: an int8 copy of a beat model (``cae``, ``beat_vae``) with its card.

Writes ``<artifacts>/<MODEL>_int8.onnx`` and ``<MODEL>_int8.card.json``: a copy of the parent's card with
the new file's name and sha256, its ``metrics`` emptied (the parent's figures are not this model's; measure
them with ``python -m training evaluate MODEL --artifact MODEL_int8``) and a ``quantized_from`` section
(parent, its sha256, method, calibration data, tool version). Methods (``onnxruntime.quantization``):

- ``dynamic``: int8 weights, activations quantised at run time (``quantize_dynamic``);
- ``static``: QDQ int8 weights (per channel) and activations, activation ranges calibrated (MinMax) on
  windows of the model's TRAINING patients only, cut by the stream processor as the stream cuts them and
  normalised as the runtime does: ``cae``: ``beat_720`` windows of the MIT-BIH training records of its
  card's split; ``beat_vae``: ``beat_400`` cycles of the LUDB training records of its card's split.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from models.card import BEAT_400, BEAT_720, WindowSpec, load_card, parse_card
from models.errors import ModelError
from models.runtime.base import sha256_file
from models.runtime.protocol import Window, stack_data

QUANTIZABLE = ("cae", "beat_vae")
METHODS = ("dynamic", "static")


def _cut(path: Path, spec: WindowSpec, seconds: float | None) -> list[Window]:
    """``spec`` windows the stream processor cuts from one record (complete windows only)."""
    from stream.stages.processor import StageConfig, StreamProcessor
    from stream.testing import record_frames, run_processor

    frames = list(record_frames(path, seconds=seconds, stream_id=path.name))
    if not frames:
        return []
    proc = StreamProcessor(
        path.name, frames[0].fs, tuple(frames[0].leads), StageConfig(windows=(spec,))
    )
    got = run_processor(proc, frames, flush=False).windows
    return [w for w in got if w.kind == spec.name and np.isfinite(w.data).all()]


def calibration_windows(
    model: str, data_dir: Path, models_dir: Path, n: int = 1024, seed: int = 0
) -> tuple[np.ndarray, str]:
    """Up to ``n`` normalised graph inputs from the model's training patients, and what they are."""
    card = load_card(models_dir / f"{model}.card.json")
    details = card.data.details if isinstance(card.data.details, dict) else {}
    windows: list[Window] = []
    if model == "cae":
        records = [str(r) for r in details["split"]["records"]["train"]]
        for r in records:
            windows += _cut(Path(data_dir) / "mitdb" / r, BEAT_720, 180.0)
        what = f"beat_720 windows, first 180 s of MIT-BIH training records {records}"
    elif model == "beat_vae":
        records = [str(r) for r in details["split"]["train"]]
        for r in records:
            windows += _cut(Path(data_dir) / "ludb" / "data" / r, BEAT_400, None)
        what = f"beat_400 cycles of the {len(records)} LUDB training records"
    else:
        raise ModelError(f"cannot quantize {model!r}; known: {QUANTIZABLE}")
    if not windows:
        raise ModelError(f"{model}: no calibration windows under {data_dir}")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(windows), size=min(n, len(windows)), replace=False))
    x = stack_data([windows[i] for i in pick])
    if model == "cae":
        from models.runtime.cae import normalise_windows

        norm = card.preprocessing.normalisation
        x = normalise_windows(x, norm.method, 0.05 if norm.eps is None else float(norm.eps))
    else:
        from models.runtime.beat_vae import normalise

        x = normalise(x)
    return x, f"{len(pick)} of {len(windows)} {what} (seed {seed})"


class _Reader(CalibrationDataReader):
    """``onnxruntime.quantization.CalibrationDataReader`` over calibration batches."""

    def __init__(self, model: str, input_name: str, x: np.ndarray, batch: int = 32) -> None:
        self._items: Iterator[dict[str, np.ndarray]] = iter(
            [self._feed(model, input_name, x[s : s + batch]) for s in range(0, len(x), batch)]
        )

    @staticmethod
    def _feed(model: str, input_name: str, b: np.ndarray) -> dict[str, np.ndarray]:
        if model == "beat_vae":
            return {"beat": b, "z": np.zeros((1, 25), dtype=np.float32)}
        return {input_name: b}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def quantize(
    model: str,
    data_dir: Path,
    models_dir: Path,
    method: str = "static",
    n_calibration: int = 1024,
    out_name: str | None = None,
) -> dict[str, Any]:
    """Write ``<models_dir>/<model>_int8.onnx`` and its card; returns what was written."""
    import onnxruntime
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if model not in QUANTIZABLE:
        raise ModelError(f"cannot quantize {model!r}; known: {QUANTIZABLE}")
    if method not in METHODS:
        raise ModelError(f"unknown quantization method {method!r}; known: {METHODS}")
    parent = load_card(models_dir / f"{model}.card.json")
    src = models_dir / parent.onnx_file
    name = out_name or f"{model}_int8"
    dst = models_dir / f"{name}.onnx"
    info: dict[str, Any] = {
        "model": model,
        "onnx_sha256": parent.onnx_sha256,
        "method": method,
        "tool": f"onnxruntime.quantization {onnxruntime.__version__}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        if method == "dynamic":
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=False)
            info["weights"] = "int8 (per tensor); activations quantised at run time (uint8)"
        else:
            x, what = calibration_windows(model, data_dir, models_dir, n_calibration)
            reader = _Reader(model, parent.inputs[0].name, x)
            quantize_static(
                str(pre),
                str(dst),
                reader,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
            info["weights"] = "int8 per channel (symmetric); activations int8 (MinMax calibration)"
            info["calibration"] = what + "; training patients only"
    raw = parent.raw
    raw.update(
        {
            "name": name,
            "onnx_file": dst.name,
            "onnx_sha256": sha256_file(dst),
            "metrics": {},
            "description": f"int8 ({method}) quantisation of {model}: {parent.description}",
            "onnx_bytes": dst.stat().st_size,
            "quantized_from": info
            | {
                "note": f"metrics left empty: evaluate with `python -m training evaluate {model} "
                f"--artifact {name}`; the parent's figures are in its own card",
            },
        }
    )
    for key in ("parity",):
        raw.pop(key, None)
    card = parse_card(raw, name)
    card_file = card.write(models_dir / f"{name}.card.json")
    return {
        "onnx": str(dst),
        "card": str(card_file),
        "onnx_bytes": dst.stat().st_size,
        "parent_onnx_bytes": src.stat().st_size,
        "quantized_from": info,
    }


def artifact_dir_for(model: str, artifact: str, models_dir: Path, tmp: Path) -> Path:
    """A models dir in ``tmp`` where ``<model>`` is ``artifact`` (its ONNX file and card, renamed) and every
    other artifact is the committed one (linked): evaluation tasks that load ``<model>`` by name then
    evaluate ``artifact``."""
    card = load_card(models_dir / f"{artifact}.card.json")
    for p in models_dir.iterdir():
        if p.name.startswith(f"{model}.") or p.name.startswith(f"{artifact}."):
            continue
        (tmp / p.name).symlink_to(p)
    shutil.copyfile(models_dir / card.onnx_file, tmp / f"{model}.onnx")
    raw = card.raw
    raw.update({"name": model, "onnx_file": f"{model}.onnx"})
    parse_card(raw, model).write(tmp / f"{model}.card.json")
    return tmp
