"""Options and checks shared by the ``ecg-monitor`` commands, including those other packages register
through the ``ecg_monitor.commands`` entry-point group (``replay`` from :mod:`simulators.cli`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer

from stream.errors import ConfigError
from stream.settings import Settings

BootstrapOpt = Annotated[
    str | None,
    typer.Option(
        help="Kafka bootstrap servers (default ECG_KAFKA_BOOTSTRAP; empty = embedded local broker where applicable)."
    ),
]


def need_bootstrap(settings: Settings, bootstrap: str | None) -> str:
    """``bootstrap`` or the configured one; a usage error (:class:`ConfigError`, exit status 2) when there is
    none."""
    bs = bootstrap or settings.kafka_bootstrap
    if not bs:
        raise ConfigError(
            "no broker: pass --bootstrap or set ECG_KAFKA_BOOTSTRAP (or use `ecg-monitor up`)"
        )
    return bs


def records_opt(records: list[str] | None, default: Sequence[str]) -> list[str]:
    """Repeated and comma-separated ``--records`` values, ``default`` when none are given."""
    items = [r for spec in (records or []) for r in spec.split(",") if r.strip()]
    return items or list(default)
