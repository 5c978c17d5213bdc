"""Prometheus metrics of the pipeline (prometheus-client), served on ``/metrics``.

Every long-running process owns one :class:`PipelineMetrics` (or :class:`ReplayMetrics`) on its own registry
and serves it with :func:`serve_metrics`: prometheus-client's HTTP server runs in a daemon thread, so the
Faust event loop never blocks on a scrape and a stalled loop still answers scrapes (lag keeps growing
visibly). Names are in base units; labels are bounded (reasons, kinds, stages, topic/partition), never
patient or stream ids.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from stream.schemas import REJECT_REASONS
from stream.stages.events import ALARM_KINDS, ALERT_LEVELS, BEAT_CLASSES, DROPOUT_KINDS

if TYPE_CHECKING:
    from stream.stages.events import AlertEvent
    from stream.stages.frame import Frame
    from stream.stages.processor import ProcessorOutput
    from stream.stages.recovery import RecoveredRun
    from stream.stages.scoring import ScoringResult

#: End-to-end latency buckets (seconds), 10 ms .. 30 s.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
#: Per-stage processing time buckets (seconds), 10 us .. 1 s.
STAGE_BUCKETS: tuple[float, ...] = (
    1e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
    2.5e-2,
    0.1,
    1.0,
)


#: The (kind, severity) pairs the stream raises (:data:`stream.stages.events.ALERT_LEVELS`): the label sets
#: of the alert metrics exported at 0 before the first alert.
ALERT_LABELS: tuple[tuple[str, str], ...] = tuple(
    (kind, severity) for kind, levels in ALERT_LEVELS.items() for severity in levels
)
#: Reasons of ``ecg_alarms_suppressed_total`` (:mod:`stream.stages.alarms`).
SUPPRESS_REASONS: tuple[str, ...] = ("covered", "dropout", "noise", "signal_quality")
#: Reasons of ``ecg_model_windows_skipped_total`` (:meth:`PipelineObserver.scored`).
SKIP_REASONS: tuple[str, ...] = ("dropout", "model_error")


def _registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    return reg


class PipelineMetrics:
    """Metrics of a stream worker."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or _registry()
        r = self.registry
        self.frames_received = Counter(
            "ecg_frames_received_total", "Telemetry messages consumed.", registry=r
        )
        self.frames_rejected = Counter(
            "ecg_frames_rejected_total",
            "Telemetry messages sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.frames_duplicate = Counter(
            "ecg_frames_duplicate_total",
            "Frames skipped as duplicates (redelivery or repeated seq).",
            registry=r,
        )
        self.frames_quarantined = Counter(
            "ecg_frames_quarantined_total",
            "Frames held because their seq or start time jumped far from their stream's "
            "(applied once confirmed by the next frames, else dead-lettered as sequence_jump).",
            registry=r,
        )
        self.stream_resyncs = Counter(
            "ecg_stream_resyncs_total",
            "Streams resynchronised to a confirmed jump or a run of backwards frames (a new session).",
            registry=r,
        )
        self.offset_resets = Counter(
            "ecg_offset_resets_total",
            "Messages below the partition's processed position that carried new frames (the broker "
            "lost its log, e.g. a local-broker restart): processed, and the position resynchronised.",
            registry=r,
        )
        self.stream_restarts = Counter(
            "ecg_stream_restarts_total",
            "Streams whose sequence restarted with a later start time (device restart): a new session.",
            registry=r,
        )
        self.frames_missing = Counter(
            "ecg_frames_missing_total", "Frames never received (sequence gaps).", registry=r
        )
        self.samples_processed = Counter(
            "ecg_samples_processed_total",
            "Samples (per lead-set) run through the stages.",
            registry=r,
        )
        self.beats = Counter("ecg_beats_detected_total", "Beats detected.", registry=r)
        self.dropouts = Counter(
            "ecg_dropouts_total", "Dropout segments detected, by kind.", ["kind"], registry=r
        )
        self.alerts = Counter(
            "ecg_alerts_total",
            "Alerts raised (status=raised, de-duplicated), by kind and severity.",
            ["kind", "severity"],
            registry=r,
        )
        self.alerts_open = Gauge(
            "ecg_alerts_open",
            "Alert episodes raised and not yet resolved (alarms currently open), by kind and severity.",
            ["kind", "severity"],
            registry=r,
        )
        self.alarms_suppressed = Counter(
            "ecg_alarms_suppressed_total",
            "Arrhythmia and model alarms not raised (or closed early), by kind and reason: covered by a "
            "higher-priority alarm on the stream, over a dropout of the QRS lead, over noise, or over "
            "seconds with no beat-detection lead of usable signal quality.",
            ["kind", "reason"],
            registry=r,
        )
        self.streams_unsupported = Counter(
            "ecg_model_streams_unsupported_total",
            "Streams started that cannot give a model window, by window and reason (missing_leads: the "
            "stream lacks a lead the window needs; sampling_rate: below the models' lowest rate).",
            ["window", "reason"],
            registry=r,
        )
        self.beats_classified = Counter(
            "ecg_beats_classified_total",
            "Beats classified by the beat_class model, by AAMI class (N, S, V, F, Q).",
            ["label"],
            registry=r,
        )
        self.beats_unclassified = Counter(
            "ecg_beats_unclassified_total",
            "Scored beats the classifier failed on (left unclassified; see the worker log).",
            registry=r,
        )
        self.latency = Histogram(
            "ecg_end_to_end_latency_seconds",
            "Time from a frame's publication by the gateway/replay (sent_at; equal to acquisition of its last "
            "sample in real time) to its processing (point=processed) or to the alert it triggered (point=alert).",
            ["point"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.frame_age = Histogram(
            "ecg_frame_age_seconds",
            "Time from a frame's start time (acquisition of its first sample) to its processing (point=processed) "
            "or to the alert it triggered (point=alert); at least one frame duration in real time.",
            ["point"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_duration = Histogram(
            "ecg_stage_duration_seconds",
            "Processing time of one frame in each stage.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "ecg_consumer_lag_messages",
            "Messages not yet processed: fetch high-watermark minus next offset to process.",
            ["topic", "partition"],
            registry=r,
        )
        self.active_streams = Gauge(
            "ecg_active_streams", "Streams with a frame in the last 60 s.", registry=r
        )
        # 0 until the first message, so an outage that began before a worker (re)started still shows
        self.last_frame_received = Gauge(
            "ecg_last_frame_received_timestamp_seconds",
            "Unix time the last telemetry message was consumed (valid or not); 0 before the first.",
            registry=r,
        )
        self.last_frame_processed = Gauge(
            "ecg_last_frame_processed_timestamp_seconds",
            "Unix time the last valid frame went through the stages; 0 before the first.",
            registry=r,
        )
        self.model_scores = Counter(
            "ecg_model_scores_total", "Windows scored by an ONNX model.", ["model"], registry=r
        )
        self.model_anomalies = Counter(
            "ecg_model_anomalies_total",
            "Windows a model scored above its threshold.",
            ["model"],
            registry=r,
        )
        self.windows_skipped = Counter(
            "ecg_model_windows_skipped_total",
            "Windows not scored, by reason.",
            ["reason"],
            registry=r,
        )
        self.windows_recovered = Counter(
            "ecg_model_windows_recovered_total",
            "Windows with missing samples filled (lstm_ae) or missing leads rebuilt (lead_recon) before scoring.",
            ["model"],
            registry=r,
        )
        self.recovered_samples = Counter(
            "ecg_recovered_samples_total",
            "Masked samples published on the recovered topic, by provenance (model, derived, "
            "unrecoverable) and window.",
            ["provenance", "window"],
            registry=r,
        )
        self.recovered_runs = Counter(
            "ecg_recovered_runs_total",
            "Runs of one lead's masked samples published on the recovered topic, by provenance.",
            ["provenance"],
            registry=r,
        )
        self.outputs_published = Counter(
            "ecg_output_messages_total",
            "Output messages acknowledged by the broker, by topic role (dead_letter: equals the records "
            "on the dead-letter topic).",
            ["topic"],
            registry=r,
        )
        self.publish_retries = Counter(
            "ecg_output_publish_retries_total",
            "Output sends retried after a failure, by topic role.",
            ["topic"],
            registry=r,
        )
        self.publish_failures = Counter(
            "ecg_output_publish_failures_total",
            "Output messages given up after their retries (lost), by topic role.",
            ["topic"],
            registry=r,
        )
        for role in ("alerts", "dropouts", "beats", "dead_letter", "scores"):
            self.outputs_published.labels(role)
            self.publish_retries.labels(role)
            self.publish_failures.labels(role)
        # touch the label sets users expect so they are exported at 0 before the first event
        self.latency.labels("processed")
        self.frame_age.labels("processed")
        self.latency.labels("alert")
        self.frame_age.labels("alert")
        for reason in REJECT_REASONS:
            self.frames_rejected.labels(reason)
        for kind in DROPOUT_KINDS:
            self.dropouts.labels(kind)
        for kind, severity in ALERT_LABELS:
            self.alerts.labels(kind, severity)
            self.alerts_open.labels(kind, severity)
        for reason in SKIP_REASONS:
            self.windows_skipped.labels(reason)
        for kind in ALARM_KINDS:
            for reason in SUPPRESS_REASONS:
                self.alarms_suppressed.labels(kind, reason)
        for prov in ("model", "derived", "unrecoverable"):
            self.recovered_runs.labels(prov)
        for kind in ("asystole", "pause"):  # gated on the beats' and the leads' signal quality
            self.alarms_suppressed.labels(kind, "noise")
            self.alarms_suppressed.labels(kind, "signal_quality")
        for label in BEAT_CLASSES:
            self.beats_classified.labels(label)

    def preset_models(self, models: Sequence[str], recoverers: Sequence[str] = ()) -> None:
        """Export the per-model series of the scoring ``models`` and the recovery models at 0 before the
        first window (a worker calls it once its scorer is loaded)."""
        for model in models:
            self.model_scores.labels(model)
            self.model_anomalies.labels(model)
        for model in recoverers:
            self.windows_recovered.labels(model)


class PipelineObserver:
    """Every metric update of :class:`stream.pipeline.FramePipeline` from what it produced (processor
    results, scoring results, rejected frames); the pipeline's routing never touches metrics."""

    def __init__(self, metrics: PipelineMetrics) -> None:
        self.metrics = metrics
        #: alert id -> (kind, severity) of the episodes raised and not yet resolved (``ecg_alerts_open``)
        self._open: dict[str, tuple[str, str]] = {}

    def received(self, now: float) -> None:
        """One telemetry message consumed (before validation), at ``now``."""
        self.metrics.frames_received.inc()
        self.metrics.last_frame_received.set(now)

    def processed(
        self,
        result: ProcessorOutput,
        alerts: Sequence[AlertEvent],
        frame: Frame | None,
        now: float,
    ) -> None:
        """One processor result: samples, missing frames, beats, stage times and dropouts by kind; the
        published alert transitions (``alerts``: de-duplicated) by kind and severity, with their latency and
        frame age, and the episodes open (a resolution whose raise this worker never saw changes nothing);
        and for a processed ``frame`` (None for a flush) its latency, frame age and time."""
        m = self.metrics
        m.samples_processed.inc(result.samples)
        if result.gap_frames:
            m.frames_missing.inc(result.gap_frames)
        if result.beats:
            m.beats.inc(len(result.beats))
        for stage, seconds in result.stage_seconds.items():
            m.stage_duration.labels(stage).observe(seconds)
        for seg in result.dropouts:
            m.dropouts.labels(seg.kind).inc()
        self.alerted(alerts, frame, now)
        if frame is not None:
            m.last_frame_processed.set(now)
            if frame.sent_at is not None:
                m.latency.labels("processed").observe(max(0.0, now - frame.sent_at))
            m.frame_age.labels("processed").observe(max(0.0, now - frame.start_time))

    def alerted(self, alerts: Sequence[AlertEvent], frame: Frame | None, now: float) -> None:
        """Published alert transitions (de-duplicated) by kind and severity, the episodes open, and (for
        alerts of a processed ``frame``) their latency and frame age."""
        m = self.metrics
        sent_at = frame.sent_at if frame is not None else None
        for ev in alerts:
            if ev.status == "raised":
                m.alerts.labels(ev.kind, ev.severity).inc()
                if ev.id not in self._open:
                    self._open[ev.id] = (ev.kind, ev.severity)
                    m.alerts_open.labels(ev.kind, ev.severity).inc()
            elif (opened := self._open.pop(ev.id, None)) is not None:
                m.alerts_open.labels(*opened).dec()
            if sent_at is not None:
                m.latency.labels("alert").observe(max(0.0, now - sent_at))
            if frame is not None:
                m.frame_age.labels("alert").observe(max(0.0, now - frame.start_time))

    def suppressed(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Alarms the alarm engine did not raise, by (kind, reason)."""
        for (kind, reason), n in counts.items():
            if n:
                self.metrics.alarms_suppressed.labels(kind, reason).inc(n)

    def scored(self, res: ScoringResult) -> None:
        """One scoring call: seconds per model, windows skipped and recovered, scores and anomalies."""
        m = self.metrics
        for model, seconds in res.model_seconds.items():
            m.stage_duration.labels(f"model_{model}").observe(seconds)
        for _, reason in res.skipped:
            m.windows_skipped.labels("dropout" if reason == "dropout" else "model_error").inc()
        for model, n in res.recovered.items():
            m.windows_recovered.labels(model).inc(n)
        for sc in res.scores:
            m.model_scores.labels(sc.model).inc()
            if sc.anomalous:
                m.model_anomalies.labels(sc.model).inc()
        for b in res.classes:
            m.beats_classified.labels(b.label).inc()
        if res.unclassified:
            m.beats_unclassified.inc(res.unclassified)

    def recovered(self, runs: Sequence[RecoveredRun]) -> None:
        """Runs published on the recovered topic: runs and samples by provenance."""
        m = self.metrics
        for run in runs:
            m.recovered_runs.labels(run.provenance).inc()
            n = round((run.end - run.start) * run.fs)
            m.recovered_samples.labels(run.provenance, run.window).inc(n)

    def rejected(self, reason: str) -> None:
        """A message sent to the dead-letter topic, by reason."""
        self.metrics.frames_rejected.labels(reason).inc()


class ReplayMetrics:
    """Metrics of the telemetry replay (simulator)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or _registry()
        r = self.registry
        self.frames_sent = Counter(
            "ecg_replay_frames_sent_total",
            "Telemetry frames published and acknowledged by the broker.",
            registry=r,
        )
        self.send_failures = Counter(
            "ecg_replay_send_failures_total",
            "Messages given up after their send retries (lost), by topic role.",
            ["topic"],  # telemetry | ground_truth
            registry=r,
        )
        for role in ("telemetry", "ground_truth"):
            self.send_failures.labels(role)
        self.send_retries = Counter(
            "ecg_replay_send_retries_total",
            "Sends retried after a failed or timed-out send.",
            registry=r,
        )
        self.frames_dropped = Counter(
            "ecg_replay_frames_withheld_total",
            "Frames withheld by an injected lost_frames fault.",
            registry=r,
        )
        self.faults = Counter(
            "ecg_replay_faults_injected_total", "Faults injected, by kind.", ["kind"], registry=r
        )
        self.streams = Gauge("ecg_replay_streams", "Patient streams being replayed.", registry=r)
        self.behind = Gauge(
            "ecg_replay_behind_seconds", "How far the replay is behind its schedule.", registry=r
        )


@dataclass
class MetricsServer:
    """A running ``/metrics`` HTTP server (daemon thread)."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread (port 0 picks a free port);
    :class:`~stream.errors.PortInUseError` when the port is taken."""
    import errno

    from stream.errors import PortInUseError

    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise PortInUseError(f"port {port} on {host} is in use (/metrics)") from None
    return MetricsServer(host, int(server.server_address[1]), server, thread)
