"""A real Prometheus server scrapes a worker; the deploy/ configuration and rules pass promtool."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from stream.broker import free_port, wait_for_port
from stream.records import read_record
from stream.settings import Settings
from stream.testing import record_frames, telemetry_messages
from tests.integration.conftest import WorkerFactory, produce, wait_until

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # .ci/run installs the Debian `prometheus` package; never pass vacuously
        pytest.fail(f"{name} not on PATH: apt-get install -y prometheus")
    return path


@pytest.mark.parametrize(
    ("what", "path"), [("config", "prometheus.yml"), ("rules", "alert-rules.yml")]
)
def test_promtool_accepts_deploy_files(what: str, path: str) -> None:
    res = subprocess.run(
        [_binary("promtool"), "check", what, str(DEPLOY / path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_prometheus_scrapes_worker_metrics(
    settings: Settings, workers: WorkerFactory, data_dir: Path, tmp_path: Path
) -> None:
    worker = workers.start()
    rec = read_record(data_dir / "mitdb" / "100", 0, 360 * 5)
    frames = list(telemetry_messages(record_frames(rec, stream_id="prom-1")))  # 5 one-second frames
    produce(settings, settings.topics.telemetry, [*frames, (b"prom-1", b"not json")])

    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        f"scrape_configs:\n  - job_name: ecg-monitor-worker\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{worker.port}']\n"
    )
    proc = subprocess.Popen(
        [
            _binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:
        wait_for_port("127.0.0.1", port, timeout_s=30)

        def query(expr: str) -> float | None:
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    body = json.load(resp)
            except OSError:
                return None
            result = body.get("data", {}).get("result", [])
            return float(result[0]["value"][1]) if result else None

        received = wait_until(
            lambda: (v := query('ecg_frames_received_total{job="ecg-monitor-worker"}')) == 6 and v,
            timeout_s=45,
            every_s=0.5,
        )
        assert received == 6, (tmp_path / "prometheus.log").read_text()[-2000:]
        assert query('up{job="ecg-monitor-worker"}') == 1.0
        assert query('ecg_frames_rejected_total{reason="bad_json"}') == 1.0
        assert (query("ecg_samples_processed_total") or 0) >= 5 * 360
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
