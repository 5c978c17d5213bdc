"""``ecg-monitor``: the command line of the online service (typer; ``--help`` on every command)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from stream.errors import EcgMonitorError
from stream.settings import Settings

app = typer.Typer(
    name="ecg-monitor", no_args_is_help=True, add_completion=False,
    help="Real-time ECG monitoring on Kafka: replay WFDB telemetry, detect beats/dropouts, raise alerts.",
)
console = Console(stderr=True)
out = Console()

BootstrapOpt = Annotated[str | None, typer.Option(
    help="Kafka bootstrap servers (default ECG_KAFKA_BOOTSTRAP; empty = embedded local broker where applicable).")]


def _settings() -> Settings:
    return Settings()


def _need_bootstrap(settings: Settings, bootstrap: str | None) -> str:
    bs = bootstrap or settings.kafka_bootstrap
    if not bs:
        raise typer.BadParameter("no broker: pass --bootstrap or set ECG_KAFKA_BOOTSTRAP (or use `ecg-monitor up`)")
    return bs


def _records_opt(records: list[str] | None) -> list[str]:
    from simulators.replay import DEFAULT_RECORDS

    items = [r for spec in (records or []) for r in spec.split(",") if r.strip()]
    return items or list(DEFAULT_RECORDS)


# ------------------------------------------------------------------------------------------------ worker
@app.command()
def worker(
    bootstrap: BootstrapOpt = None,
    embedded: Annotated[bool | None, typer.Option(
        "--embedded/--cluster", help="Apply the embedded-broker group timeouts (default: when no bootstrap is set).")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Port of /metrics (default ECG_METRICS_PORT).")] = None,
    loglevel: Annotated[str, typer.Option(help="Faust/worker log level.")] = "warning",
) -> None:
    """Run a stream worker: consume telemetry, detect beats/dropouts, publish alerts, serve /metrics.

    Without a bootstrap an embedded broker is started for this worker (and stopped with it).
    """
    from stream.app import run_worker
    from stream.broker import LocalBroker, ensure_topics_sync

    settings = _settings()
    bs = bootstrap or settings.kafka_bootstrap
    broker = None
    if not bs:
        broker = LocalBroker(port=settings.local_broker_port).start()
        bs = broker.bootstrap
        console.print(f"embedded broker on [bold]{bs}[/]")
        embedded = True
    try:
        ensure_topics_sync(settings, bs)
        run_worker(settings, bootstrap=bs, embedded_broker=embedded if embedded is not None else broker is not None,
                   loglevel=loglevel, metrics_port=metrics_port)
    finally:
        if broker is not None:
            broker.stop()


# ------------------------------------------------------------------------------------------------ replay
@app.command()
def replay(
    records: Annotated[list[str] | None, typer.Option(
        "--records", "-r", help="WFDB records or database dirs, relative to ECG_DATA_DIR (repeat or comma-separate), "
        "e.g. mitdb/100, mitdb, ludb/data, ptbxl/records100/00000.")] = None,
    patients: Annotated[int, typer.Option(min=1, help="Concurrent patient streams (records are reused at offsets).")] = 6,
    speed: Annotated[float, typer.Option(min=0, help="1 = real time, K = K x faster, 0 = as fast as possible.")] = 1.0,
    loop: Annotated[bool, typer.Option(help="Restart each record at its end.")] = False,
    duration: Annotated[float | None, typer.Option(help="Stop after this many wall-clock seconds.")] = None,
    faults: Annotated[str, typer.Option(help="none | demo (flatline, lead-off, lost frames per stream) | random.")] = "none",
    fault_rate: Annotated[float, typer.Option(help="Faults per minute per stream with --faults random.")] = 1.0,
    encoding: Annotated[str, typer.Option(help="Sample encoding: i16le or f32le.")] = "i16le",
    prefix: Annotated[str, typer.Option(help="Stream id prefix.")] = "patient",
    seed: Annotated[int, typer.Option(help="Random seed of --faults random.")] = 0,
    bootstrap: BootstrapOpt = None,
    metrics_port: Annotated[int | None, typer.Option(
        help="Port of the replay's /metrics (default ECG_METRICS_PORT + 1; -1 disables).")] = None,
) -> None:
    """Replay WFDB records as live telemetry (with optional fault injection and ground truth)."""
    import numpy as np

    from simulators.replay import demo_faults, plan_streams, replay_to_kafka, resolve_sources
    from stream.metrics import ReplayMetrics, serve_metrics

    settings = _settings()
    bs = _need_bootstrap(settings, bootstrap)
    sources = resolve_sources(_records_opt(records), settings.data_dir)
    rng = np.random.default_rng(seed)
    fault_fn: Any = None
    if faults == "demo":
        def fault_fn(i: int, sid: str, off: float) -> list[Any]:
            return demo_faults(i, sid, off)
    elif faults == "random":
        from simulators.faults import random_faults

        horizon = duration * max(speed, 1.0) if duration else 600.0

        def fault_fn(i: int, sid: str, off: float) -> list[Any]:
            kinds = ("flatline", "nan", "lead_off", "saturation", "lost_frames", "noise_bw", "noise_ma")
            return list(random_faults(horizon, ("MLII", "V1"), fault_rate, kinds, rng))
    elif faults != "none":
        raise typer.BadParameter(f"--faults must be none, demo or random, not {faults!r}")
    plans = plan_streams(sources, patients, faults=fault_fn, prefix=prefix)
    metrics = ReplayMetrics()
    port = settings.metrics_port + 1 if metrics_port is None else metrics_port
    server = serve_metrics(metrics.registry, settings.bind_host, port) if port >= 0 else None
    console.print(f"replaying {patients} stream(s) from {len(sources)} record(s) at "
                  f"{'max' if speed == 0 else f'{speed:g}x'} speed to {bs}")
    loop_ = asyncio.new_event_loop()
    task = loop_.create_task(replay_to_kafka(settings, plans, bs, speed=speed, loop=loop, duration_s=duration,
                                             encoding=encoding, metrics=metrics, rng=rng))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop_.add_signal_handler(sig, task.cancel)
    try:
        sent = loop_.run_until_complete(task)
        console.print(f"sent {sent} frames")
    except asyncio.CancelledError:
        console.print("replay stopped")
    finally:
        loop_.close()
        if server is not None:
            server.stop()


# ------------------------------------------------------------------------------------------------ alerts
async def _consume(settings: Settings, bootstrap: str, topic: str, follow: bool, idle_s: float = 3.0) -> Any:
    """Yield message values of ``topic`` from the beginning (all partitions, no consumer group)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream.broker import client_kwargs

    consumer = AIOKafkaConsumer(**client_kwargs(settings, bootstrap), enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        for _ in range(50):
            if parts:
                break
            await asyncio.sleep(0.1)
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        last = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            if batch:
                last = time.monotonic()
                for msgs in batch.values():
                    for m in msgs:
                        yield m.value
            elif not follow and time.monotonic() - last > idle_s:
                return
    finally:
        await consumer.stop()


@app.command()
def alerts(
    bootstrap: BootstrapOpt = None,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", "-f", help="Keep waiting for new alerts.")] = False,
    idle: Annotated[float, typer.Option(help="Without --follow, exit after this many idle seconds.")] = 3.0,
) -> None:
    """Print alerts as JSON lines (from the start of the alerts topic, de-duplicated by id and status)."""
    from stream.schemas import AlertMessage

    settings = _settings()
    bs = _need_bootstrap(settings, bootstrap)

    async def main() -> None:
        seen: set[tuple[str, str]] = set()
        async for value in _consume(settings, bs, settings.topics.alerts, follow, idle):
            msg = AlertMessage.from_bytes(value)
            if (msg.id, msg.status) in seen:
                continue
            seen.add((msg.id, msg.status))
            print(msg.model_dump_json(), flush=True)

    with suppress(KeyboardInterrupt):
        asyncio.run(main())


# ------------------------------------------------------------------------------------------------ up
def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen([sys.executable, "-m", "stream.cli", *args], env=env, stdout=log_file,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def _terminate(proc: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout_s)


@contextmanager
def local_stack(settings: Settings, *, patients: int, speed: float, records: list[str], faults: str,
                loop: bool, duration: float | None, log_dir: Path, metrics_port: int,
                replay: bool = True, prefix: str = "patient") -> Iterator[dict[str, Any]]:
    """Broker (unless a bootstrap is set) + worker subprocess (+ replay subprocess); all stopped on exit."""
    from stream.broker import LocalBroker, ensure_topics_sync

    log_dir.mkdir(parents=True, exist_ok=True)
    broker = None
    procs: dict[str, subprocess.Popen[bytes] | None] = {"worker": None, "replay": None}
    try:
        if settings.local_mode:
            broker = LocalBroker(port=settings.local_broker_port, log_path=log_dir / "broker.log").start()
            bs = broker.bootstrap
        else:
            bs = settings.kafka_bootstrap
        ensure_topics_sync(settings, bs)
        env = {**os.environ, "ECG_KAFKA_BOOTSTRAP": bs, "ECG_DATA_DIR": str(settings.data_dir)}
        mode = "--embedded" if broker is not None else "--cluster"
        procs["worker"] = _spawn(["worker", "--bootstrap", bs, mode, "--metrics-port", str(metrics_port)],
                                 env, log_dir / "worker.log")
        if replay:
            args = ["replay", "--bootstrap", bs, "--patients", str(patients), "--speed", str(speed),
                    "--faults", faults, "--records", ",".join(records), "--prefix", prefix,
                    "--metrics-port", str(metrics_port + 1)]
            if loop:
                args.append("--loop")
            if duration:
                args += ["--duration", str(duration)]
            procs["replay"] = _spawn(args, env, log_dir / "replay.log")
        yield {"bootstrap": bs, "procs": procs, "broker": broker}
    finally:
        _terminate(procs["replay"])
        _terminate(procs["worker"])
        if broker is not None:
            broker.stop()


def _scrape(host: str, port: int) -> dict[str, float]:
    """Sum of each sample name (labels collapsed) of a /metrics page; {} if unreachable."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=1) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    sums: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            sums[s.name] = sums.get(s.name, 0.0) + s.value
    return sums


@app.command()
def up(
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")] = None,
    patients: Annotated[int, typer.Option(min=1, help="Concurrent patient streams.")] = 6,
    speed: Annotated[float, typer.Option(min=0, help="Replay speed (1 = real time).")] = 1.0,
    records: Annotated[list[str] | None, typer.Option("--records", "-r", help="Records/databases to replay.")] = None,
    faults: Annotated[str, typer.Option(help="none | demo | random.")] = "demo",
    log_dir: Annotated[Path | None, typer.Option(help="Where broker/worker/replay logs go.")] = None,
) -> None:
    """Main job: embedded broker (unless ECG_KAFKA_BOOTSTRAP), worker, /metrics and a replay of MIT-BIH records
    with injected faults; prints alerts as they arrive. Ctrl-C (or --duration) stops everything."""
    from rich.table import Table

    from stream.schemas import AlertMessage

    settings = _settings()
    log_dir = log_dir or Path(settings.cache_dir) / "logs"
    recs = _records_opt(records)
    t_start = time.monotonic()
    with local_stack(settings, patients=patients, speed=speed, records=recs, faults=faults, loop=True,
                     duration=None, log_dir=log_dir, metrics_port=settings.metrics_port) as stack:
        bs = stack["bootstrap"]
        console.print(f"[bold green]ecg-monitor up[/]: broker {bs} "
                      f"({'embedded' if stack['broker'] else 'cluster'}), {patients} patients from "
                      f"{', '.join(recs)} at {speed:g}x, faults={faults}")
        console.print(f"metrics: http://{settings.bind_host}:{settings.metrics_port}/metrics   logs: {log_dir}")
        seen: set[tuple[str, str]] = set()

        async def watch() -> None:
            last_summary = time.monotonic()
            stream_iter = _consume(settings, bs, settings.topics.alerts, follow=True).__aiter__()
            while True:
                if duration is not None and time.monotonic() - t_start > duration:
                    return
                for name, proc in stack["procs"].items():
                    if proc is not None and proc.poll() is not None and name == "worker":
                        raise EcgMonitorError(f"worker exited with {proc.returncode}; see {log_dir}/worker.log")
                try:
                    value = await asyncio.wait_for(stream_iter.__anext__(), 1.0)
                except TimeoutError:
                    value = None
                if value is not None:
                    msg = AlertMessage.from_bytes(value)
                    if (msg.id, msg.status) not in seen:
                        seen.add((msg.id, msg.status))
                        colour = {"critical": "bold red", "warning": "yellow"}.get(msg.severity, "cyan")
                        table = Table.grid(padding=(0, 2))
                        table.add_row(f"[{colour}]{msg.severity.upper():8}[/]", f"[bold]{msg.kind:12}[/]",
                                      f"{msg.status:8}", msg.stream_id, msg.record, msg.start,
                                      json.dumps(msg.evidence)[:80])
                        out.print(table)
                if time.monotonic() - last_summary > 15:
                    last_summary = time.monotonic()
                    m = _scrape(settings.bind_host, settings.metrics_port)
                    if m:
                        console.print(
                            f"[dim]frames {m.get('ecg_frames_received_total', 0):.0f}  "
                            f"beats {m.get('ecg_beats_detected_total', 0):.0f}  "
                            f"dropouts {m.get('ecg_dropouts_total', 0):.0f}  "
                            f"alerts {m.get('ecg_alerts_total', 0):.0f}  "
                            f"rejected {m.get('ecg_frames_rejected_total', 0):.0f}[/]")

        try:
            asyncio.run(watch())
        except KeyboardInterrupt:
            console.print("stopping...")
        n_alerts = sum(1 for _, status in seen if status == "raised")
        console.print(f"[bold]{n_alerts} alert(s) raised, {len(seen) - n_alerts} resolved in "
                      f"{time.monotonic() - t_start:.0f} s[/]; stopping worker, replay and broker")


# ------------------------------------------------------------------------------------------------ bench
@app.command()
def bench(
    patients: Annotated[int, typer.Option(min=1, help="Concurrent patient streams (real-time replay).")] = 500,
    runs: Annotated[int, typer.Option(min=1, help="Measurement runs; the median is reported.")] = 3,
    seconds: Annotated[float, typer.Option(help="Measured seconds per run.")] = 30.0,
    warmup: Annotated[float, typer.Option(help="Seconds before measuring in each run.")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Throughput and end-to-end latency of N real-time MIT-BIH patient streams through the pipeline."""
    from stream.bench import run_bench

    result = run_bench(_settings(), patients=patients, runs=runs, seconds=seconds, warmup=warmup,
                       progress=not as_json)
    if as_json:
        print(json.dumps(result))
    else:
        out.print_json(json.dumps(result))


def main() -> None:
    """Console entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app()
    except EcgMonitorError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
