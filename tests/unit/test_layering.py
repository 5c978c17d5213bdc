"""Layering without cycles: training > simulators > stream > models (contracts in pyproject.toml)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "stream", "simulators", "training")
#: Any import (module level or inside a function) of a package above ``models``.
UPWARD_FROM_MODELS = re.compile(
    r"^\s*(from|import)\s+(stream|training|simulators)(\.|\s|$)", re.MULTILINE
)


def _lint_imports() -> Path:
    exe = Path(sys.executable).parent / "lint-imports"
    if not exe.is_file():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    return exe


def test_import_contracts_are_kept() -> None:
    result = subprocess.run(
        [str(_lint_imports()), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_models_import_nothing_above_them() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}: {m.group(0).strip()}"
        for path in sorted((ROOT / "models").rglob("*.py"))
        for text in [path.read_text()]
        for m in UPWARD_FROM_MODELS.finditer(text)
    ]
    assert not offenders, "models/ must not import stream, training or simulators:\n" + "\n".join(
        offenders
    )


def test_an_upward_import_breaks_the_contracts(tmp_path: Path) -> None:
    """The contracts catch what they are for: a copy of the packages with ``models`` importing ``stream``
    (inside a function, as lazy imports do) fails ``lint-imports``."""
    exe = _lint_imports()
    for pkg in PACKAGES:
        for src in (ROOT / pkg).rglob("*.py"):
            dst = tmp_path / src.relative_to(ROOT)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(src.read_text())
    bad = tmp_path / "models" / "_upward.py"
    bad.write_text("def f():\n    from stream.settings import Settings\n\n    return Settings\n")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    result = subprocess.run(
        [str(exe), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(tmp_path), "PATH": str(Path(sys.executable).parent)},
    )
    assert result.returncode != 0, result.stdout
    assert "models._upward -> stream.settings" in result.stdout, result.stdout


def test_every_package_roots_its_errors_in_the_one_base() -> None:
    from models.errors import EcgMonitorError, ModelError
    from simulators import errors as sim_errors
    from stream import errors as stream_errors
    from training import errors as train_errors

    assert (
        stream_errors.EcgMonitorError is EcgMonitorError and stream_errors.ModelError is ModelError
    )
    for cls in (
        ModelError,
        stream_errors.ConfigError,
        stream_errors.DataError,
        stream_errors.FrameValidationError,
        stream_errors.BrokerError,
        train_errors.TrainingError,
        sim_errors.SimulatorError,
    ):
        assert issubclass(cls, EcgMonitorError)
    # training's and the simulators' errors are still caught by an except on the stream's classes
    assert issubclass(train_errors.ConfigError, stream_errors.ConfigError)
    assert issubclass(train_errors.DataError, stream_errors.DataError)
    assert issubclass(sim_errors.DataError, stream_errors.DataError)


def test_the_stream_beat_symbols_are_the_aami_classified_ones() -> None:
    from stream.records import BEAT_SYMBOLS
    from training.datasets.mitdb_split import AAMI_CLASSES

    assert frozenset(AAMI_CLASSES) == BEAT_SYMBOLS


def test_replay_is_registered_through_the_entry_point_group() -> None:
    from importlib.metadata import entry_points

    from stream.cli import COMMANDS_GROUP

    eps = {ep.name: ep.value for ep in entry_points(group=COMMANDS_GROUP)}
    assert eps.get("replay") == "simulators.cli:replay"
