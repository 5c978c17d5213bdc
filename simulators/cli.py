"""``replay`` of ``ecg-monitor``: WFDB records as live telemetry, with fault injection and ground truth.

``stream.cli`` never imports this package (simulators sit above stream); it finds :func:`replay` through
the ``ecg_monitor.commands`` entry point declared in pyproject.toml and registers it as ``ecg-monitor replay``.
``python -m simulators`` runs the same command.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
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


def nst(
    record: Annotated[
        list[str],
        typer.Option(
            "--record",
            "-r",
            help="MIT-BIH record(s), e.g. 119 or mitdb/119 (repeat or comma-separate).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory the WFDB records go to.")],
    noise: Annotated[
        str,
        typer.Option(
            help="NSTDB noise kind(s): bw, ma, em (where nstdb/em exists) or none (offsets only); "
            "comma-separated for several."
        ),
    ] = "ma",
    snr: Annotated[
        str,
        typer.Option(
            help="SNR(s) in dB, NST convention (QRS peak-to-peak vs noise RMS), comma-separated; "
            "'all' = 24,18,12,6,0,-6."
        ),
    ] = "0",
    offset_mv: Annotated[
        list[float] | None,
        typer.Option(
            "--offset-mv",
            help="Constant DC offset (mV, within +-10): once for every lead, or once per lead.",
        ),
    ] = None,
    step: Annotated[
        list[str] | None,
        typer.Option(
            "--step",
            help="Baseline step START_S:DELTA_MV[:LEAD[:RAMP_S]], e.g. 600:-4 or 600:3:V1:5 (repeatable).",
        ),
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(help="Only the first seconds of the record (default whole).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the noise start offset.")] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the records' metadata as JSON on stdout.")
    ] = False,
) -> None:
    """Write noise stress test records (EC57 / PhysioNet nst manner) made from MIT-BIH records.

    Each record: the first 5 minutes clean, then 2-minute noisy and clean segments alternately, NSTDB noise
    on every lead at the SNR asked, plus optional DC offsets and baseline steps (`simulators/nst.py` states
    the SNR convention). Written as WFDB (format 16, 200 adu/mV: its header's ADC range of +-163.8 mV holds
    the offsets), with the reference .atr annotations copied and a .pro protocol annotation file.

    Example: python -m simulators.cli nst --record 119 --noise ma --snr 0 --offset-mv 5 --out /tmp/nst
    """
    import json as _json

    from rich.progress import Progress

    from simulators.nst import NST_SNRS_DB, OffsetStep, load_noise, nst_record, write_nst_record

    settings = Settings()
    data_dir = Path(settings.data_dir)
    names = [r.strip() for spec in record for r in spec.split(",") if r.strip()]
    kinds: list[str | None] = [
        None if k.strip() == "none" else k.strip() for k in noise.split(",") if k.strip()
    ]
    try:
        snrs = (
            list(NST_SNRS_DB)
            if snr.strip() == "all"
            else [float(s) for s in snr.split(",") if s.strip()]
        )
        steps = [_parse_step(s) for s in step or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    for k in kinds:
        if k is not None and k not in ("bw", "ma", "em"):
            raise typer.BadParameter(f"--noise must be bw, ma, em or none, not {k!r}")
    offsets: float | list[float] = 0.0
    if offset_mv:
        offsets = offset_mv[0] if len(offset_mv) == 1 else list(offset_mv)
    cache = {k: load_noise(data_dir, k) for k in kinds if k is not None}
    jobs = [(r, k, s) for r in names for k in kinds for s in (snrs if k is not None else [None])]
    written: list[dict[str, object]] = []
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("NST records", total=len(jobs))
        for rec_name, kind, s in jobs:
            try:
                made = nst_record(
                    data_dir,
                    rec_name,
                    kind,
                    s,
                    seed=seed,
                    seconds=seconds,
                    offset_mv=offsets,
                    offset_steps=[OffsetStep(*a) for a in steps],
                    noise_records=cache,
                )
            except ValueError as exc:  # an offset out of range, a step on an unknown lead...
                raise typer.BadParameter(str(exc)) from None
            path = write_nst_record(made, out, data_dir)
            written.append({**made.metadata(), "path": str(path)})
            bar.advance(task)
    if as_json:
        typer.echo(_json.dumps(written, indent=2))
    else:
        for w in written:
            console.print(
                f"wrote {w['path']}: {w['noise'] or 'no noise'}"
                + (f" at {w['snr_db']:g} dB" if w["snr_db"] is not None else "")
                + f", offsets {w['offset_range_mv']} mV",
                soft_wrap=True,
                highlight=False,
            )


def _parse_step(spec: str) -> tuple[float, float, str | None, float]:
    """``START_S:DELTA_MV[:LEAD[:RAMP_S]]`` -> OffsetStep arguments."""
    parts = spec.split(":")
    if not 2 <= len(parts) <= 4:
        raise ValueError(f"--step must be START_S:DELTA_MV[:LEAD[:RAMP_S]], not {spec!r}")
    lead = parts[2] if len(parts) > 2 and parts[2] not in ("", "all") else None
    ramp = float(parts[3]) if len(parts) > 3 else 2.0
    return float(parts[0]), float(parts[1]), lead, ramp


def nst_app() -> typer.Typer:
    """A Typer app holding the ``nst`` command, failures ending in one line and their exit status."""
    from stream.cli_errors import error_line_group

    app = typer.Typer(cls=error_line_group("simulators"), add_completion=False)

    @app.callback()
    def _root() -> None:
        """ecg-monitor simulators: noise stress test records."""

    app.command("nst")(nst)
    return app


def nst_main() -> None:
    """``python -m simulators.cli nst ...`` (until ``nst`` is registered beside ``replay``)."""
    nst_app()()


if __name__ == "__main__":
    nst_main()
