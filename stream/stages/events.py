"""Events the signal stages emit: beats, dropout segments, alerts and model windows.

Plain frozen dataclasses (no Kafka, no pydantic); beats, dropout segments and model windows have
``to_dict()`` giving JSON-able dicts, and an alert is serialised only by its message,
:meth:`stream.schemas.AlertMessage.from_event`. Times are float seconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.runtime.protocol import Window

#: Kinds of dropout a :class:`DropoutSegment` may carry.
DROPOUT_KINDS: tuple[str, ...] = ("flatline", "nan", "saturation", "lead_off", "missing_frames")
#: Kinds of alert the stream raises: the rate and signal rules of the processor
#: (:mod:`stream.stages.rules`), then the arrhythmia and model alarms of :mod:`stream.stages.alarms`.
RULE_ALERT_KINDS: tuple[str, ...] = (
    "asystole",
    "pause",
    "bradycardia",
    "tachycardia",
    "signal_loss",
)
ALARM_KINDS: tuple[str, ...] = (
    "ventricular_fibrillation",
    "ventricular_tachycardia",
    "ventricular_run",
    "ventricular_bigeminy",
    "ventricular_trigeminy",
    "pvc_couplet",
    "frequent_pvcs",
    "atrial_fibrillation",
    "abnormal_12lead",
    "morphology_change",
)
ALERT_KINDS: tuple[str, ...] = RULE_ALERT_KINDS + ALARM_KINDS
ALERT_SEVERITIES: tuple[str, ...] = ("critical", "warning", "advisory", "info")
#: The severities each kind is raised with (a pause is a warning from 2.5 s, critical from 3 s).
ALERT_LEVELS: dict[str, tuple[str, ...]] = {
    "asystole": ("critical",),
    "pause": ("warning", "critical"),
    "bradycardia": ("warning",),
    "tachycardia": ("warning",),
    "signal_loss": ("warning",),
    "ventricular_fibrillation": ("critical",),
    "ventricular_tachycardia": ("critical",),
    "ventricular_run": ("warning",),
    "ventricular_bigeminy": ("warning",),
    "ventricular_trigeminy": ("warning",),
    "pvc_couplet": ("warning",),
    "frequent_pvcs": ("warning",),
    "atrial_fibrillation": ("warning",),
    "abnormal_12lead": ("advisory",),
    "morphology_change": ("advisory",),
}
#: AAMI EC57 beat classes: normal, supraventricular ectopic, ventricular ectopic, fusion, unclassifiable.
BEAT_CLASSES: tuple[str, ...] = ("N", "S", "V", "F", "Q")
ALERT_STATUSES: tuple[str, ...] = ("raised", "resolved")


def jsonable(value: Any) -> Any:
    """Nested dicts/lists of numpy scalars and arrays -> plain JSON values (NaN and inf become None)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


#: Name of the windows the processor cuts to rebuild a masked lead of a stream that no model's leads window
#: covers (MIT-BIH's two leads): all the stream's leads at its own rate, ``lead`` = the comma-joined names.
REBUILD_WINDOW = "leads_rebuild"


@dataclass(frozen=True)
class Beat:
    """One detected QRS complex: absolute ``sample`` index in the stream, its time, RR and heart rate."""

    stream_id: str
    sample: int
    time: float
    rr_s: float | None
    hr_bpm: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "sample": int(self.sample),
            "time": float(self.time),
            "rr_s": None if self.rr_s is None else float(self.rr_s),
            "hr_bpm": None if self.hr_bpm is None else float(self.hr_bpm),
        }


@dataclass(frozen=True)
class ClassifiedBeat:
    """A beat's AAMI class (:data:`BEAT_CLASSES`) and the classifier's confidence (its probability), decided
    once the beat's windows were scored; ``rr_s`` the interval to the previous beat (None: unknown)."""

    stream_id: str
    time: float
    label: str
    confidence: float
    rr_s: float | None = None
    probs: tuple[float, ...] = ()
    #: beat-level signal quality in [0, 1] (1: clean), from the beat's window; None: not measured
    sqi: float | None = None

    def __post_init__(self) -> None:
        if self.label not in BEAT_CLASSES:
            raise ValueError(f"beat class {self.label!r} not in {BEAT_CLASSES}")


@dataclass(frozen=True)
class DropoutSegment:
    """A stretch ``[start, end)`` of one lead that carries no usable ECG, of kind in :data:`DROPOUT_KINDS`."""

    stream_id: str
    lead: str
    start: float
    end: float
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in DROPOUT_KINDS:
            raise ValueError(f"dropout kind {self.kind!r} not in {DROPOUT_KINDS}")

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "lead": self.lead,
            "start": float(self.start),
            "end": float(self.end),
            "kind": self.kind,
        }


def alert_id(stream_id: str, kind: str, episode_start: float) -> str:
    """Deterministic alert id: same stream + kind + episode start (ms) -> same id (replays de-duplicate)."""
    key = f"{stream_id}|{kind}|{round(episode_start * 1000)}"
    return hashlib.sha1(key.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class AlertEvent:
    """A raised or resolved alert episode; one ``raised`` then one ``resolved`` per episode."""

    id: str
    stream_id: str
    kind: str
    severity: str
    status: str
    start: float
    end: float | None
    evidence: dict[str, Any] = field(default_factory=dict)
    #: stream time at which this transition was decided (raised: when the condition had held long
    #: enough; ``start`` is the episode's onset, earlier); None where unknown
    at: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ALERT_KINDS:
            raise ValueError(f"alert kind {self.kind!r} not in {ALERT_KINDS}")
        if self.severity not in ALERT_SEVERITIES:
            raise ValueError(f"alert severity {self.severity!r} not in {ALERT_SEVERITIES}")
        if self.status not in ALERT_STATUSES:
            raise ValueError(f"alert status {self.status!r} not in {ALERT_STATUSES}")


#: A model window: the runtime's :class:`models.runtime.protocol.Window` (one type from the processor to
#: the scorers).
ModelWindow = Window
