"""LiveFeed's consumer loop with a fake consumer (no broker): a consumer that fails is started again after
the back-off and the hub goes on receiving; after a broker restart that lost its logs, positions past a
partition's high watermark are sought to the beginning; topics that change make it re-assign. Partitions
are assigned directly (every dashboard sees every stream), never subscribed."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from typing import Any

import pytest

from stream.dashboard import livefeed
from stream.dashboard.live import LiveHub
from stream.dashboard.livefeed import LiveFeed
from stream.schemas import AlertMessage, iso
from stream.settings import Settings, TopicNames

TP = namedtuple("TP", "topic partition")
Rec = namedtuple("Rec", "value")


def _alert(i: int) -> bytes:
    return AlertMessage(
        id=f"a{i}",
        stream_id="p1",
        kind="asystole",
        severity="critical",
        status="raised",
        start=iso(1.0e9) or "",
        start_ts=1.0e9,
        evidence={},
        at_ts=1.0e9,
    ).to_bytes()


class FakeClient:
    async def force_metadata_update(self) -> None:
        return None


class FakeConsumer:
    """Just what LiveFeed calls: a broker of ``partitions`` per topic, scripted ``getmany`` answers."""

    def __init__(self, topics: list[str], script: list[Any], partitions: int = 2) -> None:
        self.topics = topics
        self.partitions = partitions
        self.script = script
        self.started = self.stopped = False
        self.assigned: list[Any] = []
        self.subscribed = False
        self.positions: dict[Any, int] = {}
        self.high: dict[Any, int] = {}
        self.sought_beginning: list[Any] = []
        self._client = FakeClient()

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def subscribe(self, *a: Any, **k: Any) -> None:  # never called: the feed assigns
        self.subscribed = True

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(self.partitions)) if topic in self.topics else None

    def assign(self, tps: list[Any]) -> None:
        self.assigned = list(tps)

    def assignment(self) -> set[Any]:
        return set(self.assigned)

    async def seek_to_beginning(self, *tps: Any) -> None:
        self.sought_beginning += tps
        for tp in tps:
            self.positions[tp] = 0

    async def seek_to_end(self, *tps: Any) -> None:
        for tp in tps:
            self.positions[tp] = self.high.get(tp, 0)

    def highwater(self, tp: Any) -> int | None:
        return self.high.get(tp)

    async def position(self, tp: Any) -> int:
        return self.positions[tp]

    async def getmany(self, timeout_ms: int = 0, max_records: int = 0) -> dict[Any, list[Any]]:
        await asyncio.sleep(0.001)
        if not self.script:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            step(self)
            return {}
        return step


def _settings() -> Settings:
    return Settings(
        kafka_bootstrap="fake:9092",
        topics=TopicNames(**{n: f"t.{n}" for n in TopicNames.model_fields}),
    )


async def _run_until(feed: LiveFeed, cond: Any, timeout_s: float = 5.0) -> None:
    task = asyncio.create_task(feed._consume_forever())
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not cond():
            assert asyncio.get_running_loop().time() < deadline, "condition not reached"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_failed_consumer_restarts_and_the_hub_keeps_receiving(monkeypatch) -> None:
    monkeypatch.setattr(livefeed, "RESTART_BACKOFF_S", 0.01)
    s = _settings()
    hub = LiveHub()
    alerts = TP(s.topics.alerts, 0)
    made: list[FakeConsumer] = []
    scripts: list[list[Any]] = [
        [{alerts: [Rec(_alert(0))]}, ConnectionError("broker gone")],
        [{alerts: [Rec(_alert(0)), Rec(_alert(1))]}],  # history read again: a0 de-duplicated
    ]

    def factory() -> FakeConsumer:
        c = FakeConsumer(list(livefeed.LiveFeed(s, "x", hub).kind_of), scripts[len(made)])
        made.append(c)
        return c

    feed = LiveFeed(s, "fake:9092", hub, consumer_factory=factory)
    await _run_until(feed, lambda: hub.counters.messages.get(("alerts", "ok"), 0) >= 3)
    assert feed.restarts == 1 and len(made) == 2
    assert made[0].stopped and not made[0].subscribed
    assert {tp.topic for tp in made[1].assigned} == set(
        feed.kind_of
    )  # every topic, every partition
    assert len(made[1].assigned) == 2 * len(feed.kind_of)
    assert [a["id"] for a in hub.ward_alarms] == ["a0", "a1"] and hub.counters.duplicates == 1
    # history topics from the beginning, live ones from their end
    begun = {tp.topic for tp in made[1].sought_beginning}
    assert begun == {s.topics.alerts, s.topics.dropouts, s.topics.alarm_actions}


async def test_positions_past_the_end_after_a_broker_restart_are_reset(monkeypatch) -> None:
    monkeypatch.setattr(livefeed, "CHECK_EVERY_S", 0.0)
    s = _settings()
    hub = LiveHub()
    tele = TP(s.topics.telemetry, 1)
    alerts = TP(s.topics.alerts, 0)

    def broker_lost_its_log(c: FakeConsumer) -> None:
        c.positions.update({tele: 5000, alerts: 120})  # where the feed was before the restart
        c.high.update({tele: 7, alerts: 0})  # the recreated, nearly empty logs

    c = FakeConsumer(list(LiveFeed(s, "x", hub).kind_of), [broker_lost_its_log])
    feed = LiveFeed(s, "fake:9092", hub, consumer_factory=lambda: c)
    await _run_until(feed, lambda: feed.resets >= 2 and feed.connected)
    assert c.positions[tele] == 0 and c.positions[alerts] == 0
    assert feed.restarts == 0  # the same consumer went on


async def test_topics_that_change_make_the_feed_reassign(monkeypatch) -> None:
    monkeypatch.setattr(livefeed, "CHECK_EVERY_S", 0.0)
    monkeypatch.setattr(livefeed, "RESTART_BACKOFF_S", 0.01)
    s = _settings()
    made: list[FakeConsumer] = []

    def factory() -> FakeConsumer:
        c = FakeConsumer(list(LiveFeed(s, "x", LiveHub()).kind_of), [])
        if made:
            c.partitions = 4
        else:
            c.script = [lambda c: setattr(c, "partitions", 4)]  # re-created with more partitions
        made.append(c)
        return c

    feed = LiveFeed(s, "fake:9092", LiveHub(), consumer_factory=factory)
    await _run_until(feed, lambda: len(made) >= 2 and len(made[1].assigned) > 0)
    assert feed.restarts == 1
    assert len(made[1].assigned) == 4 * len(feed.kind_of)
