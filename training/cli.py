"""``python -m training`` / ``ecg-train``: data, prepare, train, evaluate, export and report models.

Every model is a module of ``training.tasks`` (see :mod:`training.registry`); ``evaluate qrs`` and
``evaluate dropouts`` run the detector evaluations of :mod:`training.eval_detectors`, ``evaluate alarms``
the beat-class and alarm evaluation of :mod:`training.eval_alarms`, and ``bench-processor`` the stream
processor benchmark.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from stream.cli_errors import error_line_group, exit_codes_epilog, one_line
from stream.errors import DataMissingError, exit_code_for
from training.errors import EcgMonitorError

app = typer.Typer(
    name="ecg-train",
    help="Offline training, evaluation and ONNX export of ecg-monitor's models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # a project error ends any command with `ecg-train: <message>` and its exit status (stream/cli_errors.py)
    cls=error_line_group("ecg-train"),
    epilog=exit_codes_epilog("ecg-train"),
)
data_app = typer.Typer(
    help="Check the WFDB databases under ECG_DATA_DIR, or download them from PhysioNet.",
    invoke_without_command=True,
)
app.add_typer(data_app, name="data")
console = Console(stderr=True)

DETECTOR_EVALS = ("qrs", "dropouts", "alarms", "recovery")
DATABASES = ("mitdb", "nstdb", "ludb", "ptbxl")

ModelArg = Annotated[str, typer.Argument(help="Model name (see `python -m training models`).")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="JSON file merged over the model's default config."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Config override KEY=VALUE (dotted keys for sections), repeatable."
    ),
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Databases root (default: ECG_DATA_DIR).")
]
RunOpt = Annotated[
    Path | None, typer.Option("--run", help="Run directory (default: the latest run of the model).")
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (CUDA when available), cpu or cuda.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
ProgressOpt = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr.")
]


def _settings() -> Any:
    from stream.settings import Settings

    return Settings()


def _context(
    model: str,
    config_file: Path | None,
    overrides: list[str] | None,
    data_dir: Path | None,
    run: Path | None = None,
    device: str = "auto",
    progress: bool = True,
    as_json: bool = False,
    extra: dict[str, Any] | None = None,
) -> Any:
    from training.config import load_config
    from training.registry import TaskContext, get_spec

    get_spec(model)  # fail early on unknown model
    settings = _settings()
    cfg = load_config(model, config_file, overrides or [])
    runs_dir = Path(os.environ.get("ECG_RUNS_DIR", "runs"))
    return TaskContext(
        model=model,
        config=cfg,
        data_dir=Path(data_dir or settings.data_dir).resolve(),
        cache_dir=Path(settings.cache_dir).resolve(),
        runs_dir=runs_dir.resolve(),
        artifacts_dir=Path(settings.models_dir).resolve(),
        run_dir=run.resolve() if run else None,
        device=device,
        progress=progress,
        as_json=as_json,
        command=" ".join(["python -m training", *map(shlex.quote, sys.argv[1:])]),
        extra=extra or {},
    )


def _emit(result: Any, as_json: bool, title: str = "") -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    if isinstance(result, dict):
        table = Table(title=title or None, show_header=False)
        for k, v in result.items():
            table.add_row(
                str(k), json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v)
            )
        Console().print(table)
    else:
        typer.echo(str(result))


@app.command("models")
def models_cmd(as_json: JsonOpt = False) -> None:
    """List the registered models."""
    from training.registry import get_spec, model_names

    rows = {n: get_spec(n).description for n in model_names()}
    _emit(rows, as_json, "models")


@data_app.callback()
def data_check(
    ctx: typer.Context,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check which databases are present under ECG_DATA_DIR (records found per database); exit status 6,
    naming them, when one is missing."""
    if ctx.invoked_subcommand is not None:
        return
    from stream.records import list_records

    root = Path(data_dir or _settings().data_dir).resolve()
    report: dict[str, Any] = {"data_dir": str(root)}
    missing = []
    for db in DATABASES:
        sub = root / db
        try:
            n = len(list_records(sub))
        except EcgMonitorError:
            n = 0
        report[db] = n
        if n == 0:
            missing.append(db)
    report["missing"] = missing
    _emit(report, as_json, "databases")
    if missing:
        dbs = " ".join(f"--db {db}" for db in missing)
        raise DataMissingError(
            f"missing database(s) under {root}: {', '.join(missing)}; "
            f"run `python -m training data download {dbs}`"
        )


@data_app.command("download")
def data_download(
    db: Annotated[
        list[str] | None,
        typer.Option("--db", help="Database(s) to fetch: mitdb nstdb ludb ptbxl (default all)."),
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Download databases from PhysioNet into ECG_DATA_DIR (wfdb.dl_database)."""
    from stream.records import download_database

    root = Path(data_dir or _settings().data_dir).resolve()
    for name in db or list(DATABASES):
        console.print(f"downloading {name} into {root / name} ...")
        download_database(name, root)
    console.print("done")


@app.command()
def prepare(
    model: ModelArg,
    config_file: ConfigOpt = None,
    overrides: SetOpt = None,
    data_dir: DataDirOpt = None,
    progress: ProgressOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Build (or load from the cache) the model's datasets from WFDB and print a summary."""
    from training.registry import get_spec

    ctx = _context(model, config_file, overrides, data_dir, progress=progress, as_json=as_json)
    _emit(get_spec(model).prepare(ctx), as_json, f"{model} datasets")


@app.command()
def train(
    model: ModelArg,
    config_file: ConfigOpt = None,
    overrides: SetOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    progress: ProgressOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Train a model; writes a run directory (config, metrics, curves, plots, checkpoint)."""
    from training.registry import get_spec

    ctx = _context(
        model, config_file, overrides, data_dir, device=device, progress=progress, as_json=as_json
    )
    run_dir = get_spec(model).train(ctx)
    _emit({"run_dir": str(run_dir)}, as_json, f"{model} trained")


@app.command()
def evaluate(
    model: ModelArg,
    config_file: ConfigOpt = None,
    overrides: SetOpt = None,
    data_dir: DataDirOpt = None,
    run: RunOpt = None,
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="onnx: the committed artifact via the runtime wrapper; checkpoint: a run's torch weights.",
        ),
    ] = "onnx",
    db: Annotated[str, typer.Option("--db", help="Database for `evaluate qrs`.")] = "mitdb",
    records: Annotated[
        list[str] | None,
        typer.Option(
            "--records",
            help="`evaluate alarms`: MIT-BIH records (repeatable or comma-separated; default all 48); "
            "`evaluate qrs --noise` / `alarms --noise`: the records the NST records are made from "
            "(default 118, 119, 100, 103).",
        ),
    ] = None,
    seconds: Annotated[
        float | None,
        typer.Option(
            "--seconds",
            help="`evaluate alarms` (and `qrs --noise`): replay only the first seconds of each record.",
        ),
    ] = None,
    noise: Annotated[
        bool,
        typer.Option(
            "--noise/--no-noise",
            help="`evaluate qrs`: the noise stress test instead (MIT-BIH records with NSTDB bw/ma noise "
            "at 24..-6 dB, made by simulators.nst; Se/PPV per SNR of ours, XQRS, GQRS, NeuroKit2); "
            "`evaluate alarms`: the alarms raised on those NST records.",
        ),
    ] = False,
    ptbxl: Annotated[
        bool,
        typer.Option(
            "--ptbxl/--no-ptbxl",
            help="`evaluate alarms`: also replay PTB-XL fold 10 against the offline 12-lead figures.",
        ),
    ] = True,
    device: DeviceOpt = "auto",
    progress: ProgressOpt = True,
    as_json: JsonOpt = False,
    artifact: Annotated[
        str | None,
        typer.Option(
            "--artifact",
            help="Evaluate this artifact of the models dir in place of MODEL's own (e.g. cae_int8, "
            "made by `quantize`); --source onnx only.",
        ),
    ] = None,
) -> None:
    """Evaluate a model on its test data (or `qrs` / `dropouts`: the stream's detectors; `alarms`: the stream's
    beat classes and alarms against the MIT-BIH annotations, EC57/EC38). A progress bar per record (or batch)
    goes to stderr unless --no-progress (`alarms` keeps it with --json: stdout carries only the JSON)."""
    progress_alarms = progress
    progress = progress and not as_json
    if model == "alarms":
        from stream.cli_options import records_opt
        from training import eval_alarms

        root = Path(data_dir or _settings().data_dir).resolve()
        if noise:
            result = eval_alarms.evaluate_alarms_noise(
                root,
                records=records_opt(records, ()) or None,
                seconds=seconds,
                progress=progress_alarms,
            )
            _emit(result, as_json, "alarms on the NST records")
            return
        result = eval_alarms.evaluate_alarms(
            root,
            records=records_opt(records, ()) or None,
            seconds=seconds,
            progress=progress_alarms,
            ptbxl=ptbxl,
        )
        _emit(result, as_json, "alarms")
        return
    if model == "recovery":
        from models.runtime.lead_recon import LeadReconModel
        from training import recovery

        root = Path(data_dir or _settings().data_dir).resolve()
        result = {
            "twelve_lead": recovery.evaluate_recovery(root, progress=progress_alarms),
            "two_lead_transfer": recovery.evaluate_lead_transfer(root, progress=progress_alarms),
            "two_lead_network": recovery.evaluate_two_lead(root, LeadReconModel.load("lead_recon")),
        }
        _emit(result, as_json, "recovery")
        return
    if model in DETECTOR_EVALS:
        from stream.cli_options import records_opt
        from training import eval_detectors

        root = Path(data_dir or _settings().data_dir).resolve()
        if model == "qrs" and noise:
            result = eval_detectors.evaluate_qrs_noise(
                root,
                records=records_opt(records, ()) or None,
                seconds=seconds,
                progress=progress_alarms,
            )
        elif model == "qrs":
            result = eval_detectors.evaluate_qrs(root, db=db, progress=progress)
        else:  # dropouts: injected faults, clean records, DC offsets and the NST records
            result = eval_detectors.evaluate_dropouts(
                root, progress=progress_alarms, offsets=True, nst=True
            )
        _emit(result, as_json, model)
        return
    from training.registry import get_spec

    ctx = _context(
        model,
        config_file,
        overrides,
        data_dir,
        run=run,
        device=device,
        progress=progress,
        as_json=as_json,
        extra={"source": source},
    )
    if artifact:
        import tempfile

        from training.quantize import artifact_dir_for

        with tempfile.TemporaryDirectory() as tmp:
            ctx.artifacts_dir = artifact_dir_for(model, artifact, ctx.artifacts_dir, Path(tmp))
            result = get_spec(model).evaluate(ctx)
        _emit({"artifact": artifact, **result}, as_json, f"{model} evaluation ({artifact})")
        return
    _emit(get_spec(model).evaluate(ctx), as_json, f"{model} evaluation")


@app.command()
def calibrate(
    what: Annotated[
        str, typer.Argument(help="What to calibrate: `recovery` (lead_recon, lstm_ae intervals).")
    ],
    data_dir: DataDirOpt = None,
    write: Annotated[
        bool,
        typer.Option(
            "--write/--dry-run", help="Write the calibration into the committed model cards."
        ),
    ] = True,
    progress: ProgressOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Calibrate the recovery models' 90 % intervals on validation data (split conformal; PTB-XL fold 9
    for lead_recon, the LSTM-AE's validation patients) and store them in their cards' ``uncertainty``."""
    if what != "recovery":
        raise typer.BadParameter(
            f"unknown calibration {what!r}; known: recovery", param_hint="WHAT"
        )
    from training import recovery

    root = Path(data_dir or _settings().data_dir).resolve()
    _emit(
        recovery.calibrate_recovery(root, write=write, progress=progress and not as_json),
        as_json,
        "recovery calibration",
    )


@app.command("bench-processor")
def bench_processor_cmd(
    data_dir: DataDirOpt = None,
    record: Annotated[str, typer.Option(help="MIT-BIH record replayed.")] = "100",
    seconds: Annotated[int, typer.Option(help="Seconds of the record.")] = 300,
    runs: Annotated[int, typer.Option(help="Runs; the medians over them are reported.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Median per-frame time of the stream processor (1 s, 2 leads, 360 Hz), with and without model windows."""
    from training.eval_detectors import bench_processor

    root = Path(data_dir or _settings().data_dir).resolve()
    result = {
        name: bench_processor(root, record, seconds, runs, windows=w)
        for name, w in (("with_windows", True), ("without_windows", False))
    }
    _emit(result, as_json, "stream processor benchmark")


@app.command("bench-models")
def bench_models_cmd(
    data_dir: DataDirOpt = None,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Model artifact(s) to bench (repeatable; default: cae beat_vae beat_class "
            "vae_bilstm vae_bilstm_mha lead_recon).",
        ),
    ] = None,
    runs: Annotated[int, typer.Option(help="Runs; the medians over them are reported.")] = 5,
    session: Annotated[
        bool,
        typer.Option(
            "--session/--no-session",
            help="Also time ONNX Runtime's session.run alone per batch, threads and graph level.",
        ),
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Milliseconds per window of each model: session.run alone (batch 1/8/32/128, 1-2 threads, graph
    optimisation basic/extended/all) and the whole stream scorer path on real windows."""
    from training.model_bench import DEFAULT_MODELS, bench_models, format_table

    root = Path(data_dir or _settings().data_dir).resolve()
    result = bench_models(
        root,
        models or DEFAULT_MODELS,
        models_dir=Path(_settings().models_dir).resolve(),
        runs=runs,
        session=session,
        progress=None if as_json else (lambda name: console.print(f"benching {name} ...")),
    )
    if as_json:
        _emit(result, True)
    else:
        typer.echo(format_table(result))


@app.command()
def quantize(
    model: Annotated[str, typer.Argument(help="Model to quantize: cae or beat_vae.")],
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="static: QDQ int8, activations calibrated on training patients' windows; "
            "dynamic: int8 weights, activations quantised at run time.",
        ),
    ] = "static",
    calibration: Annotated[
        int, typer.Option("--calibration", help="Calibration windows (static).")
    ] = 1024,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write models/artifacts/<MODEL>_int8.onnx (onnxruntime.quantization) and its card (the parent's,
    with the new sha256, empty metrics and a quantized_from section)."""
    from training.quantize import quantize as quantize_model

    root = Path(data_dir or _settings().data_dir).resolve()
    result = quantize_model(
        model, root, Path(_settings().models_dir).resolve(), method, calibration
    )
    _emit(result, as_json, f"{model} quantized")


@app.command()
def export(
    model: ModelArg,
    config_file: ConfigOpt = None,
    overrides: SetOpt = None,
    data_dir: DataDirOpt = None,
    run: RunOpt = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out-dir",
            help="Where to write <model>.onnx and its card (default: models/artifacts).",
        ),
    ] = None,
    migrate_card: Annotated[
        bool,
        typer.Option(
            "--migrate-card",
            help="Rewrite this task's committed cards in the typed format (ONNX files untouched).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a trained run to ONNX (checker + parity on real inputs) with its model card."""
    from training.registry import get_spec, migrate_cards

    ctx = _context(
        model, config_file, overrides, data_dir, run=run, as_json=as_json, progress=False
    )
    if out_dir is not None:
        ctx.artifacts_dir = out_dir.resolve()
    if migrate_card:
        done = migrate_cards(get_spec(model), ctx.artifacts_dir)
        _emit({"migrated": done}, as_json, f"{model}: cards migrated: {', '.join(done) or 'none'}")
        return
    path = get_spec(model).export(ctx)
    _emit({"onnx": str(path)}, as_json, f"{model} exported")


@app.command()
def report(
    model: ModelArg,
    data_dir: DataDirOpt = None,
    run: RunOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Summarise a model: its card, metrics and plots."""
    from training.registry import get_spec

    ctx = _context(model, None, None, data_dir, run=run, as_json=as_json, progress=False)
    _emit(get_spec(model).report(ctx), as_json, f"{model} report")


def main() -> None:
    """Console entry point; a project error prints one line (``ecg-train: <message>``) and exits with the
    status of its class (``stream.errors.EXIT_CODES``: 6 data missing, 7 unknown model, 2 others...)."""
    try:
        app()
    except EcgMonitorError as exc:  # outside a command (commands end in error_line_group)
        print(f"ecg-train: {one_line(str(exc))}", file=sys.stderr)
        raise SystemExit(exit_code_for(exc)) from None


if __name__ == "__main__":
    main()
