"""The worker's per-message logic, independent of Faust: decode -> per-stream processor -> output messages.

:class:`FramePipeline` holds one :class:`~stream.stages.processor.StreamProcessor` per stream id (topics are
keyed by stream id, so one stream is always on one partition and reaches one worker in order). It never
raises on message content: a frame that fails validation becomes a dead-letter message with its reason.
The Faust agent in :mod:`stream.app` only moves bytes between Kafka and :meth:`FramePipeline.handle`.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stream.errors import FrameValidationError
from stream.metrics import PipelineMetrics
from stream.schemas import (
    AlertMessage,
    BeatBatchMessage,
    BeatOut,
    DeadLetterMessage,
    DropoutMessage,
    FrameLimits,
    ScoreOut,
    ScoresMessage,
    TelemetryFrame,
    decode_frame,
)
from stream.settings import Settings

log = logging.getLogger(__name__)

ProcessorFactory = Callable[[str, float, tuple[str, ...]], Any]


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: topic name, key and value bytes."""

    topic: str
    key: bytes
    value: bytes


@dataclass
class _StreamState:
    processor: Any
    fs: float
    leads: tuple[str, ...]
    record: str
    last_seq: int
    last_seen: float
    last_start: float = float("-inf")


def default_processor_factory(
    settings: Settings, *, window_kinds: frozenset[str] = frozenset()
) -> ProcessorFactory:
    """StreamProcessor with the default StageConfig, cutting only the model windows in ``window_kinds``
    (those a scorer consumes; cutting/resampling windows costs CPU on every beat)."""
    from stream.stages.processor import StageConfig, StreamProcessor

    config = StageConfig(
        emit_beat_720="beat_720" in window_kinds,
        emit_leads_10s="leads_10s" in window_kinds,
        emit_beat_400="beat_400" in window_kinds,
    )

    def make(stream_id: str, fs: float, leads: tuple[str, ...]) -> Any:
        return StreamProcessor(stream_id, fs, leads, config)

    return make


class FramePipeline:
    """Decode, validate, process and route telemetry messages for every stream one worker owns."""

    def __init__(
        self,
        settings: Settings,
        metrics: PipelineMetrics | None = None,
        processor_factory: ProcessorFactory | None = None,
        clock: Callable[[], float] = time.time,
        max_alert_ids: int = 100_000,
        scorer: Any = None,
    ) -> None:
        """``scorer``: optional :class:`stream.stages.scoring.WindowScorer`; its scores go to the scores topic."""
        self.settings = settings
        self.topics = settings.topics
        self.metrics = metrics or PipelineMetrics()
        self.limits = FrameLimits.from_settings(settings)
        self.scorer = scorer
        #: windows waiting to be scored (flushed at ``score_batch`` windows or by :meth:`flush_scores`)
        self.score_batch = 64
        self._pending_windows: list[Any] = []
        self._pending_seq: dict[str, int] = {}
        kinds = frozenset(scorer.window_kinds) if scorer is not None else frozenset()
        self._factory = processor_factory or default_processor_factory(settings, window_kinds=kinds)
        self._clock = clock
        self._streams: dict[str, _StreamState] = {}
        self._published_alerts: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._max_alert_ids = max_alert_ids
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
        m.frames_received.inc()
        tp = (topic, partition)
        if offset < self.positions.get(tp, -1):
            m.frames_duplicate.inc()  # redelivered after a rebalance: already processed by this worker
            return []
        self.positions[tp] = offset + 1
        try:
            frame = decode_frame(value, self.limits)
        except FrameValidationError as exc:
            return [self._dead_letter(exc.reason, exc.detail, key, value, topic, partition, offset)]
        state = self._streams.get(frame.stream_id)
        out: list[Outgoing] = []
        if state is not None and (state.fs != frame.fs or state.leads != frame.leads):
            log.info("stream %s changed fs/leads; restarting its processor", frame.stream_id)
            out += self._outputs(frame.stream_id, state.record, state.processor.flush(), None)
            state = None
        if state is not None:
            if frame.seq == state.last_seq:
                m.frames_duplicate.inc()
                return out
            if frame.seq < state.last_seq and frame.start_time > state.last_start:
                # the device restarted its sequence (power cycle, new session) while time moved on: a new session
                log.info(
                    "stream %s restarted its sequence at %d; new session",
                    frame.stream_id,
                    frame.seq,
                )
                m.stream_restarts.inc()
                out += self._outputs(frame.stream_id, state.record, state.processor.flush(), None)
                state = None
            elif frame.seq < state.last_seq:
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
            state = _StreamState(
                self._factory(frame.stream_id, frame.fs, frame.leads),
                frame.fs,
                frame.leads,
                frame.record,
                frame.seq,
                self._clock(),
            )
            self._streams[frame.stream_id] = state
        state.last_seq = frame.seq
        state.last_start = frame.start_time
        state.last_seen = self._clock()
        try:
            result = state.processor.process(frame.to_stage_frame())
            out += self._outputs(frame.stream_id, frame.record, result, frame)
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

    def flush_all(self) -> list[Outgoing]:
        """End of every stream (shutdown): close open episodes and publish what they produce."""
        out: list[Outgoing] = []
        for stream_id, state in list(self._streams.items()):
            out += self._outputs(stream_id, state.record, state.processor.flush(), None)
        self._streams.clear()
        return out

    def expire_idle(self, idle_s: float = 300.0, active_s: float = 60.0) -> list[Outgoing]:
        """Flush and forget streams silent for ``idle_s``; update the active-streams gauge."""
        now = self._clock()
        out: list[Outgoing] = []
        for stream_id, state in list(self._streams.items()):
            if now - state.last_seen > idle_s:
                out += self._outputs(stream_id, state.record, state.processor.flush(), None)
                del self._streams[stream_id]
        self.metrics.active_streams.set(
            sum(1 for s in self._streams.values() if now - s.last_seen <= active_s)
        )
        return out

    # ------------------------------------------------------------------------------------------ helpers
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
        self.metrics.frames_rejected.labels(reason).inc()
        msg = DeadLetterMessage.build(
            reason=reason,
            detail=detail,
            payload=value,
            key=key,
            topic=topic,
            partition=partition,
            offset=offset,
            now=self._clock(),
        )
        return Outgoing(self.topics.dead_letter, key or b"", msg.to_bytes())

    def _outputs(
        self, stream_id: str, record: str, result: Any, frame: TelemetryFrame | None
    ) -> list[Outgoing]:
        m = self.metrics
        key = stream_id.encode()
        now = self._clock()
        out: list[Outgoing] = []
        m.samples_processed.inc(result.samples)
        if result.gap_frames:
            m.frames_missing.inc(result.gap_frames)
        if result.beats:
            m.beats.inc(len(result.beats))
        for stage, seconds in result.stage_seconds.items():
            m.stage_duration.labels(stage).observe(seconds)
        for seg in result.dropouts:
            m.dropouts.labels(seg.kind).inc()
            out.append(
                Outgoing(self.topics.dropouts, key, DropoutMessage.from_event(seg).to_bytes())
            )
        sent_at = frame.sent_at if frame is not None else None
        for ev in result.alerts:
            ident = (ev.id, ev.status)
            if ident in self._published_alerts:
                continue
            self._published_alerts[ident] = None
            if len(self._published_alerts) > self._max_alert_ids:
                self._published_alerts.popitem(last=False)
            if ev.status == "raised":
                m.alerts.labels(ev.kind, ev.severity).inc()
            if sent_at is not None:
                m.latency.labels("alert").observe(max(0.0, now - sent_at))
            if frame is not None:
                m.frame_age.labels("alert").observe(max(0.0, now - frame.start_time))
            msg = AlertMessage.from_event(ev, record=record, published_at=now)
            out.append(Outgoing(self.topics.alerts, key, msg.to_bytes()))
        if self.scorer is not None and result.windows:
            # windows are scored in batches across streams (one ONNX Runtime call per model and batch)
            self._pending_windows += result.windows
            if frame is not None:
                self._pending_seq[stream_id] = frame.seq
            if len(self._pending_windows) >= self.score_batch:
                out += self.flush_scores()
        if frame is not None:
            latency = None if sent_at is None else max(0.0, now - sent_at)
            if latency is not None:
                m.latency.labels("processed").observe(latency)
            m.frame_age.labels("processed").observe(max(0.0, now - frame.start_time))
            batch = BeatBatchMessage(
                stream_id=stream_id,
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
            )
            out.append(Outgoing(self.topics.beats, key, batch.to_bytes()))
        return out

    def flush_scores(self) -> list[Outgoing]:
        """Score every pending window (one ONNX Runtime call per model); one scores message per stream."""
        if self.scorer is None or not self._pending_windows:
            return []
        windows, self._pending_windows = self._pending_windows, []
        seqs, self._pending_seq = self._pending_seq, {}
        m = self.metrics
        res = self.scorer.score(windows)
        for model, seconds in res.model_seconds.items():
            m.stage_duration.labels(f"model_{model}").observe(seconds)
        for _, reason in res.skipped:
            m.windows_skipped.labels("dropout" if reason == "dropout" else "model_error").inc()
        for model, n in res.recovered.items():
            m.windows_recovered.labels(model).inc(n)
        by_stream: dict[str, list[ScoreOut]] = {}
        for sc in res.scores:
            m.model_scores.labels(sc.model).inc()
            if sc.anomalous:
                m.model_anomalies.labels(sc.model).inc()
            by_stream.setdefault(sc.stream_id, []).append(
                ScoreOut(**{k: v for k, v in sc.to_dict().items() if k != "stream_id"})
            )
        return [
            Outgoing(
                self.topics.scores,
                sid.encode(),
                ScoresMessage(stream_id=sid, seq=seqs.get(sid), scores=scores).to_bytes(),
            )
            for sid, scores in by_stream.items()
        ]
