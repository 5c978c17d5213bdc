"""Every predictable failure of the command lines is one line on stderr and a documented exit status
(stream.errors.EXIT_CODES): each case runs the real entry point as a subprocess, before anything is started.

Ports: BUSY has a listener (port in use); CLOSED is bound without listening, so a connection is refused
(broker unreachable); FREE is free. No broker is needed.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stream.cli_errors import bootstrap_servers, check_broker_reachable, check_port_free, classify
from stream.errors import (
    EXIT_BROKER_UNREACHABLE,
    EXIT_CODES,
    EXIT_DATA_MISSING,
    EXIT_PORT_IN_USE,
    EXIT_UNKNOWN_NAME,
    EXIT_USAGE,
    BrokerUnreachableError,
    PortInUseError,
    exit_code_for,
)

ECG_MONITOR = [sys.executable, "-m", "stream.cli"]
TRAINING = [sys.executable, "-m", "training"]
SIMULATORS = [sys.executable, "-m", "simulators"]


@pytest.fixture(scope="module")
def ports() -> Iterator[dict[str, int]]:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    free_port = free.getsockname()[1]
    free.close()
    try:
        yield {
            "BUSY": busy.getsockname()[1],
            "CLOSED": closed.getsockname()[1],
            "FREE": free_port,
        }
    finally:
        busy.close()
        closed.close()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-data")
    (root / "empty").mkdir()
    (root / "partial").mkdir()
    (root / "partial" / "mitdb").symlink_to(data_dir / "mitdb")
    return {"data": data_dir, "empty": root / "empty", "partial": root / "partial"}


def _run(
    cmd: list[str], ports: dict[str, int], data_dir: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    full = {
        k: v for k, v in os.environ.items() if k not in ("ECG_KAFKA_BOOTSTRAP", "ECG_METRICS_PORT")
    }
    full.update(
        ECG_DATA_DIR=str(data_dir), ECG_METRICS_PORT=str(ports["FREE"]), COLUMNS="80", **env
    )
    return subprocess.run(
        cmd, env=full, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


# (command, data: which ECG_DATA_DIR, exit status, text the one line holds)
CASES = [
    pytest.param(
        [*ECG_MONITOR, "worker", "--metrics-port", "{BUSY}"],
        "data",
        EXIT_PORT_IN_USE,
        "port {BUSY} on 127.0.0.1 is in use (the worker's /metrics); choose another with --metrics-port",
        id="worker-port-in-use",
    ),
    pytest.param(
        [*ECG_MONITOR, "worker", "--bootstrap", "127.0.0.1:{CLOSED}", "--metrics-port", "{FREE}"],
        "data",
        EXIT_BROKER_UNREACHABLE,
        "Kafka broker unreachable at 127.0.0.1:{CLOSED}",
        id="worker-broker-unreachable",
    ),
    pytest.param(
        [*ECG_MONITOR, "worker", "--models", "cae,nope"],
        "data",
        EXIT_UNKNOWN_NAME,
        "unknown model(s) ['nope'] in --models",
        id="worker-unknown-model",
    ),
    pytest.param(
        [*ECG_MONITOR, "replay", "-r", "mitdb/100", "--bootstrap", "127.0.0.1:{CLOSED}"],
        "data",
        EXIT_BROKER_UNREACHABLE,
        "Kafka broker unreachable at 127.0.0.1:{CLOSED}",
        id="replay-broker-unreachable",
    ),
    pytest.param(
        [
            *ECG_MONITOR,
            "replay",
            "-r",
            "mitdb/100",
            "--bootstrap",
            "127.0.0.1:{CLOSED}",
            "--metrics-port",
            "{BUSY}",
        ],
        "data",
        EXIT_PORT_IN_USE,
        "port {BUSY} on 127.0.0.1 is in use (the replay's /metrics)",
        id="replay-port-in-use",
    ),
    pytest.param(
        [*ECG_MONITOR, "replay", "-r", "mitdb/999", "--bootstrap", "127.0.0.1:{CLOSED}"],
        "data",
        EXIT_UNKNOWN_NAME,
        "no WFDB record or database at 'mitdb/999': unknown record",
        id="replay-unknown-record",
    ),
    pytest.param(
        [*ECG_MONITOR, "replay", "-r", "mitdb/100", "--bootstrap", "127.0.0.1:{CLOSED}"],
        "empty",
        EXIT_DATA_MISSING,
        "database 'mitdb' not found under ECG_DATA_DIR=",
        id="replay-data-missing",
    ),
    pytest.param(
        [*SIMULATORS, "-r", "ludb/data/9999", "--bootstrap", "127.0.0.1:{CLOSED}"],
        "data",
        EXIT_UNKNOWN_NAME,
        "no WFDB record or database at 'ludb/data/9999'",
        id="python-m-simulators-unknown-record",
    ),
    pytest.param(
        [*ECG_MONITOR, "alerts", "--bootstrap", "127.0.0.1:{CLOSED}"],
        "data",
        EXIT_BROKER_UNREACHABLE,
        "Kafka broker unreachable at 127.0.0.1:{CLOSED}: Connection refused",
        id="alerts-broker-unreachable",
    ),
    pytest.param(
        [*ECG_MONITOR, "alerts"],
        "data",
        EXIT_USAGE,
        "no broker: pass --bootstrap or set ECG_KAFKA_BOOTSTRAP",
        id="alerts-no-broker",
    ),
    pytest.param(
        [*ECG_MONITOR, "alerts", "--bootstrap", "127.0.0.1:{CLOSED}", "--severity", "fatal"],
        "data",
        EXIT_USAGE,
        "unknown severity(ies) ['fatal'] in --severity",
        id="alerts-unknown-severity",
    ),
    pytest.param(
        [*ECG_MONITOR, "dashboard", "--port", "{BUSY}"],
        "data",
        EXIT_PORT_IN_USE,
        "port {BUSY} on 127.0.0.1 is in use (the dashboard); choose another with --port",
        id="dashboard-port-in-use",
    ),
    pytest.param(
        [*ECG_MONITOR, "up", "--duration", "1"],
        "empty",
        EXIT_DATA_MISSING,
        "no WFDB record or database at 'mitdb/119': database 'mitdb' not found under ECG_DATA_DIR=",
        id="up-data-missing",
    ),
    pytest.param(
        [*ECG_MONITOR, "up", "--duration", "1", "-r", "mitdb/100,mitdb/999"],
        "data",
        EXIT_UNKNOWN_NAME,
        "no WFDB record or database at 'mitdb/999': unknown record",
        id="up-unknown-record",
    ),
    pytest.param(
        [*ECG_MONITOR, "up", "--duration", "1", "--metrics-port", "{BUSY}"],
        "data",
        EXIT_PORT_IN_USE,
        "port {BUSY} on 127.0.0.1 is in use (the worker's /metrics)",
        id="up-worker-port-in-use",
    ),
    pytest.param(
        [*ECG_MONITOR, "up", "--duration", "1", "--metrics-port", "{BUSY_MINUS_1}"],
        "data",
        EXIT_PORT_IN_USE,
        "port {BUSY} on 127.0.0.1 is in use (the replay's /metrics)",
        id="up-replay-port-in-use",
    ),
    pytest.param(
        [*ECG_MONITOR, "up", "--duration", "1"],
        "data",
        EXIT_BROKER_UNREACHABLE,
        "Kafka broker unreachable at 127.0.0.1:{CLOSED}",
        id="up-cluster-unreachable",
    ),
    pytest.param(
        [*TRAINING, "data", "--data-dir", "{PARTIAL}"],
        "data",
        EXIT_DATA_MISSING,
        "missing database(s) under {PARTIAL}: nstdb, ludb, ptbxl; run `python -m training data "
        "download --db nstdb --db ludb --db ptbxl`",
        id="training-data-missing",
    ),
    pytest.param(
        [*TRAINING, "evaluate", "nosuchmodel"],
        "data",
        EXIT_UNKNOWN_NAME,
        "unknown model 'nosuchmodel'; known: [",
        id="training-unknown-model",
    ),
]


@pytest.mark.slow  # one subprocess per case (about 17 s in all): run by `make test`, not test-fast
@pytest.mark.parametrize(("cmd", "data", "code", "text"), CASES)
def test_failure_is_one_line_and_its_exit_status(
    cmd: list[str],
    data: str,
    code: int,
    text: str,
    ports: dict[str, int],
    dirs: dict[str, Path],
    request: pytest.FixtureRequest,
) -> None:
    fmt = {**ports, "BUSY_MINUS_1": ports["BUSY"] - 1, "PARTIAL": dirs["partial"]}
    env = {}
    if request.node.callspec.id == "up-cluster-unreachable":
        env["ECG_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{ports['CLOSED']}"
    if request.node.callspec.id == "up-replay-port-in-use":
        probe = socket.socket()  # the port below BUSY must be free for this case to mean anything
        try:
            probe.bind(("127.0.0.1", ports["BUSY"] - 1))
        except OSError:
            pytest.skip("the port below the busy one is taken")
        finally:
            probe.close()
    proc = _run([c.format(**fmt) for c in cmd], ports, dirs[data], **env)
    prog = "ecg-train" if cmd[:3] == TRAINING else "ecg-monitor"
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{prog}: "), lines[0]
    assert text.format(**fmt) in lines[0], lines[0]
    if prog == "ecg-monitor":
        assert proc.stdout == ""  # nothing started, no banner


def test_training_data_is_zero_when_every_database_is_there(data_dir: Path) -> None:
    proc = subprocess.run(
        [*TRAINING, "data", "--data-dir", str(data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"missing": []' in proc.stdout


def test_help_documents_the_exit_statuses() -> None:
    from stream.cli import app

    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    for code, meaning in EXIT_CODES:
        assert f"{code}  {meaning}" in result.output
    assert [c for c, _ in EXIT_CODES] == list(range(8))


def test_error_classes_map_to_their_exit_status() -> None:
    from simulators import errors as sim
    from stream import errors as se
    from training import errors as te

    assert exit_code_for(se.ConfigError("x")) == EXIT_USAGE
    assert exit_code_for(se.EcgMonitorError("x")) == EXIT_USAGE
    assert exit_code_for(se.BrokerError("x")) == EXIT_BROKER_UNREACHABLE
    assert exit_code_for(se.PortInUseError("x")) == EXIT_PORT_IN_USE
    assert exit_code_for(se.DataError("x")) == EXIT_DATA_MISSING
    assert exit_code_for(sim.DataError("x")) == EXIT_DATA_MISSING
    assert exit_code_for(te.DataError("x")) == EXIT_DATA_MISSING
    assert exit_code_for(se.UnknownRecordError("x")) == EXIT_UNKNOWN_NAME
    assert exit_code_for(te.UnknownModelError("x")) == EXIT_UNKNOWN_NAME
    assert exit_code_for(te.ConfigError("x")) == EXIT_USAGE
    assert isinstance(te.UnknownModelError("x"), se.UnknownModelError)
    # other libraries' predictable failures
    assert classify(OSError(errno.EADDRINUSE, "Address already in use")) == (
        EXIT_PORT_IN_USE,
        "port in use: Address already in use",
    )
    assert classify(ValueError("a bug")) is None


def test_checks(ports: dict[str, int]) -> None:
    assert bootstrap_servers("a:1, PLAINTEXT://b:2,[::1]:3,c") == [
        ("a", 1),
        ("b", 2),
        ("::1", 3),
        ("c", 9092),
    ]
    with pytest.raises(PortInUseError, match=f"port {ports['BUSY']} "):
        check_port_free("127.0.0.1", ports["BUSY"], "test")
    check_port_free("127.0.0.1", ports["FREE"], "test")
    check_port_free("127.0.0.1", 0, "test")  # any free port: nothing to check
    with pytest.raises(BrokerUnreachableError, match="Connection refused"):
        check_broker_reachable(f"127.0.0.1:{ports['CLOSED']}", timeout_s=1)
    check_broker_reachable(f"127.0.0.1:{ports['CLOSED']},127.0.0.1:{ports['BUSY']}", timeout_s=1)


def test_a_missing_source_is_data_missing_or_an_unknown_record(
    dirs: dict[str, Path], tmp_path: Path
) -> None:
    from stream.errors import DataMissingError, UnknownRecordError
    from stream.records import resolve_record_specs

    with pytest.raises(UnknownRecordError, match="'mitdb/999': unknown record"):
        resolve_record_specs(["mitdb/100", "mitdb/999"], dirs["data"])
    with pytest.raises(DataMissingError, match="database 'ludb' not found under"):
        resolve_record_specs(["mitdb/100", "ludb/data/1"], dirs["partial"])
    with pytest.raises(DataMissingError, match="does not exist"):
        resolve_record_specs(["mitdb/100"], tmp_path / "nowhere")
    with pytest.raises(UnknownRecordError):
        resolve_record_specs([str(tmp_path / "100")], dirs["empty"])
    with pytest.raises(DataMissingError, match="does not exist"):
        resolve_record_specs([str(tmp_path / "no" / "100")], dirs["data"])
    assert resolve_record_specs(["mitdb/100"], dirs["partial"]) == [
        ("mitdb/100", dirs["partial"] / "mitdb/100")
    ]
