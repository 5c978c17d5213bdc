"""``ecg-monitor up`` supervises its children: the broker dying ends the run at once with a clear line and exit
status 3 (``stream.stack.EXIT_CHILD_DIED``); a normal ``--duration`` run still exits 0.

The integration tests run the real ``up`` (its own embedded broker, a worker, a replay) as a subprocess; the
supervision helpers of ``stream.stack`` are also tested on plain ``sleep`` processes (no broker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.broker import free_port
from stream.stack import (
    EXIT_CHILD_DIED,
    ChildExit,
    exited_child,
    scrape_metrics,
    terminate_all,
)


def _children(pid: int) -> dict[int, str]:
    """Direct children of ``pid``: pid -> command line (from /proc)."""
    out: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out[int(entry.name)] = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                )
        except (OSError, ValueError, IndexError):
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Up:
    def __init__(self, data_dir: Path, tmp: Path, *args: str) -> None:
        self.metrics_port = free_port(count=2)  # the replay serves on the next port
        self.log_dir = tmp / "logs"
        self.stderr = tmp / "up.stderr"
        env = {
            **os.environ,
            "ECG_KAFKA_BOOTSTRAP": "",  # local mode: up starts its own embedded broker
            "ECG_DATA_DIR": str(data_dir),
            "ECG_METRICS_PORT": str(self.metrics_port),  # the replay serves on the next port
            "ECG_CACHE_DIR": str(tmp / "cache"),
            "ECG_BIND_HOST": "127.0.0.1",
        }
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "up", "--log-dir", str(self.log_dir), *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.children: dict[int, str] = {}

    def text(self) -> str:
        return self.stderr.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Until up has its three children (broker, worker, replay), the worker serves /metrics and the
        replay has had frames acknowledged."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (
                f"up exited early ({self.proc.returncode}):\n{self.text()}"
            )
            self.children = _children(self.proc.pid)
            sent = scrape_metrics("127.0.0.1", self.metrics_port + 1).get(
                "ecg_replay_frames_sent_total", 0
            )
            if (
                len(self.children) >= 3
                and sent > 0
                and scrape_metrics("127.0.0.1", self.metrics_port)
            ):
                return
            time.sleep(0.5)
        raise AssertionError(f"up not ready after {timeout_s:.0f} s:\n{self.text()}")

    def pid_of(self, word: str) -> int:
        pids = [pid for pid, cmd in self.children.items() if word in cmd]
        assert len(pids) == 1, self.children
        return pids[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        for pid in self.children:  # children run in their own sessions
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def up_factory(data_dir: Path, tmp_path: Path) -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        up.stop()


def test_exited_child_names_the_first_dead_child_with_its_code_and_log(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    quitter = subprocess.Popen(["sh", "-c", "exit 7"])
    stack = {
        "procs": {"worker": sleeper, "replay": quitter, "worker1": None},
        "logs": {"worker": tmp_path / "worker.log", "replay": tmp_path / "replay.log"},
        "broker": None,
    }
    try:
        quitter.wait(10)
        child = exited_child(stack)
        assert child == ChildExit("replay", quitter.pid, 7, tmp_path / "replay.log")
        assert (
            child.describe() == f"replay (pid {quitter.pid}) exited with code 7; log: {child.log}"
        )
        t0 = time.monotonic()
        terminate_all(stack["procs"].values(), timeout_s=5)
        assert sleeper.returncode == -signal.SIGTERM and time.monotonic() - t0 < 5
    finally:
        sleeper.kill()
    killed = ChildExit("broker", 1, -9, None)
    assert killed.describe() == "broker (pid 1) was killed by SIGKILL (exit code -9)"


def test_terminate_all_kills_what_ignores_sigterm_after_one_shared_timeout() -> None:
    stubborn = [
        subprocess.Popen(["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"])
        for _ in range(2)
    ]
    time.sleep(0.3)  # let the shells install their trap
    t0 = time.monotonic()
    terminate_all(stubborn, timeout_s=1.0)
    took = time.monotonic() - t0
    assert [p.returncode for p in stubborn] == [-signal.SIGKILL, -signal.SIGKILL]
    assert took < 2.5  # one shared deadline, not 1 s per process


@pytest.mark.integration
def test_up_exits_non_zero_when_the_broker_dies(
    data_dir: Path, tmp_path: Path, up_factory: list[Up]
) -> None:
    up = Up(data_dir, tmp_path, "--duration", "60", "--patients", "2")
    up_factory.append(up)
    up.wait_ready()
    broker, worker, replay = up.pid_of("tansu"), up.pid_of(" worker "), up.pid_of(" replay ")
    os.kill(broker, signal.SIGKILL)
    killed = time.monotonic()
    try:
        code = up.proc.wait(20)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"up still running 20 s after the broker died:\n{up.text()}") from None
    took = time.monotonic() - killed
    print(f"up exited {took:.1f} s after the broker was killed")
    text = up.text()
    assert code == EXIT_CHILD_DIED == 3, text
    assert took < 8.0, f"up took {took:.1f} s to exit\n{text}"
    line = next(ln for ln in text.splitlines() if "died before the end of the run" in ln)
    assert f"broker (pid {broker}) was killed by SIGKILL (exit code -9)" in line
    assert str(up.log_dir / "broker.log") in line
    assert "stopping worker and replay" in line
    assert not _alive(worker) and not _alive(replay)  # the others were stopped


@pytest.mark.integration
def test_up_exits_zero_after_its_duration(
    data_dir: Path, tmp_path: Path, up_factory: list[Up]
) -> None:
    up = Up(data_dir, tmp_path, "--duration", "15", "--patients", "2")
    up_factory.append(up)
    up.wait_ready()
    code = up.proc.wait(60)
    text = up.text()
    assert code == 0, text
    assert "alert(s) raised" in text
    assert "died" not in text
    replay_log = (up.log_dir / "replay.log").read_text(errors="replace")
    # the replay was stopped by SIGTERM, waited for its acknowledgements and said what it sent and lost
    summary = next(ln for ln in replay_log.splitlines() if ln.startswith("replay: sent "))
    assert "lost 0 " in summary
    assert int(summary.split()[2]) > 0
