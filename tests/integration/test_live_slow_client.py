"""A stalled live-view client, for real: a raw HTTP client opens the ward's event stream, reads the response
headers and then never reads again, while a headless Chromium on the same ward view keeps updating. The
server goes on serving the browser (every alarm reaches it, its queue drops nothing), the stalled client's
bounded queue drops its oldest events (``ecg_live_events_dropped_total{view="ward"}`` rises, the queue never
holds more than ``ECG_DASHBOARD_CLIENT_QUEUE``), and closing the stalled connection frees its slot."""

from __future__ import annotations

import socket
import time
import urllib.request
import uuid
from pathlib import Path

from stream.dashboard.app import create_dashboard
from stream.dashboard.browser import chromium, served, wait_for, ward_tiles
from stream.schemas import AlertMessage, iso
from stream.settings import Settings
from stream.stack import spawn_cli, terminate
from tests.integration.conftest import BROWSER_MARKS, produce, settings_env

pytestmark = BROWSER_MARKS
QUEUE = 512  # the default: a browser that reads keeps up with a burst, the stalled client overflows
ALARMS = 1500


def _dropped(url: str) -> float:
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('ecg_live_events_dropped_total{view="ward"}')
    )


def _stalled_client(url: str) -> socket.socket:
    """Open the ward event stream with a tiny receive buffer, read the headers, and read nothing more."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect((host, int(port)))
    s.sendall(
        f"GET /api/live/events?view=ward HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)  # byte by byte: nothing of the body is read
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head, head
    return s


def test_stalled_client_does_not_block_the_browser(settings: Settings, tmp_path: Path) -> None:
    replay = spawn_cli(
        [
            *("replay", "--bootstrap", settings.kafka_bootstrap, "--patients", "2"),
            *("--speed", "1", "--faults", "none", "-r", "mitdb/100", "--loop"),
            *("--prefix", "slow", "--metrics-port", "-1"),
        ],
        settings_env(settings),
        tmp_path / "replay.log",
    )
    stalled = None
    try:
        assert settings.dashboard_client_queue == QUEUE
        app = create_dashboard(settings, bootstrap=settings.kafka_bootstrap)
        hub = app.state.hub
        with served(app) as url, chromium(1300, 1000) as d:
            d.get(url + "/ward")
            tiles = wait_for(lambda: len(ward_tiles(d)) == 2, 60.0, 0.5)
            assert tiles, (tmp_path / "replay.log").read_text()[-1500:]
            stalled = _stalled_client(url)
            assert wait_for(lambda: sum(c.view == "ward" for c in hub.clients) == 2, 10.0)
            browser_events = d.execute_script("return window.__ward.events")
            sid = ward_tiles(d)[0]["stream"]
            run = uuid.uuid4().hex[:6]
            now = time.time()
            pad = (
                "x" * 1500
            )  # about 2 kB per alert event: the stalled socket's buffers fill quickly
            msgs = [
                (
                    sid.encode(),
                    AlertMessage(
                        id=f"slow-{run}-{i}",
                        stream_id=sid,
                        kind="test_probe",
                        severity="warning",
                        status="raised",
                        start=iso(now) or "",
                        start_ts=now,
                        evidence={"probe": i, "pad": pad},
                        at_ts=now,
                        published_at=time.time(),
                    ).to_bytes(),
                )
                for i in range(ALARMS)
            ]
            t0 = time.monotonic()
            produce(settings, settings.topics.alerts, msgs)  # one by one, acknowledged: paced
            sent_s = time.monotonic() - t0

            # the stalled client overflows its bounded queue: counted, and never more than QUEUE held
            assert wait_for(lambda: _dropped(url) > 0, 30.0), _dropped(url)
            ward = [c for c in hub.clients if c.view == "ward"]
            assert len(ward) == 2 and all(len(c.queue) <= QUEUE for c in ward)
            slow = max(ward, key=lambda c: c.dropped)
            fast = min(ward, key=lambda c: c.dropped)
            assert slow.dropped > 0 and slow.needs_snapshot
            # the browser got every alarm, live, with nothing dropped on its way
            want = {f"slow-{run}-{i}|raised" for i in range(ALARMS)}
            seen = wait_for(
                lambda: want <= set(d.execute_script("return Object.keys(window.__alarmSeen)")),
                30.0,
            )
            assert seen, len(d.execute_script("return Object.keys(window.__alarmSeen)"))
            assert fast.dropped == 0, (fast.dropped, slow.dropped)
            assert d.execute_script("return window.__ward.events") > browser_events + ALARMS
            assert d.execute_script("return window.__ward.snapshots") == 1  # never had to catch up
            # while the stalled client still holds its connection, the server answers at once
            t1 = time.monotonic()
            assert urllib.request.urlopen(url + "/healthz", timeout=5).status == 200
            assert time.monotonic() - t1 < 2.0
            dropped_before = slow.dropped
            assert wait_for(lambda: slow.dropped > dropped_before, 15.0)  # tiles keep coming
            assert len(slow.queue) <= QUEUE

            # closing the stalled connection frees its slot
            stalled.close()
            stalled = None
            assert wait_for(lambda: sum(c.view == "ward" for c in hub.clients) == 1, 30.0)
            print(f"sent {ALARMS} alerts in {sent_s:.1f} s; stalled client dropped {slow.dropped}")
    finally:
        if stalled is not None:
            stalled.close()
        terminate(replay, timeout_s=10)
