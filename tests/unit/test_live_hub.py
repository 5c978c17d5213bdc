"""LiveHub without a broker: per-stream state, alarm de-duplication, ward ticks, patient events, bounded
per-client queues (a slow browser loses its oldest events, counted, and gets a snapshot), bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream.dashboard.live import WARD_FS, LiveHub, decimate
from stream.schemas import (
    AlarmActionMessage,
    AlertMessage,
    BeatBatchMessage,
    BeatClassOut,
    BeatOut,
    DropoutMessage,
    ScoresMessage,
    encode_frame,
)

T0 = 1_767_225_600.0


def frame(
    sid: str = "p1", seq: int = 0, leads: tuple[str, ...] = ("MLII", "V1"), fs: float = 360.0
) -> bytes:
    t = np.arange(int(fs)) / fs
    x = np.stack([np.sin(2 * np.pi * t * (i + 1)) for i in range(len(leads))], axis=1)
    return encode_frame(
        stream_id=sid,
        seq=seq,
        fs=fs,
        leads=leads,
        start_time=T0 + seq,
        samples=x,
        record="mitdb/100",
    )


def alert(
    sid: str = "p1", status: str = "raised", kind: str = "signal_loss", sev: str = "warning"
) -> bytes:
    return AlertMessage(
        id=f"{sid}-{kind}",
        stream_id=sid,
        kind=kind,
        severity=sev,
        status=status,
        start="2026-01-01T00:00:05+00:00",
        start_ts=T0 + 5,
        evidence={"lost_s": 5.0},
        published_at=T0 + 10,
    ).to_bytes()


def events(hub: LiveHub, client, now: float = T0 + 20) -> list[dict]:
    return [json.loads(e) for e in hub.take(client, now)]


def test_ward_snapshot_then_tiles_with_heart_rate_and_waveform():
    hub = LiveHub()
    ward = hub.connect("ward")
    assert events(hub, ward)[0]["type"] == "snapshot"
    assert hub.ingest("telemetry", frame(), T0 + 1)
    beats = BeatBatchMessage(
        stream_id="p1",
        seq=0,
        frame_start_ts=T0,
        processed_at=T0 + 1,
        samples=360,
        heart_rate_bpm=72.0,
        beats=[BeatOut(sample=100, time=T0 + 0.3, hr_bpm=72.0)],
        classes=[BeatClassOut(time=T0 - 0.5, label="V", confidence=0.9)],
    )
    assert hub.ingest("beats", beats.to_bytes(), T0 + 1)
    assert hub.tick(T0 + 1.2) == 1
    (ev,) = events(hub, ward)
    assert ev["type"] == "tiles"
    tile = ev["tiles"][0]
    assert tile["stream_id"] == "p1" and tile["hr_bpm"] == 72.0 and tile["lead"] == "MLII"
    assert 0.8 * WARD_FS <= len(tile["wave"][0]["x"]) <= WARD_FS  # 360 Hz / 8 = 45 Hz
    assert hub.tick(T0 + 1.4) == 0  # nothing changed: nothing sent
    assert hub.tick(T0 + 30) == 1  # silent past stale_s: the tile greys out
    assert events(hub, ward)[0]["tiles"][0]["stale"] is True


def test_alerts_deduplicated_and_tiles_sorted_by_severity():
    hub = LiveHub()
    for sid in ("a", "b", "c"):
        hub.ingest("telemetry", frame(sid), T0)
    ward = hub.connect("ward")
    events(hub, ward)
    for _ in range(3):  # at-least-once delivery: the same transition three times
        hub.ingest("alerts", alert("b", kind="asystole", sev="critical"), T0 + 1)
    hub.ingest("alerts", alert("c"), T0 + 1)
    got = [e for e in events(hub, ward, T0 + 1) if e["type"] == "alert"]
    assert [e["alert"]["stream_id"] for e in got] == ["b", "c"]
    assert hub.counters.duplicates == 2
    snap = json.loads(hub.ward_snapshot(T0 + 1))
    assert [t["stream_id"] for t in snap["tiles"]] == ["b", "c", "a"]
    assert snap["tiles"][0]["severity"] == "critical"
    hub.ingest("alerts", alert("b", status="resolved", kind="asystole", sev="critical"), T0 + 2)
    assert hub.streams["b"].active == {}
    assert hub.streams["b"].last_alarm["status"] == "resolved"


def test_patient_view_gets_its_stream_only_with_all_leads():
    hub = LiveHub()
    p = hub.connect("patient", "p1")
    assert events(hub, p)[0]["known"] is False
    hub.ingest("telemetry", frame("p1", leads=("I", "II", "V5")), T0)
    hub.ingest("telemetry", frame("p2"), T0)
    drop = DropoutMessage(
        stream_id="p1",
        lead="II",
        kind="flatline",
        start="x",
        start_ts=T0,
        end="y",
        end_ts=T0 + 1,
        duration_s=1,
    )
    hub.ingest("dropouts", drop.to_bytes(), T0)
    sc = ScoresMessage.model_validate(
        {
            "stream_id": "p1",
            "seq": 0,
            "scores": [
                {
                    "model": "vae_bilstm_mha",
                    "window": "12lead",
                    "time": T0,
                    "score": 2.0,
                    "threshold": 1.66,
                    "anomalous": True,
                    "recovered_by": "lead_recon",
                    "recovered_fraction": 0.25,
                    "lead_attention": {"I": 0.5, "II": 0.5},
                }
            ],
        }
    )
    hub.ingest("scores", sc.to_bytes(), T0)
    evs = events(hub, p)
    kinds = [e["type"] for e in evs]
    assert kinds == ["frame", "dropout", "scores"]
    assert evs[0]["leads"] == ["I", "II", "V5"] and len(evs[0]["x"]) == 3
    assert len(evs[0]["x"][0]) == 180  # 360 Hz decimated to at most 250 Hz
    assert evs[2]["attention"]["lead_attention"] == {"I": 0.5, "II": 0.5}
    snap = json.loads(hub.patient_snapshot("p1", T0))
    assert (
        snap["known"]
        and len(snap["frames"]) == 1
        and snap["scores"]["vae_bilstm_mha"][0]["recovered_by"]
    )


def test_slow_client_drops_oldest_counts_and_resyncs_without_hurting_others():
    dropped: list[str] = []
    hub = LiveHub(queue_size=16, on_drop=dropped.append)
    slow, fast = hub.connect("ward"), hub.connect("ward")
    events(hub, slow), events(hub, fast)
    for i in range(40):
        hub.ingest("alerts", alert(f"s{i}"), T0)
        if i % 5 == 0:
            assert len(events(hub, fast)) >= 1
    rest = events(hub, fast)
    assert hub.counters.dropped["ward"] == 24 == len(dropped)
    assert len(slow.queue) == 16 and slow.needs_snapshot
    got = events(hub, slow)
    assert (
        got[0]["type"] == "snapshot" and len(got) == 1
    )  # nothing lost: the snapshot has all 40 alarms
    assert len(got[0]["alarms"]) == 40
    assert all(e["type"] == "alert" for e in rest)


@pytest.mark.parametrize(
    "kind,value",
    [
        ("telemetry", b"{not json"),
        ("telemetry", frame(leads=("MLII", "XYZ"))),  # an unknown lead set
        ("beats", b'{"v": 1, "stream_id": 3}'),
        ("scores", b"[]"),
        ("dropouts", b"\xff\xfe"),
        ("alerts", b'{"v": 1, "id": "x"}'),
        ("alarm_actions", b"null"),
        ("alerts", None),
    ],
)
def test_malformed_messages_are_counted_and_skipped(kind, value):
    hub = LiveHub()
    ward = hub.connect("ward")
    assert hub.ingest(kind, value, T0) is False
    assert hub.counters.messages[(kind, "malformed")] == 1
    assert hub.ingest("telemetry", frame(), T0)  # and the next good one is taken
    assert json.loads(hub.take(ward, T0)[0])["type"] == "snapshot"


def test_alarm_action_reaches_ward_and_patient():
    hub = LiveHub()
    hub.ingest("alerts", alert(), T0)
    ward, p = hub.connect("ward"), hub.connect("patient", "p1")
    events(hub, ward), events(hub, p)
    act = AlarmActionMessage(
        action="acknowledge",
        alert_id="p1-signal_loss",
        stream_id="p1",
        user="dr x",
        at="2026-01-01T00:00:00+00:00",
        at_ts=T0,
    )
    assert hub.ingest("alarm_actions", act.to_bytes(), T0)
    assert events(hub, ward)[0]["type"] == "action" and events(hub, p)[0]["user"] == "dr x"
    assert json.loads(hub.ward_snapshot(T0))["tiles"][0]["acknowledged"] == ["p1-signal_loss"]


def test_decimate_keeps_qrs_height_and_nan():
    x = np.zeros(360)
    x[100] = 1.5
    x[200:210] = np.nan
    y, fs = decimate(x, 360.0, 50.0)
    assert fs == pytest.approx(45.0) and np.nanmax(y) == 1.5 and np.isnan(y).any()
