"""Reading the alerts topic for people and scripts (``ecg-monitor alerts``).

Two ways to read it:

* **without a group** (the default): every partition from the beginning of the topic, no offsets committed,
  so every run prints every alert the topic holds (de-duplicated by (id, status): alert ids are
  deterministic, and delivery is at-least-once);
* **with a consumer group** (``--group NAME``): the topic's partitions are shared among the group's members
  and the offsets of what was printed are committed (after each batch, and when partitions are revoked), so
  each alert is delivered once per group, across runs and members. A new group starts at the beginning of
  the topic; ``from_beginning`` resets the member's partitions to the beginning once they are assigned.

Filters (:class:`AlertFilter`) keep the alerts of some streams, kinds or severities; the rest are skipped
(and, in a group, committed like the others). :func:`format_alert` is the readable line.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from stream.errors import BrokerError, ConfigError
from stream.schemas import AlertMessage
from stream.settings import Settings
from stream.stages.events import ALERT_KINDS, ALERT_SEVERITIES

log = logging.getLogger(__name__)

#: Alert kinds the stream raises and their severities (one definition: :mod:`stream.stages.events`).
SEVERITIES: tuple[str, ...] = ALERT_SEVERITIES

#: Consumer-group timing: 6 s is the smallest session timeout Apache Kafka accepts by default
#: (group.min.session.timeout.ms); the embedded broker holds a JoinGroup for half of it.
GROUP_SESSION_TIMEOUT_MS = 6000
GROUP_HEARTBEAT_MS = 1000
#: Seconds to wait for the group to assign partitions before giving up.
JOIN_TIMEOUT_S = 30.0


async def _commit(consumer: Any) -> None:
    """Commit the consumed offsets; a failed commit (a rebalance under way) only means redeliveries."""
    from aiokafka.errors import KafkaError

    try:
        await consumer.commit()
    except KafkaError as exc:
        log.warning("alerts: commit failed (%s); alerts since the last commit may come again", exc)


def _split(values: Iterable[str] | None) -> list[str]:
    return [v.strip() for spec in (values or []) for v in spec.split(",") if v.strip()]


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts to keep: an empty set keeps every value of that field."""

    streams: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()

    @classmethod
    def from_options(
        cls,
        streams: Iterable[str] | None = None,
        kinds: Iterable[str] | None = None,
        severities: Iterable[str] | None = None,
    ) -> AlertFilter:
        """From repeated and comma-separated option values; :class:`ConfigError` for an unknown kind or
        severity (naming the known ones)."""
        k = {v.lower() for v in _split(kinds)}
        s = {v.lower() for v in _split(severities)}
        if bad := sorted(k - set(ALERT_KINDS)):
            raise ConfigError(f"unknown alert kind(s) {bad} in --kind; known: {list(ALERT_KINDS)}")
        if bad := sorted(s - set(SEVERITIES)):
            raise ConfigError(
                f"unknown severity(ies) {bad} in --severity; known: {list(SEVERITIES)}"
            )
        return cls(frozenset(_split(streams)), frozenset(k), frozenset(s))

    def matches(self, msg: AlertMessage) -> bool:
        return (
            (not self.streams or msg.stream_id in self.streams)
            and (not self.kinds or msg.kind in self.kinds)
            and (not self.severities or msg.severity in self.severities)
        )


class Dedup:
    """The (id, status) pairs seen, the ``limit`` most recent ones (a long ``--follow`` stays bounded)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def first(self, msg: AlertMessage) -> bool:
        """True the first time this alert transition is seen."""
        key = (msg.id, msg.status)
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return True


def format_alert(msg: AlertMessage) -> str:
    """One readable line: severity, kind, status, stream (record), the episode's span, evidence."""
    start = msg.start[:19].replace("T", " ") + "Z" if msg.start else "?"
    span = f"from {start}"
    if msg.end:
        span += f" to {msg.end[11:19]}Z"
    record = f" ({msg.record})" if msg.record else ""
    evidence = f"  {json.dumps(msg.evidence, sort_keys=True)}" if msg.evidence else ""
    return f"{msg.severity.upper():8} {msg.kind:11} {msg.status:8} {msg.stream_id}{record} {span}{evidence}"


async def alert_values(
    settings: Settings,
    bootstrap: str,
    *,
    group: str | None = None,
    follow: bool = False,
    idle_s: float = 3.0,
    from_beginning: bool = False,
    join_timeout_s: float = JOIN_TIMEOUT_S,
) -> AsyncIterator[bytes]:
    """Yield the raw values of the alerts topic (see module docs). Without ``follow`` it returns after
    ``idle_s`` seconds without a message (in a group: counted once partitions are assigned). In a group the
    offsets of a batch are committed when the caller asks for the value after the batch's last one."""
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

    from stream.broker import assign_from_beginning, client_kwargs

    topic = settings.topics.alerts
    kwargs: dict[str, Any] = {**client_kwargs(settings, bootstrap), "enable_auto_commit": False}
    if group:
        kwargs.update(
            group_id=group,
            auto_offset_reset="earliest",
            session_timeout_ms=GROUP_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=GROUP_HEARTBEAT_MS,
        )
    consumer = AIOKafkaConsumer(**kwargs)
    await consumer.start()
    try:
        joined = [not group]  # in a group: once the first assignment came (maybe of no partition)
        if group:
            reset = [from_beginning]

            class _Listener(ConsumerRebalanceListener):
                async def on_partitions_revoked(self, revoked: Any) -> None:
                    if revoked:
                        await _commit(consumer)  # what was fetched is printed: no redelivery

                async def on_partitions_assigned(self, assigned: Any) -> None:
                    joined[0] = True
                    if reset[0] and assigned:
                        reset[0] = False
                        await consumer.seek_to_beginning(*assigned)

            consumer.subscribe([topic], listener=_Listener())
        else:
            await assign_from_beginning(consumer, topic)
        started = time.monotonic()
        last: float | None = None if group else started
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            now = time.monotonic()
            if last is None and joined[0]:
                last = now  # the group assigned this member its partitions: the idle clock starts
            if batch:
                last = now
                for msgs in batch.values():
                    for m in msgs:
                        yield m.value
                if group:
                    await _commit(consumer)
            elif last is None:
                if now - started > join_timeout_s:
                    raise BrokerError(
                        f"could not join consumer group {group!r} on {bootstrap} within "
                        f"{join_timeout_s:.0f} s"
                    )
            elif not follow and now - last > idle_s:
                return
    finally:
        await consumer.stop()
