"""Integration fixtures: one embedded Tansu broker per test session (random port), fresh topics and consumer
group per test, worker subprocesses (``ecg-monitor worker``) that are always terminated in teardown."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stream.broker import LocalBroker, client_kwargs, ensure_topics_sync, free_port
from stream.settings import Settings, TopicNames
from stream.stack import scrape_metrics, spawn_cli, terminate, wait_for_metrics
from stream.testing import wait_until  # noqa: F401  (re-exported for the tests)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """The embedded broker, shared by every integration test of the session."""
    b = LocalBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log").start()
    try:
        yield b
    finally:
        b.stop()


def _have_chromium() -> bool:
    from stream.dashboard.browser import chromium_paths
    from stream.errors import ConfigError

    try:
        chromium_paths()
    except ConfigError:
        return False
    return True


#: The marks of a test that drives the live view in a real headless Chromium.
BROWSER_MARKS = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not _have_chromium(), reason="needs chromium and chromedriver"),
]


def fresh_settings(bootstrap: str, data_dir: Path, cache_dir: Path, prefix: str = "it") -> Settings:
    """Settings for ``bootstrap`` with topics and a consumer group of their own (``prefix`` + a random
    id), 4 partitions and ``cache_dir``; the topics are created."""
    uid = uuid.uuid4().hex[:8]
    topics = TopicNames(**{name: f"{prefix}.{uid}.{name}" for name in TopicNames.model_fields})
    s = Settings(
        kafka_bootstrap=bootstrap,
        data_dir=data_dir,
        consumer_group=f"{prefix}-{uid}",
        topics=topics,
        partitions=4,
        cache_dir=cache_dir,
    )
    ensure_topics_sync(s)
    return s


@pytest.fixture
def settings(broker: LocalBroker, data_dir: Path, tmp_path: Path) -> Settings:
    """Settings pointing at the session broker, with this test's own topics, consumer group and a cache
    directory that does not exist yet (as on a fresh clone)."""
    return fresh_settings(broker.bootstrap, data_dir, tmp_path / "fresh" / "cache")


def settings_env(s: Settings) -> dict[str, str]:
    """Environment that makes a child process build the same Settings."""
    env = {
        **os.environ,
        "ECG_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "ECG_DATA_DIR": str(s.data_dir),
        "ECG_CONSUMER_GROUP": s.consumer_group,
        "ECG_PARTITIONS": str(s.partitions),
        "ECG_BIND_HOST": s.bind_host,
        "ECG_MAX_FRAME_BYTES": str(s.max_frame_bytes),
        "ECG_MIN_FS": str(s.min_fs),
        "ECG_MAX_FS": str(s.max_fs),
        "ECG_CACHE_DIR": str(s.cache_dir),
    }
    for name in TopicNames.model_fields:
        env[f"ECG_TOPIC_{name.upper()}"] = getattr(s.topics, name)
    return env


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def metrics(self) -> dict[str, float]:
        return scrape_metrics("127.0.0.1", self.port)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class WorkerFactory:
    settings: Settings
    tmp: Path
    started: list[Worker] = field(default_factory=list)

    def start(self) -> Worker:
        """Start ``ecg-monitor worker`` and wait for its /metrics endpoint."""
        port = free_port()
        log = self.tmp / f"worker-{len(self.started)}.log"
        proc = spawn_cli(
            ["worker", "--embedded", "--metrics-port", str(port)], settings_env(self.settings), log
        )
        w = Worker(proc, port, log)
        self.started.append(w)
        try:
            wait_for_metrics("127.0.0.1", port, timeout_s=60, proc=proc)
        except (TimeoutError, RuntimeError) as exc:
            raise AssertionError(f"worker did not start: {exc}\n{w.log_tail()}") from exc
        return w


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[WorkerFactory]:
    factory = WorkerFactory(settings, tmp_path)
    try:
        yield factory
    finally:
        for w in factory.started:
            terminate(w.proc, timeout_s=15)


def consume(
    settings: Settings,
    topic: str,
    *,
    until: Callable[[list[bytes]], bool] | None = None,
    timeout_s: float = 60.0,
    idle_s: float = 2.0,
) -> list[bytes]:
    """Values of ``topic`` from the beginning: until ``until(values)`` holds (or timeout), or, without
    ``until``, until nothing new arrived for ``idle_s``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> list[bytes]:
        consumer = AIOKafkaConsumer(
            **client_kwargs(settings), enable_auto_commit=False, fetch_max_wait_ms=50
        )
        await consumer.start()
        values: list[bytes] = []
        try:
            tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            deadline = time.monotonic() + timeout_s
            last = time.monotonic()
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for msgs in batch.values():
                    values += [m.value for m in msgs]
                if batch:
                    last = time.monotonic()
                if until is not None and until(values):
                    break
                if until is None and time.monotonic() - last > idle_s:
                    break
            return values
        finally:
            await consumer.stop()

    return asyncio.run(run())


def produce(settings: Settings, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    """Publish (key, value) pairs in order and wait until they are acknowledged."""
    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        producer = AIOKafkaProducer(**client_kwargs(settings))
        await producer.start()
        try:
            for key, value in messages:
                await producer.send_and_wait(topic, value=value, key=key)
        finally:
            await producer.stop()

    asyncio.run(run())
