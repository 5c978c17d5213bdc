"""Error classes of training and evaluation, rooted in :class:`models.errors.EcgMonitorError`.

:class:`ConfigError` and :class:`DataError` also derive from their :mod:`stream.errors` namesakes, so an
``except stream.errors.ConfigError`` (or ``DataError``) written before training had its own errors still
catches them; ``except TrainingError`` catches only what training raised.
"""

from __future__ import annotations

from models.errors import EcgMonitorError, ModelError
from stream.errors import ConfigError as StreamConfigError
from stream.errors import DataError as StreamDataError
from stream.errors import UnknownModelError as StreamUnknownModelError

__all__ = [
    "ConfigError",
    "DataError",
    "EcgMonitorError",
    "ModelError",
    "TrainingError",
    "UnknownModelError",
]


class TrainingError(EcgMonitorError):
    """Base class of the errors raised by ``training``."""


class ConfigError(TrainingError, StreamConfigError):
    """A training config, override, run directory or device choice is invalid."""


class DataError(TrainingError, StreamDataError):
    """A dataset is missing, incomplete or cannot be split as asked."""


class UnknownModelError(ConfigError, StreamUnknownModelError):
    """A model name no training task has (exit status 7 on the command line)."""
