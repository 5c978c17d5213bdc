"""The root of ecg-monitor's error classes, in the bottom layer so every package can share it.

``models`` imports nothing from ``stream``, ``simulators`` or ``training``; each of those has its own
``errors`` module whose classes derive from :class:`EcgMonitorError` here.
"""

from __future__ import annotations


class EcgMonitorError(Exception):
    """Base class of every error raised by ecg-monitor."""


class ModelError(EcgMonitorError):
    """A model artifact is missing, corrupt, or given input of the wrong shape."""
