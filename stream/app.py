"""The one Faust application of ecg-monitor: :func:`create_app` builds it, :func:`run_worker` runs it.

The agent is thin: it hands each telemetry message (raw bytes, so a malformed one can be dead-lettered
instead of crashing a deserializer) to :class:`stream.pipeline.FramePipeline` and publishes what comes back.
A rejected frame is acknowledged like any other message (its offset is committed past) after its
dead-letter record is sent, so one bad message never stalls a partition.

HTTP serving: Faust's own web server is disabled; ``/metrics`` is served by prometheus-client's HTTP server
in a daemon thread of the worker process (see :mod:`stream.metrics`), bound to ``Settings.bind_host``
(127.0.0.1 by default). It shares no event loop with Faust, so scrapes never delay frame processing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from stream.broker import faust_broker_credentials, faust_broker_url
from stream.errors import ConfigError
from stream.logutil import install_rate_limit
from stream.metrics import PipelineMetrics, serve_metrics
from stream.pipeline import FramePipeline, Outgoing, ProcessorFactory, Scorer
from stream.publish import Publisher
from stream.settings import Settings

log = logging.getLogger(__name__)

#: Seconds between consumer-lag / idle-stream updates.
HOUSEKEEPING_INTERVAL_S = 1.0
#: Longest wait of a model window before it is scored (windows are batched across streams).
SCORE_FLUSH_INTERVAL_S = 0.25
#: Default longest time a fetch may wait for data: ``Settings.fetch_max_wait_ms``'s default (the one source).
#: Faust hard-codes 1.5 s; Tansu holds a fetch that long even when data is there (p50 0.40 s producer->consumer
#: at 1.5 s, 9 ms at 10 ms), and its CPU per fetch grows with what it stores, so fewer fetches hold long runs
#: longer (README, Performance). Apache Kafka answers a fetch as soon as data is there.
FETCH_MAX_WAIT_MS: int = Settings.model_fields["fetch_max_wait_ms"].default


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka passes it to its Fetcher at start()
        consumer._fetch_max_wait_ms = getattr(self.app, "ecg_fetch_max_wait_ms", FETCH_MAX_WAIT_MS)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class EcgApp(faust.App):
    """faust.App on the aiokafka transport with a short fetch wait (low end-to-end latency)."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def create_app(
    settings: Settings,
    *,
    bootstrap: str | None = None,
    embedded_broker: bool | None = None,
    metrics: PipelineMetrics | None = None,
    processor_factory: ProcessorFactory | None = None,
    scorer: Scorer | None = None,
) -> faust.App:
    """Build the Faust app (agent, timers) for ``settings``.

    ``bootstrap`` overrides ``settings.kafka_bootstrap`` (the embedded broker's address in local mode);
    ``embedded_broker`` (default: local mode) applies the short group timeouts the local Tansu broker needs.
    ``scorer`` (a :class:`stream.stages.scoring.WindowScorer`) scores the processor's windows with ONNX models.
    """
    servers = bootstrap or settings.kafka_bootstrap
    if not servers:
        raise ConfigError(
            "create_app needs a bootstrap: set ECG_KAFKA_BOOTSTRAP or start the embedded broker"
        )
    embedded = settings.local_mode if embedded_broker is None else embedded_broker
    local_tuning: dict[str, Any] = (
        # Tansu holds JoinGroup for session_timeout/2 and never sees a LeaveGroup from a restarted member
        {
            "broker_session_timeout": 3.0,
            "broker_rebalance_timeout": 3.0,
            "broker_heartbeat_interval": 0.5,
        }
        if embedded
        else {}
    )
    datadir = Path(settings.cache_dir) / "faust"
    datadir.mkdir(
        parents=True, exist_ok=True
    )  # Faust creates only the last level; a fresh clone has no .cache/
    app = EcgApp(
        settings.consumer_group,
        broker=faust_broker_url(servers),
        broker_credentials=faust_broker_credentials(settings),
        processing_guarantee="at_least_once",  # exactly_once needs transactions (not on Tansu)
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,  # no Faust web server: /metrics is served by serve_metrics
        web_host=settings.bind_host,
        datadir=str(datadir),
        autodiscover=False,
        store="memory://",
        producer_linger_ms=settings.producer_linger_ms,  # batches outputs per partition
        **local_tuning,
    )
    metrics = metrics or PipelineMetrics()
    pipeline = FramePipeline(settings, metrics, processor_factory, scorer=scorer)
    t = settings.topics
    telemetry = app.topic(
        t.telemetry, key_type=bytes, value_type=bytes, partitions=settings.partitions
    )
    for name in (
        t.alerts,
        t.dropouts,
        t.beats,
        t.dead_letter,
        t.scores,
        t.recovered,
    ):  # declared so the worker creates them if missing
        app.topic(name, key_type=bytes, value_type=bytes, partitions=settings.partitions)

    async def send(topic: str, key: bytes, value: bytes) -> Any:
        # straight to the app's producer (Topic.send adds channel/sensor layers per message); Faust flushes
        # this producer before committing offsets, so outputs are durable before their input is committed
        return await app.producer.send(topic, key, value, None, None, None)

    publisher = Publisher(send, metrics, settings.topics)

    async def publish(outs: list[Outgoing]) -> None:
        # acknowledged, retried and counted by the publisher: a failed send never reaches the agent
        await publisher.publish(outs)

    @app.agent(telemetry, name="ecg-process-telemetry")
    async def process_telemetry(stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            await publish(pipeline.handle(msg.key, msg.value, msg.topic, msg.partition, msg.offset))

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode's stub wants a `signal` kwarg
    async def on_revoked(sender: Any, revoked: Any, *args: Any, **kwargs: Any) -> None:
        # close the episodes of the streams this worker is losing while it still owns them (never orphaned,
        # never resolved by a worker that no longer owns the stream)
        await publish(pipeline.flush_partitions((tp.topic, tp.partition) for tp in revoked))

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def on_shutdown(sender: Any, *args: Any, **kwargs: Any) -> None:
        # the consumer has stopped, the producer is flushed after this: close every open episode
        await publish(pipeline.flush_all())
        await publisher.drain()

    @app.timer(SCORE_FLUSH_INTERVAL_S)
    async def flush_scores() -> None:
        await publish(pipeline.flush_scores())

    @app.timer(HOUSEKEEPING_INTERVAL_S)
    async def housekeeping() -> None:
        await publish(pipeline.expire_idle())
        update_consumer_lag(app, pipeline, metrics)

    app.ecg_fetch_max_wait_ms = settings.fetch_max_wait_ms  # type: ignore[attr-defined]
    app.ecg_pipeline = pipeline  # type: ignore[attr-defined]
    app.ecg_metrics = metrics  # type: ignore[attr-defined]
    return app


def update_consumer_lag(app: faust.App, pipeline: FramePipeline, metrics: PipelineMetrics) -> None:
    """Set ``ecg_consumer_lag_messages`` from the fetch high-watermarks (ListOffsets is wrong on Tansu) for
    the partitions assigned, and stop exporting it for those no longer assigned."""
    try:
        assigned = app.consumer.assignment()
    except Exception:  # consumer not started yet / rebalancing
        return
    owned = {(tp.topic, tp.partition) for tp in assigned}
    # a revoked partition's last lag would stay exported (and read as a stalled worker: EcgWorkerStalled)
    for topic, partition in pipeline.positions:
        if (topic, partition) not in owned:
            metrics.consumer_lag.remove(topic, str(partition))
    for tp in assigned:
        try:
            hw = app.consumer.highwater(tp)
        except Exception:
            continue
        if hw is None:
            continue
        position = pipeline.positions.get((tp.topic, tp.partition))
        if position is None:
            continue
        metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, hw - position))


class _Worker(faust.Worker):
    """faust.Worker that keeps the requested log level (faust leaves the root logger at DEBUG, and aiokafka's
    per-request debug records then cost ~6 % of the worker's CPU)."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        wanted = (
            logging.getLevelName(str(self.loglevel).upper())
            if isinstance(self.loglevel, str)
            else self.loglevel
        )
        wanted = wanted if isinstance(wanted, int) else logging.WARNING
        logger.setLevel(wanted)
        for name in ("aiokafka", "faust", "mode"):
            logging.getLogger(name).setLevel(max(wanted, logging.INFO))
        super().on_setup_root_logger(logger, level)
        install_rate_limit()  # aiokafka/faust/mode: same line at most 3 times per 10 s (outages)


def run_worker(
    settings: Settings,
    *,
    bootstrap: str | None = None,
    embedded_broker: bool | None = None,
    loglevel: str = "warning",
    metrics_port: int | None = None,
    models: tuple[str, ...] = (),
) -> None:
    """Run one stream worker until SIGINT/SIGTERM: the Faust app plus the ``/metrics`` endpoint.
    ``models`` names the ONNX models scoring the stream (none: no scoring)."""
    from stream.warmup import warm_up

    # compile (or load) the stages' numba kernels now, not on the first patient's first frame
    log.warning("stage kernels ready in %.1f s", warm_up())
    metrics = PipelineMetrics()
    port = settings.metrics_port if metrics_port is None else metrics_port
    server = serve_metrics(metrics.registry, settings.bind_host, port)
    log.warning("metrics on http://%s:%d/metrics", server.host, server.port)
    scorer = None
    if models:
        from stream.stages.scoring import WindowScorer

        scorer = WindowScorer(models, settings.models_dir)
        metrics.preset_models(scorer.models, [r.name for r in scorer.recoverers.values()])
    app = create_app(
        settings,
        bootstrap=bootstrap,
        embedded_broker=embedded_broker,
        metrics=metrics,
        scorer=scorer,
    )
    worker = _Worker(app, loglevel=loglevel, redirect_stdouts=False, override_logging=True)
    try:
        worker.execute_from_commandline()
    finally:
        server.stop()


__all__ = ["create_app", "run_worker", "update_consumer_lag"]
