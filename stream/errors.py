"""Explicit error classes of ecg-monitor, rooted in one base exception."""

from __future__ import annotations


class EcgMonitorError(Exception):
    """Base class of every error raised by ecg-monitor."""


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


class ModelError(EcgMonitorError):
    """A model artifact is missing, corrupt, or given input of the wrong shape."""
