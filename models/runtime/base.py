"""Base ONNX Runtime model: loads ``<name>.onnx`` and its card, verifies sha256, checks input shapes.

No torch here: this is what the stream workers import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

import numpy as np
import onnxruntime as ort

from models.card import DEFAULT_ARTIFACTS_DIR, WindowSpec, load_card
from models.errors import ModelError


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file (the card's ``onnx_sha256``)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def session_options(threads: int = 1) -> ort.SessionOptions:
    """ONNX Runtime options of every session of the project (stream, dashboard, export parity).

    Chosen with ``python -m training bench-models`` (ORT 1.32, CPU): graph optimisation ``all`` (ORT's
    default, stated here so it cannot drift) is as fast as ``extended`` and 10-25 % faster than ``basic``
    on the 12-lead models (no difference on the small beat models); one intra-op thread, since a worker
    owns one core (a second thread helped only the 12-lead models, and only on an idle machine)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


def onnx_session(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU ONNX Runtime session with :func:`session_options`."""
    return ort.InferenceSession(
        str(path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
    )


class OnnxModel:
    """An ONNX model with its card: integrity-checked, single-threaded, shape-checked ``run``.

    ``OnnxModel.load("cae")`` reads ``models/artifacts/cae.onnx`` and ``cae.card.json`` (or from ``models_dir``).
    """

    def __init__(
        self, onnx_path: str | Path, card_path: str | Path | None = None, threads: int = 1
    ) -> None:
        self.onnx_path = Path(onnx_path)
        if not self.onnx_path.is_file():
            raise ModelError(
                f"model file not found: {self.onnx_path}; train and export it (python -m training export ...)"
            )
        card_path = (
            Path(card_path)
            if card_path
            else self.onnx_path.with_name(self.onnx_path.stem + ".card.json")
        )
        self.card = load_card(card_path)
        digest = sha256_file(self.onnx_path)
        if digest != self.card.onnx_sha256:
            raise ModelError(
                f"sha256 of {self.onnx_path.name} ({digest[:12]}...) does not match its card ({self.card.onnx_sha256[:12]}...)"
            )
        try:
            self.session = onnx_session(self.onnx_path, threads)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(f"ONNX Runtime cannot load {self.onnx_path}: {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._input_shapes = {i.name: list(i.shape) for i in self.session.get_inputs()}

    #: Artifact name a subclass loads when :meth:`load` is given none.
    default_name: str | None = None

    @classmethod
    def load(cls, name: str | None = None, models_dir: str | Path | None = None) -> Self:
        """Load ``<models_dir>/<name>.onnx`` (default name: ``default_name``; default dir: the committed artifacts)."""
        name = name or cls.default_name
        if not name:
            raise ModelError(f"{cls.__name__}.load needs a model name")
        root = Path(models_dir) if models_dir else DEFAULT_ARTIFACTS_DIR
        return cls(root / f"{name}.onnx")

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def window(self) -> WindowSpec:
        """The window this model takes (its card's preprocessing)."""
        return self.card.window

    def threshold_or_raise(self) -> float:
        """The card's decision threshold; :class:`ModelError` when the card has none."""
        th = self.card.threshold_value
        if th is None:
            raise ModelError(f"{self.name}: model card has no decision threshold")
        return th

    def check_input(self, name: str, x: np.ndarray) -> np.ndarray:
        """float32 contiguous ``x`` whose rank and fixed dims match input ``name``; :class:`ModelError` else."""
        arr = np.ascontiguousarray(x, dtype=np.float32)
        expected = self._input_shapes[name]
        if arr.ndim != len(expected):
            raise ModelError(
                f"{self.name}: input {name!r} must have {len(expected)} dims {expected}, got shape {arr.shape}"
            )
        for got, want in zip(arr.shape, expected, strict=True):
            if isinstance(want, int) and want > 0 and got != want:
                raise ModelError(
                    f"{self.name}: input {name!r} must have shape {expected}, got {arr.shape}"
                )
        if arr.shape[0] == 0:
            raise ModelError(f"{self.name}: input {name!r} is empty")
        if not np.isfinite(arr).all():
            raise ModelError(f"{self.name}: input {name!r} holds NaN or inf")
        return arr

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the session on checked inputs; returns ``{output name: array}``."""
        missing = set(self.input_names) - set(feeds)
        if missing:
            raise ModelError(f"{self.name}: missing inputs {sorted(missing)}")
        checked = {k: self.check_input(k, v) for k, v in feeds.items() if k in self.input_names}
        names = list(outputs) if outputs else self.output_names
        res = self.session.run(names, checked)
        return dict(zip(names, res, strict=True))
