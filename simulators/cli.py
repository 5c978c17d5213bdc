"""``replay`` of ``ecg-monitor``: WFDB records as live telemetry, with fault injection and ground truth.

``stream.cli`` never imports this package (simulators sit above stream); it finds :func:`replay` through
the ``ecg_monitor.commands`` entry point declared in pyproject.toml and registers it as ``ecg-monitor replay``.
``python -m simulators`` runs the same command.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
from rich.console import Console

from stream.cli_options import BootstrapOpt, need_bootstrap, records_opt
from stream.settings import Settings

console = Console(stderr=True)


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
        str,
        typer.Option(
            help="none | demo (flatline, lead-off, lost frames per stream, on every pass of the record) "
            "| random (planned 10 minutes of stream time at a time, for as long as the replay runs)."
        ),
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
    """Replay WFDB records as live telemetry (with optional fault injection and ground truth).

    Every send is acknowledged or retried (bounded, with backoff) and counted; the last line says how many
    frames were sent (acknowledged), lost and retried. SIGINT/SIGTERM stop it after waiting a few seconds
    for the outstanding acknowledgements; a second signal stops it at once.

    Fails before sending anything, with one line and its exit status, when the records or their database are
    missing (6), a record is unknown (7), the metrics port is in use (5) or the broker is unreachable (4).
    """
    import numpy as np

    from simulators.replay import (
        FaultPlanner,
        Replay,
        demo_fault_planner,
        plan_streams,
        random_fault_planner,
        replay_to_kafka,
        resolve_sources,
    )
    from stream.cli_errors import check_broker_reachable, check_port_free
    from stream.logutil import CLIENT_LOGGERS, install_rate_limit
    from stream.metrics import ReplayMetrics, serve_metrics

    install_rate_limit(prefixes=(*CLIENT_LOGGERS, "simulators"))

    settings = Settings()
    bs = need_bootstrap(settings, bootstrap)
    rng = np.random.default_rng(seed)
    planner: FaultPlanner | None = None
    if faults == "demo":
        planner = demo_fault_planner
    elif faults == "random":
        planner = random_fault_planner(fault_rate, rng)
    elif faults != "none":
        raise typer.BadParameter(f"--faults must be none, demo or random, not {faults!r}")
    # the checks that need nothing started: data (6, 7), the metrics port (5), the broker (4)
    sources = resolve_sources(records_opt(records, settings.demo_records), settings.data_dir)
    port = settings.metrics_port + 1 if metrics_port is None else metrics_port
    if port >= 0:
        check_port_free(settings.bind_host, port, "the replay's /metrics", "--metrics-port")
    check_broker_reachable(bs)
    plans = plan_streams(sources, patients, prefix=prefix)
    metrics = ReplayMetrics()
    server = serve_metrics(metrics.registry, settings.bind_host, port) if port >= 0 else None
    console.print(
        f"replaying {patients} stream(s) from {len(sources)} record(s) at "
        f"{'max' if speed == 0 else f'{speed:g}x'} speed to {bs}"
    )
    runner = Replay(
        settings,
        plans,
        speed=speed,
        loop=loop,
        duration_s=duration,
        encoding=encoding,
        metrics=metrics,
        rng=rng,
        fault_planner=planner,
    )
    loop_ = asyncio.new_event_loop()
    task = loop_.create_task(replay_to_kafka(settings, plans, bs, replay=runner))
    signals = 0

    def on_signal() -> None:  # first signal: stop and drain; second: cancel
        nonlocal signals
        signals += 1
        if signals == 1:
            runner.stop()
        else:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop_.add_signal_handler(sig, on_signal)
    try:
        loop_.run_until_complete(task)
    except asyncio.CancelledError:
        console.print("replay cancelled")
    finally:
        loop_.close()
        console.print(f"replay: {runner.summary()}", soft_wrap=True, highlight=False)
        if server is not None:
            server.stop()
