"""The live view's Kafka side: one aiokafka consumer feeding :class:`~stream.dashboard.live.LiveHub`, the
ward ticker, and the producer of alarm actions. Runs in the dashboard's event loop (FastAPI lifespan).

**Consumer group.** The live view is a fan-out, not a work split: every dashboard process must see every
stream of the ward. So its consumer is *assigned* every partition of the topics it reads (``assign()``),
never subscribed, and it never joins a group, whatever the broker: a group join would hand each of two
dashboards half the ward, and a group per process would still cost a JoinGroup round (seconds on the
embedded broker, which holds a join for half the session timeout, and which forgets groups when it
restarts) for the same result as an assignment. It still has a group id of its own,
``ECG_DASHBOARD_CONSUMER_GROUP`` (default ``ecg-monitor-dashboard``), distinct from the worker's and the
alerts feed's, so it never takes partitions from them and shows under its own name in the broker's
tools; it commits nothing (every start reads history again: see below) and its client id
``<group>-<host>-<pid>`` names each instance.

**Where it reads.** Alerts, dropouts and alarm actions from the beginning (the alarm history and the
acknowledgements survive a dashboard restart; the hub de-duplicates by (id, status)); telemetry, beats and
scores from their end (live data only).

**Failures.** A broker outage is ridden out by the client (fetches retried); a consumer that fails is
stopped and started again after :data:`RESTART_BACKOFF_S` (``restarts`` counts it) while the hub and its
browsers live on. After a broker restart that lost the logs (the embedded broker keeps nothing), positions
past the new end are reset to the beginning, by the client (``auto_offset_reset="earliest"``, on an
out-of-range answer) or, every :data:`CHECK_EVERY_S`, by :meth:`LiveFeed._check_positions` (a position past
the partition's high watermark); topics that disappear or change their partitions make the consumer start
again and wait for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from stream.dashboard.live import LiveHub
from stream.schemas import AlarmActionMessage, iso
from stream.settings import Settings

log = logging.getLogger(__name__)

#: Topic kinds read from the beginning (history) and from the end (live only).
FROM_BEGINNING: tuple[str, ...] = ("alerts", "dropouts", "alarm_actions")
FROM_END: tuple[str, ...] = ("telemetry", "beats", "scores")
#: Seconds between consumer restarts after a failure.
RESTART_BACKOFF_S = 2.0
#: Seconds between checks of the topics' partitions and of positions past the end (a broker that lost its log).
CHECK_EVERY_S = 5.0


class LiveFeed:
    """Consumer task + ticker task + alarm-action producer around one :class:`LiveHub`."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        hub: LiveHub,
        *,
        on_batch: Callable[[int], None] | None = None,
        consumer_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.hub = hub
        self.on_batch = on_batch
        self.kind_of = {getattr(settings.topics, k): k for k in FROM_BEGINNING + FROM_END}
        self._tasks: list[asyncio.Task[None]] = []
        self._producer: Any = None
        self.connected = False
        self.restarts = 0
        self.client_name = f"{socket.gethostname()}:{os.getpid()}"
        self.client_id = f"{settings.dashboard_consumer_group}-{socket.gethostname()}-{os.getpid()}"
        self.resets = 0  # positions found past a partition's end (a broker that lost its log)
        self._consumer_factory = consumer_factory or self._new_consumer

    async def start(self) -> None:
        from stream.broker import ensure_topics

        try:
            await ensure_topics(self.settings, self.bootstrap, [self.settings.topics.alarm_actions])
        except Exception as exc:  # the broker may come later: the consumer loop keeps trying
            log.warning(
                "live view: could not create the alarm-actions topic yet (%s)", type(exc).__name__
            )
        self._tasks = [
            asyncio.create_task(self._consume_forever(), name="live-consumer"),
            asyncio.create_task(self._tick_forever(), name="live-ticker"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None

    async def _tick_forever(self) -> None:
        period = 1.0 / self.settings.dashboard_ward_hz
        while True:
            await asyncio.sleep(period)
            try:
                self.hub.tick(time.time())
            except Exception:  # never stop ticking for one bad state; a bug is logged once per tick
                log.exception("live view: tick failed")

    async def _consume_forever(self) -> None:
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected = False
                self.restarts += 1
                log.warning(
                    "live view: Kafka consumer stopped (%s: %s); restarting in %.0f s",
                    type(exc).__name__,
                    str(exc)[:200],
                    RESTART_BACKOFF_S,
                )
                await asyncio.sleep(RESTART_BACKOFF_S)

    async def _assign(self, consumer: Any) -> None:
        from aiokafka import TopicPartition

        tps: list[Any] = []
        want = list(self.kind_of)
        deadline = time.monotonic() + 30
        while True:
            await consumer._client.force_metadata_update()
            missing = [t for t in want if not consumer.partitions_for_topic(t)]
            if not missing or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        for topic in want:
            for p in sorted(consumer.partitions_for_topic(topic) or ()):
                tps.append(TopicPartition(topic, p))
        if not tps:
            raise ConnectionError(f"none of the live view's topics exist on {self.bootstrap}")
        consumer.assign(tps)
        begin = [tp for tp in tps if self.kind_of[tp.topic] in FROM_BEGINNING]
        end = [tp for tp in tps if self.kind_of[tp.topic] in FROM_END]
        if begin:
            await consumer.seek_to_beginning(*begin)
        if end:
            await consumer.seek_to_end(*end)

    def _new_consumer(self) -> Any:
        from aiokafka import AIOKafkaConsumer

        from stream.broker import client_kwargs

        return AIOKafkaConsumer(
            **client_kwargs(self.settings, self.bootstrap),
            group_id=self.settings.dashboard_consumer_group,
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )

    async def _check_positions(self, consumer: Any) -> int:
        """Seek to the beginning every partition whose position is past its high watermark (the broker lost
        its log: the embedded broker after a restart); returns how many."""
        lost = []
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            with contextlib.suppress(Exception):  # no position yet: nothing to compare
                if await consumer.position(tp) > high:
                    lost.append(tp)
        if lost:
            self.resets += len(lost)
            log.warning(
                "live view: %d partitions are past their end (the broker lost its log); reading them "
                "from the beginning",
                len(lost),
            )
            await consumer.seek_to_beginning(*lost)
        return len(lost)

    async def _consume(self) -> None:
        consumer = self._consumer_factory()
        await consumer.start()
        try:
            await self._assign(consumer)
            self.connected = True
            n_topics = len(consumer.assignment())
            last_check = time.monotonic()
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
                now = time.time()
                n = 0
                for tp, msgs in batch.items():
                    kind = self.kind_of.get(tp.topic)
                    if kind is None:
                        continue
                    for m in msgs:
                        self.hub.ingest(kind, m.value, now)
                        n += 1
                if self.on_batch is not None and n:
                    self.on_batch(n)
                if time.monotonic() - last_check > CHECK_EVERY_S:
                    last_check = time.monotonic()
                    have = sum(len(consumer.partitions_for_topic(t) or ()) for t in self.kind_of)
                    if have != n_topics:  # topics created later, deleted or re-created
                        raise ConnectionError("the live view's topics changed; re-assigning")
                    await self._check_positions(consumer)
        finally:
            self.connected = False
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def publish_action(
        self,
        *,
        action: str,
        alert_id: str,
        stream_id: str,
        kind: str,
        user: str,
        silence_s: float | None,
    ) -> AlarmActionMessage:
        """Publish one alarm action (acknowledged by the broker before this returns)."""
        from aiokafka import AIOKafkaProducer

        from stream.broker import client_kwargs

        if self._producer is None:
            p = AIOKafkaProducer(**client_kwargs(self.settings, self.bootstrap), acks="all")
            await p.start()
            self._producer = p
        now = time.time()
        msg = AlarmActionMessage(
            action=action,
            alert_id=alert_id,
            stream_id=stream_id,
            kind=kind,
            user=user,
            at=iso(now) or "",
            at_ts=now,
            silence_until_ts=now + silence_s if silence_s else None,
            client=self.client_name,
        )
        await asyncio.wait_for(
            self._producer.send_and_wait(
                self.settings.topics.alarm_actions, value=msg.to_bytes(), key=stream_id.encode()
            ),
            10.0,
        )
        return msg
