"""Alert rules with hysteresis, on real records through the processor and on hand-made beat sequences."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

from stream.records import read_record
from stream.schemas import AlertMessage
from stream.stages.events import Beat, alert_id
from stream.stages.processor import StreamProcessor
from stream.stages.rules import RuleConfig, RuleEngine
from stream.testing import T0, frames_from_array, run_processor


@pytest.fixture(scope="module")
def rec100(data_dir):
    return read_record(data_dir / "mitdb" / "100", sampto=360 * 240)


def _alerts(sig, rec, drop=None):
    frames = frames_from_array(sig, rec.fs, rec.leads, "p", drop=drop or ())
    out = run_processor(StreamProcessor("p", rec.fs, rec.leads), frames)
    return [(a.kind, a.status, a.start, a.end, a.id) for a in out.alerts], out


def test_clean_record_raises_nothing(rec100):
    alerts, out = _alerts(rec100.signal, rec100)
    assert alerts == [] and len(out.beats) > 250


def test_cut_out_beats_raise_one_asystole_and_resolve_it(rec100):
    sig = rec100.signal.copy()
    a, b = 360 * 60, 360 * 66  # 6 s without any beat: isoelectric line with a little noise
    rng = np.random.default_rng(0)
    sig[a:b] = np.median(sig[a - 360 : a], axis=0) + rng.normal(0, 0.01, (b - a, 2))
    alerts, out = _alerts(sig, rec100)
    # a critical pause at 3 s, covered (resolved) by the asystole raised at 4 s
    assert [x[:2] for x in alerts] == [
        ("pause", "raised"),
        ("pause", "resolved"),
        ("asystole", "raised"),
        ("asystole", "resolved"),
    ]
    assert alerts[0][4] == alerts[1][4]
    raised, resolved = alerts[2:]
    assert raised[4] == resolved[4]  # one episode, one id
    assert T0 + 59 < raised[2] < T0 + 60.5  # episode starts at the last beat before the pause
    assert T0 + 66 <= resolved[3] < T0 + 67.5  # ends with the first beat after it
    assert not out.dropouts  # a noisy isoelectric line is not a dropout


def test_lost_signal_is_signal_loss_not_asystole(rec100):
    sig = rec100.signal.copy()
    sig[360 * 60 : 360 * 70] = np.nan  # every lead missing for 10 s
    alerts, _ = _alerts(sig, rec100)
    assert [x[:2] for x in alerts] == [("signal_loss", "raised"), ("signal_loss", "resolved")]
    assert alerts[0][2] == pytest.approx(T0 + 60, abs=0.1)
    # lost frames (sequence gap) of 8 s: same
    alerts, _ = _alerts(rec100.signal, rec100, drop=set(range(100, 108)))
    assert [x[:2] for x in alerts] == [("signal_loss", "raised"), ("signal_loss", "resolved")]


def _rate_changed(rec, factor: float, a_s: float, b_s: float) -> np.ndarray:
    """The record with [a_s, b_s) played ``factor`` times faster (heart rate x factor)."""
    fs = rec.fs
    a, b = int(a_s * fs), int(b_s * fs)
    up, down = (10, round(10 * factor)) if factor >= 1 else (round(10 / factor), 10)
    mid = sps.resample_poly(rec.signal[a:b].astype(np.float64), up, down, axis=0).astype(np.float32)
    return np.concatenate([rec.signal[:a], mid, rec.signal[b:]])


def test_long_tachycardia_raises_once_and_resolves_once(rec100):
    sig = _rate_changed(rec100, 2.3, 30.0, 150.0)  # ~52 s at ~170 bpm
    alerts, out = _alerts(sig, rec100)
    assert [x[:2] for x in alerts] == [("tachycardia", "raised"), ("tachycardia", "resolved")]
    hr = [b.hr_bpm for b in out.beats if T0 + 45 < b.time < T0 + 75]
    assert np.median(hr) > 160
    assert alerts[0][2] == pytest.approx(T0 + 31, abs=3)  # the episode starts where the rate rose


def test_long_bradycardia_raises_once_and_resolves_once(rec100):
    sig = _rate_changed(rec100, 1 / 2.2, 30.0, 50.0)  # 44 s at ~34 bpm
    alerts, _ = _alerts(sig, rec100)
    assert [x[:2] for x in alerts] == [("bradycardia", "raised"), ("bradycardia", "resolved")]


def _beats(times, hr):
    return [Beat("s", int(t * 360), t, None, h) for t, h in zip(times, hr, strict=True)]


def test_rate_hovering_at_the_limit_does_not_flood():
    eng = RuleEngine("s", RuleConfig(tachy_bpm=150, sustain_s=10, hysteresis_bpm=5, resolve_s=5))
    times = np.arange(0, 120, 0.4)
    hr = np.where(times < 20, 100.0, 151.0 + 2.0 * np.sin(times))  # 149..153 from 20 s
    hr[(times > 30) & (times < 100)] = 160.0
    out = []
    for t, h in zip(times, hr, strict=True):
        out += eng.update(t, _beats([t], [h]))
    assert [(a.kind, a.status) for a in out] == [("tachycardia", "raised")]
    assert eng.active() == ("tachycardia",)
    done = eng.flush(200.0)
    assert [(a.status, a.end) for a in done] == [("resolved", 200.0)]


def test_alert_ids_are_deterministic_and_events_serialise():
    eng1, eng2 = RuleEngine("s"), RuleEngine("s")
    a1 = eng1.update(0.0, []) + eng1.update(5.0, [])
    a2 = eng2.update(0.0, []) + eng2.update(5.0, [])
    assert a1 and a1[0].id == a2[0].id == alert_id("s", "asystole", 0.0)
    d = AlertMessage.from_event(a1[0]).model_dump()
    assert (
        d["kind"] == "asystole"
        and d["severity"] == "critical"
        and d["status"] == "raised"
        and d["end"] is None
    )
    assert alert_id("s", "asystole", 0.0) != alert_id("t", "asystole", 0.0)
