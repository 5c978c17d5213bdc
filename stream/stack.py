"""The local stack as child processes: embedded broker (unless a bootstrap is set), worker, replay.

Used by ``ecg-monitor up``, ``ecg-monitor bench`` and the integration tests. Children run in their own
sessions, get SIGTERM on exit (SIGKILL after a timeout) and write logs to ``log_dir``.

Supervision: :func:`exited_child` tells which child (broker first, then workers, then the replay) has exited;
``ecg-monitor up`` checks it every second and, when one died on its own, prints which one, with its exit code
and log, stops the others (:func:`terminate_all`) and exits with :data:`EXIT_CHILD_DIED`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.errors import EXIT_CHILD_DIED as EXIT_CHILD_DIED  # re-exported (ecg-monitor up)
from stream.errors import EcgMonitorError
from stream.settings import Settings

# EXIT_CHILD_DIED (3, from stream.errors): the exit status of ``ecg-monitor up`` when one of its child processes
# (broker, worker, replay) exits on its own before ``--duration`` ends or Ctrl-C. stream.errors.EXIT_CODES lists
# every status (0 normal end, 2 usage or configuration, 4 broker unreachable or not started, 5 port in use...).


def spawn_cli(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``ecg-monitor ARGS`` (this interpreter) as a child in its own session, output to ``log_path``."""
    with open(log_path, "ab") as log_file:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "stream.cli", *args],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def terminate(proc: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    """SIGTERM a child, SIGKILL it after ``timeout_s``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout_s)


def terminate_all(procs: Iterable[subprocess.Popen[bytes] | None], timeout_s: float = 10.0) -> None:
    """SIGTERM every running child at once, wait up to ``timeout_s`` for all of them together, then SIGKILL
    the ones left."""
    running = [p for p in procs if p is not None and p.poll() is None]
    for proc in running:
        with suppress(ProcessLookupError):  # exited in between
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)


@dataclass(frozen=True)
class ChildExit:
    """A child of the local stack that exited: its name, pid, exit code (negative: killed by that signal) and
    log file."""

    name: str
    pid: int
    returncode: int
    log: Path | None

    def describe(self) -> str:
        code = self.returncode
        how = f"exited with code {code}"
        if code < 0:
            with suppress(ValueError):
                how = f"was killed by {signal.Signals(-code).name} (exit code {code})"
        return f"{self.name} (pid {self.pid}) {how}" + (f"; log: {self.log}" if self.log else "")


class ChildExitedError(EcgMonitorError):
    """A child of the local stack exited while it should have been running."""

    def __init__(self, child: ChildExit) -> None:
        super().__init__(child.describe())
        self.child = child


def stack_processes(
    stack: dict[str, Any],
) -> dict[str, tuple[subprocess.Popen[bytes], Path | None]]:
    """The running stack's child processes by name (broker first) with their log files."""
    logs: dict[str, Path] = stack.get("logs", {})
    out: dict[str, tuple[subprocess.Popen[bytes], Path | None]] = {}
    broker = stack.get("broker")
    if broker is not None and broker.process is not None:
        out["broker"] = (broker.process, broker.log_path)
    for name, proc in stack["procs"].items():
        if proc is not None:
            out[name] = (proc, logs.get(name))
    return out


def exited_child(stack: dict[str, Any]) -> ChildExit | None:
    """The first child of the stack (broker, workers, replay) that has exited, whatever its code; None while
    all run. In ``ecg-monitor up`` every child is meant to run until it is stopped."""
    for name, (proc, log) in stack_processes(stack).items():
        code = proc.poll()
        if code is not None:
            return ChildExit(name, proc.pid, code, log)
    return None


@contextmanager
def local_stack(
    settings: Settings,
    *,
    log_dir: Path,
    metrics_port: int,
    replay: bool = True,
    patients: int = 6,
    speed: float = 1.0,
    records: tuple[str, ...] | list[str] = ("mitdb/100",),
    faults: str = "none",
    loop: bool = False,
    duration: float | None = None,
    prefix: str = "patient",
    workers: int = 1,
    models: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Broker (unless a bootstrap is set) + ``workers`` worker subprocesses (one consumer group; worker i serves
    /metrics on ``metrics_port + i``; the replay on ``metrics_port + workers``) + a replay subprocess; all stopped
    on exit. Yields ``{"bootstrap", "procs" (name -> Popen), "logs" (name -> log file), "worker_ports",
    "broker"}``."""
    from stream.broker import LocalBroker, ensure_topics_sync

    log_dir.mkdir(parents=True, exist_ok=True)
    broker = None
    procs: dict[str, subprocess.Popen[bytes] | None] = {"worker": None, "replay": None}
    logs: dict[str, Path] = {}
    try:
        if settings.local_mode:
            broker = LocalBroker(
                port=settings.local_broker_port, log_path=log_dir / "broker.log"
            ).start()
            bs = broker.bootstrap
        else:
            bs = settings.kafka_bootstrap
        ensure_topics_sync(settings, bs)
        env = {
            **os.environ,
            "ECG_KAFKA_BOOTSTRAP": bs,
            "ECG_DATA_DIR": str(Path(settings.data_dir).resolve()),
        }
        mode = "--embedded" if broker is not None else "--cluster"
        for i in range(workers):
            name = "worker" if i == 0 else f"worker{i}"
            args = ["worker", "--bootstrap", bs, mode, "--metrics-port", str(metrics_port + i)]
            if models is not None:
                args += ["--models", models]
            logs[name] = log_dir / f"{name}.log"
            procs[name] = spawn_cli(args, env, logs[name])
        if replay:
            args = [
                "replay",
                "--bootstrap",
                bs,
                "--patients",
                str(patients),
                "--speed",
                str(speed),
                "--faults",
                faults,
                "--records",
                ",".join(records),
                "--prefix",
                prefix,
                "--metrics-port",
                str(metrics_port + workers),
            ]
            if loop:
                args.append("--loop")
            if duration:
                args += ["--duration", str(duration)]
            logs["replay"] = log_dir / "replay.log"
            procs["replay"] = spawn_cli(args, env, logs["replay"])
        yield {
            "bootstrap": bs,
            "procs": procs,
            "logs": logs,
            "broker": broker,
            "worker_ports": [metrics_port + i for i in range(workers)],
        }
    finally:
        terminate_all(procs.values())
        if broker is not None:
            broker.stop()


def scrape_metrics(host: str, port: int) -> dict[str, float]:
    """Samples of a /metrics page: ``name`` -> sum over label sets, and ``name{k="v",...}`` -> value
    (labels sorted); {} if unreachable."""
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
            if s.labels:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                sums[f"{s.name}{{{labels}}}"] = s.value
    return sums


def wait_for_metrics(
    host: str, port: int, timeout_s: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> dict[str, float]:
    """Poll ``/metrics`` until it answers; raise TimeoutError (or RuntimeError if ``proc`` exits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = scrape_metrics(host, port)
        if m:
            return m
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before serving /metrics")
        time.sleep(0.2)
    raise TimeoutError(f"no /metrics on {host}:{port} after {timeout_s:.0f} s")
