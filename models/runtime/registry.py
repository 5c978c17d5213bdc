"""One registry from model card to runtime class.

A runtime module registers its class under a key with :func:`register`; a card names that key in its
``runtime`` field. :func:`load_model` reads ``<models_dir>/<name>.card.json``, finds the class and builds it
from ``<name>.onnx``. Every module of :mod:`models.runtime` is imported on first use, so adding a runtime
is adding one module; adding a model that an existing runtime serves is adding its card (made by its
training task's export).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from models.card import DEFAULT_ARTIFACTS_DIR, ModelCard, card_path, list_cards, load_card
from models.errors import ModelError
from models.runtime.protocol import Recoverer, WindowModel

#: runtime key -> factory building the runtime from the ONNX path (its card lies beside it)
_RUNTIMES: dict[str, Callable[[Path], Any]] = {}
_discovered = False

T = TypeVar("T")


def register(key: str, factory: Callable[[Path], Any] | None = None) -> Callable[[T], T]:
    """Class decorator: cards with ``runtime == key`` are served by the class (built from the ONNX path
    by ``factory``, default the class itself)."""

    def deco(cls: T) -> T:
        _RUNTIMES[key] = factory or cls  # type: ignore[assignment]
        return cls

    return deco


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    import models.runtime as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in ("registry", "protocol", "base"):
            importlib.import_module(f"models.runtime.{info.name}")
    _discovered = True


def runtime_keys() -> list[str]:
    """Every registered runtime key."""
    _discover()
    return sorted(_RUNTIMES)


def artifacts_dir(models_dir: str | Path | None) -> Path:
    """``models_dir`` or the committed artifacts."""
    return Path(models_dir) if models_dir else DEFAULT_ARTIFACTS_DIR


def available(models_dir: str | Path | None = None, role: str | None = None) -> list[ModelCard]:
    """Cards in ``models_dir`` (optionally of one ``role``: scorer, recoverer, component)."""
    cards = list_cards(artifacts_dir(models_dir))
    return [c for c in cards if role is None or c.role == role]


def load_model(name: str, models_dir: str | Path | None = None) -> WindowModel | Recoverer:
    """The runtime of model ``name`` (its card's ``runtime`` class over its ONNX file)."""
    _discover()
    root = artifacts_dir(models_dir)
    path = card_path(root, name)
    if not path.is_file():
        known = [c.name for c in available(root) if c.role != "component"]
        raise ModelError(f"unknown model {name!r}: no {path.name} in {root}; known: {known}")
    card = load_card(path)
    factory = _RUNTIMES.get(card.runtime)
    if factory is None:
        raise ModelError(
            f"{name}: card names runtime {card.runtime!r}, not registered; known: {runtime_keys()}"
        )
    return factory(root / card.onnx_file)


def load_scorer(name: str, models_dir: str | Path | None = None) -> WindowModel:
    """A scoring model; :class:`ModelError` when ``name`` is not a scorer."""
    model = load_model(name, models_dir)
    if model.card.role != "scorer" or not isinstance(model, WindowModel):
        raise ModelError(f"{name} is a {model.card.role}, not a scoring model")
    return model


def load_recoverer(name: str, models_dir: str | Path | None = None) -> Recoverer:
    """A recovery model; :class:`ModelError` when ``name`` is not a recoverer."""
    model = load_model(name, models_dir)
    if model.card.role != "recoverer" or not isinstance(model, Recoverer):
        raise ModelError(f"{name} is a {model.card.role}, not a recovery model")
    return model
