"""deploy/alert-rules.yml: promtool's unit tests of every rule, and the contract between the rules and the
metrics the worker and the replay export (names, labels, the last-frame timestamps, the model bounds)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from stream.app import update_consumer_lag
from stream.metrics import PipelineMetrics, ReplayMetrics
from stream.pipeline import FramePipeline
from stream.settings import Settings
from stream.testing import FakeClock, encode_frames, feed_pipeline, synthetic_frames

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "alert-rules.yml"
RULE_TESTS = sorted((DEPLOY / "rules-tests").glob("*.yml"))
CARDS = ROOT / "models" / "artifacts"


def _rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def _alerts() -> list[str]:
    return [r["alert"] for r in _rules() if "alert" in r]


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:  # .ci/run installs the Debian `prometheus` package; never pass vacuously
        pytest.fail("promtool not on PATH: apt-get install -y prometheus")
    assert RULE_TESTS, "no deploy/rules-tests/*.yml"
    res = subprocess.run(
        [promtool, "test", "rules", *map(str, RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert (res.stdout + res.stderr).count("SUCCESS") == len(RULE_TESTS)


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../alert-rules.yml"], path
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    alerts = _alerts()
    assert len(alerts) == len(set(alerts)), "duplicate alert names"
    assert sorted(set(alerts) - firing) == [], "alerts never tested firing"
    assert sorted(set(alerts) - silent) == [], "alerts never tested silent"
    assert sorted((firing | silent) - set(alerts)) == [], "tests of alerts that do not exist"


def _exported() -> dict[str, tuple[str, ...]]:
    """Every series name the worker and the replay export -> its label names."""
    out: dict[str, tuple[str, ...]] = {}
    for owner in (PipelineMetrics(), ReplayMetrics()):
        for metric in vars(owner).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            name, kind, labels = metric._name, metric._type, tuple(metric._labelnames)
            suffixes = {
                "counter": ("_total",),
                "histogram": ("_bucket", "_count", "_sum"),
                "gauge": ("",),
            }[kind]
            for suffix in suffixes:
                out[name + suffix] = (*labels, "le") if suffix == "_bucket" else labels
    return out


#: a metric name not part of a recorded name (level:metric:operation), with its optional selector
_SELECTOR = re.compile(r"(?<![:\w])(ecg_[a-z0-9_]+)(?![:\w])(\{[^}]*\})?")


def test_rules_read_only_metrics_that_are_exported() -> None:
    exported = _exported()
    used: set[str] = set()
    for rule in _rules():
        for name, selector in _SELECTOR.findall(rule["expr"]):
            assert name in exported, (
                f"{rule.get('alert') or rule.get('record')}: {name} not exported"
            )
            used.add(name)
            for key in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector):
                assert key in (*exported[name], "job", "instance"), f"{name} has no label {key}"
    # the metrics this issue added are the ones the outage rules rest on
    assert {
        "ecg_last_frame_received_timestamp_seconds",
        "ecg_last_frame_processed_timestamp_seconds",
        "ecg_output_publish_failures_total",
        "ecg_model_windows_skipped_total",
        "ecg_alerts_total",
    } <= used


def _card_bounds() -> dict[str, tuple[float, float]]:
    """(lower, upper) anomaly-ratio bounds of every scoring model whose card has a validation operating
    point: ((1 - specificity) / 2, (1 + sensitivity) / 2)."""
    out = {}
    for path in sorted(CARDS.glob("*.card.json")):
        card = json.loads(path.read_text())
        val = card.get("metrics", {}).get("validation", {})
        if card["role"] != "scorer" or not card.get("threshold") or "specificity" not in val:
            continue
        out[card["name"]] = ((1 - val["specificity"]) / 2, (1 + val["sensitivity"]) / 2)
    return out


def test_model_anomaly_ratio_bounds_match_the_cards() -> None:
    recorded: dict[str, dict[str, float]] = {"lower": {}, "upper": {}}
    for rule in _rules():
        m = re.fullmatch(
            r"model:ecg_model_anomaly_ratio_(lower|upper)_bound:card", rule.get("record", "")
        )
        if m:
            value = re.fullmatch(r"vector\(([0-9.]+)\)", rule["expr"].strip())
            assert value is not None, rule
            recorded[m[1]][rule["labels"]["model"]] = float(value[1])
    cards = _card_bounds()
    assert set(cards) >= {"cae", "cae12", "vae_bilstm"}
    assert set(recorded["lower"]) == set(recorded["upper"]) == set(cards)
    for model, (lower, upper) in cards.items():
        assert recorded["lower"][model] == pytest.approx(lower, abs=1e-5), model
        assert recorded["upper"][model] == pytest.approx(upper, abs=1e-5), model
        assert 0 < lower < upper < 1


def _gauge(m: PipelineMetrics, name: str) -> float | None:
    return m.registry.get_sample_value(name)


def test_pipeline_exports_last_frame_received_and_processed_times() -> None:
    m, clock = PipelineMetrics(), FakeClock(1_700_000_000.0)
    pipe = FramePipeline(Settings(), m, clock=clock)
    received, processed = (
        "ecg_last_frame_received_timestamp_seconds",
        "ecg_last_frame_processed_timestamp_seconds",
    )
    assert _gauge(m, received) == 0.0 and _gauge(m, processed) == 0.0  # exported before any frame
    frames = list(encode_frames(synthetic_frames(seconds=4.0, stream_id="p1")))
    feed_pipeline(pipe, frames[:2], key=b"p1")
    assert _gauge(m, received) == _gauge(m, processed) == clock.now

    t_ok = clock.now
    clock.advance(30.0)
    feed_pipeline(pipe, [b"not json"], key=b"p1", first_offset=2)  # received, dead-lettered
    assert _gauge(m, received) == clock.now and _gauge(m, processed) == t_ok
    clock.advance(30.0)
    feed_pipeline(pipe, [frames[1]], key=b"p1", first_offset=3)  # repeated seq: a duplicate
    assert _gauge(m, received) == clock.now and _gauge(m, processed) == t_ok
    assert m.registry.get_sample_value("ecg_frames_received_total") == 4

    clock.advance(1.0)
    feed_pipeline(pipe, frames[2:3], key=b"p1", first_offset=4)
    assert _gauge(m, received) == _gauge(m, processed) == clock.now


class _TP(NamedTuple):
    """A (topic, partition) as the consumer's assignment holds them."""

    topic: str
    partition: int


class _Consumer:
    def __init__(self, assigned: list[_TP], highwater: dict[_TP, int]) -> None:
        self.assigned, self.hw = assigned, highwater

    def assignment(self) -> set[_TP]:
        return set(self.assigned)

    def highwater(self, tp: _TP) -> int:
        return self.hw[tp]


def test_consumer_lag_of_a_revoked_partition_is_no_longer_exported() -> None:
    # a frozen lag above 0 is how EcgWorkerStalled sees a blocked worker, so a partition the worker lost
    # must not keep exporting its last lag
    m = PipelineMetrics()
    pipe = FramePipeline(Settings(), m)
    pipe.positions = {("t", 0): 10, ("t", 1): 5}
    consumer = _Consumer([_TP("t", 0), _TP("t", 1)], {_TP("t", 0): 12, _TP("t", 1): 9})
    app = SimpleNamespace(consumer=consumer)
    lag = "ecg_consumer_lag_messages"
    update_consumer_lag(app, pipe, m)  # type: ignore[arg-type]
    assert m.registry.get_sample_value(lag, {"topic": "t", "partition": "0"}) == 2
    assert m.registry.get_sample_value(lag, {"topic": "t", "partition": "1"}) == 4
    consumer.assigned = [_TP("t", 0)]  # partition 1 revoked (rebalance)
    update_consumer_lag(app, pipe, m)  # type: ignore[arg-type]
    assert m.registry.get_sample_value(lag, {"topic": "t", "partition": "0"}) == 2
    assert m.registry.get_sample_value(lag, {"topic": "t", "partition": "1"}) is None
