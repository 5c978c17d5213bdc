"""The pause rule of the RuleEngine: warning from 2.5 s (decided by the beat that ends the gap),
critical in real time from 3 s, resolved by the next beat; asystole unchanged."""

from __future__ import annotations

import pytest

from stream.schemas import ALERT_EVIDENCE, AlertMessage
from stream.stages.events import Beat
from stream.stages.rules import RuleConfig, RuleEngine

CFG = RuleConfig(pause_enabled=True)


def _beat(t: float) -> Beat:
    return Beat("s", int(t * 360), t, 0.8, 75.0)


def _run(beat_times, until: float, step: float = 0.1, qrs_ok=lambda t: True, cfg=CFG):
    """Drive the engine every ``step`` s (as the processor does), beats arriving at their time."""
    eng, out = RuleEngine("s", cfg), []
    pending = sorted(beat_times)
    n = round(until / step)
    for i in range(n + 1):
        now = round(i * step, 6)
        new = [_beat(t) for t in pending if t <= now]
        pending = [t for t in pending if t > now]
        out += eng.update(now, new, qrs_lead_ok=qrs_ok(now))
    return out, eng


def _regular(a: float, b: float, rr: float = 0.8) -> list[float]:
    out, t = [], a
    while t < b:
        out.append(round(t, 6))
        t += rr
    return out


def test_gap_between_2_5_and_3_s_raises_and_resolves_a_warning_at_the_next_beat():
    beats = _regular(0.4, 10) + _regular(9.2 + 2.7, 20)  # last beat 9.2, then a 2.7 s gap
    last = max(t for t in beats if t < 10.5)
    nxt = min(t for t in beats if t > 10.5)
    assert nxt - last == pytest.approx(2.7, abs=0.05)
    out, _ = _run(beats, 20)
    assert [(a.kind, a.severity, a.status) for a in out] == [
        ("pause", "warning", "raised"),
        ("pause", "warning", "resolved"),
    ]
    raised, resolved = out
    assert raised.id == resolved.id and raised.start == last and resolved.end == nxt
    assert raised.evidence["pause_s"] == pytest.approx(2.7, abs=0.05)
    assert (
        raised.evidence["last_beat_time"] == last and resolved.evidence["resumed_beat_time"] == nxt
    )
    for a in out:
        ALERT_EVIDENCE["pause"].model_validate(a.evidence)
        AlertMessage.from_event(a)


def test_short_gap_raises_nothing():
    out, _ = _run(_regular(0.4, 10) + _regular(9.2 + 2.4, 20), 20)  # 2.4 s gap
    assert out == []


def test_gap_of_3_5_s_is_critical_in_real_time():
    beats = _regular(0.4, 10) + _regular(9.2 + 3.5, 20)  # last beat 9.2, next 12.7
    out, _ = _run(beats, 20)
    assert [(a.kind, a.severity, a.status) for a in out] == [
        ("pause", "critical", "raised"),
        ("pause", "critical", "resolved"),
    ]
    raised, resolved = out
    assert raised.at == pytest.approx(9.2 + 3.0, abs=0.11)  # raised when the gap reached 3 s
    assert raised.evidence["pause_s"] == pytest.approx(3.0, abs=0.11)
    assert resolved.end == pytest.approx(12.7) and resolved.evidence["pause_s"] == pytest.approx(
        3.5
    )


def test_long_gap_raises_pause_then_asystole_both_resolved_by_the_next_beat():
    out, _ = _run(_regular(0.4, 10) + _regular(15.2, 20), 20)  # 6 s gap
    # asystole covers the pause it explains: the pause is resolved when asystole is raised
    assert [(a.kind, a.status) for a in out] == [
        ("pause", "raised"),
        ("pause", "resolved"),
        ("asystole", "raised"),
        ("asystole", "resolved"),
    ]
    assert out[0].at < out[2].at and out[1].at == out[2].at
    assert out[1].evidence["closed_by"] == "covered" and out[1].evidence["covered_by"] == "asystole"


def test_late_beat_batch_still_reports_a_critical_pause():
    eng = RuleEngine("s", CFG)
    out = eng.update(1.0, [_beat(0.5), _beat(1.0)])
    out += eng.update(4.8, [_beat(4.6)])  # the gap (3.6 s) is first seen with the beat ending it
    assert [(a.severity, a.status) for a in out] == [
        ("critical", "raised"),
        ("critical", "resolved"),
    ]


def test_dropout_time_does_not_count():
    beats = _regular(0.4, 10) + _regular(9.2 + 3.5, 20)
    out, _ = _run(beats, 20, qrs_ok=lambda t: not (9.5 <= t < 11.0))  # lead unusable for 1.5 s
    assert out == []  # 1.7 s of usable signal without a beat


def test_flush_resolves_an_open_pause_and_the_rule_can_be_switched_off():
    out, eng = _run(_regular(0.4, 5), 8.0)
    assert [(a.kind, a.status) for a in out] == [("pause", "raised")]
    done = eng.flush(8.2)
    assert [(a.kind, a.severity, a.evidence["closed_by"]) for a in done] == [
        ("pause", "critical", "end_of_stream")
    ]
    out, _ = _run(_regular(0.4, 5), 9.0, cfg=RuleConfig(pause_enabled=False))
    assert [a.kind for a in out] == ["asystole"]
    assert RuleConfig().pause_enabled
