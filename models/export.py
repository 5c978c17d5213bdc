"""Generic ONNX export: ``torch.onnx.export`` -> ``onnx.checker`` -> parity vs ONNX Runtime -> model card.

The card (``<name>.card.json`` beside ``<name>.onnx``) records what a consumer needs: input/output names
and shapes, sampling rate, normalisation, training data and split, metrics, decision threshold and how it
was chosen, parameter count, sha256 of the ONNX file, the parity figure and the command that produced it.
Imports torch: training only.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from models.card import upgrade
from models.errors import ModelError
from models.runtime.base import onnx_session, sha256_file

DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-4


def card_path_for(onnx_path: str | Path) -> Path:
    """``x/cae.onnx`` -> ``x/cae.card.json``."""
    p = Path(onnx_path)
    return p.with_name(p.stem + ".card.json")


def export_onnx(
    model: torch.nn.Module,
    example_inputs: Sequence[np.ndarray],
    path: str | Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export ``model`` (eval mode, CPU) to ONNX with the TorchScript exporter and run ``onnx.checker``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in example_inputs)
    with torch.no_grad():
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes={k: dict(v) for k, v in (dynamic_axes or {}).items()},
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    return path


def check_parity(
    model: torch.nn.Module,
    onnx_path: str | Path,
    inputs: Mapping[str, np.ndarray],
    tolerance: float = PARITY_TOLERANCE,
    batch: int = 256,
) -> dict[str, Any]:
    """Max abs difference between torch and ONNX Runtime outputs on real ``inputs`` (name -> array).

    Raises :class:`ModelError` when it exceeds ``tolerance``; returns ``{"max_abs_diff", "tolerance",
    "n_inputs", "per_output"}``.
    """
    model = model.cpu().eval()
    sess = onnx_session(onnx_path)
    out_names = [o.name for o in sess.get_outputs()]
    names = list(inputs)
    n = next(iter(inputs.values())).shape[0]
    worst = dict.fromkeys(out_names, 0.0)
    with torch.no_grad():
        for s in range(0, n, batch):
            feeds = {k: np.ascontiguousarray(inputs[k][s : s + batch]) for k in names}
            ref = model(*(torch.from_numpy(feeds[k]) for k in names))
            ref_t = ref if isinstance(ref, (tuple, list)) else (ref,)
            got = sess.run(out_names, feeds)
            for name, r, g in zip(out_names, ref_t, got, strict=True):
                worst[name] = max(
                    worst[name], float(np.max(np.abs(r.numpy() - g))) if g.size else 0.0
                )
    max_diff = max(worst.values()) if worst else 0.0
    if not max_diff <= tolerance:
        raise ModelError(
            f"ONNX parity failed for {onnx_path}: max abs diff {max_diff:.3g} > {tolerance:g} ({worst})"
        )
    return {
        "max_abs_diff": max_diff,
        "tolerance": tolerance,
        "n_inputs": int(n),
        "per_output": worst,
    }


def io_spec(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Input/output names, shapes (symbolic dims as strings) and dtypes read from an ONNX file."""
    sess = onnx_session(path)

    def spec(args: Sequence[Any]) -> list[dict[str, Any]]:
        return [
            {
                "name": a.name,
                "shape": list(a.shape),
                "dtype": {"float": "float32", "double": "float64"}.get(a.type[7:-1], a.type[7:-1]),
            }
            for a in args
        ]

    return {"inputs": spec(sess.get_inputs()), "outputs": spec(sess.get_outputs())}


def write_card(
    onnx_path: str | Path, fields: Mapping[str, Any], contract: Mapping[str, Any]
) -> Path:
    """Write the typed model card beside ``onnx_path``: ``fields`` + I/O spec, sha256, size, versions,
    time, and the task's ``contract`` (role, runtime, window, normalisation; :func:`models.card.contract`)."""
    onnx_path = Path(onnx_path)
    card: dict[str, Any] = {"name": onnx_path.stem, "onnx_file": onnx_path.name}
    card.update(io_spec(onnx_path))
    card.update(fields)
    card["onnx_sha256"] = sha256_file(onnx_path)
    card["onnx_bytes"] = onnx_path.stat().st_size
    card.setdefault("opset", DEFAULT_OPSET)
    card["exported_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    card["versions"] = {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
    }
    plain = json.loads(json.dumps(card, default=_jsonable))
    return upgrade(plain, dict(contract)).write(card_path_for(onnx_path))


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def export_with_card(
    model: torch.nn.Module,
    onnx_path: str | Path,
    real_inputs: Mapping[str, np.ndarray],
    output_names: Sequence[str],
    card_fields: Mapping[str, Any],
    contract: Mapping[str, Any],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    tolerance: float = PARITY_TOLERANCE,
    opset: int = DEFAULT_OPSET,
) -> dict[str, Any]:
    """Export, check, verify parity on ``real_inputs`` and write the card; returns the card dict.

    ``dynamic_axes`` defaults to a dynamic batch axis (``"batch"``) on every input and output.
    """
    names = list(real_inputs)
    if dynamic_axes is None:
        dynamic_axes = {n: {0: "batch"} for n in [*names, *output_names]}
    example = [real_inputs[n][:2] for n in names]
    export_onnx(model, example, onnx_path, names, output_names, dynamic_axes, opset)
    parity = check_parity(model, onnx_path, real_inputs, tolerance)
    fields = dict(card_fields)
    fields["parity"] = parity
    fields["opset"] = opset
    fields.setdefault("parameters", int(sum(p.numel() for p in model.parameters())))
    card_file = write_card(onnx_path, fields, contract)
    return dict(json.loads(card_file.read_text()))
