"""Lead order of the 12-lead models: their input channels follow :data:`TWELVE_LEADS`."""

from __future__ import annotations

#: Canonical 12-lead order used everywhere in ecg-monitor.
TWELVE_LEADS: tuple[str, ...] = (
    "I",
    "II",
    "III",
    "aVR",
    "aVL",
    "aVF",
    "V1",
    "V2",
    "V3",
    "V4",
    "V5",
    "V6",
)
