"""The worker's per-message logic, independent of Faust: decode -> per-stream processor -> output messages.

:class:`FramePipeline` holds one :class:`~stream.stages.processor.StreamProcessor` per stream id (topics are
keyed by stream id, so one stream is always on one partition and reaches one worker in order). It never
raises on message content: a frame that fails validation becomes a dead-letter message with its reason.
The Faust agent in :mod:`stream.app` only moves bytes between Kafka and :meth:`FramePipeline.handle`.

What a processor result becomes is split in four: :class:`AlertDeduplicator` keeps each alert transition
once, :class:`MessageRouter` turns results into messages (pure, no metrics),
:class:`~stream.metrics.PipelineObserver` updates the metrics, and :class:`ScoreBatcher` batches model
windows across streams for the scorer and builds the scores messages.

At-least-once delivery: a message at an offset already processed (redelivery after a rebalance) and a frame
whose ``seq`` equals the stream's last one (producer retry) are counted as duplicates and skipped; a lower
``seq`` at a new offset is dead-lettered as ``sequence_backwards``. Alerts are de-duplicated by
(id, status) before publishing; their ids are deterministic, so consumers de-duplicate the same way
across worker restarts.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from stream.errors import FrameValidationError
from stream.metrics import PipelineMetrics, PipelineObserver
from stream.schemas import (
    AlertMessage,
    BeatBatchMessage,
    BeatClassOut,
    BeatOut,
    DeadLetterMessage,
    DropoutMessage,
    FrameLimits,
    LeadQualityOut,
    RecoveredMessage,
    ScoreOut,
    ScoresMessage,
    decode_frame,
    iso,
)
from stream.settings import Settings, TopicNames
from stream.stages.recovery import RecoveredRun, recovered_runs

if TYPE_CHECKING:
    from models.card import WindowSpec
    from models.runtime.protocol import ModelScore
    from stream.stages.alarms import AlarmEngine
    from stream.stages.events import AlertEvent, ClassifiedBeat, DropoutSegment, ModelWindow
    from stream.stages.frame import Frame
    from stream.stages.processor import ProcessorOutput
    from stream.stages.scoring import ScoringResult

log = logging.getLogger(__name__)


class Processor(Protocol):
    """The per-stream processor the pipeline drives (:class:`~stream.stages.processor.StreamProcessor`)."""

    def process(self, frame: Frame) -> ProcessorOutput: ...

    def flush(self) -> ProcessorOutput: ...


class Scorer(Protocol):
    """The model scorer the pipeline batches windows for (:class:`~stream.stages.scoring.WindowScorer`)."""

    @property
    def window_specs(self) -> tuple[WindowSpec, ...]: ...

    def score(self, windows: Sequence[ModelWindow]) -> ScoringResult: ...


#: Builds the processor of a new stream from its id, sampling rate and leads.
ProcessorFactory = Callable[[str, float, tuple[str, ...]], Processor]


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: topic name, key and value bytes."""

    topic: str
    key: bytes
    value: bytes


@dataclass
class _StreamState:
    processor: Processor
    fs: float
    leads: tuple[str, ...]
    record: str
    last_seq: int
    last_seen: float
    last_start: float = float("-inf")
    #: the (topic, partition) the stream's frames come from (this worker owns the stream while it owns it)
    source: tuple[str, int] | None = None
    #: frames held after a jump far from the stream's seq or clock, with their message coordinates
    quarantine: list[_Held] = field(default_factory=list)
    #: the run of consecutive frames going backwards (dead-lettered); a long enough run resynchronises
    backwards: list[Frame] = field(default_factory=list)
    #: the stream's arrhythmia and model alarms (fed classified beats, scores, VF decisions, dropouts)
    alarms: AlarmEngine | None = None
    #: beats classified since the stream's last beats message (they ride on the next one)
    classes: list[ClassifiedBeat] = field(default_factory=list)
    #: stream time of the end of the last frame processed
    end_time: float = 0.0


@dataclass(frozen=True)
class _Held:
    """A quarantined frame and where its message came from."""

    frame: Frame
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int


def follows(prev: Frame, nxt: Frame, max_frames: int = 10) -> bool:
    """``nxt`` continues ``prev``'s sequence: seq a little higher and start time consistent with it."""
    gap = nxt.seq - prev.seq
    if not 0 < gap <= max_frames:
        return False
    duration = prev.n_samples / prev.fs
    dt = nxt.start_time - prev.start_time
    return 0 < dt <= gap * duration + max(1.0, duration)


def _default_alarms(settings: Settings) -> Callable[[str], AlarmEngine | None]:
    """One :class:`~stream.stages.alarms.AlarmEngine` per stream with the settings' alarm thresholds."""
    from stream.stages.alarms import AlarmEngine

    config = settings.alarms

    def make(stream_id: str) -> AlarmEngine | None:
        return AlarmEngine(stream_id, config)

    return make


def _qrs_lead_name(state: _StreamState) -> str:
    from stream.stages.processor import pick_qrs_lead

    return state.leads[pick_qrs_lead(state.leads)]


def _beat_lead_names(state: _StreamState) -> tuple[str, ...]:
    """The leads the stream's processor detects beats on (its fusion candidates)."""
    idx = getattr(state.processor, "qrs_leads", None)
    if idx is None:
        return (_qrs_lead_name(state),)
    return tuple(state.leads[i] for i in idx)


def default_processor_factory(
    settings: Settings, *, windows: Sequence[WindowSpec] = ()
) -> ProcessorFactory:
    """StreamProcessor with the default StageConfig, cutting only the model ``windows`` (those the loaded
    models' cards declare; cutting/resampling windows costs CPU on every beat)."""
    from stream.stages.processor import StageConfig, StreamProcessor

    config = StageConfig(windows=tuple(windows))

    def make(stream_id: str, fs: float, leads: tuple[str, ...]) -> Processor:
        return StreamProcessor(stream_id, fs, leads, config)

    return make


def _class_out(classes: Sequence[ClassifiedBeat]) -> list[BeatClassOut]:
    return [
        BeatClassOut(
            time=b.time,
            label=b.label,
            confidence=round(b.confidence, 4),
            sqi=None if b.sqi is None else round(b.sqi, 3),
        )
        for b in classes
    ]


class AlertDeduplicator:
    """Lets each alert transition (id, status) through once, remembering the last ``max_ids`` of them."""

    def __init__(self, max_ids: int = 100_000) -> None:
        self.max_ids = max_ids
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def fresh(self, alerts: Iterable[AlertEvent]) -> list[AlertEvent]:
        """The alerts whose (id, status) was not let through before, in order; they are remembered."""
        out: list[AlertEvent] = []
        for ev in alerts:
            ident = (ev.id, ev.status)
            if ident in self._seen:
                continue
            self._seen[ident] = None
            if len(self._seen) > self.max_ids:
                self._seen.popitem(last=False)
            out.append(ev)
        return out


class MessageRouter:
    """Processor results -> output messages on their topics, keyed by stream id (pure: no state, no
    metrics)."""

    def __init__(self, topics: TopicNames) -> None:
        self.topics = topics

    def events(
        self,
        stream_id: str,
        record: str,
        dropouts: Sequence[DropoutSegment],
        alerts: Sequence[AlertEvent],
        now: float,
    ) -> list[Outgoing]:
        """One message per dropout segment, then one per alert transition (``alerts``: de-duplicated)."""
        key = stream_id.encode()
        out = [
            Outgoing(self.topics.dropouts, key, DropoutMessage.from_event(seg).to_bytes())
            for seg in dropouts
        ]
        for ev in alerts:
            msg = AlertMessage.from_event(ev, record=record, published_at=now)
            out.append(Outgoing(self.topics.alerts, key, msg.to_bytes()))
        return out

    def receipt(
        self,
        frame: Frame,
        result: ProcessorOutput,
        now: float,
        classes: Sequence[ClassifiedBeat] = (),
    ) -> Outgoing:
        """The beats message of a processed frame: its beats, the receipt that it was processed, and the
        earlier beats classified since the stream's previous message (``classes``)."""
        sent_at = frame.sent_at
        latency = None if sent_at is None else max(0.0, now - sent_at)
        batch = BeatBatchMessage(
            stream_id=frame.stream_id,
            seq=frame.seq,
            frame_start_ts=frame.start_time,
            sent_at=sent_at,
            processed_at=now,
            latency_s=latency,
            samples=result.samples,
            gap_frames=result.gap_frames,
            duplicate=result.duplicate,
            heart_rate_bpm=result.heart_rate_bpm,
            beats=[
                BeatOut(sample=b.sample, time=b.time, rr_s=b.rr_s, hr_bpm=b.hr_bpm)
                for b in result.beats
            ],
            classes=_class_out(classes),
            beat_lead=result.beat_leads[-1] if result.beat_leads else None,
            quality=[
                LeadQualityOut(
                    lead=q.lead,
                    start_ts=q.start,
                    seconds=q.seconds,
                    usable=q.usable,
                    reason=q.reason,
                    bsqi=None if q.bsqi is None else round(q.bsqi, 4),
                    ksqi=round(q.ksqi, 3),
                    psqi=round(q.psqi, 4),
                    bassqi=round(q.bassqi, 4),
                    flat=round(q.flat, 4),
                    clipped=round(q.clipped, 4),
                )
                for q in result.quality
            ],
        )
        return Outgoing(self.topics.beats, frame.stream_id.encode(), batch.to_bytes())

    def late_classes(
        self,
        stream_id: str,
        seq: int,
        end_time: float,
        classes: Sequence[ClassifiedBeat],
        now: float,
    ) -> Outgoing:
        """A beats message carrying only classes, for a stream whose frames have ended (flushed: its
        last windows were scored after its last frame); ``seq`` and the frame start repeat its last
        frame's, with no samples."""
        batch = BeatBatchMessage(
            stream_id=stream_id,
            seq=seq,
            frame_start_ts=end_time,
            processed_at=now,
            samples=0,
            classes=_class_out(classes),
        )
        return Outgoing(self.topics.beats, stream_id.encode(), batch.to_bytes())

    def recovered(self, runs: Sequence[RecoveredRun]) -> list[Outgoing]:
        """One message per recovered (or unrecoverable) run of one lead."""
        out = []
        for r in runs:
            msg = RecoveredMessage(
                stream_id=r.stream_id,
                lead=r.lead,
                window=r.window,
                window_start_ts=r.window_start,
                provenance=r.provenance,
                recovered_by=r.recovered_by,
                reason=r.reason,
                start=iso(r.start) or "",
                start_ts=r.start,
                end_ts=r.end,
                fs=r.fs,
                samples=None if r.samples is None else np.round(r.samples, 4).tolist(),
                half_width_90=None
                if r.half_width_90 is None
                else np.round(r.half_width_90, 4).tolist(),
            )
            out.append(Outgoing(self.topics.recovered, r.stream_id.encode(), msg.to_bytes()))
        return out

    def dead_letter(
        self,
        reason: str,
        detail: str,
        key: bytes | None,
        value: bytes | None,
        topic: str,
        partition: int,
        offset: int,
        now: float,
    ) -> Outgoing:
        """The dead-letter message of a rejected input message."""
        msg = DeadLetterMessage.build(
            reason=reason,
            detail=detail,
            payload=value,
            key=key,
            topic=topic,
            partition=partition,
            offset=offset,
            now=now,
        )
        return Outgoing(self.topics.dead_letter, key or b"", msg.to_bytes())


class ScoreBatcher:
    """Model windows waiting to be scored, across streams: one ``scorer.score`` call (one ONNX Runtime
    call per model) per ``batch_size`` windows or per :meth:`flush`; one scores message per stream."""

    def __init__(
        self,
        scorer: Scorer,
        topic: str,
        batch_size: int = 64,
        on_scored: Callable[[ScoringResult], None] | None = None,
        after: Callable[[ScoringResult], list[Outgoing]] | None = None,
    ) -> None:
        """``topic``: the scores topic; ``on_scored``: called with every scoring result (metrics);
        ``after``: turns every scoring result into more messages (classified beats, alarms), published
        after its scores."""
        self.scorer = scorer
        self.topic = topic
        self.batch_size = batch_size
        self._on_scored = on_scored
        self._after = after
        self._windows: list[ModelWindow] = []
        self._seqs: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def add(
        self, stream_id: str, windows: Sequence[ModelWindow], seq: int | None = None
    ) -> list[Outgoing]:
        """Queue a stream's windows (``seq``: the frame they were cut from, None for a flush); score the
        batch when it holds ``batch_size`` windows."""
        if not windows:
            return []
        self._windows += windows
        if seq is not None:
            self._seqs[stream_id] = seq
        return self.flush() if len(self._windows) >= self.batch_size else []

    def flush(self) -> list[Outgoing]:
        """Score every pending window; one scores message per stream, with the stream's last frame seq."""
        if not self._windows:
            return []
        windows, self._windows = self._windows, []
        seqs, self._seqs = self._seqs, {}
        res = self.scorer.score(windows)
        if self._on_scored is not None:
            self._on_scored(res)
        by_stream: dict[str, list[ScoreOut]] = {}
        for sc in res.scores:
            by_stream.setdefault(sc.stream_id, []).append(sc)
        out = [
            Outgoing(
                self.topic,
                sid.encode(),
                ScoresMessage(stream_id=sid, seq=seqs.get(sid), scores=scores).to_bytes(),
            )
            for sid, scores in by_stream.items()
        ]
        if self._after is not None:
            out += self._after(res)
        return out


class FramePipeline:
    """Decode, validate, process and route telemetry messages for every stream one worker owns."""

    def __init__(
        self,
        settings: Settings,
        metrics: PipelineMetrics | None = None,
        processor_factory: ProcessorFactory | None = None,
        clock: Callable[[], float] = time.time,
        max_alert_ids: int = 100_000,
        scorer: Scorer | None = None,
        score_batch: int = 64,
        max_seen: int = 100_000,
        alarm_factory: Callable[[str], AlarmEngine | None] | None = None,
    ) -> None:
        """``scorer``: optional :class:`stream.stages.scoring.WindowScorer`; its scores go to the scores topic
        (windows scored in batches of ``score_batch``, or sooner by :meth:`flush_scores`)."""
        self.settings = settings
        self.topics = settings.topics
        self.metrics = metrics or PipelineMetrics()
        self.observer = PipelineObserver(self.metrics)
        self.router = MessageRouter(self.topics)
        self.limits = FrameLimits.from_settings(settings)
        self.scorer = scorer
        #: lead names of the columns of each leads window the scorer takes (recovered runs name them)
        self._window_leads: dict[str, tuple[str, ...]] = (
            {spec.name: tuple(spec.leads or ()) for spec in scorer.window_specs}
            if scorer is not None
            else {}
        )
        #: windows waiting to be scored (None without a scorer)
        self.score_batcher = (
            ScoreBatcher(
                scorer, self.topics.scores, score_batch, self.observer.scored, self._scored
            )
            if scorer is not None
            else None
        )
        #: builds a stream's alarm engine (None: no arrhythmia or model alarms)
        self._alarm_factory = (
            alarm_factory if alarm_factory is not None else _default_alarms(settings)
        )
        specs = scorer.window_specs if scorer is not None else ()
        self._factory = processor_factory or default_processor_factory(settings, windows=specs)
        self._clock = clock
        self._streams: dict[str, _StreamState] = {}
        #: last (seq, end time) processed per stream, kept when a stream is flushed (revocation, idle
        #: expiry) so that redeliveries stay duplicates and a resumed stream's gap is counted
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._max_seen = max_seen
        self._alerts = AlertDeduplicator(max_alert_ids)
        #: next offset to process per (topic, partition): drives redelivery detection and consumer lag
        self.positions: dict[tuple[str, int], int] = {}

    @property
    def stream_ids(self) -> list[str]:
        return list(self._streams)

    def handle(
        self, key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int
    ) -> list[Outgoing]:
        """Process one telemetry message; return the messages to publish (never raises on content)."""
        m = self.metrics
        self.observer.received(self._clock())
        tp = (topic, partition)
        below = offset < self.positions.get(tp, -1)
        try:
            frame = decode_frame(value, self.limits)
        except FrameValidationError as exc:
            if below:  # a redelivered reject: it has its dead letter already
                m.frames_duplicate.inc()
                return []
            self.positions[tp] = offset + 1
            return [self._dead_letter(exc.reason, exc.detail, key, value, topic, partition, offset)]
        state = self._streams.get(frame.stream_id)
        if below:
            seen = self._seen.get(frame.stream_id)
            if (seen is not None and frame.seq <= seen[0]) or (
                state is not None and state.quarantine
            ):
                m.frames_duplicate.inc()  # redelivered after a rebalance: already processed
                return []
            # a new frame below the processed position: the broker lost its log (e.g. the local broker
            # restarted with memory storage) and offsets started again; follow the new offsets
            m.offset_resets.inc()
            log.warning(
                "offset reset on %s[%d]: offset %d below %d carries new frames; resynchronised",
                topic,
                partition,
                offset,
                self.positions[tp],
            )
        self.positions[tp] = offset + 1
        out: list[Outgoing] = []
        if state is not None and (state.fs != frame.fs or state.leads != frame.leads):
            log.info("stream %s changed fs/leads; restarting its processor", frame.stream_id)
            out += self._emit(frame.stream_id, state.record, state.processor.flush(), None)
            state = None
        if state is not None:
            if frame.seq == state.last_seq:
                m.frames_duplicate.inc()
                return out
            held = _Held(frame, key, value, topic, partition, offset)
            jump = self._jump(state, frame)
            if jump is not None or state.quarantine:
                handled, state, more = self._quarantine(state, held, jump)
                out += more
                if handled:
                    return out
        if state is not None:
            if frame.seq < state.last_seq and frame.start_time > state.last_start:
                # the device restarted its sequence (power cycle, new session) while time moved on: a new session
                log.info(
                    "stream %s restarted its sequence at %d; new session",
                    frame.stream_id,
                    frame.seq,
                )
                m.stream_restarts.inc()
                out += self._emit(frame.stream_id, state.record, state.processor.flush(), None)
                state = None
            elif frame.seq < state.last_seq:
                run = state.backwards
                if run and not follows(run[-1], frame):
                    run.clear()
                run.append(frame)
                if len(run) >= self.settings.resync_frames:
                    # a run of consecutive frames below the stream's seq: the stream's position is the
                    # wrong one (e.g. set by a forged first frame); resynchronise to the run
                    log.warning("stream %s resynchronised to a backwards run", frame.stream_id)
                    m.stream_resyncs.inc()
                    out += self._emit(frame.stream_id, state.record, state.processor.flush(), None)
                    del self._streams[frame.stream_id]
                return [
                    *out,
                    self._dead_letter(
                        "sequence_backwards",
                        f"seq {frame.seq} after {state.last_seq} for stream {frame.stream_id}",
                        key,
                        value,
                        topic,
                        partition,
                        offset,
                    ),
                ]
        if state is None:
            out += self._resumed_gap(frame)
            state = self._new_state(frame)
            self._streams[frame.stream_id] = state
        return out + self._apply(state, frame, key, value, topic, partition, offset)

    def _apply(
        self,
        state: _StreamState,
        frame: Frame,
        key: bytes | None,
        value: bytes | None,
        topic: str,
        partition: int,
        offset: int,
    ) -> list[Outgoing]:
        """Run an admitted frame through its stream's processor; its outputs, or its dead letter."""
        out: list[Outgoing] = []
        state.last_seq = frame.seq
        state.last_start = frame.start_time
        state.last_seen = self._clock()
        state.source = (topic, partition)
        state.end_time = frame.start_time + frame.n_samples / frame.fs
        state.backwards.clear()
        self._seen[frame.stream_id] = (frame.seq, frame.start_time + frame.n_samples / frame.fs)
        self._seen.move_to_end(frame.stream_id)
        if len(self._seen) > self._max_seen:
            self._seen.popitem(last=False)
        try:
            result = state.processor.process(frame)
            out += self._emit(frame.stream_id, frame.record, result, frame)
        except (
            FrameValidationError
        ) as exc:  # the stages' own checks (e.g. samples not matching the leads)
            return [
                *out,
                self._dead_letter(exc.reason, exc.detail, key, value, topic, partition, offset),
            ]
        except (
            Exception
        ) as exc:  # a bug must not stop the partition: dead-letter the frame, keep going
            log.exception("processing failed for stream %s seq %d", frame.stream_id, frame.seq)
            self._streams.pop(
                frame.stream_id, None
            )  # state may be inconsistent: restart the stream
            return [
                *out,
                self._dead_letter(
                    "processing_error",
                    f"{type(exc).__name__}: {exc}",
                    key,
                    value,
                    topic,
                    partition,
                    offset,
                ),
            ]
        return out

    def _jump(self, state: _StreamState, frame: Frame) -> str | None:
        """Why ``frame`` is too far from its stream's sequence or clock to be applied at once (None: it
        is not): a forged or corrupt frame must not reset a patient's stream."""
        cfg = self.settings
        if frame.seq - state.last_seq > cfg.max_seq_jump:
            return f"seq {frame.seq} is {frame.seq - state.last_seq} frames after {state.last_seq}"
        if frame.start_time - state.last_start > cfg.max_time_jump_s:
            return f"start time {frame.start_time - state.last_start:.0f} s after the stream's last frame"
        return None

    def _quarantine(
        self, state: _StreamState, held: _Held, jump: str | None
    ) -> tuple[bool, _StreamState | None, list[Outgoing]]:
        """Hold frames after a jump until ``resync_frames`` consecutive ones confirm it (then the stream
        resynchronises to them as a new session); a frame continuing the stream's own sequence instead
        ends the quarantine, whose frames are dead-lettered as ``sequence_jump``. Returns (handled, the
        stream's state, messages)."""
        m = self.metrics
        q = state.quarantine
        frame = held.frame
        if q and follows(q[-1].frame, frame):
            q.append(held)
            m.frames_quarantined.inc()
            if len(q) < self.settings.resync_frames:
                return True, state, []
            log.warning("stream %s resynchronised to a confirmed jump", frame.stream_id)
            m.stream_resyncs.inc()
            out = self._emit(frame.stream_id, state.record, state.processor.flush(), None)
            fresh = self._new_state(q[0].frame)
            self._streams[frame.stream_id] = fresh
            for h in q:
                out += self._apply(fresh, h.frame, h.key, h.value, h.topic, h.partition, h.offset)
            return True, fresh, out
        out = self._drop_quarantine(state)
        if jump is None:  # the stream's own sequence goes on: process the frame normally
            return False, state, out
        q.append(held)
        m.frames_quarantined.inc()
        return True, state, out

    def _drop_quarantine(self, state: _StreamState) -> list[Outgoing]:
        """Dead-letter the frames a quarantine holds (their jump was never confirmed)."""
        out = []
        for h in state.quarantine:
            detail = f"seq {h.frame.seq} (stream at {state.last_seq}): jump not confirmed"
            out.append(
                self._dead_letter(
                    "sequence_jump", detail, h.key, h.value, h.topic, h.partition, h.offset
                )
            )
        state.quarantine.clear()
        return out

    def _resumed_gap(self, frame: Frame) -> list[Outgoing]:
        """A stream this worker had flushed (partition revoked, broker restart, idle) resumes after lost
        frames: count them (``ecg_frames_missing_total``) and publish a ``missing_frames`` dropout per
        lead over the gap, as the processor does for a gap within a stream."""
        seen = self._seen.get(frame.stream_id)
        if seen is None:
            return []
        gap = frame.seq - seen[0] - 1
        if not 0 < gap <= self.settings.max_seq_jump or frame.start_time <= seen[1]:
            return []
        from stream.stages.events import DropoutSegment
        from stream.stages.processor import ProcessorOutput

        lost = ProcessorOutput(gap_frames=gap)
        lost.dropouts = [
            DropoutSegment(frame.stream_id, lead, seen[1], frame.start_time, "missing_frames")
            for lead in frame.leads
        ]
        return self._emit(frame.stream_id, frame.record, lost, None)

    def _new_state(self, frame: Frame) -> _StreamState:
        scorer = self.scorer
        if scorer is not None and hasattr(scorer, "forget"):
            scorer.forget(frame.stream_id)  # a new session starts its per-patient state afresh
        processor = self._factory(frame.stream_id, frame.fs, frame.leads)
        for window, reason in getattr(processor, "unsupported", {}).items():
            self.metrics.streams_unsupported.labels(window, reason).inc()
            log.info("stream %s gives no %s windows: %s", frame.stream_id, window, reason)
        return _StreamState(
            processor,
            frame.fs,
            frame.leads,
            frame.record,
            frame.seq,
            self._clock(),
            alarms=self._alarm_factory(frame.stream_id),
        )

    def flush_all(self) -> list[Outgoing]:
        """End of every stream (shutdown): close open episodes and publish what they produce."""
        return self._flush_streams(list(self._streams))

    def flush_partitions(self, partitions: Iterable[tuple[str, int]]) -> list[Outgoing]:
        """The worker is losing these (topic, partition)s (a rebalance revokes them): close the open
        episodes of their streams while it still owns them, and forget the streams (the next owner starts
        them afresh from the committed offsets); other streams are untouched."""
        lost = set(partitions)
        return self._flush_streams([s for s, st in self._streams.items() if st.source in lost])

    def _flush_streams(self, stream_ids: Iterable[str]) -> list[Outgoing]:
        out: list[Outgoing] = []
        closing = []
        for stream_id in stream_ids:
            state = self._streams[stream_id]
            out += self._drop_quarantine(state)
            out += self._emit(stream_id, state.record, state.processor.flush(), None)
            closing.append(stream_id)
        out += self.flush_scores()  # windows already cut are scored, classified and alarmed now
        for stream_id in closing:
            out += self._close(stream_id, self._streams.pop(stream_id))
        return out

    def _close(self, stream_id: str, state: _StreamState) -> list[Outgoing]:
        """A stream ends: its pending classes in a last beats message, its alarm episodes resolved."""
        now = self._clock()
        out: list[Outgoing] = []
        if state.classes:
            out.append(
                self.router.late_classes(
                    stream_id, state.last_seq, state.end_time, state.classes, now
                )
            )
            state.classes = []
        if state.alarms is not None:
            out += self._alarm_out(stream_id, state, state.alarms.flush(state.end_time), None)
        if self.scorer is not None and hasattr(self.scorer, "forget"):
            self.scorer.forget(stream_id)
        return out

    def expire_idle(self, idle_s: float = 300.0, active_s: float = 60.0) -> list[Outgoing]:
        """Flush and forget streams silent for ``idle_s``; update the active-streams gauge."""
        now = self._clock()
        out: list[Outgoing] = []
        idle = [sid for sid, state in self._streams.items() if now - state.last_seen > idle_s]
        if idle:
            out += self._flush_streams(idle)
        self.metrics.active_streams.set(
            sum(1 for s in self._streams.values() if now - s.last_seen <= active_s)
        )
        return out

    def flush_scores(self) -> list[Outgoing]:
        """Score every pending window (one ONNX Runtime call per model); one scores message per stream."""
        return self.score_batcher.flush() if self.score_batcher is not None else []

    # ------------------------------------------------------------------------------------------ helpers
    def _emit(
        self, stream_id: str, record: str, result: ProcessorOutput, frame: Frame | None
    ) -> list[Outgoing]:
        """Messages of one processor result (``frame``: the frame it processed, None for a flush), metrics
        updated: its dropouts and new alert transitions, the scores of a batch its windows filled, and
        the frame's receipt last."""
        now = self._clock()
        state = self._streams.get(stream_id)
        engine = state.alarms if state is not None else None
        raised = list(result.alerts)
        if engine is not None:
            if result.quality:
                engine.on_quality(result.quality, _beat_lead_names(state))  # type: ignore[arg-type]
            raised = engine.gate(raised)  # no asystole or pause from a lead carrying noise
            if result.dropouts:
                engine.on_dropouts(result.dropouts, _qrs_lead_name(state))  # type: ignore[arg-type]
            if result.vf:
                raised += engine.on_vf(result.vf)
            self.observer.suppressed(engine.drain_suppressed())
        alerts = self._alerts.fresh(raised)
        self.observer.processed(result, alerts, frame, now)
        out = self.router.events(stream_id, record, result.dropouts, alerts, now)
        if result.rebuilt:  # masked leads the stream's own lead transfer rebuilt (or could not)
            runs = [
                run
                for w, rec, why in result.rebuilt
                for run in recovered_runs(w, (), rec, why or (None if rec else "unrecoverable"))
            ]
            self.observer.recovered(runs)
            out += self.router.recovered(runs)
        if self.score_batcher is not None:
            seq = frame.seq if frame is not None else None
            out += self.score_batcher.add(stream_id, result.windows, seq)
        if frame is not None:
            classes: Sequence[ClassifiedBeat] = ()
            if state is not None and state.classes:
                classes, state.classes = state.classes, []
            out.append(self.router.receipt(frame, result, now, classes))
        return out

    def _scored(self, res: ScoringResult) -> list[Outgoing]:
        """After a scoring call: each stream's classified beats wait for its next beats message; its
        alarm engine sees them and the stream's scores; the alarms it raises are published."""
        beats: dict[str, list[ClassifiedBeat]] = {}
        for b in res.classes:
            beats.setdefault(b.stream_id, []).append(b)
        scores: dict[str, list[ModelScore]] = {}
        for sc in res.scores:
            scores.setdefault(sc.stream_id, []).append(sc)
        runs = self._recovered_runs(res)
        self.observer.recovered(runs)
        out: list[Outgoing] = self.router.recovered(runs)
        now = self._clock()
        for sid in beats.keys() | scores.keys():
            state = self._streams.get(sid)
            if state is None:  # the stream ended while its windows waited (rare): classes only
                if sid in beats and (seen := self._seen.get(sid)) is not None:
                    out.append(self.router.late_classes(sid, seen[0], seen[1], beats[sid], now))
                continue
            mine = sorted(beats.get(sid, ()), key=lambda b: b.time)
            state.classes += mine
            engine = state.alarms
            if engine is None:
                continue
            events = engine.on_beats(mine) if mine else []
            if sid in scores:
                events += engine.on_scores(scores[sid])
            out += self._alarm_out(sid, state, events, None)
        return out

    def _recovered_runs(self, res: ScoringResult) -> list[RecoveredRun]:
        """The recovered and the unrecoverable runs of a scoring call's windows with masked samples."""
        runs: list[RecoveredRun] = []
        why = {id(w): reason for w, reason in res.unrebuilt}
        for original, rec in res.recovered_windows:
            leads = self._window_leads.get(original.kind, ())
            runs += recovered_runs(original, leads, rec, why.pop(id(original), None))
        unrecovered = [*res.skipped, *((w, r) for w, r in res.unrebuilt if id(w) in why)]
        for w, reason in unrecovered:
            runs += recovered_runs(w, self._window_leads.get(w.kind, ()), None, reason)
        return runs

    def _alarm_out(
        self, stream_id: str, state: _StreamState, events: Sequence[AlertEvent], frame: Frame | None
    ) -> list[Outgoing]:
        """Publish an alarm engine's alert transitions (de-duplicated) and count its suppressions."""
        now = self._clock()
        if state.alarms is not None:
            self.observer.suppressed(state.alarms.drain_suppressed())
        alerts = self._alerts.fresh(events)
        if not alerts:
            return []
        self.observer.alerted(alerts, frame, now)
        return self.router.events(stream_id, state.record, (), alerts, now)

    def _dead_letter(
        self,
        reason: str,
        detail: str,
        key: bytes | None,
        value: bytes | None,
        topic: str,
        partition: int,
        offset: int,
    ) -> Outgoing:
        self.observer.rejected(reason)
        return self.router.dead_letter(
            reason, detail, key, value, topic, partition, offset, self._clock()
        )
