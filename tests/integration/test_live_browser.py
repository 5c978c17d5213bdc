"""The live view in a real headless Chromium, on the embedded broker with a worker and a replay: ward tiles
with heart rates, an injected flatline turning its tile to a signal-loss alarm, the patient view drawing
on the ECG grid (checked by pixels), acknowledging an alarm publishing the action, malformed messages on
every topic it reads skipped, and an unauthenticated request to a non-loopback bind refused."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from stream.broker import free_port
from stream.dashboard.app import create_dashboard
from stream.dashboard.browser import chromium, served, wait_for, ward_tiles
from stream.schemas import AlarmActionMessage
from stream.settings import Settings
from stream.stack import spawn_cli, terminate
from tests.integration.conftest import BROWSER_MARKS, consume, produce, settings_env

pytestmark = BROWSER_MARKS
STREAMS = 3

# canvas pixels: dark trace ink and the grid's pink lines (opaque ones: a canvas not drawn yet is transparent)
_INK = """const c = document.getElementById('ecg'); const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let ink = 0, grid = 0; for (let i = 0; i < px.length; i += 4) { const r = px[i], g = px[i + 1], b = px[i + 2];
if (px[i + 3] < 200) continue; if (r < 70 && g < 70 && b < 70) ink++; else if (r > 200 && g < 215 && g > 120 && b < 215 && r - g > 25) grid++; }
return [ink, grid];"""


def test_live_ward_patient_and_actions(settings: Settings, workers, tmp_path):
    workers.start()
    replay = spawn_cli(
        [
            "replay",
            "--bootstrap",
            settings.kafka_bootstrap,
            "--patients",
            str(STREAMS),
            "--speed",
            "1",
            "--faults",
            "demo",
            "--records",
            "mitdb/100",
            "--loop",
            "--metrics-port",
            "-1",
        ],
        settings_env(settings),
        tmp_path / "replay.log",
    )
    try:
        app = create_dashboard(settings, bootstrap=settings.kafka_bootstrap)
        with served(app) as url, chromium(1400, 1400) as d:
            d.get(url + "/ward")

            def all_tiles_with_hr() -> list[dict] | None:
                t = ward_tiles(d)
                return t if len(t) == STREAMS and all(x["hr"] for x in t) else None

            tiles = wait_for(all_tiles_with_hr, 90.0, 1.0)
            assert tiles, (
                f"ward tiles: {ward_tiles(d)}\n{(tmp_path / 'replay.log').read_text()[-2000:]}"
            )
            events = d.execute_script("return window.__ward.events")
            # malformed messages on every topic the live view reads: skipped, counted, the page goes on
            produce(settings, settings.topics.beats, [(b"x", b"{garbage")])
            for name in ("alerts", "dropouts", "scores", "alarm_actions"):
                produce(settings, getattr(settings.topics, name), [(b"x", b"\xff not json")])
            # the flatline injected 12 s into stream 0 raises signal loss on its tile
            lost = wait_for(
                lambda: [t for t in ward_tiles(d) if "signal_loss" in t["kinds"].split(",")],
                75.0,
                0.5,
            )
            assert lost, f"no signal-loss tile: {ward_tiles(d)}"
            assert (
                d.execute_script("return window.__ward.events") > events
            )  # heart rates keep coming
            metrics = urllib.request.urlopen(url + "/metrics").read().decode()
            malformed = sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("ecg_live_messages_total") and 'result="malformed"' in line
            )
            assert malformed >= 5, metrics
            sid = lost[0]["stream"]

            d.get(f"{url}/patient/{sid}")
            assert wait_for(lambda: d.execute_script("return window.__patient.frames") >= 3, 30.0)

            def inked() -> list[int] | None:
                v = d.execute_script(_INK)
                return v if v[0] > 500 and v[1] > 5000 else None

            ink, grid = wait_for(inked, 20.0) or d.execute_script(_INK)
            assert ink > 500 and grid > 5000, (ink, grid)
            row = wait_for(
                lambda: d.find_elements("css selector", "#alarms tr[data-id] button.acknowledge"),
                20.0,
            )
            assert row, d.find_element("id", "alarms").text
            alert_id = row[0].find_element("xpath", "./ancestor::tr").get_attribute("data-id")
            d.find_element("id", "user").send_keys("dr test")
            row[0].click()
            actions = consume(
                settings,
                settings.topics.alarm_actions,
                until=lambda vs: any(b'"alert_id":"' + alert_id.encode() in v for v in vs),
                timeout_s=20,
            )
            acts = [AlarmActionMessage.from_bytes(v) for v in actions if alert_id.encode() in v]
            assert acts and acts[0].action == "acknowledge" and acts[0].user == "dr test"
            assert acts[0].stream_id == sid
            assert wait_for(
                lambda: "acknowledged by dr test" in d.find_element("id", "alarms").text, 15.0
            )
    finally:
        terminate(replay, timeout_s=10)


def test_non_loopback_bind_refuses_unauthenticated(settings: Settings):
    guarded = Settings(
        kafka_bootstrap=settings.kafka_bootstrap, dashboard_token="t0ken", dashboard_live=False
    )
    app = create_dashboard(guarded, models=("cae12",), host="0.0.0.0")
    with served(app, host="0.0.0.0", port=free_port("0.0.0.0")) as url:
        base = url.replace("0.0.0.0", "127.0.0.1")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/ward")
        assert err.value.code == 401 and json.loads(err.value.read())["reason"] == "unauthorized"
        ok = urllib.request.urlopen(
            urllib.request.Request(base + "/ward", headers={"Authorization": "Bearer t0ken"})
        )
        assert ok.status == 200
        assert urllib.request.urlopen(base + "/healthz").status == 200
