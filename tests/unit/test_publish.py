"""The publisher: acknowledged outputs counted, failed sends retried then counted, never raised."""

from __future__ import annotations

import asyncio
from typing import Any

from stream.metrics import PipelineMetrics
from stream.pipeline import Outgoing
from stream.publish import Publisher
from stream.settings import TopicNames

TOPICS = TopicNames()


def _count(m: PipelineMetrics, name: str, role: str) -> float:
    return m.registry.get_sample_value(name, {"topic": role}) or 0.0


class FakeProducer:
    """``send`` fails at once for the first ``raise_first`` calls, then its futures fail for the next
    ``fail_futures`` calls, then it acknowledges."""

    def __init__(self, raise_first: int = 0, fail_futures: int = 0) -> None:
        self.raise_first = raise_first
        self.fail_futures = fail_futures
        self.calls = 0
        self.acked: list[bytes] = []

    async def send(self, topic: str, key: bytes, value: bytes) -> Any:
        self.calls += 1
        if self.raise_first > 0:
            self.raise_first -= 1
            raise ConnectionError("broker unreachable")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail_futures > 0:
            self.fail_futures -= 1
            fut.set_exception(TimeoutError("request timed out"))
        else:
            self.acked.append(value)
            fut.set_result("metadata")
        return fut


def _outs(n: int, topic: str = TOPICS.dead_letter) -> list[Outgoing]:
    return [Outgoing(topic, b"k", f"m{i}".encode()) for i in range(n)]


async def _settle(pub: Publisher) -> None:
    for _ in range(50):
        await asyncio.sleep(0.01)
        await pub.drain()
        if not pub.in_flight:
            await asyncio.sleep(0.01)
            return


async def test_acknowledged_messages_are_counted_by_topic_role():
    m, prod = PipelineMetrics(), FakeProducer()
    pub = Publisher(prod.send, m, TOPICS, backoff_s=0.001)
    await pub.publish(_outs(5))
    await _settle(pub)
    assert _count(m, "ecg_output_messages_total", "dead_letter") == 5 == len(prod.acked)


async def test_failed_sends_are_retried_in_the_background_and_delivered():
    m, prod = PipelineMetrics(), FakeProducer(raise_first=2, fail_futures=2)
    pub = Publisher(prod.send, m, TOPICS, retries=3, backoff_s=0.001)
    await pub.publish(_outs(3))  # returns at once: the agent is not held by the retries
    await _settle(pub)
    assert sorted(prod.acked) == [b"m0", b"m1", b"m2"]
    assert _count(m, "ecg_output_messages_total", "dead_letter") == 3
    assert _count(m, "ecg_output_publish_retries_total", "dead_letter") == 4
    assert _count(m, "ecg_output_publish_failures_total", "dead_letter") == 0


async def test_a_message_that_never_goes_through_is_counted_lost_not_raised():
    m, prod = PipelineMetrics(), FakeProducer(raise_first=100)
    pub = Publisher(prod.send, m, TOPICS, retries=2, backoff_s=0.001)
    await pub.publish(_outs(2, TOPICS.alerts))
    await _settle(pub)
    assert prod.calls == 6  # 2 messages x (1 + 2 retries)
    assert _count(m, "ecg_output_publish_failures_total", "alerts") == 2
    assert _count(m, "ecg_output_messages_total", "alerts") == 0
