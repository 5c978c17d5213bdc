"""Error classes of the simulators, rooted in :class:`models.errors.EcgMonitorError`.

:class:`DataError` also derives from :class:`stream.errors.DataError`, so an ``except`` on the stream's
class (how replay errors were caught before) still catches it.
"""

from __future__ import annotations

from models.errors import EcgMonitorError
from stream.errors import DataError as StreamDataError

__all__ = ["DataError", "EcgMonitorError", "SimulatorError"]


class SimulatorError(EcgMonitorError):
    """Base class of the errors raised by ``simulators``."""


class DataError(SimulatorError, StreamDataError):
    """A record, database or noise record to replay is missing or unreadable."""
