"""The dashboard in a real browser: headless Chromium (Selenium), the dashboard served in a thread, and the
two commands built on them: ``ecg-monitor bench-live`` (alarm-to-browser latency, streams one ward page
follows) and ``ecg-monitor dashboard-screenshots``. Needs the ``dev`` extra (selenium) and Debian's
``chromium`` + ``chromedriver``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stream.broker import client_kwargs, free_port
from stream.errors import ConfigError
from stream.schemas import AlertMessage, iso
from stream.settings import Settings
from stream.testing import wait_until as wait_for

#: Probe alarms the benchmark publishes (kind of their AlertMessage).
PROBE_KIND = "bench_probe"


def chromium_paths() -> tuple[str, str]:
    """(chromium, chromedriver) executables; :class:`ConfigError` naming the packages when missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        raise ConfigError(
            "needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)"
        )
    return chromium, driver


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium WebDriver, quit on exit."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        raise ConfigError("needs selenium: pip install -e '.[dev]'") from exc
    binary, driver_path = chromium_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@contextlib.contextmanager
def served(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a daemon thread; yields its base URL (``http://host:port``)."""
    import uvicorn

    port = port or free_port(host)
    srv = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the dashboard did not start")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=15)


def ward_tiles(driver: Any) -> list[dict[str, Any]]:
    """The ward page's tiles: stream, heart rate, alarm kind and severity, stale flag."""
    out: list[dict[str, Any]] = driver.execute_script(
        "return [...document.querySelectorAll('.tile')].map(t => ({stream: t.dataset.stream,"
        " hr: t.querySelector('.hr').dataset.hr || null, kind: t.querySelector('.alarm').dataset.kind || '',"
        " severity: t.querySelector('.alarm').dataset.severity || '', kinds: t.querySelector('.alarm').dataset.kinds || '', stale: t.classList.contains('stale')}));"
    )
    return out


def _probe(stream_id: str, i: int, run: str) -> AlertMessage:
    now = time.time()
    return AlertMessage(
        id=f"probe-{run}-{i}",
        stream_id=stream_id,
        kind=PROBE_KIND,
        severity="warning",
        status="raised",
        start=iso(now) or "",
        start_ts=now,
        evidence={"probe": i},
        at_ts=now,
        published_at=now,
    )


async def _publish_probes(
    settings: Settings, bootstrap: str, streams: list[str], n: int, every_s: float, run: str
) -> dict[str, float]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client_kwargs(settings, bootstrap), linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    try:
        for i in range(n):
            sid = streams[i % len(streams)]
            msg = _probe(sid, i, run)
            sent[f"{msg.id}|raised"] = float(msg.published_at or 0.0)
            await producer.send_and_wait(settings.topics.alerts, msg.to_bytes(), key=sid.encode())
            await asyncio.sleep(every_s)
    finally:
        await producer.stop()
    return sent


def bench_live(
    settings: Settings,
    *,
    streams: int = 100,
    alarms: int = 100,
    every_s: float = 0.1,
    models: str | None = None,
    log_dir: Path,
    progress: Any = None,
) -> dict[str, Any]:
    """Local stack (broker, worker, replay of ``streams`` real-time streams) + the dashboard + a headless
    Chromium on the ward view; publish ``alarms`` probe alerts (one every ``every_s``) and time each from
    its ``published_at`` to the moment the page painted it (same clock: one machine)."""
    from stream.dashboard.app import create_dashboard
    from stream.stack import local_stack

    say = progress or (lambda _msg: None)
    with local_stack(
        settings,
        log_dir=log_dir,
        metrics_port=free_port(count=2),  # the worker, then the replay
        patients=streams,
        speed=1.0,
        records=settings.demo_records,
        faults="none",
        loop=True,
        models=models,
    ) as stack:
        bs = stack["bootstrap"]
        app = create_dashboard(settings, bootstrap=bs, host="127.0.0.1")
        with served(app) as url, chromium(1600, 1200) as driver:
            say(f"dashboard {url}; waiting for {streams} tiles")
            driver.get(url + "/ward")
            t0 = time.monotonic()
            wait_for(lambda: len(ward_tiles(driver)) >= streams, 180.0, 1.0)
            ready_s = time.monotonic() - t0
            wait_for(
                lambda: sum(1 for t in ward_tiles(driver) if t["hr"] and not t["stale"]) >= streams,
                60.0,
                1.0,
            )
            tiles = ward_tiles(driver)
            ids = sorted(t["stream"] for t in tiles)[:streams]
            say(f"{len(tiles)} tiles after {ready_s:.0f} s; publishing {alarms} probe alarms")
            run = uuid.uuid4().hex[:8]
            sent = asyncio.run(_publish_probes(settings, bs, ids, alarms, every_s, run))
            seen: dict[str, float] = wait_for(
                lambda: (
                    s
                    if len(s := driver.execute_script("return window.__alarmSeen")) >= len(sent)
                    and all(k in s for k in sent)
                    else None
                ),
                30.0,
                0.5,
            ) or driver.execute_script("return window.__alarmSeen")
            lat = sorted(seen[k] / 1000.0 - v for k, v in sent.items() if k in seen)
            tiles = ward_tiles(driver)
            live = sum(1 for t in tiles if t["hr"] and not t["stale"])
            page = driver.execute_script("return window.__ward")
    q = np.quantile(lat, [0.5, 0.99]) if lat else [float("nan"), float("nan")]
    return {
        "streams_replayed": streams,
        "tiles_shown": len(tiles),
        "streams_followed_live": live,
        "alarms_published": len(sent),
        "alarms_seen": len(lat),
        "alarm_to_browser_p50_s": round(float(q[0]), 4),
        "alarm_to_browser_p99_s": round(float(q[1]), 4),
        "alarm_to_browser_max_s": round(max(lat), 4) if lat else None,
        "alarm_to_browser_mean_s": round(statistics.fmean(lat), 4) if lat else None,
        "page_draw_ms_mean": page.get("drawMs"),
        "page_events": page.get("events"),
        "seconds_to_all_tiles": round(ready_s, 1),
        "models": models,
    }


def screenshots(
    settings: Settings, out_dir: Path, *, log_dir: Path, streams: int = 6
) -> list[Path]:
    """Screenshots of the ward view, one patient view (one with an alarm when there is one) and an
    upload result (a PTB-XL record uploaded with four limb leads left out, so rebuilt leads show)."""
    from stream.dashboard.app import create_dashboard
    from stream.records import read_record
    from stream.stack import local_stack

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    with local_stack(
        settings,
        log_dir=log_dir,
        metrics_port=free_port(count=2),  # the worker, then the replay
        patients=streams,
        speed=1.0,
        records=settings.demo_records,
        faults="demo",
        loop=True,
    ) as stack:
        app = create_dashboard(settings, bootstrap=stack["bootstrap"], host="127.0.0.1")
        with served(app) as url, chromium(1400, 1000) as driver:
            driver.get(url + "/ward")
            wait_for(lambda: any(t["kind"] for t in ward_tiles(driver)), 90.0, 1.0)
            time.sleep(2)  # let the waveforms fill the tiles
            paths.append(out_dir / "ward.png")
            driver.save_screenshot(str(paths[-1]))
            tiles = ward_tiles(driver)
            pick = next((t for t in tiles if t["kind"]), tiles[0])
            driver.set_window_size(1100, 1500)
            driver.get(f"{url}/patient/{pick['stream']}")
            wait_for(
                lambda: driver.execute_script("return window.__patient.frames") >= 12, 40.0, 0.5
            )
            wait_for(
                lambda: driver.execute_script(
                    "return document.querySelectorAll('.att-cell').length"
                ),
                30.0,
                1.0,
            )
            paths.append(out_dir / "patient.png")
            driver.save_screenshot(str(paths[-1]))
            rec = read_record(settings.data_dir / "ptbxl/records100/01000/01002_lr")
            keep = [
                i for i, lead in enumerate(rec.leads) if lead not in ("III", "aVR", "aVL", "aVF")
            ]
            npy = out_dir / "upload-8-leads.npy"
            np.save(npy, rec.signal[:, keep].astype(np.float32))
            driver.set_window_size(1100, 2900)
            driver.get(url + "/")
            wait_for(
                lambda: driver.execute_script(
                    "return document.querySelectorAll('#model option').length"
                ),
                30,
            )
            driver.execute_script("document.getElementById('model').value = 'vae_bilstm_mha'")
            driver.execute_script(
                "document.getElementById('leads').value = arguments[0]; document.getElementById('fs').value = arguments[1];",
                ",".join(rec.leads[i] for i in keep),
                str(rec.fs),
            )
            driver.find_element("id", "files").send_keys(str(npy.resolve()))
            driver.find_element("id", "analyze").click()
            wait_for(lambda: driver.find_element("id", "result").is_displayed(), 60.0, 0.5)
            time.sleep(1)
            paths.append(out_dir / "upload.png")
            driver.save_screenshot(str(paths[-1]))
            npy.unlink()
    return paths
