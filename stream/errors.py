"""Error classes of the online service, rooted in :class:`models.errors.EcgMonitorError`.

The base and :class:`ModelError` live in the bottom layer (:mod:`models.errors`); they are re-exported here
for existing importers (``from stream.errors import EcgMonitorError, ModelError``).
"""

from __future__ import annotations

from typing import ClassVar

from models.errors import EcgMonitorError, ModelError

__all__ = [
    "EXIT_BROKER_UNREACHABLE",
    "EXIT_CHILD_DIED",
    "EXIT_CODES",
    "EXIT_DATA_MISSING",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_PORT_IN_USE",
    "EXIT_UNKNOWN_NAME",
    "EXIT_USAGE",
    "BrokerError",
    "BrokerUnreachableError",
    "ConfigError",
    "DataError",
    "DataMissingError",
    "EcgMonitorError",
    "FrameValidationError",
    "ModelError",
    "PortInUseError",
    "UnknownModelError",
    "UnknownRecordError",
    "exit_code_for",
]

# Exit statuses of the command lines (``ecg-monitor``, ``python -m simulators``, ``python -m training``).
# A project error ends a command with one line on stderr (``ecg-monitor: <message>``) and the status of its
# class (``exit_code``); see :mod:`stream.cli_errors` and the README's "Exit status".
EXIT_OK = 0
#: a check that did not hold (``soak`` verdict), or an unexpected error (with its traceback)
EXIT_FAILURE = 1
#: bad option, usage or configuration (also: a project error of no more specific class)
EXIT_USAGE = 2
#: ``up``: the broker, the worker or the replay died during the run
EXIT_CHILD_DIED = 3
EXIT_BROKER_UNREACHABLE = 4
EXIT_PORT_IN_USE = 5
#: a database or record file missing (or unreadable) under ECG_DATA_DIR
EXIT_DATA_MISSING = 6
#: an unknown record (in a database that is there) or an unknown model name
EXIT_UNKNOWN_NAME = 7

#: Every exit status with its meaning, in order (the ``--help`` epilogs and the README list these).
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success"),
    (EXIT_FAILURE, "a check that did not hold (soak verdict), or an unexpected error (traceback)"),
    (EXIT_USAGE, "usage or configuration error"),
    (EXIT_CHILD_DIED, "up: the broker, the worker or the replay died during the run"),
    (EXIT_BROKER_UNREACHABLE, "Kafka broker unreachable (or the embedded one did not start)"),
    (EXIT_PORT_IN_USE, "port in use (metrics, dashboard)"),
    (EXIT_DATA_MISSING, "data missing: a database or record file absent under ECG_DATA_DIR"),
    (EXIT_UNKNOWN_NAME, "unknown record or model"),
)


def exit_code_for(exc: BaseException) -> int:
    """The exit status of a command ended by ``exc``: its class's ``exit_code`` (the most derived class that
    sets one), :data:`EXIT_USAGE` for other project errors."""
    return int(getattr(exc, "exit_code", EXIT_USAGE))


class ConfigError(EcgMonitorError):
    """Settings are inconsistent or a required resource is missing."""

    exit_code: ClassVar[int] = EXIT_USAGE


class DataError(EcgMonitorError):
    """A WFDB record or database is missing, corrupt or not what was expected."""

    exit_code: ClassVar[int] = EXIT_DATA_MISSING


class DataMissingError(DataError):
    """A database (or ECG_DATA_DIR itself) is not where it should be."""


class UnknownRecordError(DataError):
    """A record name that is not in its database (the database itself is there)."""

    exit_code: ClassVar[int] = EXIT_UNKNOWN_NAME


class UnknownModelError(ConfigError):
    """A model name that no model card or training task has."""

    exit_code: ClassVar[int] = EXIT_UNKNOWN_NAME


class PortInUseError(ConfigError):
    """A port this process should listen on is taken by another one."""

    exit_code: ClassVar[int] = EXIT_PORT_IN_USE


class FrameValidationError(EcgMonitorError):
    """A telemetry frame failed validation; ``reason`` is a short, bounded label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class BrokerError(EcgMonitorError):
    """The embedded local broker could not be started or reached."""

    exit_code: ClassVar[int] = EXIT_BROKER_UNREACHABLE


class BrokerUnreachableError(BrokerError):
    """No bootstrap server of a Kafka cluster accepts connections."""
