"""``ecg-monitor``: the command line of the online service (typer; ``--help`` on every command)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from contextlib import suppress
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from stream.cli_options import BootstrapOpt, need_bootstrap, records_opt
from stream.errors import ConfigError, EcgMonitorError
from stream.settings import Settings

app = typer.Typer(
    name="ecg-monitor",
    no_args_is_help=True,
    add_completion=False,
    help="Real-time ECG monitoring on Kafka: replay WFDB telemetry, detect beats/dropouts, raise alerts.",
)
console = Console(stderr=True)
out = Console()


#: Models the worker scores with by default (committed artifacts in models/artifacts).
DEFAULT_MODELS = "cae,beat_vae,vae_bilstm_mha"


def parse_models(models: str, models_dir: Path) -> tuple[str, ...]:
    """``--models``: comma-separated names of scoring model cards in ``models_dir``, or ``none``;
    :class:`ConfigError` naming the known ones for an unknown name."""
    from stream.stages.scoring import scoring_models

    if models.strip().lower() in ("", "none"):
        return ()
    names = tuple(m.strip() for m in models.split(",") if m.strip())
    known = scoring_models(models_dir)
    unknown = [m for m in names if m not in known]
    if unknown:
        raise ConfigError(
            f"unknown model(s) {unknown} in --models; known: {known} (cards in {models_dir})"
        )
    return names


def _models_opt(models: str, settings: Settings) -> tuple[str, ...]:
    try:
        return parse_models(models, settings.models_dir)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None


def _settings() -> Settings:
    return Settings()


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
            help="Models scoring the stream: comma-separated names of scoring model cards in ECG_MODELS_DIR (committed: cae, beat_vae, cae12, vae_bilstm, vae_bilstm_mha, cae_pooled), or 'none'."
        ),
    ] = DEFAULT_MODELS,
) -> None:
    """Run a stream worker: consume telemetry, detect beats/dropouts, publish alerts, serve /metrics.

    Without a bootstrap an embedded broker is started for this worker (and stopped with it).
    """
    from stream.app import run_worker
    from stream.broker import LocalBroker, ensure_topics_sync

    settings = _settings()
    chosen = _models_opt(models, settings)
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
            models=chosen,
        )
    finally:
        if broker is not None:
            broker.stop()


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
    bs = need_bootstrap(settings, bootstrap)

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
    with injected faults; prints alerts as they arrive. Ctrl-C (or --duration) stops everything.

    Exit status: 0 after --duration or Ctrl-C; 3 when the broker, the worker or the replay exits on its own
    (the line before says which, with its exit code and log; the others are stopped); 2 for other errors."""
    from rich.markup import escape

    from stream.logutil import install_rate_limit
    from stream.schemas import AlertMessage
    from stream.stack import (
        EXIT_CHILD_DIED,
        ChildExitedError,
        exited_child,
        local_stack,
        scrape_metrics,
        stack_processes,
        terminate_all,
    )

    install_rate_limit()  # the alerts consumer's client logs, while the broker is unreachable
    settings = _settings()
    log_dir = log_dir or Path(settings.cache_dir) / "logs"

    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the stack as cleanly as Ctrl-C
    signal.signal(
        signal.SIGINT, _interrupt
    )  # also when started with SIGINT ignored (background jobs)
    recs = records_opt(records, settings.demo_records)
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
                child = exited_child(stack)  # broker, worker, replay: all run until stopped
                if child is not None:
                    raise ChildExitedError(child)
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

        died: ChildExitedError | None = None
        try:
            asyncio.run(watch())
        except KeyboardInterrupt:
            console.print("stopping...")
        except ChildExitedError as exc:
            died = exc
            others = [n for n in stack_processes(stack) if n != exc.child.name]
            console.print(
                f"[bold red]ecg-monitor up: {escape(exc.child.describe())}. It died before the end "
                f"of the run: stopping {' and '.join(others)}; exit status {EXIT_CHILD_DIED}[/]",
                soft_wrap=True,
                highlight=False,
            )
            terminate_all(stack["procs"].values(), timeout_s=3.0)  # SIGKILL after 3 s
        n_alerts = sum(1 for _, status in seen if status == "raised")
        console.print(
            f"[bold]{n_alerts} alert(s) raised, {len(seen) - n_alerts} resolved in "
            f"{time.monotonic() - t_start:.0f} s[/]"
            + ("" if died else "; stopping worker, replay and broker")
        )
    if died is not None:
        raise typer.Exit(EXIT_CHILD_DIED)


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


@app.command()
def soak(
    patients: Annotated[int, typer.Option(min=1, help="Concurrent real-time streams.")] = 50,
    minutes: Annotated[int, typer.Option(min=1, help="Duration in minutes.")] = 30,
    models: Annotated[
        str, typer.Option(help="Models the worker scores with, or 'none'.")
    ] = DEFAULT_MODELS,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """A long run: N real-time MIT-BIH streams for M minutes on the local stack, printing per minute the
    broker's and the worker's RSS, frames/s and p99 end-to-end latency; then the verdict (RSS growth after
    the first 5 minutes < 10 %, p99 of the last 5 minutes within 1.5x of the first 5). Exit 1 when it
    does not hold."""
    from stream.bench import run_soak

    settings = _settings()
    _models_opt(models, settings)
    result = run_soak(
        settings, patients=patients, minutes=minutes, models=models, progress=not as_json
    )
    if as_json:
        print(json.dumps(result))
    else:
        out.print_json(json.dumps(result))
    if result.get("held") is False:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------ plug-ins
#: Entry-point group of commands other packages add to ``ecg-monitor`` (``replay`` from simulators):
#: each entry point names a Typer command function, registered under the entry point's name.
COMMANDS_GROUP = "ecg_monitor.commands"


def register_entry_point_commands(
    target: typer.Typer = app, group: str = COMMANDS_GROUP
) -> list[str]:
    """Register the command functions of the installed ``group`` entry points on ``target``.

    This keeps ``stream`` below the packages that extend its command line: it never imports them, they
    declare themselves in their package metadata. Returns the names registered.
    """
    known = {
        c.name or (c.callback.__name__ if c.callback else "") for c in target.registered_commands
    }
    added: list[str] = []
    for ep in entry_points(group=group):
        if ep.name in known:  # a built-in command, or the same distribution found twice on sys.path
            continue
        target.command(name=ep.name)(ep.load())
        known.add(ep.name)
        added.append(ep.name)
    return added


register_entry_point_commands()


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
