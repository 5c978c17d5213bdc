"""Model configurations: JSON defaults in ``training/configs/<model>.json``, overridable from the CLI.

``load_config("cae", overrides=["epochs=5", "model.latent=16"])`` reads the defaults, optionally merges
a user JSON file, then applies ``key=value`` overrides (dotted keys reach nested dicts; values are parsed
as JSON when they can be, else kept as strings).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from training.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def default_config_path(model: str) -> Path:
    """Path of the packaged default config of ``model``."""
    return CONFIG_DIR / f"{model}.json"


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``a.b=value`` into (["a", "b"], parsed value); raises :class:`ConfigError` when malformed."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. --set epochs=5)")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return parts, value


def apply_overrides(
    config: dict[str, Any], overrides: Iterable[str], strict: bool = True
) -> dict[str, Any]:
    """Return a copy of ``config`` with ``key=value`` overrides applied.

    With ``strict`` an override of a key absent from the defaults is a :class:`ConfigError` (catches typos).
    """
    out = copy.deepcopy(config)
    for item in overrides:
        parts, value = parse_override(item)
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                if strict:
                    raise ConfigError(f"override {item!r}: {p!r} is not a section of the config")
                node[p] = {}
            node = node[p]
        if strict and parts[-1] not in node:
            raise ConfigError(
                f"override {item!r}: unknown key {'.'.join(parts)!r}; known: {sorted(node)}"
            )
        node[parts[-1]] = value
    return out


def load_config(
    model: str,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    strict: bool = True,
) -> dict[str, Any]:
    """Defaults of ``model`` <- optional JSON file <- ``key=value`` overrides."""
    path = default_config_path(model)
    config: dict[str, Any] = {}
    if path.is_file():
        config = json.loads(path.read_text())
    elif config_file is None:
        raise ConfigError(f"no default config for model {model!r} at {path}")
    if config_file is not None:
        user = Path(config_file)
        if not user.is_file():
            raise ConfigError(f"config file not found: {user}")
        try:
            config = _deep_merge(config, json.loads(user.read_text()))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {user} is not valid JSON: {exc}") from exc
    return apply_overrides(config, overrides, strict=strict)


def selected_protocols(config: Mapping[str, Any], known: tuple[str, ...], model: str) -> list[str]:
    """The evaluation protocols a run trains (``config["protocols"]``, default all ``known``), validated."""
    protos = list(config.get("protocols") or known)
    bad = set(protos) - set(known)
    if bad:
        raise ConfigError(f"unknown {model} protocols {sorted(bad)}; use {known}")
    return protos
