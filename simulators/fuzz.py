"""Hostile telemetry: malformed messages of many kinds, for ``ecg-monitor fuzz`` and the tests.

:func:`hostile_messages` builds, from one good frame, messages that the worker must reject with a reason:
broken encodings and JSON, wrong types, absurd values, wrong shapes, decompression-free bombs (deep
nesting, oversized), unknown leads, forged-looking numbers. Each kind says which dead-letter reason the
worker gives it. The fuzz run (:func:`run_fuzz`) interleaves them with good real-time frames of other
streams on a running stack and checks that the worker survives, that every hostile message reaches the
dead-letter topic with its reason, that the counter equals the topic, and that the good streams keep their
latency.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import typer

from stream.schemas import encode_frame


@dataclass(frozen=True)
class HostileKind:
    """One kind of malformed message: its name, the reason the worker must give, and its builder from a
    good message's JSON object (or raw bytes for non-JSON kinds)."""

    name: str
    reason: str
    build: Callable[[dict[str, Any], np.random.Generator], bytes]


def _set(key: str, value: Any) -> Callable[[dict[str, Any], np.random.Generator], bytes]:
    def build(good: dict[str, Any], rng: np.random.Generator) -> bytes:
        msg = dict(good)
        msg[key] = value
        return json.dumps(msg, separators=(",", ":")).encode()

    return build


def _drop(key: str) -> Callable[[dict[str, Any], np.random.Generator], bytes]:
    def build(good: dict[str, Any], rng: np.random.Generator) -> bytes:
        return json.dumps({k: v for k, v in good.items() if k != key}).encode()

    return build


def _raw(data: bytes) -> Callable[[dict[str, Any], np.random.Generator], bytes]:
    return lambda good, rng: data


def _random_bytes(good: dict[str, Any], rng: np.random.Generator) -> bytes:
    return b"\xff" + rng.integers(0, 256, int(rng.integers(1, 2048)), dtype=np.uint8).tobytes()


def _truncated(good: dict[str, Any], rng: np.random.Generator) -> bytes:
    full = json.dumps(good).encode()
    return full[: int(rng.integers(1, len(full) - 1))]


def _samples(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _f32(values: np.ndarray) -> str:
    return _samples(np.asarray(values, dtype="<f4").tobytes())


def _with(**changes: Any) -> Callable[[dict[str, Any], np.random.Generator], bytes]:
    def build(good: dict[str, Any], rng: np.random.Generator) -> bytes:
        msg = {**good, **changes}
        return json.dumps(msg, separators=(",", ":")).encode()

    return build


def _short_samples(good: dict[str, Any], rng: np.random.Generator) -> bytes:
    raw = base64.b64decode(good["samples"])
    return _set("samples", _samples(raw[: len(raw) // 2]))(good, rng)


def _long_samples(good: dict[str, Any], rng: np.random.Generator) -> bytes:
    raw = base64.b64decode(good["samples"])
    return _set("samples", _samples(raw + raw[:64]))(good, rng)


def _all_missing_i16(good: dict[str, Any], rng: np.random.Generator) -> bytes:
    n = good["n_samples"] * len(good["leads"])
    return _set("samples", _samples(np.full(n, -32768, dtype="<i2").tobytes()))(good, rng)


def _all_nan_f32(good: dict[str, Any], rng: np.random.Generator) -> bytes:
    n = good["n_samples"] * len(good["leads"])
    return _with(encoding="f32le", gain=None, samples=_f32(np.full(n, np.nan)))(good, rng)


def _all_inf_f32(good: dict[str, Any], rng: np.random.Generator) -> bytes:
    n = good["n_samples"] * len(good["leads"])
    return _with(encoding="f32le", gain=None, samples=_f32(np.full(n, np.inf)))(good, rng)


def _oversized(good: dict[str, Any], rng: np.random.Generator) -> bytes:
    return _set("record", "x" * 1_100_000)(good, rng)


def _lead_count_mismatch(good: dict[str, Any], rng: np.random.Generator) -> bytes:
    return _with(leads=[*good["leads"], "V1"], units=[*good["units"], "mV"])(good, rng)


def _nested(depth: int, opener: bytes, closer: bytes) -> Callable[..., bytes]:
    return _raw(opener * depth + closer * depth)


#: Every hostile kind (at least 50), with the dead-letter reason the worker gives it.
KINDS: tuple[HostileKind, ...] = (
    HostileKind("random_bytes", "bad_json", _random_bytes),
    HostileKind("empty", "bad_json", _raw(b"")),
    HostileKind("whitespace", "bad_json", _raw(b"   \n\t ")),
    HostileKind("truncated_json", "bad_json", _truncated),
    HostileKind("json_array", "bad_json", _raw(b"[1,2,3]")),
    HostileKind("json_number", "bad_json", _raw(b"42")),
    HostileKind("json_string", "bad_json", _raw(b'"frame"')),
    HostileKind("json_null", "bad_json", _raw(b"null")),
    HostileKind("nested_arrays", "bad_json", _nested(100_000, b"[", b"]")),
    HostileKind("nested_objects", "bad_json", _raw(b'{"a":' * 50_000 + b"1" + b"}" * 50_000)),
    HostileKind("invalid_utf8", "bad_json", _raw(b'{"v":1,"stream_id":"\xc3\x28"}')),
    HostileKind("utf16", "bad_json", _raw('{"v": 1}'.encode("utf-16"))),
    HostileKind("nul_bytes", "bad_json", _raw(b"\x00" * 64)),
    HostileKind("oversized", "oversized", _oversized),
    HostileKind("v_missing", "schema_version", _drop("v")),
    HostileKind("v_2", "schema_version", _set("v", 2)),
    HostileKind("v_string", "schema_version", _set("v", "1")),
    HostileKind("v_null", "schema_version", _set("v", None)),
    HostileKind("stream_id_missing", "bad_shape", _drop("stream_id")),
    HostileKind("stream_id_int", "bad_shape", _set("stream_id", 7)),
    HostileKind("stream_id_empty", "bad_value", _set("stream_id", "")),
    HostileKind("stream_id_blank", "bad_value", _set("stream_id", "   ")),
    HostileKind("stream_id_long", "bad_value", _set("stream_id", "p" * 10_000)),
    HostileKind("seq_missing", "bad_shape", _drop("seq")),
    HostileKind("seq_negative", "bad_value", _set("seq", -1)),
    HostileKind("seq_float", "bad_shape", _set("seq", 1.5)),
    HostileKind("seq_string", "bad_shape", _set("seq", "seven")),
    HostileKind("seq_huge", "bad_value", _set("seq", 10**30)),
    HostileKind("seq_enormous", "bad_value", _set("seq", 10**400)),
    HostileKind("fs_missing", "bad_shape", _drop("fs")),
    HostileKind("fs_zero", "sampling_rate", _set("fs", 0.0)),
    HostileKind("fs_negative", "sampling_rate", _set("fs", -360.0)),
    HostileKind("fs_nan", "sampling_rate", _set("fs", float("nan"))),
    HostileKind("fs_inf", "sampling_rate", _set("fs", float("inf"))),
    HostileKind("fs_huge", "sampling_rate", _set("fs", 1e9)),
    HostileKind("fs_tiny", "sampling_rate", _set("fs", 5.0)),
    HostileKind("fs_string", "bad_shape", _set("fs", "fast")),
    HostileKind("leads_missing", "bad_shape", _drop("leads")),
    HostileKind("leads_empty", "bad_shape", _set("leads", [])),
    HostileKind("leads_duplicate", "bad_shape", _set("leads", ["MLII", "MLII"])),
    HostileKind("leads_not_list", "bad_shape", _set("leads", "MLII")),
    HostileKind("lead_unknown", "unknown_lead", _set("leads", ["MLII", "V9"])),
    HostileKind("lead_hostile_name", "unknown_lead", _set("leads", ["MLII", "<script>" * 50])),
    HostileKind("leads_count_mismatch", "bad_shape", _lead_count_mismatch),
    HostileKind("start_missing", "bad_shape", _drop("start_time")),
    HostileKind("start_naive", "bad_value", _set("start_time", "2026-01-01T00:00:00")),
    HostileKind("start_garbage", "bad_value", _set("start_time", "yesterday")),
    HostileKind("start_int", "bad_shape", _set("start_time", 1767225600)),
    HostileKind("n_samples_missing", "bad_shape", _drop("n_samples")),
    HostileKind("n_samples_zero", "bad_shape", _set("n_samples", 0)),
    HostileKind("n_samples_huge", "bad_shape", _set("n_samples", 10**12)),
    HostileKind("samples_missing", "bad_shape", _drop("samples")),
    HostileKind("samples_not_base64", "bad_json", _set("samples", "!!!not base64!!!")),
    HostileKind("samples_short", "bad_shape", _short_samples),
    HostileKind("samples_long", "bad_shape", _long_samples),
    HostileKind("samples_all_missing", "nan_only", _all_missing_i16),
    HostileKind("samples_all_nan_f32", "nan_only", _all_nan_f32),
    HostileKind("samples_all_inf_f32", "nan_only", _all_inf_f32),
    HostileKind("encoding_unknown", "bad_value", _set("encoding", "gzip")),
    HostileKind("gain_zero", "bad_value", _set("gain", [0.0, 0.0])),
    HostileKind("gain_negative", "bad_value", _set("gain", [-200.0, 200.0])),
    HostileKind("gain_wrong_count", "bad_value", _set("gain", [200.0])),
    HostileKind("gain_nan", "bad_value", _set("gain", [float("nan"), 200.0])),
    HostileKind("units_mismatch", "bad_shape", _set("units", ["mV"])),
    HostileKind("sent_at_string", "bad_shape", _set("sent_at", "now")),
)


def good_message(stream_id: str, seq: int, start_time: float, fs: float = 360.0) -> bytes:
    """A valid 1 s, 2-lead frame (a sine in mV) as the replay would send it."""
    t = np.arange(int(fs)) / fs
    x = np.stack([np.sin(2 * np.pi * t), 0.5 * np.cos(2 * np.pi * t)], axis=1).astype(np.float32)
    return encode_frame(
        stream_id=stream_id, seq=seq, fs=fs, leads=("MLII", "V5"), start_time=start_time, samples=x
    )


def hostile_messages(
    n: int, seed: int = 0, good: bytes | None = None, oversized_max: int = 5
) -> list[tuple[str, str, bytes]]:
    """``n`` hostile messages ``(kind, expected reason, value)`` cycling through :data:`KINDS` in a
    shuffled order (at most ``oversized_max`` of the ~1 MB ``oversized`` kind, to bound memory)."""
    rng = np.random.default_rng(seed)
    base = json.loads(good or good_message("fuzz-base", 0, 1_767_225_600.0))
    out: list[tuple[str, str, bytes]] = []
    oversized = 0
    i = 0
    while len(out) < n:
        kind = KINDS[i % len(KINDS)]
        i += 1
        if kind.name == "oversized":
            if oversized >= oversized_max:
                continue
            oversized += 1
        out.append((kind.name, kind.reason, kind.build(base, rng)))
    order = rng.permutation(len(out))
    return [out[j] for j in order]


# ---------------------------------------------------------------------------------------------- the run
@dataclass
class FuzzReport:
    """What a fuzz run measured (see :func:`run_fuzz`)."""

    hostile_sent: int
    kinds: int
    good_sent: int
    good_processed: int
    dead_letters: int
    hostile_dead_lettered: int
    wrong_reason: int
    rejected_counter: float
    dead_letters_acknowledged: float
    worker_alive: bool
    worker_tracebacks: int
    good_p50_s: float | None
    good_p99_s: float | None
    seconds: float
    worker_rss_start_mb: float | None = None
    worker_rss_end_mb: float | None = None

    @property
    def ok(self) -> bool:
        """Every acceptance check of the fuzz run."""
        return (
            self.worker_alive
            and self.worker_tracebacks == 0
            and self.hostile_dead_lettered == self.hostile_sent
            and self.wrong_reason == 0
            and self.rejected_counter == self.dead_letters == self.dead_letters_acknowledged
            and self.good_processed == self.good_sent
            and self.good_p99_s is not None
            and self.good_p99_s < 1.0
        )

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "ok": self.ok}


async def _produce(
    settings: Any,
    bootstrap: str,
    hostile: list[tuple[str, str, bytes]],
    prefix: str,
    streams: int,
    seconds: int,
    seed: int,
) -> tuple[set[tuple[str, int]], dict[str, tuple[str, str]], Counter[str]]:
    """Send ``streams`` good real-time streams for ``seconds`` with the hostile messages spread over the
    same time; returns the good (stream, seq) sent, ``sha256 -> (kind, reason)`` of the hostile ones and
    how many were sent per sha256."""
    import asyncio
    import hashlib
    import time

    from aiokafka import AIOKafkaProducer

    from stream.broker import client_kwargs

    rng = np.random.default_rng(seed)
    topic = settings.topics.telemetry
    producer = AIOKafkaProducer(
        **client_kwargs(settings, bootstrap), max_request_size=4 << 20, linger_ms=5
    )
    await producer.start()
    good: set[tuple[str, int]] = set()
    truth: dict[str, tuple[str, str]] = {}
    sent: Counter[str] = Counter()
    goods = [f"{prefix}good-{i:03d}" for i in range(streams)]
    per_tick = int(np.ceil(len(hostile) / seconds))
    t0 = time.time()
    try:
        for tick in range(seconds):
            futures = []
            for sid in goods:
                value = good_message(sid, tick, t0 + tick)
                msg = json.loads(value)
                msg["sent_at"] = time.time()
                futures.append(
                    await producer.send(topic, json.dumps(msg).encode(), key=sid.encode())
                )
                good.add((sid, tick))
            batch = hostile[tick * per_tick : (tick + 1) * per_tick]
            for kind, reason, value in batch:
                # a third on the good streams' keys (same partitions), the rest on hostile stream ids
                key = (
                    goods[int(rng.integers(len(goods)))]
                    if rng.random() < 1 / 3
                    else f"{prefix}h-{int(rng.integers(1000)):03d}"
                )
                sha = hashlib.sha256(value).hexdigest()
                truth[sha] = (kind, reason)
                sent[sha] += 1
                futures.append(await producer.send(topic, value, key=key.encode()))
            await asyncio.gather(*futures)
            await asyncio.sleep(max(0.0, t0 + tick + 1 - time.time()))
    finally:
        await producer.stop()
    return good, truth, sent


async def _collect(
    settings: Any,
    bootstrap: str,
    prefix: str,
    good: set[tuple[str, int]],
    n_hostile: int,
    timeout_s: float,
) -> tuple[dict[tuple[str, int], float | None], list[Any]]:
    """Receipts of the good frames (latency per (stream, seq)) and this run's dead-letter records."""
    import asyncio
    import time

    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream.broker import client_kwargs
    from stream.schemas import BeatBatchMessage, DeadLetterMessage

    consumer = AIOKafkaConsumer(
        **client_kwargs(settings, bootstrap),
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    receipts: dict[tuple[str, int], float | None] = {}
    dead: list[Any] = []
    try:
        tps = [
            TopicPartition(t, p)
            for t in (settings.topics.beats, settings.topics.dead_letter)
            for p in range(settings.partitions)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (len(receipts) < len(good) or len(dead) < n_hostile):
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in batches.items():
                for r in records:
                    if not (r.key or b"").decode("utf-8", "replace").startswith(prefix):
                        continue
                    if tp.topic == settings.topics.beats:
                        b = BeatBatchMessage.from_bytes(r.value)
                        receipts[(b.stream_id, b.seq)] = b.latency_s
                    else:
                        dead.append(DeadLetterMessage.from_bytes(r.value))
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return receipts, dead


async def _probe(settings: Any, bootstrap: str, prefix: str, timeout_s: float = 60.0) -> None:
    """Send one good frame and wait for its receipt: the worker has joined and consumes."""
    import time

    from aiokafka import AIOKafkaProducer

    from stream.broker import client_kwargs

    producer = AIOKafkaProducer(**client_kwargs(settings, bootstrap))
    await producer.start()
    sid = f"{prefix}probe"
    try:
        await producer.send_and_wait(
            settings.topics.telemetry, good_message(sid, 0, time.time()), key=sid.encode()
        )
    finally:
        await producer.stop()
    receipts, _ = await _collect(settings, bootstrap, prefix, {(sid, 0)}, 0, timeout_s)
    if (sid, 0) not in receipts:
        raise TimeoutError(f"the worker processed no probe frame in {timeout_s:.0f} s")


def run_fuzz(
    n_hostile: int = 10_000,
    streams: int = 20,
    seconds: int = 60,
    seed: int = 0,
    log_dir: Any = None,
    metrics_port: int = 0,
    models: str | None = "none",
) -> FuzzReport:
    """Start the local stack (embedded broker unless ``ECG_KAFKA_BOOTSTRAP``, one worker), send
    ``n_hostile`` hostile messages interleaved with ``streams`` good real-time streams for ``seconds``, and
    check what the worker did with them (:class:`FuzzReport`)."""
    import asyncio
    import tempfile
    import time
    import uuid
    from pathlib import Path

    from stream.bench import rss_mb
    from stream.broker import free_port
    from stream.settings import Settings
    from stream.stack import local_stack, scrape_metrics, wait_for_metrics

    settings = Settings()
    logs = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="ecg-fuzz-"))
    port = metrics_port or free_port()
    prefix = f"fuzz-{uuid.uuid4().hex[:6]}-"
    hostile = hostile_messages(n_hostile, seed)
    started = time.monotonic()
    with local_stack(
        settings, log_dir=logs, metrics_port=port, replay=False, workers=1, models=models
    ) as stack:
        worker = stack["procs"]["worker"]
        wait_for_metrics("127.0.0.1", port, proc=worker)
        asyncio.run(_probe(settings, stack["bootstrap"], prefix))  # the worker consumes: start
        rss_start = rss_mb(worker.pid)
        good, truth, sent = asyncio.run(
            _produce(settings, stack["bootstrap"], hostile, prefix, streams, seconds, seed)
        )
        receipts, dead = asyncio.run(
            _collect(settings, stack["bootstrap"], prefix, good, len(hostile), timeout_s=120)
        )
        time.sleep(1.0)
        metrics = scrape_metrics("127.0.0.1", port)
        alive = worker.poll() is None
        rss_end = rss_mb(worker.pid)
        log_text = stack["logs"]["worker"].read_text(errors="replace")
    matched = [truth.get(d.payload_sha256) for d in dead]
    latencies = [v for k, v in receipts.items() if k in good and v is not None]
    return FuzzReport(
        hostile_sent=len(hostile),
        kinds=len({k for k, _, _ in hostile}),
        good_sent=len(good),
        good_processed=len(good & set(receipts)),
        dead_letters=len(dead),
        hostile_dead_lettered=sum(
            min(n, Counter(d.payload_sha256 for d in dead)[sha]) for sha, n in sent.items()
        ),
        wrong_reason=sum(
            1 for d, m in zip(dead, matched, strict=True) if m is not None and m[1] != d.reason
        ),
        rejected_counter=metrics.get("ecg_frames_rejected_total", -1.0),
        dead_letters_acknowledged=metrics.get(
            'ecg_output_messages_total{topic="dead_letter"}', -1.0
        ),
        worker_alive=alive,
        worker_tracebacks=log_text.count("Traceback"),
        good_p50_s=float(np.percentile(latencies, 50)) if latencies else None,
        good_p99_s=float(np.percentile(latencies, 99)) if latencies else None,
        seconds=time.monotonic() - started,
        worker_rss_start_mb=rss_start,
        worker_rss_end_mb=rss_end,
    )


def fuzz_command(
    messages: Annotated[int, typer.Option(min=1, help="Hostile messages to send.")] = 10_000,
    streams: Annotated[int, typer.Option(min=1, help="Good real-time streams beside them.")] = 20,
    seconds: Annotated[int, typer.Option(min=1, help="Duration of the send.")] = 60,
    seed: Annotated[int, typer.Option(help="Seed of the hostile messages.")] = 0,
    models: Annotated[str, typer.Option(help="Worker --models ('none' or card names).")] = "none",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Send MESSAGES hostile telemetry messages (65 kinds) interleaved with STREAMS good real-time
    streams to a local stack; check the worker survives, dead-letters each with its reason (counter ==
    topic), processes every good frame, and keeps their p99 latency under 1 s. Exit 1 if a check fails."""
    if not as_json:
        typer.echo(
            f"fuzz: {messages} hostile messages ({len(KINDS)} kinds) + {streams} good streams for "
            f"{seconds} s on a local stack (worker models: {models})"
        )
    report = run_fuzz(messages, streams, seconds, seed, models=None if models == "" else models)
    out = report.to_dict()
    if as_json:
        typer.echo(json.dumps(out))
    else:
        for k, v in out.items():
            typer.echo(f"  {k:28s} {v}")
    if not report.ok:
        if not as_json:
            typer.echo("fuzz: FAILED (see the figures above)", err=True)
        raise typer.Exit(1)
