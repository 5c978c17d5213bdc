"""``ecg-monitor``: the command line of the online service (typer; ``--help`` on every command)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from contextlib import suppress
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from stream.cli_errors import (
    check_broker_reachable,
    check_port_free,
    error_line_group,
    exit_codes_epilog,
    one_line,
)
from stream.cli_options import BootstrapOpt, need_bootstrap, records_opt
from stream.errors import EcgMonitorError, UnknownModelError, exit_code_for
from stream.settings import Settings

app = typer.Typer(
    name="ecg-monitor",
    no_args_is_help=True,
    add_completion=False,
    help="Real-time ECG monitoring on Kafka: replay WFDB telemetry, detect beats/dropouts, raise alerts.",
    # a project error ends any command with `ecg-monitor: <message>` and its exit status (stream/cli_errors.py)
    cls=error_line_group("ecg-monitor"),
    epilog=exit_codes_epilog("ecg-monitor"),
)
console = Console(stderr=True)
out = Console()


#: Models the worker scores with by default (committed artifacts in models/artifacts).
#: the 12-lead alarm model is vae_bilstm (best of the three on the complete PTB-XL fold 9); the attention
#: model vae_bilstm_mha scores beside it for its lead and temporal attention (the alarm's evidence)
DEFAULT_MODELS = "cae,beat_vae,vae_bilstm,vae_bilstm_mha"


def parse_models(models: str, models_dir: Path) -> tuple[str, ...]:
    """``--models``: comma-separated names of scoring model cards in ``models_dir``, or ``none``;
    :class:`UnknownModelError` (a :class:`ConfigError`; exit status 7) naming the known ones for an unknown
    name."""
    from stream.stages.scoring import scoring_models

    if models.strip().lower() in ("", "none"):
        return ()
    names = tuple(m.strip() for m in models.split(",") if m.strip())
    known = scoring_models(models_dir)
    unknown = [m for m in names if m not in known]
    if unknown:
        raise UnknownModelError(
            f"unknown model(s) {unknown} in --models; known: {known} (cards in {models_dir})"
        )
    return names


def _models_opt(models: str, settings: Settings) -> tuple[str, ...]:
    return parse_models(models, settings.models_dir)  # unknown: one line, exit status 7


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

    Without a bootstrap an embedded broker is started for this worker (and stopped with it). Before starting
    anything it checks the models (unknown: exit 7), the metrics port (in use: 5) and the broker (a bootstrap
    that accepts no connection within 3 s: 4).
    """
    from stream.app import run_worker
    from stream.broker import LocalBroker, ensure_topics_sync

    settings = _settings()
    chosen = _models_opt(models, settings)
    port = settings.metrics_port if metrics_port is None else metrics_port
    check_port_free(settings.bind_host, port, "the worker's /metrics", "--metrics-port")
    bs = bootstrap or settings.kafka_bootstrap
    if bs:
        check_broker_reachable(bs)
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
            metrics_port=port,
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
    from aiokafka import AIOKafkaConsumer

    from stream.broker import assign_from_beginning, client_kwargs

    consumer = AIOKafkaConsumer(**client_kwargs(settings, bootstrap), enable_auto_commit=False)
    await consumer.start()
    try:
        await assign_from_beginning(consumer, topic)
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
    as_json: Annotated[
        bool,
        typer.Option("--json", help="One JSON object (the alert message) per line, for scripts."),
    ] = False,
    stream: Annotated[
        list[str] | None,
        typer.Option("--stream", help="Only these stream ids (repeat or comma-separate)."),
    ] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option(
            "--kind", help="Only these kinds: asystole, bradycardia, tachycardia, signal_loss."
        ),
    ] = None,
    severity: Annotated[
        list[str] | None,
        typer.Option("--severity", help="Only these severities: critical, warning, info."),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            help="Join this consumer group and commit what was printed: each alert is delivered once per "
            "group (members share the partitions; a new group starts at the beginning of the topic).",
        ),
    ] = None,
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning",
            help="With --group: read the topic from its start again, whatever the group committed. "
            "Without --group every run reads from the start.",
        ),
    ] = False,
) -> None:
    """Print alerts, one line each (readable, or JSON with --json), de-duplicated by id and status.

    Without --group: every alert of the topic from its beginning (nothing committed). With --group NAME: the
    group's next alerts, offsets committed after printing. --stream/--kind/--severity filter what is printed.
    """
    from stream.alertfeed import AlertFilter, Dedup, alert_values, format_alert
    from stream.schemas import AlertMessage

    settings = _settings()
    keep = AlertFilter.from_options(stream, kind, severity)
    bs = need_bootstrap(settings, bootstrap)
    check_broker_reachable(bs)

    async def main() -> None:
        seen = Dedup()
        async for value in alert_values(
            settings, bs, group=group, follow=follow, idle_s=idle, from_beginning=from_beginning
        ):
            try:
                msg = AlertMessage.from_bytes(value)
            except (EcgMonitorError, ValueError) as exc:
                console.print(
                    f"ecg-monitor alerts: skipped an undecodable message: {one_line(str(exc))}",
                    soft_wrap=True,
                    markup=False,
                    highlight=False,
                )
                continue
            if not seen.first(msg) or not keep.matches(msg):
                continue
            print(msg.model_dump_json() if as_json else format_alert(msg), flush=True)

    with suppress(KeyboardInterrupt):
        asyncio.run(main())


# ------------------------------------------------------------------------------------------------ up
@app.command()
def up(
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")
    ] = None,
    patients: Annotated[
        int, typer.Option(min=1, help="Concurrent patient streams (records assigned in turn).")
    ] = 7,
    speed: Annotated[float, typer.Option(min=0, help="Replay speed (1 = real time).")] = 1.0,
    records: Annotated[
        list[str] | None, typer.Option("--records", "-r", help="Records/databases to replay.")
    ] = None,
    faults: Annotated[str, typer.Option(help="none | demo | random.")] = "demo",
    log_dir: Annotated[
        Path | None, typer.Option(help="Where broker/worker/replay logs go.")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65534,
            help="Port of the worker's /metrics (default ECG_METRICS_PORT); the replay's is the next one.",
        ),
    ] = None,
) -> None:
    """Main job: embedded broker (unless ECG_KAFKA_BOOTSTRAP), worker, /metrics and a replay of MIT-BIH records
    with injected faults; prints alerts as they arrive. Ctrl-C (or --duration) stops everything.

    Before starting anything it checks the records to replay under ECG_DATA_DIR (missing: exit 6, unknown
    record: 7), the two metrics ports (in use: 5) and, with ECG_KAFKA_BOOTSTRAP, the broker (4).
    Exit status: 0 after --duration or Ctrl-C; 3 when the broker, the worker or the replay exits on its own
    (the line before says which, with its exit code and log; the others are stopped); 2 for other errors."""
    from rich.markup import escape

    from stream.logutil import install_rate_limit
    from stream.records import resolve_record_specs
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
    port = settings.metrics_port if metrics_port is None else metrics_port
    # everything that can be checked before a process is started (the reason would end up in a log)
    resolve_record_specs(recs, settings.data_dir)
    check_port_free(settings.bind_host, port, "the worker's /metrics", "--metrics-port")
    check_port_free(settings.bind_host, port + 1, "the replay's /metrics", "--metrics-port")
    if not settings.local_mode:
        check_broker_reachable(settings.kafka_bootstrap)
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
        metrics_port=port,
    ) as stack:
        bs = stack["bootstrap"]
        console.print(
            f"[bold green]ecg-monitor up[/]: broker {bs} "
            f"({'embedded' if stack['broker'] else 'cluster'}), {patients} patients from "
            f"{', '.join(recs)} at {speed:g}x, faults={faults}"
        )
        console.print(f"metrics: http://{settings.bind_host}:{port}/metrics   logs: {log_dir}")
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
                    m = scrape_metrics(settings.bind_host, port)
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
        str | None,
        typer.Option(
            help="Address to bind (default ECG_BIND_HOST, 127.0.0.1); any other needs ECG_DASHBOARD_TOKEN."
        ),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default ECG_DASHBOARD_PORT, 8050).")
    ] = None,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Serve the dashboard: the live central-station view (/ward, /patient/ID; needs a Kafka bootstrap) and
    the 12-lead upload page (/): upload an ECG (.npy or WFDB .hea + .dat), pick a model, see the 12 leads,
    the reconstruction, anomaly score, lead-wise attention and point-wise error of each lead.

    Binding a non-loopback address without ECG_DASHBOARD_TOKEN is refused (exit 2)."""
    from stream.dashboard.app import serve_dashboard
    from stream.dashboard.security import check_bind

    settings = _settings()
    bind = host or settings.bind_host
    check_bind(
        bind, settings.dashboard_token.get_secret_value() if settings.dashboard_token else None
    )
    check_port_free(
        bind,
        settings.dashboard_port if port is None else port,
        "the dashboard",
        "--port",
    )
    bs = bootstrap or settings.kafka_bootstrap
    if bs:
        check_broker_reachable(bs)
    console.print(
        f"dashboard on [bold]http://{bind}:{settings.dashboard_port if port is None else port}/[/]"
        + ("" if bs else " (no Kafka bootstrap: live view off)")
    )
    serve_dashboard(settings, bind, port, bs or None)


@app.command("bench-live")
def bench_live(
    streams: Annotated[
        int, typer.Option(min=1, help="Real-time replayed streams on the ward view.")
    ] = 100,
    alarms: Annotated[
        int, typer.Option(min=1, help="Probe alarms published on the alerts topic.")
    ] = 100,
    every: Annotated[float, typer.Option(min=0.0, help="Seconds between probe alarms.")] = 0.1,
    models: Annotated[
        str, typer.Option(help="Models the worker scores with, or 'none'.")
    ] = DEFAULT_MODELS,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Alarm-to-browser latency: broker, worker and a replay of N streams, the dashboard and a headless
    Chromium on the ward view; prints p50/p99 from an alarm's publication on the alerts topic to its
    appearance on the page, and how many streams the page follows live."""
    import tempfile

    from stream.dashboard.browser import bench_live as run

    with tempfile.TemporaryDirectory(prefix="ecg-bench-live-") as tmp:
        result = run(
            _settings(),
            streams=streams,
            alarms=alarms,
            every_s=every,
            models=models,
            log_dir=Path(tmp),
            progress=None if as_json else console.print,
        )
    if as_json:
        print(json.dumps(result))
    else:
        out.print_json(json.dumps(result))


@app.command("dashboard-screenshots")
def dashboard_screenshots(
    out_dir: Annotated[Path, typer.Option("--out", help="Where the PNGs go.")] = Path(
        ".cache/ecg-monitor/screenshots"
    ),
    streams: Annotated[int, typer.Option(min=1, help="Replayed streams.")] = 6,
) -> None:
    """Screenshots of the ward view, a patient view and an upload result (local stack with demo faults,
    headless Chromium)."""
    import tempfile

    from stream.dashboard.browser import screenshots

    with tempfile.TemporaryDirectory(prefix="ecg-shots-") as tmp:
        for p in screenshots(_settings(), out_dir, log_dir=Path(tmp), streams=streams):
            console.print(f"wrote {p}")


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
    records: Annotated[
        str,
        typer.Option(
            help="Streams replayed: mitdb (360 Hz, 2 leads), ptbxl (PTB-XL records100, 100 Hz, 12 leads) "
            "or ludb (500 Hz, 12 leads)."
        ),
    ] = "mitdb",
    minutes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="One long run of N minutes instead of --runs: per-minute figures, headline from the last "
            "minute, held = every minute after the first was real time.",
        ),
    ] = None,
    fault_rate: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Random faults per minute per stream (lead-off, flatline, noise, lost frames ...), so "
            "that the recovery models (lead reconstruction, LSTM-AE, lead transfer) run too; 0 = none.",
        ),
    ] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Throughput, end-to-end latency and CPU (workers, broker, a plain pass-through of the same frames) of N
    real-time patient streams through the pipeline."""
    from stream.bench import RECORD_SETS, run_bench

    if records not in RECORD_SETS:
        raise typer.BadParameter(
            f"--records must be one of {', '.join(RECORD_SETS)}, not {records!r}"
        )
    settings = _settings()
    _models_opt(models, settings)
    result = run_bench(
        settings,
        patients=patients,
        runs=runs,
        seconds=seconds,
        warmup=warmup,
        progress=not as_json,
        records=records,
        workers=workers,
        models=models,
        minutes=minutes,
        fault_rate=fault_rate,
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
    records: Annotated[
        str, typer.Option(help="Streams replayed: mitdb, ptbxl or ludb (as for bench).")
    ] = "mitdb",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """A long run: N real-time streams for M minutes on the local stack, printing per minute the broker's and
    the worker's RSS and CPU, frames/s and end-to-end latency; then the verdict (RSS growth after the first 5
    minutes < 10 %, p99 of the last 5 minutes within 1.5x of the first 5). Exit 1 when it does not hold."""
    from stream.bench import RECORD_SETS, run_soak

    if records not in RECORD_SETS:
        raise typer.BadParameter(
            f"--records must be one of {', '.join(RECORD_SETS)}, not {records!r}"
        )
    settings = _settings()
    _models_opt(models, settings)
    result = run_soak(
        settings,
        patients=patients,
        minutes=minutes,
        models=models,
        records=records,
        progress=not as_json,
    )
    if as_json:
        print(json.dumps(result))
    else:
        out.print_json(json.dumps(result))
    if result.get("held") is False:
        raise typer.Exit(1)


@app.command()
def capacity(
    patients: Annotated[int, typer.Option(min=1, help="Patients (real-time streams) to monitor.")],
    cpu_ms_per_frame: Annotated[
        float | None,
        typer.Option(help="Measured worker CPU ms per frame (bench's worker_cpu_ms_per_frame)."),
    ] = None,
    bench_json: Annotated[
        Path | None,
        typer.Option("--bench", help="A saved `ecg-monitor bench --json` result to take it from."),
    ] = None,
    utilisation: Annotated[
        float, typer.Option(min=0.05, max=1.0, help="Planned share of a core per worker.")
    ] = 0.6,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Workers and partitions a ward of N patients needs, from a measured CPU cost per frame (one
    single-threaded worker per core, each kept at --utilisation of it)."""
    from stream.capacity import plan_capacity

    if (cpu_ms_per_frame is None) == (bench_json is None):
        raise typer.BadParameter("give exactly one of --cpu-ms-per-frame and --bench")
    frame_s = _settings().frame_seconds
    if bench_json is not None:
        try:
            measured = json.loads(bench_json.read_text())
            cpu_ms_per_frame = float(measured["worker_cpu_ms_per_frame"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise typer.BadParameter(
                f"{bench_json}: not a bench result with worker_cpu_ms_per_frame ({exc})",
                param_hint="--bench",
            ) from None
    assert cpu_ms_per_frame is not None
    try:
        plan = plan_capacity(patients, cpu_ms_per_frame, frame_s=frame_s, utilisation=utilisation)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if as_json:
        print(json.dumps(plan.to_dict()))
        return
    console.print(
        f"{patients} patients x {cpu_ms_per_frame:g} ms per {frame_s:g} s frame = "
        f"{plan.cores_busy:g} cores busy; at {utilisation:g} of a core per worker: "
        f"[bold]{plan.workers} workers[/] ({plan.streams_per_worker} streams each), "
        f"[bold]{plan.partitions} partitions[/] (ECG_PARTITIONS), about {plan.messages_per_s:g} "
        "messages/s through the brokers"
    )


@app.command()
def schema(
    topic: Annotated[
        str | None,
        typer.Argument(
            help="Topic setting name (telemetry, dead_letter, alerts, dropouts, beats, ground_truth, "
            "scores) or default topic name (ecg.alerts.v1); all topics when omitted."
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write <topic>.schema.json file(s) into this directory instead of printing.",
        ),
    ] = None,
) -> None:
    """JSON Schema (draft 2020-12) of a topic's messages, generated from the message models (the files
    committed in stream/topic_schemas/). Without TOPIC: a JSON object {topic: schema} of every topic."""
    from stream.topic_schemas import (
        TOPIC_NAMES,
        resolve_topic,
        topic_json_schema,
        topic_json_schemas,
        write_schemas,
    )

    name = None
    if topic is not None:
        name = resolve_topic(topic)
        if name is None:
            typer.echo(
                f"ecg-monitor: unknown topic {topic!r}; known: {', '.join(TOPIC_NAMES)}", err=True
            )
            raise typer.Exit(2)
    if out_dir is not None:
        for path in write_schemas(out_dir, None if name is None else [name]):
            print(path)
        return
    print(
        json.dumps(
            topic_json_schemas() if name is None else topic_json_schema(name),
            indent=2,
            ensure_ascii=False,
        )
    )


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
    except EcgMonitorError as exc:  # outside a command (commands end in error_line_group)
        print(f"ecg-monitor: {one_line(str(exc))}", file=sys.stderr)
        raise SystemExit(exit_code_for(exc)) from None


if __name__ == "__main__":
    main()
