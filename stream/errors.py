"""Error classes of the online service, rooted in :class:`models.errors.EcgMonitorError`.

The base and :class:`ModelError` live in the bottom layer (:mod:`models.errors`); they are re-exported here
for existing importers (``from stream.errors import EcgMonitorError, ModelError``).
"""

from __future__ import annotations

from models.errors import EcgMonitorError, ModelError

__all__ = [
    "BrokerError",
    "ConfigError",
    "DataError",
    "EcgMonitorError",
    "FrameValidationError",
    "ModelError",
]


class ConfigError(EcgMonitorError):
    """Settings are inconsistent or a required resource is missing."""


class DataError(EcgMonitorError):
    """A WFDB record or database is missing, corrupt or not what was expected."""


class FrameValidationError(EcgMonitorError):
    """A telemetry frame failed validation; ``reason`` is a short, bounded label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class BrokerError(EcgMonitorError):
    """The embedded local broker could not be started or reached."""
