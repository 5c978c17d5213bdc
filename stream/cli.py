"""``ecg-monitor``: the command line of the online service (typer; ``--help`` on every command)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from stream.errors import EcgMonitorError
from stream.settings import Settings

app = typer.Typer(
    name="ecg-monitor",
    no_args_is_help=True,
    add_completion=False,
    help="Real-time ECG monitoring on Kafka: replay WFDB telemetry, detect beats/dropouts, raise alerts.",
)
console = Console(stderr=True)
out = Console()

BootstrapOpt = Annotated[
    str | None,
    typer.Option(
        help="Kafka bootstrap servers (default ECG_KAFKA_BOOTSTRAP; empty = embedded local broker where applicable)."
    ),
]


#: Models the worker scores with by default (committed artifacts in models/artifacts).
DEFAULT_MODELS = "cae,beat_vae,vae_bilstm_mha"


def _models_opt(models: str) -> tuple[str, ...]:
    return (
        ()
        if models.strip().lower() in ("", "none")
        else tuple(m.strip() for m in models.split(",") if m.strip())
    )


def _settings() -> Settings:
    return Settings()


def _need_bootstrap(settings: Settings, bootstrap: str | None) -> str:
    bs = bootstrap or settings.kafka_bootstrap
    if not bs:
        raise typer.BadParameter(
            "no broker: pass --bootstrap or set ECG_KAFKA_BOOTSTRAP (or use `ecg-monitor up`)"
        )
    return bs


def _records_opt(records: list[str] | None) -> list[str]:
    from simulators.replay import DEFAULT_RECORDS

    items = [r for spec in (records or []) for r in spec.split(",") if r.strip()]
    return items or list(DEFAULT_RECORDS)


# ------------------------------------------------------------------------------------------------ worker
@app.command()
def worker(
    bootstrap: BootstrapOpt = None,
    embedded: Annotated[
        bool | None,
        typer.Option(
            "--embedded/--cluster",
            help="Apply the embedded-broker group timeouts (default: when no bootstrap is set).",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Port of /metrics (default ECG_METRICS_PORT).")
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Faust/worker log level.")] = "warning",
    models: Annotated[
        str,
        typer.Option(
            help="ONNX models scoring the stream (comma-separated: cae, beat_vae, and any of the 12-lead models cae12, vae_bilstm, vae_bilstm_mha), or 'none'."
        ),
    ] = DEFAULT_MODELS,
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
        run_worker(
            settings,
            bootstrap=bs,
            embedded_broker=embedded if embedded is not None else broker is not None,
            loglevel=loglevel,
            metrics_port=metrics_port,
            models=_models_opt(models),
        )
    finally:
        if broker is not None:
            broker.stop()


# ------------------------------------------------------------------------------------------------ replay
@app.command()
def replay(
    records: Annotated[
        list[str] | None,
        typer.Option(
            "--records",
            "-r",
            help="WFDB records or database dirs, relative to ECG_DATA_DIR (repeat or comma-separate), "
            "e.g. mitdb/100, mitdb, ludb/data, ptbxl/records100/00000.",
        ),
    ] = None,
    patients: Annotated[
        int, typer.Option(min=1, help="Concurrent patient streams (records are reused at offsets).")
    ] = 6,
    speed: Annotated[
        float, typer.Option(min=0, help="1 = real time, K = K x faster, 0 = as fast as possible.")
    ] = 1.0,
    loop: Annotated[bool, typer.Option(help="Restart each record at its end.")] = False,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many wall-clock seconds.")
    ] = None,
    faults: Annotated[
        str, typer.Option(help="none | demo (flatline, lead-off, lost frames per stream) | random.")
    ] = "none",
    fault_rate: Annotated[
        float, typer.Option(help="Faults per minute per stream with --faults random.")
    ] = 1.0,
    encoding: Annotated[str, typer.Option(help="Sample encoding: i16le or f32le.")] = "i16le",
    prefix: Annotated[str, typer.Option(help="Stream id prefix.")] = "patient",
    seed: Annotated[int, typer.Option(help="Random seed of --faults random.")] = 0,
    bootstrap: BootstrapOpt = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Port of the replay's /metrics (default ECG_METRICS_PORT + 1; -1 disables)."
        ),
    ] = None,
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
        fault_fn = demo_faults
    elif faults == "random":
        from simulators.faults import FAULT_KINDS, random_faults

        horizon = duration * max(speed, 1.0) if duration else 600.0

        def fault_fn(i: int, sid: str, leads: tuple[str, ...]) -> list[Any]:
            return list(random_faults(horizon, leads, fault_rate, FAULT_KINDS, rng))
    elif faults != "none":
        raise typer.BadParameter(f"--faults must be none, demo or random, not {faults!r}")
    plans = plan_streams(sources, patients, faults=fault_fn, prefix=prefix)
    metrics = ReplayMetrics()
    port = settings.metrics_port + 1 if metrics_port is None else metrics_port
    server = serve_metrics(metrics.registry, settings.bind_host, port) if port >= 0 else None
    console.print(
        f"replaying {patients} stream(s) from {len(sources)} record(s) at "
        f"{'max' if speed == 0 else f'{speed:g}x'} speed to {bs}"
    )
    loop_ = asyncio.new_event_loop()
    task = loop_.create_task(
        replay_to_kafka(
            settings,
            plans,
            bs,
            speed=speed,
            loop=loop,
            duration_s=duration,
            encoding=encoding,
            metrics=metrics,
            rng=rng,
        )
    )
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
async def _consume(
    settings: Settings, bootstrap: str, topic: str, follow: bool, idle_s: float = 3.0
) -> Any:
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
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", "-f", help="Keep waiting for new alerts.")
    ] = False,
    idle: Annotated[
        float, typer.Option(help="Without --follow, exit after this many idle seconds.")
    ] = 3.0,
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
@app.command()
def up(
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")
    ] = None,
    patients: Annotated[int, typer.Option(min=1, help="Concurrent patient streams.")] = 6,
    speed: Annotated[float, typer.Option(min=0, help="Replay speed (1 = real time).")] = 1.0,
    records: Annotated[
        list[str] | None, typer.Option("--records", "-r", help="Records/databases to replay.")
    ] = None,
    faults: Annotated[str, typer.Option(help="none | demo | random.")] = "demo",
    log_dir: Annotated[
        Path | None, typer.Option(help="Where broker/worker/replay logs go.")
    ] = None,
) -> None:
    """Main job: embedded broker (unless ECG_KAFKA_BOOTSTRAP), worker, /metrics and a replay of MIT-BIH records
    with injected faults; prints alerts as they arrive. Ctrl-C (or --duration) stops everything."""
    from stream.schemas import AlertMessage
    from stream.stack import local_stack, scrape_metrics

    settings = _settings()
    log_dir = log_dir or Path(settings.cache_dir) / "logs"

    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the stack as cleanly as Ctrl-C
    signal.signal(
        signal.SIGINT, _interrupt
    )  # also when started with SIGINT ignored (background jobs)
    recs = _records_opt(records)
    t_start = time.monotonic()
    with local_stack(
        settings,
        patients=patients,
        speed=speed,
        records=recs,
        faults=faults,
        loop=True,
        duration=None,
        log_dir=log_dir,
        metrics_port=settings.metrics_port,
    ) as stack:
        bs = stack["bootstrap"]
        console.print(
            f"[bold green]ecg-monitor up[/]: broker {bs} "
            f"({'embedded' if stack['broker'] else 'cluster'}), {patients} patients from "
            f"{', '.join(recs)} at {speed:g}x, faults={faults}"
        )
        console.print(
            f"metrics: http://{settings.bind_host}:{settings.metrics_port}/metrics   logs: {log_dir}"
        )
        seen: set[tuple[str, str]] = set()

        async def watch() -> None:
            last_summary = time.monotonic()
            queue: asyncio.Queue[bytes] = asyncio.Queue()

            async def pump() -> None:
                async for v in _consume(settings, bs, settings.topics.alerts, follow=True):
                    queue.put_nowait(v)

            pump_task = asyncio.create_task(pump())
            try:
                await _watch_loop(queue, pump_task, last_summary)
            finally:
                pump_task.cancel()

        async def _watch_loop(
            queue: asyncio.Queue[bytes], pump_task: asyncio.Task[None], last_summary: float
        ) -> None:
            while True:
                if duration is not None and time.monotonic() - t_start > duration:
                    return
                for name in ("worker", "replay"):
                    proc = stack["procs"][name]
                    if proc is not None and proc.poll() not in (None, 0):
                        raise EcgMonitorError(
                            f"{name} exited with {proc.returncode}; see {log_dir}/{name}.log"
                        )
                if pump_task.done() and pump_task.exception() is not None:
                    raise EcgMonitorError(f"alerts consumer failed: {pump_task.exception()}")
                try:
                    value: bytes | None = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    value = None
                if value is not None:
                    msg = AlertMessage.from_bytes(value)
                    if (msg.id, msg.status) not in seen:
                        seen.add((msg.id, msg.status))
                        colour = {"critical": "bold red", "warning": "yellow"}.get(
                            msg.severity, "cyan"
                        )
                        when = msg.start[11:19] + "Z"
                        out.print(
                            f"[{colour}]{msg.severity.upper():8}[/] [bold]{msg.kind:11}[/] {msg.status:8} "
                            f"{msg.stream_id} ({msg.record}) from {when}  {json.dumps(msg.evidence)}",
                            soft_wrap=True,
                            highlight=False,
                        )
                if time.monotonic() - last_summary > 15:
                    last_summary = time.monotonic()
                    m = scrape_metrics(settings.bind_host, settings.metrics_port)
                    if m:
                        console.print(
                            f"[dim]frames {m.get('ecg_frames_received_total', 0):.0f}  "
                            f"beats {m.get('ecg_beats_detected_total', 0):.0f}  "
                            f"dropouts {m.get('ecg_dropouts_total', 0):.0f}  "
                            f"alerts {m.get('ecg_alerts_total', 0):.0f}  "
                            f"rejected {m.get('ecg_frames_rejected_total', 0):.0f}[/]"
                        )

        try:
            asyncio.run(watch())
        except KeyboardInterrupt:
            console.print("stopping...")
        n_alerts = sum(1 for _, status in seen if status == "raised")
        console.print(
            f"[bold]{n_alerts} alert(s) raised, {len(seen) - n_alerts} resolved in "
            f"{time.monotonic() - t_start:.0f} s[/]; stopping worker, replay and broker"
        )


# ------------------------------------------------------------------------------------------------ bench
@app.command()
def dashboard(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default ECG_BIND_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default ECG_DASHBOARD_PORT, 8050).")
    ] = None,
) -> None:
    """Serve the 12-lead anomaly dashboard: upload an ECG (.npy or WFDB .hea + .dat), pick a model, see the
    reconstruction, anomaly score, lead-wise attention and point-wise error of each lead."""
    from stream.dashboard.app import serve_dashboard

    settings = _settings()
    console.print(
        f"dashboard on [bold]http://{host or settings.bind_host}:{settings.dashboard_port if port is None else port}/[/]"
    )
    serve_dashboard(settings, host, port)


@app.command()
def bench(
    patients: Annotated[
        int, typer.Option(min=1, help="Concurrent patient streams (real-time replay).")
    ] = 500,
    runs: Annotated[int, typer.Option(min=1, help="Measurement runs; the median is reported.")] = 3,
    seconds: Annotated[float, typer.Option(help="Measured seconds per run.")] = 30.0,
    warmup: Annotated[float, typer.Option(help="Seconds before measuring in each run.")] = 10.0,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (one consumer group).")] = 1,
    models: Annotated[
        str, typer.Option(help="ONNX models the workers score with, or 'none'.")
    ] = DEFAULT_MODELS,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Throughput and end-to-end latency of N real-time MIT-BIH patient streams through the pipeline."""
    from stream.bench import run_bench

    result = run_bench(
        _settings(),
        patients=patients,
        runs=runs,
        seconds=seconds,
        warmup=warmup,
        progress=not as_json,
        workers=workers,
        models=models,
    )
    if as_json:
        print(json.dumps(result))
    else:
        out.print_json(json.dumps(result))


def main() -> None:
    """Console entry point."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app()
    except EcgMonitorError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
