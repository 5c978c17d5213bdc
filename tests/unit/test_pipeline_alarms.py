"""FramePipeline's wiring of beat classes and the alarm engine, on hand-made results (no records, no
models): classes ride on the stream's beats messages, the engine sees classes, scores, VF decisions and
dropouts, its alerts reach the alerts topic once, its suppressions are counted, and a stream's end
publishes its last classes and resolves its episodes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stream.pipeline import FramePipeline, Outgoing
from stream.schemas import AlertMessage, BeatBatchMessage, encode_frame
from stream.settings import Settings
from stream.stages.events import (
    AlertEvent,
    Beat,
    ClassifiedBeat,
    DropoutSegment,
    ModelWindow,
    alert_id,
)
from stream.stages.frame import Frame
from stream.stages.processor import ProcessorOutput
from stream.stages.scoring import ModelScore, ScoringResult
from stream.stages.vf import VfDecision

T0 = 1_767_225_600.0


class ClassifyingScorer:
    """Scores every window 0.1 with model ``cae`` and classifies its beat V."""

    window_specs = ()

    def __init__(self) -> None:
        self.forgotten: list[str] = []

    def score(self, windows: Sequence[ModelWindow]) -> ScoringResult:
        scores = [
            ModelScore(
                stream_id=w.stream_id,
                model="cae",
                window=w.kind,
                lead=w.lead,
                time=w.start,
                score=0.1,
                threshold=0.5,
                anomalous=False,
            )
            for w in windows
        ]
        classes = [
            ClassifiedBeat(w.stream_id, (w.beat_time or w.start), "V", 0.9, 0.8, sqi=0.95)
            for w in windows
        ]
        return ScoringResult(scores=scores, classes=classes)

    def forget(self, stream_id: str) -> None:
        self.forgotten.append(stream_id)


class OneBeatProcessor:
    """Every frame: one beat and its window; every third frame a dropout; VF decisions each frame."""

    def __init__(self, stream_id: str, fs: float, leads: tuple[str, ...]) -> None:
        self.stream_id = stream_id

    def process(self, frame: Frame) -> ProcessorOutput:
        sid, t = self.stream_id, frame.start_time
        w = ModelWindow(sid, "beat_720", "MLII", t - 1, 360.0, np.zeros(720, np.float32), None, t)
        out = ProcessorOutput(
            beats=[Beat(sid, frame.seq * 360, t, 0.8, 75.0)],
            windows=[w],
            vf=[VfDecision(t, False, 0.9, 1.2)],
            samples=frame.n_samples,
        )
        if frame.seq % 3 == 2:
            out.dropouts = [DropoutSegment(sid, "MLII", t, t + 0.5, "flatline")]
        return out

    def flush(self) -> ProcessorOutput:
        return ProcessorOutput()


class RecordingEngine:
    """Raises one ``frequent_pvcs`` episode at the third V beat, counts one suppression per call."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.beats: list[ClassifiedBeat] = []
        self.scores: list[ModelScore] = []
        self.vf: list[VfDecision] = []
        self.dropouts: list[tuple[DropoutSegment, str]] = []
        self.start: float | None = None
        self.suppressed = 0

    def _event(self, status: str, at: float) -> AlertEvent:
        assert self.start is not None
        end = None if status == "raised" else at
        ident = alert_id(self.stream_id, "frequent_pvcs", self.start)
        return AlertEvent(
            ident, self.stream_id, "frequent_pvcs", "warning", status, self.start, end, {}, at
        )

    def on_beats(self, beats: Sequence[ClassifiedBeat]) -> list[AlertEvent]:
        self.beats += beats
        if self.start is None and len(self.beats) >= 3:
            self.start = self.beats[0].time
            return [self._event("raised", self.beats[-1].time)] * 2  # twice: published once
        return []

    def on_scores(self, scores: Sequence[ModelScore]) -> list[AlertEvent]:
        self.scores += scores
        self.suppressed += 1
        return []

    def on_vf(self, decisions: Sequence[VfDecision]) -> list[AlertEvent]:
        self.vf += decisions
        return []

    def gate(self, events: Sequence[AlertEvent]) -> list[AlertEvent]:
        return list(events)

    def on_dropouts(self, segments: Sequence[DropoutSegment], qrs_lead: str) -> None:
        self.dropouts += [(s, qrs_lead) for s in segments]

    def flush(self, now: float) -> list[AlertEvent]:
        return [self._event("resolved", now)] if self.start is not None else []

    def drain_suppressed(self) -> dict[tuple[str, str], int]:
        n, self.suppressed = self.suppressed, 0
        return {("frequent_pvcs", "covered"): n} if n else {}


def _frames(n: int) -> list[bytes]:
    return [
        encode_frame(
            stream_id="p1",
            seq=seq,
            fs=360.0,
            leads=("MLII",),
            start_time=T0 + seq,
            samples=np.zeros((360, 1), np.float32),
        )
        for seq in range(n)
    ]


def _of(out: list[Outgoing], topic: str) -> list[bytes]:
    return [o.value for o in out if o.topic == topic]


def test_classes_ride_on_beats_messages_and_the_engine_raises_once() -> None:
    engines: dict[str, RecordingEngine] = {}

    def make(sid: str) -> RecordingEngine:
        engines[sid] = RecordingEngine(sid)
        return engines[sid]

    scorer = ClassifyingScorer()
    pipe = FramePipeline(
        Settings(),
        processor_factory=OneBeatProcessor,
        scorer=scorer,
        score_batch=2,
        alarm_factory=make,  # type: ignore[arg-type]
    )
    t = pipe.topics
    out: list[Outgoing] = []
    for offset, value in enumerate(_frames(6)):
        out += pipe.handle(b"p1", value, "t", 0, offset)
    beats = [BeatBatchMessage.from_bytes(v) for v in _of(out, t.beats)]
    assert [b.seq for b in beats] == list(range(6))  # one receipt per frame, classes riding on them
    classes = [c for b in beats for c in b.classes]
    assert [c.time for c in classes] == [T0 + s for s in range(6)]
    assert {c.label for c in classes} == {"V"} and classes[0].sqi == 0.95
    alerts = [AlertMessage.from_bytes(v) for v in _of(out, t.alerts)]
    assert [(a.kind, a.status) for a in alerts] == [("frequent_pvcs", "raised")]
    assert alerts[0].at_ts == T0 + 3 and alerts[0].start_ts == T0
    eng = engines["p1"]
    assert len(eng.vf) == 6 and len(eng.scores) == 6
    assert [(s.kind, lead) for s, lead in eng.dropouts] == [("flatline", "MLII")] * 2
    m = pipe.metrics.registry
    assert (
        m.get_sample_value(
            "ecg_alarms_suppressed_total", {"kind": "frequent_pvcs", "reason": "covered"}
        )
        == 3
    )
    assert m.get_sample_value("ecg_beats_classified_total", {"label": "V"}) == 6
    assert m.get_sample_value("ecg_alerts_open", {"kind": "frequent_pvcs", "severity": "warning"})


def test_a_streams_end_publishes_its_last_classes_and_resolves_its_episodes() -> None:
    pipe = FramePipeline(
        Settings(),
        processor_factory=OneBeatProcessor,
        scorer=ClassifyingScorer(),
        score_batch=100,  # nothing scored before the flush
        alarm_factory=RecordingEngine,  # type: ignore[arg-type]
    )
    t = pipe.topics
    for offset, value in enumerate(_frames(4)):
        assert not _of(pipe.handle(b"p1", value, "t", 0, offset), t.alerts)
    out = pipe.flush_all()
    last = [BeatBatchMessage.from_bytes(v) for v in _of(out, t.beats)]
    assert len(last) == 1 and last[0].samples == 0 and last[0].seq == 3
    assert len(last[0].classes) == 4
    alerts = [AlertMessage.from_bytes(v) for v in _of(out, t.alerts)]
    assert [a.status for a in alerts] == ["raised", "resolved"]
    assert alerts[1].end_ts == T0 + 4  # the stream's end (its last frame's end)
    assert pipe.stream_ids == []


def test_without_an_alarm_engine_classes_still_publish() -> None:
    pipe = FramePipeline(
        Settings(),
        processor_factory=OneBeatProcessor,
        scorer=ClassifyingScorer(),
        score_batch=1,
        alarm_factory=lambda sid: None,
    )
    out: list[Outgoing] = []
    for offset, value in enumerate(_frames(3)):
        out += pipe.handle(b"p1", value, "t", 0, offset)
    beats = [BeatBatchMessage.from_bytes(v) for v in _of(out, pipe.topics.beats)]
    assert sum(len(b.classes) for b in beats) == 3
    assert not _of(out, pipe.topics.alerts)
