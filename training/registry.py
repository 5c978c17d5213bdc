"""Model registry: each trainable model is one module ``training/tasks/<name>.py`` exposing ``SPEC``.

Adding a model = adding one module; nothing else to edit. The CLI looks models up by name::

    spec = get_spec("cae")
    run_dir = spec.train(ctx)
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.errors import ConfigError, UnknownModelError


@dataclass
class TaskContext:
    """Everything a task callable needs; built by the CLI (or a test) once per command."""

    model: str
    config: dict[str, Any]
    data_dir: Path
    cache_dir: Path
    runs_dir: Path
    artifacts_dir: Path
    run_dir: Path | None = None
    device: str = "auto"
    progress: bool = True
    as_json: bool = False
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


TaskFn = Callable[[TaskContext], Any]


@dataclass(frozen=True)
class ModelSpec:
    """A trainable model: name, one-line description and the callables behind each CLI command.

    - ``prepare(ctx) -> dict``: build/cache its datasets, return a summary;
    - ``train(ctx) -> Path``: fit, write a run directory, return it;
    - ``evaluate(ctx) -> dict``: test figures (from the committed ONNX through the runtime wrapper
      unless ``ctx.extra["source"] == "checkpoint"``);
    - ``export(ctx) -> Path``: ONNX + model card from ``ctx.run_dir`` (latest run by default);
    - ``report(ctx) -> dict``: the card / metrics summary, plots regenerated.
    """

    name: str
    description: str
    prepare: TaskFn
    train: TaskFn
    evaluate: TaskFn
    export: TaskFn
    report: TaskFn
    #: artifact name -> the typed card contract (role, runtime, window, normalisation) of each artifact
    #: this task exports (:func:`models.card.contract`)
    cards: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


_TASKS_PACKAGE = "training.tasks"


def model_names() -> list[str]:
    """Names of every registered model (modules of ``training.tasks`` that define ``SPEC``)."""
    pkg = importlib.import_module(_TASKS_PACKAGE)
    names = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            names.append(info.name)
    return sorted(names)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; :class:`ConfigError` listing the known models otherwise."""
    if not name.isidentifier() or name not in model_names():
        raise UnknownModelError(f"unknown model {name!r}; known: {model_names()}")
    module = importlib.import_module(f"{_TASKS_PACKAGE}.{name}")
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, ModelSpec):
        raise ConfigError(f"{_TASKS_PACKAGE}.{name} defines no ModelSpec named SPEC")
    return spec


def committed_cards(ctx: TaskContext, artifacts: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Raw model cards of the committed artifacts that exist: ``{key: card}`` for ``{key: artifact name}``."""
    from models.card import load_card

    out: dict[str, dict[str, Any]] = {}
    for key, name in artifacts.items():
        path = ctx.artifacts_dir / f"{name}.card.json"
        if path.is_file():
            out[key] = load_card(path).raw
    return out


def run_plots(run_dir: Callable[[], Path], pattern: str = "*/*.png") -> list[str]:
    """The PNG plots of the run ``run_dir()`` names (none when there is no run yet)."""
    try:
        return sorted(str(p) for p in run_dir().glob(pattern))
    except ConfigError:
        return []


def migrate_cards(spec: ModelSpec, artifacts_dir: Path) -> list[str]:
    """Rewrite the old-format cards of ``spec``'s artifacts in ``artifacts_dir`` as typed cards (the ONNX
    files, and so their sha256, are untouched); returns the names migrated."""
    import json

    from models.card import CARD_VERSION, card_path, upgrade

    done = []
    for name, contract in spec.cards.items():
        path = card_path(artifacts_dir, name)
        if not path.is_file():
            continue
        raw = json.loads(path.read_text())
        if raw.get("card_version") == CARD_VERSION:
            continue
        upgrade(raw, dict(contract)).write(path)
        done.append(name)
    return done
