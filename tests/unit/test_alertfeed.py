"""``ecg-monitor alerts``: filters, de-duplication and output formats (no broker: the feed is stubbed)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from typer.testing import CliRunner

from stream.alertfeed import AlertFilter, Dedup, format_alert
from stream.cli import app
from stream.errors import ConfigError
from stream.schemas import AlertMessage


def _alert(
    stream: str = "patient-0001",
    kind: str = "asystole",
    severity: str = "critical",
    status: str = "raised",
    start_ts: float = 1_767_225_612.0,
) -> AlertMessage:
    return AlertMessage(
        id=f"{stream}:{kind}:{start_ts:.0f}",
        stream_id=stream,
        kind=kind,
        severity=severity,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        start="2026-01-01T00:00:12+00:00",
        start_ts=start_ts,
        end="2026-01-01T00:00:18+00:00" if status == "resolved" else None,
        evidence={"flat_s": 6.0},
        record="mitdb/100",
    )


ALERTS = [
    _alert(),
    _alert(status="resolved"),
    _alert("patient-0002", "bradycardia", "warning"),
    _alert("patient-0003", "signal_loss", "warning"),
    _alert("patient-0003", "tachycardia", "warning", start_ts=1_767_225_700.0),
]


def test_an_empty_filter_keeps_everything() -> None:
    keep = AlertFilter.from_options()
    assert all(keep.matches(a) for a in ALERTS)


def test_filters_combine_fields_and_accept_repeated_or_comma_separated_values() -> None:
    keep = AlertFilter.from_options(
        ["patient-0001,patient-0003"], ["asystole", "signal_loss"], None
    )
    assert [a.stream_id + "/" + a.kind for a in ALERTS if keep.matches(a)] == [
        "patient-0001/asystole",
        "patient-0001/asystole",
        "patient-0003/signal_loss",
    ]
    keep = AlertFilter.from_options(
        None, None, ["WARNING"]
    )  # case-insensitive kinds and severities
    assert [a.kind for a in ALERTS if keep.matches(a)] == [
        "bradycardia",
        "signal_loss",
        "tachycardia",
    ]
    keep = AlertFilter.from_options(["patient-0002"], None, ["critical"])
    assert not any(keep.matches(a) for a in ALERTS)


@pytest.mark.parametrize(
    ("kinds", "severities", "match"),
    [(["flatline"], None, "unknown alert kind"), (None, ["fatal"], "unknown severity")],
)
def test_unknown_kind_or_severity_is_a_usage_error(
    kinds: list[str] | None, severities: list[str] | None, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        AlertFilter.from_options(None, kinds, severities)


def test_dedup_by_id_and_status_stays_bounded() -> None:
    seen = Dedup(limit=3)
    assert [seen.first(a) for a in [*ALERTS[:2], ALERTS[0], ALERTS[1]]] == [
        True,
        True,
        False,
        False,
    ]
    for a in ALERTS[2:]:
        assert seen.first(a)
    assert len(seen._seen) == 3


def test_readable_line() -> None:
    line = format_alert(ALERTS[1])
    assert line.startswith("CRITICAL asystole    resolved patient-0001 (mitdb/100) ")
    assert "from 2026-01-01 00:00:12Z to 00:00:18Z" in line and '{"flat_s": 6.0}' in line
    assert "\n" not in line


@pytest.fixture
def fed(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """`alerts` reading ALERTS (each twice: redeliveries) from a stubbed feed; the call's arguments kept."""
    calls: dict[str, Any] = {}

    async def values(settings: Any, bootstrap: str, **kw: Any) -> AsyncIterator[bytes]:
        calls.update(kw, bootstrap=bootstrap)
        for a in [*ALERTS, *ALERTS]:
            yield a.to_bytes()
        yield b"not json"

    monkeypatch.setattr("stream.alertfeed.alert_values", values)
    monkeypatch.setattr("stream.cli.check_broker_reachable", lambda bs: None)
    return calls


def test_alerts_json_lines_filtered_and_deduplicated(fed: dict[str, Any]) -> None:
    result = CliRunner().invoke(
        app,
        [
            "alerts",
            "--bootstrap",
            "h:1",
            "--json",
            "--severity",
            "warning",
            "--stream",
            "patient-0003",
        ],
    )
    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(p["stream_id"], p["kind"]) for p in printed] == [
        ("patient-0003", "signal_loss"),
        ("patient-0003", "tachycardia"),
    ]
    assert "skipped an undecodable message" in result.stderr
    assert fed == {
        "bootstrap": "h:1",
        "group": None,
        "follow": False,
        "idle_s": 3.0,
        "from_beginning": False,
    }


def test_alerts_readable_by_default_and_group_options_passed(fed: dict[str, Any]) -> None:
    result = CliRunner().invoke(
        app,
        [
            "alerts",
            "--bootstrap",
            "h:1",
            "--kind",
            "asystole",
            "--group",
            "nurses",
            "--from-beginning",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [format_alert(ALERTS[0]), format_alert(ALERTS[1])]
    assert fed["group"] == "nurses" and fed["from_beginning"] is True
