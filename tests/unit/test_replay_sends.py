"""The replay's delivery accounting (acknowledged, retried, lost) with fake producers whose send futures fail,
and the log rate limiter of client libraries (no broker)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from prometheus_client import CollectorRegistry

from simulators.replay import Replay, Sender, is_retriable, plan_streams, resolve_sources
from stream.logutil import RateLimitFilter, install_rate_limit
from stream.metrics import ReplayMetrics
from stream.schemas import decode_frame
from stream.settings import Settings

#: outcome(topic, key, value, attempt) -> None (acknowledged) or the exception the send future fails with
Outcome = Callable[[str, bytes, bytes, int], BaseException | None]


class FakeProducer:
    """aiokafka-like: ``await send()`` enqueues and returns a future resolved ``ack_delay_s`` later with
    ``outcome``'s verdict. ``raise_on_send`` makes ``send`` itself raise (buffer full, producer closed)."""

    def __init__(
        self,
        outcome: Outcome | None = None,
        *,
        ack_delay_s: float = 0.0,
        raise_on_send: Callable[[int], BaseException | None] | None = None,
    ) -> None:
        self.outcome = outcome or (lambda topic, key, value, attempt: None)
        self.ack_delay_s = ack_delay_s
        self.raise_on_send = raise_on_send
        self.attempts: dict[tuple[str, bytes, bytes], int] = {}
        self.calls = 0
        self.pending = 0
        self.peak_pending = 0
        self.acked: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        self.calls += 1
        msg = (topic, key, value)
        attempt = self.attempts[msg] = self.attempts.get(msg, 0) + 1
        if self.raise_on_send is not None and (exc := self.raise_on_send(self.calls)) is not None:
            raise exc
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self.pending += 1
        self.peak_pending = max(self.peak_pending, self.pending)
        verdict = self.outcome(topic, key, value, attempt)

        def resolve() -> None:
            self.pending -= 1
            if verdict is None:
                self.acked.append(msg)
                fut.set_result(None)
            else:
                fut.set_exception(verdict)

        loop.call_later(self.ack_delay_s, resolve)
        return fut


class SilentProducer:
    """Futures that never resolve (the broker is gone and the client keeps waiting)."""

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        self.calls += 1
        return asyncio.get_running_loop().create_future()


def _metrics() -> ReplayMetrics:
    return ReplayMetrics(registry=CollectorRegistry())


def _value(m: ReplayMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels or None) or 0.0


async def _send_n(sender: Sender, n: int, topic: str = "t") -> None:
    for i in range(n):
        await sender.send(topic, f"v{i}".encode(), b"k", frame=("s", i))
    await sender.drain(5.0)


# ------------------------------------------------------------------------------------------ Sender
def test_failed_sends_are_retried_with_backoff_then_acknowledged() -> None:
    # every message fails twice (connection lost, then delivery timeout), then is acknowledged
    failures = [KafkaConnectionError("gone"), KafkaTimeoutError()]
    producer = FakeProducer(lambda t, k, v, a: failures[a - 1] if a <= 2 else None)
    m = _metrics()
    acked: list[tuple[str, int]] = []
    sender = Sender(
        producer,
        m,
        retries=3,
        backoff_s=0.01,
        max_backoff_s=0.02,
        on_frame_acked=lambda *f: acked.append(f),
    )
    t0 = time.monotonic()
    asyncio.run(_send_n(sender, 10))
    assert (sender.frames_acked, sender.frames_lost, sender.retried) == (10, 0, 20)
    assert producer.calls == 30
    assert sorted(acked) == [("s", i) for i in range(10)]
    assert _value(m, "ecg_replay_frames_sent_total") == 10
    assert _value(m, "ecg_replay_send_retries_total") == 20
    assert _value(m, "ecg_replay_send_failures_total", topic="telemetry") == 0
    assert (
        time.monotonic() - t0 >= 0.01 + 0.02
    )  # backoff waited (attempt 1: 0.01 s, attempt 2: 0.02 s)


def test_a_send_failing_every_time_is_given_up_after_the_retries_and_not_counted_sent() -> None:
    # frames 3 and 7 never get through; the others do
    def outcome(t: str, k: bytes, v: bytes, a: int) -> BaseException | None:
        return KafkaConnectionError("down") if v in (b"v3", b"v7") else None

    producer = FakeProducer(outcome)
    m = _metrics()
    sender = Sender(producer, m, retries=2, backoff_s=0.001)
    asyncio.run(_send_n(sender, 10))
    assert (sender.frames_acked, sender.frames_lost, sender.lost) == (8, 2, 2)
    assert sender.retried == 2 * 2
    assert producer.attempts[("t", b"k", b"v3")] == 3  # 1 + 2 retries
    assert _value(m, "ecg_replay_frames_sent_total") == 8
    assert _value(m, "ecg_replay_send_failures_total", topic="telemetry") == 2
    assert "KafkaConnectionError" in sender.last_error


def test_non_retriable_errors_are_given_up_at_once() -> None:
    producer = FakeProducer(lambda t, k, v, a: MessageSizeTooLargeError())
    m = _metrics()
    sender = Sender(producer, m, retries=3, backoff_s=0.001)
    asyncio.run(_send_n(sender, 4))
    assert (sender.frames_acked, sender.frames_lost, sender.retried, producer.calls) == (0, 4, 0, 4)
    assert not is_retriable(MessageSizeTooLargeError())
    assert not is_retriable(ValueError("bad value"))
    assert is_retriable(KafkaTimeoutError())
    assert is_retriable(KafkaConnectionError())
    assert is_retriable(TimeoutError())


def test_a_send_that_raises_before_enqueueing_is_retried() -> None:
    # aiokafka's send() raises KafkaTimeoutError when the partition's buffer stays full for request_timeout
    producer = FakeProducer(raise_on_send=lambda call: KafkaTimeoutError() if call <= 3 else None)
    m = _metrics()
    sender = Sender(producer, m, retries=3, backoff_s=0.001)
    asyncio.run(_send_n(sender, 3))
    assert (sender.frames_acked, sender.frames_lost, sender.retried) == (3, 0, 3)


def test_ground_truth_messages_are_counted_apart_from_frames() -> None:
    producer = FakeProducer(lambda t, k, v, a: KafkaConnectionError() if t == "truth" else None)
    m = _metrics()
    sender = Sender(producer, m, retries=0)

    async def run() -> None:
        await sender.send("truth", b"x", b"k", role="ground_truth")
        await sender.send("t", b"y", b"k", frame=("s", 0))
        await sender.drain(5.0)

    asyncio.run(run())
    assert (sender.acked, sender.lost, sender.frames_acked, sender.frames_lost) == (1, 1, 1, 0)
    assert _value(m, "ecg_replay_send_failures_total", topic="ground_truth") == 1
    assert _value(m, "ecg_replay_frames_sent_total") == 1


def test_in_flight_sends_are_bounded_not_serialised() -> None:
    # 200 sends acknowledged 50 ms later each: serialised that would take 10 s; with 50 in flight ~0.2 s
    producer = FakeProducer(ack_delay_s=0.05)
    sender = Sender(producer, _metrics(), max_in_flight=50)
    t0 = time.monotonic()
    asyncio.run(_send_n(sender, 200))
    elapsed = time.monotonic() - t0
    assert sender.frames_acked == 200
    assert producer.peak_pending <= 50
    assert sender.peak_in_flight == 50
    assert elapsed < 2.0


def test_drain_gives_up_on_unacknowledged_sends_after_its_timeout() -> None:
    producer = SilentProducer()
    m = _metrics()
    sender = Sender(producer, m, max_in_flight=100)

    async def run() -> bool:
        for i in range(5):
            await sender.send("t", b"v%d" % i, b"k", frame=("s", i))
        return await sender.drain(0.2)

    t0 = time.monotonic()
    assert asyncio.run(run()) is False
    assert 0.2 <= time.monotonic() - t0 < 2.0
    assert (sender.frames_acked, sender.frames_lost, sender.outstanding) == (0, 5, 0)
    assert _value(m, "ecg_replay_send_failures_total", topic="telemetry") == 5


# ------------------------------------------------------------------------------------------ Replay
@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir)


def test_replay_counts_only_acknowledged_frames_and_summarises(settings: Settings) -> None:
    plans = plan_streams(resolve_sources(["mitdb/100"], settings.data_dir), 2)
    topic = settings.topics.telemetry

    def outcome(t: str, k: bytes, v: bytes, a: int) -> BaseException | None:
        if t != topic:
            return None
        seq = decode_frame(v).seq
        if seq == 4:
            return KafkaConnectionError("broker gone")  # lost: every attempt fails
        if seq == 6 and a == 1:
            return KafkaTimeoutError()  # retried once, then acknowledged
        return None

    m = _metrics()
    replay = Replay(
        settings, plans, speed=0, max_frames=10, metrics=m, record_sent=True, retry_backoff_s=0.001
    )
    producer = FakeProducer(outcome)
    sent = asyncio.run(replay.run(producer))
    assert sent == replay.frames_sent == 2 * 10 - 2
    assert replay.frames_lost == 2
    assert replay.sent is not None and len(replay.sent) == 18
    assert not {("patient-0000", 4), ("patient-0001", 4)} & set(replay.sent)
    assert {("patient-0000", 6), ("patient-0001", 6)} <= set(replay.sent)
    assert _value(m, "ecg_replay_frames_sent_total") == 18
    assert _value(m, "ecg_replay_send_failures_total", topic="telemetry") == 2
    assert _value(m, "ecg_replay_send_retries_total") == 2 * 3 + 2
    summary = replay.summary()
    assert "sent 18 frames (acknowledged), lost 2" in summary
    assert "8 send(s) retried" in summary
    assert "KafkaConnectionError" in summary


def test_replay_stays_real_time_with_slow_acknowledgements(settings: Settings) -> None:
    # 6 streams at 10x (a frame every 0.1 s per stream) for 2 s, each ack taking 0.3 s: awaiting each send
    # would take 120 * 0.3 = 36 s; the bounded in-flight set keeps the schedule
    plans = plan_streams(resolve_sources(["mitdb/100"], settings.data_dir), 6)
    m = _metrics()
    replay = Replay(settings, plans, speed=10.0, duration_s=2.0, metrics=m)
    producer = FakeProducer(ack_delay_s=0.3)
    t0 = time.monotonic()
    sent = asyncio.run(replay.run(producer))
    elapsed = time.monotonic() - t0
    assert 100 <= sent <= 125
    assert replay.frames_lost == 0
    assert elapsed < 4.0
    assert _value(m, "ecg_replay_behind_seconds") < 0.5


def test_stop_does_not_wait_for_room_when_the_broker_never_answers(settings: Settings) -> None:
    plans = plan_streams(resolve_sources(["mitdb/100"], settings.data_dir), 2)
    replay = Replay(settings, plans, speed=0, max_in_flight=5, drain_timeout_s=0.3)
    producer = SilentProducer()

    async def run() -> int:
        task = asyncio.create_task(replay.run(producer))
        await asyncio.sleep(0.3)  # blocked: 5 frames in flight, none acknowledged
        assert producer.calls == 5
        replay.stop()
        return await asyncio.wait_for(task, 5)

    assert asyncio.run(run()) == 0
    assert replay.frames_lost >= 5
    assert "sent 0 frames (acknowledged)" in replay.summary()


# ------------------------------------------------------------------------------------ log rate limit
class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def limited() -> Any:
    """A client-library logger whose handler has a RateLimitFilter (3 per 10 s) on a fake clock."""
    clock = _Clock()
    logger = logging.getLogger("aiokafka.test_rate_limit")
    handler = _ListHandler()
    limiter = RateLimitFilter(3, 10.0, clock=clock)
    handler.addFilter(limiter)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield logger, handler, limiter, clock
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_rate_limit_lets_n_through_then_one_summary_line(limited: Any) -> None:
    logger, handler, limiter, clock = limited
    for i in range(50):  # 10 lines a second for 5 s, the port changing: one template
        logger.error("Unable connect to node with id %s: %s", i % 3, f"port {5000 + i}")
        clock.t += 0.1
    assert len(handler.lines) == 3
    assert limiter.suppressed_total == 47
    clock.t += 10.0
    logger.error("Unable connect to node with id %s: %s", 0, "port 5050")
    assert handler.lines[3].startswith("suppressed 47 similar lines in the last")
    assert "port 5049" in handler.lines[3]  # the last suppressed line
    assert handler.lines[4] == "Unable connect to node with id 0: port 5050"


def test_rate_limit_keys_on_template_and_level_and_masks_digits(limited: Any) -> None:
    logger, handler, _, _ = limited
    for i in range(5):
        logger.error(f"Topic partition {i} lost")  # f-strings differing in a number: one template
        logger.warning("Heartbeat failed")
        logger.error("Heartbeat failed")
    assert handler.lines.count("Heartbeat failed") == 6
    assert sum(line.startswith("Topic partition") for line in handler.lines) == 3


def test_rate_limit_flush_reports_what_was_suppressed(limited: Any) -> None:
    logger, handler, limiter, _ = limited
    for _ in range(7):
        logger.warning("Got error produce response")
    limiter.flush()
    assert handler.lines[-1].startswith("suppressed 4 similar lines")
    limiter.flush()  # nothing pending: no new line
    assert len(handler.lines) == 4


def test_rate_limit_leaves_other_loggers_alone_and_counts_a_record_once() -> None:
    clock = _Clock()
    limiter = RateLimitFilter(2, 10.0, clock=clock)
    own = logging.LogRecord("stream.pipeline", logging.ERROR, "", 0, "frame rejected", None, None)
    assert all(limiter.filter(own) for _ in range(10))
    rec = [
        logging.LogRecord("faust.transport", logging.ERROR, "", 0, "Rebalancing", None, None)
        for _ in range(3)
    ]
    # two handlers sharing the filter see each record: the verdict is per record, not per handler call
    verdicts = [(limiter.filter(r), limiter.filter(r)) for r in rec]
    assert verdicts == [(True, True), (True, True), (False, False)]


def test_install_rate_limit_adds_one_filter_per_handler() -> None:
    logger = logging.getLogger("test_install_rate_limit")
    handler = _ListHandler()
    logger.addHandler(handler)
    try:
        install_rate_limit(logger=logger)
        install_rate_limit(logger=logger)
        assert sum(isinstance(f, RateLimitFilter) for f in handler.filters) == 1
    finally:
        logger.removeHandler(handler)
