"""Every panel of the Grafana dashboard answers on a live stack.

A worker, a real-time replay (demo faults, so alerts and dropouts happen), the 12-lead dashboard (one
analysis, one refused upload) and a real Prometheus scraping the three under the job names of
deploy/prometheus.yml; then every target expression of deploy/grafana/ecg-monitor-dashboard.json, with
Grafana's variables substituted, goes through Prometheus's HTTP API. A panel fails on a query error, on a
metric name that the right job's /metrics does not expose, on an empty or NaN result, on a count that is
not an integer, or on a missing unit. The table panel -> query -> value is printed (``pytest -s``).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.broker import free_port, wait_for_port
from stream.settings import Settings
from stream.stack import spawn_cli, terminate, wait_for_metrics
from tests.integration.conftest import WorkerFactory, produce, settings_env, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD_JSON = DEPLOY / "grafana" / "ecg-monitor-dashboard.json"
PTBXL = Path("ptbxl") / "records100" / "01000" / "01002_lr"
#: Units a panel may declare: seconds, ops/s, bytes, a fraction shown in percent, and plain counts.
UNITS = {"s", "ops", "bytes", "percentunit", "short", "none"}
#: Units of counts: every value of such a panel must be an integer.
COUNT_UNITS = {"short", "none"}
#: Grafana's variables as this test substitutes them; ``$__range`` is the time Prometheus has been scraping.
RATE_INTERVAL = "30s"
INTERVAL = "15s"
#: Series Prometheus makes for every scrape (no /metrics exposes them).
SCRAPE_SERIES = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
}
PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}


@dataclass(frozen=True)
class Target:
    panel: str
    unit: str
    ref: str
    expr: str


def panel_targets(dashboard: dict[str, Any]) -> list[Target]:
    """Every query target of the dashboard (panels inside collapsed rows too); a panel without a unit fails."""
    out: list[Target] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            walk(p.get("panels", []))
            if p.get("type") == "row":
                continue
            unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
            assert unit in UNITS, f"panel {p.get('title')!r}: unit {unit!r} not one of {UNITS}"
            assert p.get("targets"), f"panel {p.get('title')!r} has no query"
            out.extend(Target(p["title"], unit, t["refId"], t["expr"]) for t in p["targets"])

    walk(dashboard["panels"])
    return out


def substitute(expr: str, range_s: int) -> str:
    """``expr`` with Grafana's interval variables replaced as Grafana would (``$x`` and ``${x}`` forms)."""
    values = {"__rate_interval": RATE_INTERVAL, "__interval": INTERVAL, "__range": f"{range_s}s"}
    out = re.sub(
        r"\$\{?(__rate_interval|__interval|__range)\}?", lambda m: values[m.group(1)], expr
    )
    assert "$" not in out, f"unknown Grafana variable in {expr!r}"
    return out


def metric_selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, its label matchers or "") of every vector selector of a PromQL expression."""
    matchers: list[str] = []

    def hold(m: re.Match[str]) -> str:
        matchers.append(m.group(0))
        return f"{{{len(matchers) - 1}}}"

    text = re.sub(r"\{[^}]*\}", hold, expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # strings hold no names
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    found: list[tuple[str, str]] = []
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?(\s*\{(\d+)\})?", text):
        name, call, index = m.group(1), m.group(2), m.group(4)
        if call or name.lower() in PROMQL_WORDS:
            continue  # a function or an operator
        found.append((name, matchers[int(index)] if index else ""))
    return found


def exposed(port: int, path: str = "/metrics") -> set[str]:
    """Sample names a /metrics endpoint exposes (``_total``, ``_bucket``, ``_sum``, ``_count`` included)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        text = resp.read().decode()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def deploy_jobs() -> list[str]:
    """Job names of deploy/prometheus.yml, in order."""
    return re.findall(r"job_name:\s*(\S+)", (DEPLOY / "prometheus.yml").read_text())


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # .ci/run installs the Debian `prometheus` package; never pass vacuously
        pytest.fail(f"{name} not on PATH: apt-get install -y prometheus")
    return path


class Prometheus:
    def __init__(self, port: int) -> None:
        self.port = port

    def query(self, expr: str) -> dict[str, Any]:
        """The API's answer to an instant query (``status``, ``data`` or ``error``)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return dict(json.load(resp))
        except urllib.error.HTTPError as exc:  # 400/422: the error is in the JSON body
            return dict(json.load(exc))

    def value(self, expr: str) -> float | None:
        try:
            result = self.query(expr).get("data", {}).get("result", [])
        except OSError:
            return None
        return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    """Starts Prometheus (1 s scrapes) for {job name: port}; stopped in teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(targets: dict[str, int]) -> Prometheus:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
            + "".join(
                f"  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{p}']\n"
                for job, p in targets.items()
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    _binary("prometheus"),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=(tmp_path / "prometheus.log").open("wb"),
            )
        )
        wait_for_port("127.0.0.1", port, timeout_s=30)
        return Prometheus(port)

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Replay and dashboard processes of the test, terminated in teardown."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            terminate(proc, timeout_s=15)


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:] if path.is_file() else ""


def _summary(result: list[dict[str, Any]]) -> str:
    """``label=value`` of each series (or the value of a single unlabelled one)."""
    parts = []
    for r in result:
        labels = ",".join(v for k, v in sorted(r["metric"].items()) if k != "__name__")
        parts.append(f"{labels}={r['value'][1]}" if labels else r["value"][1])
    return "; ".join(parts)


def test_every_grafana_panel_answers_on_a_live_stack(
    settings: Settings,
    workers: WorkerFactory,
    data_dir: Path,
    tmp_path: Path,
    prometheus_for: Any,
    children: list[subprocess.Popen[bytes]],
) -> None:
    jobs = deploy_jobs()
    job = {name.rsplit("-", 1)[-1]: name for name in jobs}
    assert {"worker", "replay", "dashboard"} <= set(job), f"deploy/prometheus.yml jobs: {jobs}"
    env = settings_env(settings)

    worker = workers.start()  # default models: scores, anomalies, skipped and recovered windows
    dash_port = free_port(count=2)  # two distinct ports, the replay's next to the dashboard's
    replay_port = dash_port + 1
    dash_log, replay_log = tmp_path / "dashboard.log", tmp_path / "replay.log"
    children.append(
        spawn_cli(["dashboard", "--host", "127.0.0.1", "--port", str(dash_port)], env, dash_log)
    )
    children.append(
        spawn_cli(
            [
                "replay",
                "--records",
                "mitdb/100",
                "--patients",
                "3",
                "--speed",
                "1",
                "--faults",
                "demo",  # flatline, lead-off and lost frames from 12 s: alerts and dropouts
                "--prefix",
                "graf",
                "--metrics-port",
                str(replay_port),
            ],
            env,
            replay_log,
        )
    )
    ports = {
        job["worker"]: worker.port,
        job["replay"]: replay_port,
        job["dashboard"]: dash_port,
    }
    prom = prometheus_for(ports)
    started = time.monotonic()
    try:
        wait_for_metrics("127.0.0.1", replay_port, timeout_s=60, proc=children[1])
        wait_for_metrics("127.0.0.1", dash_port, timeout_s=90, proc=children[0])
    except (TimeoutError, RuntimeError) as exc:
        raise AssertionError(
            f"{exc}\nreplay:\n{_log_tail(replay_log)}\ndashboard:\n{_log_tail(dash_log)}"
        ) from exc
    # counters must be scraped at 0 before the events, or increase() over the range never sees them
    scraped = [
        f'ecg_frames_rejected_total{{job="{job["worker"]}",reason="bad_json"}}',
        f'ecg_dashboard_analyses_total{{job="{job["dashboard"]}"}}',
        f'ecg_replay_frames_sent_total{{job="{job["replay"]}"}}',
    ]
    assert wait_until(
        lambda: all(prom.value(q) is not None for q in scraped), timeout_s=60, every_s=0.5
    ), _log_tail(tmp_path / "prometheus.log")
    produce(settings, settings.topics.telemetry, [(b"graf-bad", b"not json")])  # one dead letter

    base = f"http://127.0.0.1:{dash_port}"
    with httpx.Client(timeout=120) as client:
        model = client.get(f"{base}/api/models").json()["default"]
        files = [
            ("files", (p.name, p.read_bytes(), "application/octet-stream"))
            for p in sorted((data_dir / PTBXL).parent.glob(PTBXL.name + "*"))
        ]
        r = client.post(f"{base}/api/analyze", files=files, data={"model": model})
        assert r.status_code == 200, r.text
        r = client.post(f"{base}/api/analyze", data={"fs": "100"})  # no file: refused, counted
        assert r.status_code == 422 and r.json()["reason"] == "format", r.text

    def ready() -> bool:
        checks = [
            *(f'up{{job="{j}"}} == 1' for j in ports),
            "sum(ecg_alerts_total) >= 1",  # the demo flatline raised signal loss (alert latency)
            "sum(ecg_model_scores_total) > 0",
            "sum(ecg_dropouts_total) >= 1",
            "count(ecg_consumer_lag_messages) > 0",
            "sum(ecg_dashboard_analyses_total) >= 1",
        ]
        return all(prom.value(c) is not None for c in checks)

    assert wait_until(ready, timeout_s=180, every_s=2), (
        f"stack not ready\nworker:\n{worker.log_tail()}\nreplay:\n{_log_tail(replay_log)}\n"
        f"prometheus:\n{_log_tail(tmp_path / 'prometheus.log')}"
    )
    time.sleep(5)  # a few more scrapes into every rate window

    names = {j: exposed(p) for j, p in ports.items()}
    targets = panel_targets(json.loads(DASHBOARD_JSON.read_text()))
    range_s = math.ceil(time.monotonic() - started) + 5
    rows: list[tuple[str, str, str]] = []
    problems: list[str] = []
    for t in targets:
        expr = substitute(t.expr, range_s)
        where = f"{t.panel} [{t.ref}]"
        for name, matchers in metric_selectors(expr):
            m = re.search(r'job\s*(=~?)\s*"([^"]*)"', matchers)
            if m:
                pattern = m.group(2) if m.group(1) == "=~" else re.escape(m.group(2))
                want = [j for j in ports if re.fullmatch(pattern, j)]
            elif name.startswith("ecg_replay_"):
                want = [job["replay"]]
            elif name.startswith("ecg_dashboard_"):
                want = [job["dashboard"]]
            elif name.startswith("ecg_"):
                want = [job["worker"]]
            else:
                want = []
            if not want:
                problems.append(
                    f"{where}: {name} is no ecg metric and names no job of {list(ports)}"
                )
            for j in want:
                if name not in names[j] and name not in SCRAPE_SERIES:
                    problems.append(f"{where}: {name} is not exposed by the /metrics of {j}")
        answer = prom.query(expr)
        if answer.get("status") != "success":
            problems.append(f"{where}: query error {answer.get('error')!r}: {expr}")
            rows.append((where, expr, "ERROR"))
            continue
        result = answer["data"]["result"]
        rows.append((where, expr, _summary(result) or "EMPTY"))
        if not result:
            problems.append(f"{where}: empty result: {expr}")
        for r in result:
            v = float(r["value"][1])
            if math.isnan(v):
                problems.append(f"{where}: NaN for {r['metric']}: {expr}")
            elif t.unit in COUNT_UNITS and not v.is_integer():
                problems.append(f"{where}: count {v} is not an integer: {expr}")

    # the signal-loss episode of the demo flatline was open for a while: the open-alarms gauge saw it
    peak = prom.value(f"max_over_time(sum(ecg_alerts_open)[{range_s}s:1s])")
    if not peak or peak < 1:
        problems.append(
            f"ecg_alerts_open never rose above 0 (peak {peak}) though alerts were raised"
        )

    table = "\n".join(f"{p} | {q} | {v}" for p, q, v in rows)
    print(
        f"\npanel | query | value  ($__range={range_s}s, $__rate_interval={RATE_INTERVAL})\n{table}"
    )
    assert len(rows) == len(targets) and targets
    assert not problems, "\n".join(problems) + "\n\n" + table
