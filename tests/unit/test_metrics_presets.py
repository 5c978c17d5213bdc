"""Series a healthy system exports at 0 (so Grafana panels show 0, not "No data"), and the open-alarms gauge
kept from the raised/resolved transitions."""

from __future__ import annotations

from prometheus_client import generate_latest

from stream.dashboard.app import DashboardMetrics
from stream.metrics import (
    ALERT_LABELS,
    SKIP_REASONS,
    PipelineMetrics,
    PipelineObserver,
    ReplayMetrics,
)
from stream.schemas import REJECT_REASONS
from stream.stages.events import ALERT_KINDS, DROPOUT_KINDS, AlertEvent
from stream.stages.processor import ProcessorOutput


def _get(m: PipelineMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels or None)


def test_label_sets_are_exported_at_zero_before_any_event() -> None:
    m = PipelineMetrics()
    m.preset_models(["cae", "beat_vae"], ["lstm_ae"])
    for reason in REJECT_REASONS:
        assert _get(m, "ecg_frames_rejected_total", reason=reason) == 0
    for kind in DROPOUT_KINDS:
        assert _get(m, "ecg_dropouts_total", kind=kind) == 0
    assert {k for k, _ in ALERT_LABELS} == set(ALERT_KINDS)
    for kind, severity in ALERT_LABELS:
        assert _get(m, "ecg_alerts_total", kind=kind, severity=severity) == 0
        assert _get(m, "ecg_alerts_open", kind=kind, severity=severity) == 0
    for reason in SKIP_REASONS:
        assert _get(m, "ecg_model_windows_skipped_total", reason=reason) == 0
    for model in ("cae", "beat_vae"):
        assert _get(m, "ecg_model_scores_total", model=model) == 0
        assert _get(m, "ecg_model_anomalies_total", model=model) == 0
    assert _get(m, "ecg_model_windows_recovered_total", model="lstm_ae") == 0
    assert _get(m, "ecg_frame_age_seconds_count", point="alert") == 0
    r = ReplayMetrics()
    for role in ("telemetry", "ground_truth"):
        assert r.registry.get_sample_value("ecg_replay_send_failures_total", {"topic": role}) == 0


def test_dashboard_exports_its_process_memory_and_cpu() -> None:
    text = generate_latest(DashboardMetrics(("cae12",)).registry).decode()
    assert "process_resident_memory_bytes" in text and "process_cpu_seconds_total" in text


def _alert(stream: str, kind: str, severity: str, status: str, start: float) -> AlertEvent:
    return AlertEvent(f"{stream}-{kind}-{start}", stream, kind, severity, status, start, None)


def test_open_alarms_follow_raised_and_resolved_episodes() -> None:
    m = PipelineMetrics()
    obs = PipelineObserver(m)

    def open_(kind: str, severity: str) -> float | None:
        return _get(m, "ecg_alerts_open", kind=kind, severity=severity)

    def step(*alerts: AlertEvent) -> None:
        obs.processed(ProcessorOutput(), list(alerts), None, 0.0)

    step(_alert("a", "asystole", "critical", "raised", 1.0))
    step(_alert("b", "asystole", "critical", "raised", 2.0))
    step(_alert("a", "signal_loss", "warning", "raised", 3.0))
    assert open_("asystole", "critical") == 2 and open_("signal_loss", "warning") == 1
    step(_alert("a", "asystole", "critical", "raised", 1.0))  # the same episode again: still 2
    assert open_("asystole", "critical") == 2
    assert _get(m, "ecg_alerts_total", kind="asystole", severity="critical") == 3
    step(_alert("a", "asystole", "critical", "resolved", 1.0))
    step(_alert("z", "asystole", "critical", "resolved", 9.0))  # raised before this worker: ignored
    assert open_("asystole", "critical") == 1
    step(
        _alert("b", "asystole", "critical", "resolved", 2.0),
        _alert("a", "signal_loss", "warning", "resolved", 3.0),
    )
    assert open_("asystole", "critical") == 0 and open_("signal_loss", "warning") == 0
