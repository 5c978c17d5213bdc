"""The live view survives restarts, in a real headless Chromium on the embedded broker with a worker and a
replay: the dashboard process killed and started again on the same port (the open pages reconnect by
themselves, without a reload, and catch up from the new process's snapshot), and the broker killed and
started again (the dashboard's consumer follows the recreated topics). Alarms delivered twice, or repeated
by the catch-up snapshot, appear once in the ward's alarm log and in the patient view's alarm table."""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from stream.broker import LocalBroker, ensure_topics_sync, free_port
from stream.dashboard.app import create_dashboard
from stream.dashboard.browser import chromium, served, wait_for, ward_tiles
from stream.schemas import AlertMessage, iso
from stream.settings import Settings
from stream.stack import spawn_cli, terminate, wait_for_metrics
from tests.integration.conftest import BROWSER_MARKS, fresh_settings, produce, settings_env

pytestmark = BROWSER_MARKS
STREAMS = 2

# (id, status) of every row of the ward's alarm log, and the ids of the patient view's alarm table
_WARD_LOG = "return [...document.querySelectorAll('#alarm-log li')].map(l => l.dataset.id + '|' + l.dataset.status)"
_PATIENT_ROWS = (
    "return [...document.querySelectorAll('#alarms tr[data-id]')].map(r => r.dataset.id)"
)
_LAST_TS = "return Object.fromEntries([...document.querySelectorAll('.tile')].map(t => [t.dataset.stream, Number(t.dataset.lastTs || 0)]))"


def _alert(stream_id: str, aid: str, status: str = "raised") -> tuple[bytes, bytes]:
    now = time.time()
    msg = AlertMessage(
        id=aid,
        stream_id=stream_id,
        kind="test_probe",
        severity="warning",
        status=status,
        start=iso(now - 5) or "",
        start_ts=now - 5,
        end=iso(now) if status == "resolved" else None,
        end_ts=now if status == "resolved" else None,
        evidence={"probe": aid},
        at_ts=now,
        published_at=now,
    )
    return stream_id.encode(), msg.to_bytes()


def _start_stack(settings: Settings, tmp: Path, prefix: str) -> list[Any]:
    """A worker (no models: heart rates and alarms only) and a looping real-time replay of STREAMS streams."""
    env = settings_env(settings)
    mport = free_port()
    worker = spawn_cli(
        ["worker", "--embedded", "--metrics-port", str(mport), "--models", "none"],
        env,
        tmp / "worker.log",
    )
    wait_for_metrics("127.0.0.1", mport, timeout_s=60, proc=worker)
    replay = spawn_cli(
        [
            *("replay", "--patients", str(STREAMS), "--speed", "1", "--faults", "none"),
            *("-r", "mitdb/100", "--prefix", prefix, "--loop", "--metrics-port", "-1"),
        ],
        env,
        tmp / "replay.log",
    )
    return [worker, replay]


def _tiles_with_hr(d: Any) -> list[dict[str, Any]] | None:
    t = ward_tiles(d)
    return t if len(t) == STREAMS and all(x["hr"] and not x["stale"] for x in t) else None


def _no_duplicates(rows: list[str]) -> list[str]:
    return [k for k, n in Counter(rows).items() if n > 1]


def _start_dashboard(settings: Settings, port: int, log: Path) -> Any:
    proc = spawn_cli(
        [
            *("dashboard", "--host", "127.0.0.1", "--port", str(port)),
            *("--bootstrap", settings.kafka_bootstrap),
        ],
        settings_env(settings),
        log,
    )

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the dashboard exited:\n{log.read_text()[-2000:]}")
        try:
            return (
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200
            )
        except OSError:
            return False

    assert wait_for(up, 60.0, 0.3), log.read_text()[-2000:]
    return proc


def test_pages_reconnect_after_a_dashboard_restart(settings: Settings, tmp_path: Path) -> None:
    t_start = time.monotonic()
    procs = _start_stack(settings, tmp_path, "rc")
    port = free_port()
    dash = _start_dashboard(settings, port, tmp_path / "dashboard-1.log")
    url = f"http://127.0.0.1:{port}"
    try:
        with chromium(1300, 1100) as d:
            d.get(url + "/ward")
            tiles = wait_for(lambda: _tiles_with_hr(d), 60.0, 0.5)
            assert tiles, f"{ward_tiles(d)}\n{(tmp_path / 'replay.log').read_text()[-1500:]}"
            sid = sorted(t["stream"] for t in tiles)[0]
            run = uuid.uuid4().hex[:6]
            before = [f"rc-{run}-{i}" for i in range(3)]
            # each alarm delivered twice (Kafka is at-least-once), one of them resolved
            msgs = [_alert(sid, a) for a in before] + [_alert(sid, before[0], "resolved")]
            produce(settings, settings.topics.alerts, msgs + msgs)
            want = {f"{a}|raised" for a in before} | {f"{before[0]}|resolved"}
            assert wait_for(lambda: want <= set(d.execute_script(_WARD_LOG)), 20.0)
            ward = d.current_window_handle
            d.switch_to.new_window("tab")
            d.get(f"{url}/patient/{sid}")
            assert wait_for(lambda: len(d.execute_script(_PATIENT_ROWS)) >= 3, 20.0)
            patient = d.current_window_handle
            for h in (ward, patient):  # a page that reloaded would lose this mark
                d.switch_to.window(h)
                d.execute_script("window.__mark = 'before-restart'")
            d.switch_to.window(ward)
            snaps = d.execute_script("return window.__ward.snapshots")

            # the dashboard process dies and a new one starts on the same port
            dash.kill()
            dash.wait(10)
            assert wait_for(
                lambda: d.find_element("id", "conn").text == "reconnecting", 15.0, 0.2
            ), d.find_element("id", "conn").text
            dash = _start_dashboard(settings, port, tmp_path / "dashboard-2.log")
            after = f"rc-{run}-new"
            produce(settings, settings.topics.alerts, [_alert(sid, after), msgs[1]])

            assert wait_for(lambda: d.execute_script("return window.__ward.snapshots") > snaps, 40)
            assert d.execute_script("return window.__mark") == "before-restart"
            assert wait_for(lambda: _tiles_with_hr(d), 30.0, 0.5), ward_tiles(d)
            assert wait_for(lambda: d.find_element("id", "conn").text == "live", 10.0)
            want.add(f"{after}|raised")
            rows = wait_for(
                lambda: r if want <= set(r := d.execute_script(_WARD_LOG)) else None, 20.0
            )
            assert rows, d.execute_script(_WARD_LOG)
            assert not _no_duplicates(rows), rows
            d.switch_to.window(patient)
            assert d.execute_script("return window.__mark") == "before-restart"
            ids = wait_for(
                lambda: r if after in (r := d.execute_script(_PATIENT_ROWS)) else None, 30.0
            )
            assert ids and set(before) <= set(ids), d.execute_script(_PATIENT_ROWS)
            assert not _no_duplicates(ids), ids
            assert d.execute_script("return window.__patient.snapshots") >= 2
    finally:
        terminate(dash, timeout_s=5)
        for p in reversed(procs):
            terminate(p, timeout_s=10)
    assert time.monotonic() - t_start < 120


def test_ward_follows_a_broker_restart(data_dir: Path, tmp_path: Path) -> None:
    bport = free_port()
    broker = LocalBroker(port=bport, log_path=tmp_path / "broker-1.log").start()
    settings = fresh_settings(broker.bootstrap, data_dir, tmp_path / "cache", "lbr")
    uid = settings.consumer_group.removeprefix("lbr-")  # unique to this run: the alarm ids use it
    procs = _start_stack(settings, tmp_path, "br")
    try:
        app = create_dashboard(settings, bootstrap=settings.kafka_bootstrap)
        feed = app.state.feed
        with served(app) as url, chromium(1300, 1000) as d:
            d.get(url + "/ward")
            tiles = wait_for(lambda: _tiles_with_hr(d), 60.0, 0.5)
            assert tiles, f"{ward_tiles(d)}\n{(tmp_path / 'replay.log').read_text()[-1500:]}"
            sid = sorted(t["stream"] for t in tiles)[0]
            first = _alert(sid, f"br-{uid}-0")
            produce(settings, settings.topics.alerts, [first])
            assert wait_for(lambda: f"br-{uid}-0|raised" in d.execute_script(_WARD_LOG), 20.0)
            d.execute_script("window.__mark = 'before-restart'")

            # the broker dies (memory storage: topics and offsets gone) and comes back on the same port
            proc = broker.process
            assert proc is not None
            proc.kill()
            proc.wait()
            base = d.execute_script(_LAST_TS)  # stream time of each tile's newest sample
            time.sleep(2.0)  # an outage, not a blip
            broker = LocalBroker(port=bport, log_path=tmp_path / "broker-2.log").start()
            ensure_topics_sync(settings)
            # the old alarm again (re-published after the restart) and a new one
            produce(settings, settings.topics.alerts, [first, _alert(sid, f"br-{uid}-1")])

            # new telemetry reaches every tile again, the new alarm shows, the old one only once
            def fresh() -> dict[str, float] | None:
                ts = d.execute_script(_LAST_TS)
                ok = len(ts) == STREAMS and all(ts[s] > base.get(s, 0) + 5 for s in ts)
                return ts if ok else None

            assert wait_for(fresh, 45.0, 0.5), (
                d.execute_script(_LAST_TS),
                base,
                feed.restarts,
                feed.resets,
            )
            rows = wait_for(
                lambda: r if f"br-{uid}-1|raised" in (r := d.execute_script(_WARD_LOG)) else None,
                30.0,
            )
            assert rows, d.execute_script(_WARD_LOG)
            assert not _no_duplicates(rows), rows
            assert d.execute_script("return window.__mark") == "before-restart"
            assert feed.connected
            assert wait_for(lambda: _tiles_with_hr(d), 20.0, 0.5), ward_tiles(d)
    finally:
        for p in reversed(procs):
            terminate(p, timeout_s=10)
        broker.stop()
