"""The whole pipeline on the real embedded broker: replay -> worker (subprocess) -> alerts/beats/dead letters."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from simulators.faults import FaultSpec
from simulators.replay import Replay, plan_streams, replay_to_kafka, resolve_sources
from stream.records import read_record
from stream.schemas import (
    AlertMessage,
    BeatBatchMessage,
    DeadLetterMessage,
    FaultTruthMessage,
    ScoresMessage,
    encode_frame,
)
from stream.settings import Settings
from tests.integration.conftest import WorkerFactory, consume, produce, settings_env, wait_until

pytestmark = pytest.mark.integration

T0 = 1_767_225_600.0


def _receipts(
    settings: Settings, expected: set[tuple[str, int]], timeout_s: float = 60
) -> list[BeatBatchMessage]:
    """Beat receipts (one per processed frame) until every expected (stream, seq) is covered."""

    def covered(values: list[bytes]) -> bool:
        seen = {(d["stream_id"], d["seq"]) for d in map(json.loads, values)}
        return expected <= seen

    values = consume(settings, settings.topics.beats, until=covered, timeout_s=timeout_s)
    return [BeatBatchMessage.from_bytes(v) for v in values]


def _replay(settings: Settings, plans: list, **kwargs: object) -> Replay:
    replay = Replay(settings, plans, record_sent=True, **kwargs)  # type: ignore[arg-type]
    asyncio.run(replay_to_kafka(settings, plans, replay=replay))
    return replay


def test_replay_raises_alerts_and_exports_metrics(
    settings: Settings, workers: WorkerFactory
) -> None:
    worker = workers.start()
    sources = resolve_sources(["mitdb/100", "mitdb/106"], settings.data_dir)
    faults = {
        0: [FaultSpec("flatline", None, 20.0, 8.0)],  # all leads flat: signal loss/asystole
        1: [FaultSpec("lead_off", "V1", 15.0, 5.0), FaultSpec("lost_frames", None, 30.0, 3.0)],
    }
    plans = plan_streams(sources, 2, prefix="it", faults=lambda i, sid, leads: faults[i])
    replay = _replay(settings, plans, speed=20.0, max_frames=45)
    assert (
        replay.sent is not None and replay.frames_sent == 2 * 45 - 3
    )  # 3 frames withheld by lost_frames
    receipts = _receipts(settings, set(replay.sent))
    assert {(r.stream_id, r.seq) for r in receipts} >= set(replay.sent)
    assert sum(len(r.beats) for r in receipts) > 2 * 30  # ~ 70 bpm over 2 x 45 s, minus faults
    # lost frames are reported as a gap by the stage that follows them
    assert any(r.gap_frames == 3 for r in receipts if r.stream_id == plans[1].stream_id)

    alerts = [
        AlertMessage.from_bytes(v)
        for v in consume(settings, settings.topics.alerts, until=lambda v: len(v) >= 1)
    ]
    raised = [a for a in alerts if a.status == "raised" and a.stream_id == plans[0].stream_id]
    assert raised, f"no alert for the 8 s flatline; alerts: {alerts}"
    assert raised[0].kind in ("asystole", "signal_loss") and raised[0].severity in (
        "critical",
        "warning",
    )
    fault_start = replay_start = min(
        r.frame_start_ts for r in receipts if r.stream_id == plans[0].stream_id
    )
    assert (
        fault_start + 19 <= raised[0].start_ts <= replay_start + 29
    )  # the episode lies inside the fault

    alerts = [
        AlertMessage.from_bytes(v) for v in consume(settings, settings.topics.alerts, idle_s=1.5)
    ]
    # `ecg-monitor alerts` prints the same alerts as JSON lines, de-duplicated by (id, status)
    cli = subprocess.run(
        [sys.executable, "-m", "stream.cli", "alerts", "--idle", "1", "--json"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    printed = [
        AlertMessage.model_validate_json(line) for line in cli.stdout.splitlines() if line.strip()
    ]
    assert {(a.id, a.status) for a in printed} == {(a.id, a.status) for a in alerts}
    assert len(printed) == len({(a.id, a.status) for a in alerts})

    # the worker scores beat windows with the committed ONNX models (default --models)
    scores = [
        ScoresMessage.from_bytes(v) for v in consume(settings, settings.topics.scores, idle_s=1)
    ]
    assert {sc.model for s in scores for sc in s.scores} >= {"cae", "beat_vae"}

    truth = [
        FaultTruthMessage.from_bytes(v)
        for v in consume(settings, settings.topics.ground_truth, idle_s=1)
    ]
    assert sorted(t.kind for t in truth) == ["flatline", "lead_off", "lost_frames"]

    # the worker's /metrics over HTTP
    m = wait_until(
        lambda: (
            (mm := worker.metrics()).get("ecg_frames_received_total", 0) >= replay.frames_sent
            and mm
        )
    )
    assert m["ecg_frames_received_total"] == replay.frames_sent
    assert m.get("ecg_frames_rejected_total", 0) == 0
    assert m["ecg_samples_processed_total"] >= replay.frames_sent * 360
    assert m["ecg_beats_detected_total"] == sum(len(r.beats) for r in receipts)
    assert m["ecg_end_to_end_latency_seconds_count"] >= replay.frames_sent
    assert m["ecg_alerts_total"] >= 1 and m["ecg_dropouts_total"] >= 1
    assert m["ecg_model_scores_total"] == sum(len(s.scores) for s in scores)
    assert m['ecg_stage_duration_seconds_count{stage="qrs"}'] >= replay.frames_sent
    lag = wait_until(
        lambda: (
            (mm := worker.metrics())
            and all(v == 0 for k, v in mm.items() if k.startswith("ecg_consumer_lag_messages{"))
            and mm
        )
    )
    assert lag, "consumer lag did not return to 0"


def test_malformed_frames_go_to_dead_letter_and_processing_continues(
    settings: Settings, workers: WorkerFactory, data_dir
) -> None:
    settings = settings.model_copy(update={"max_frame_bytes": 20_000})
    workers.settings = settings
    worker = workers.start()
    rec = read_record(data_dir / "mitdb" / "100", 0, 360 * 12)
    key = b"dl-0001"

    def good(seq: int, **over: object) -> bytes:
        return encode_frame(
            stream_id="dl-0001",
            seq=seq,
            fs=rec.fs,
            leads=rec.leads,
            start_time=T0 + seq,
            samples=rec.signal[(seq % 12) * 360 : (seq % 12 + 1) * 360],
            record="mitdb/100",
            **over,
        )  # type: ignore[arg-type]

    def mutate(seq: int, **over: object) -> bytes:
        msg = json.loads(good(seq))
        msg.update(over)
        return json.dumps(msg).encode()

    bad = {
        "bad_json": b"\xff\x00 definitely not json",
        "schema_version": mutate(100, v=99),
        "bad_shape": mutate(101, n_samples=100),
        "bad_value": mutate(102, start_time="2026-01-01T00:00:00"),
        "nan_only": mutate(
            103, samples=base64.b64encode(np.full(720, -32768, "<i2").tobytes()).decode()
        ),
        "unknown_lead": mutate(104, leads=["MLII", "V9"]),
        "sampling_rate": mutate(105, fs=5.0),
        "oversized": encode_frame(
            stream_id="dl-0001",
            seq=106,
            fs=rec.fs,
            leads=rec.leads,
            start_time=T0,
            samples=rec.signal[:3600],
            encoding="f32le",
        ),
    }
    messages = [(key, good(s)) for s in range(4)]
    messages += [(key, v) for v in bad.values()]
    messages += [(key, good(2))]  # sequence going backwards
    messages += [
        (key, good(s)) for s in range(4, 10)
    ]  # good frames after the bad ones are still processed
    produce(settings, settings.topics.telemetry, messages)

    receipts = _receipts(settings, {("dl-0001", s) for s in range(10)})
    assert sorted(r.seq for r in receipts) == list(range(10))
    dead = [
        DeadLetterMessage.from_bytes(v)
        for v in consume(
            settings, settings.topics.dead_letter, until=lambda v: len(v) >= len(bad) + 1
        )
    ]
    by_reason = {d.reason: d for d in dead}
    assert sorted(by_reason) == sorted([*bad, "sequence_backwards"]), [
        (d.reason, d.detail) for d in dead
    ]
    assert len(dead) == len(bad) + 1
    for reason, payload in bad.items():
        d = by_reason[reason]
        assert base64.b64decode(d.payload_b64) == payload, reason
        assert d.topic == settings.topics.telemetry and d.key == "dl-0001" and d.offset >= 4
        assert d.detail
    m = wait_until(
        lambda: (mm := worker.metrics()).get("ecg_frames_rejected_total", 0) >= len(bad) + 1 and mm
    )
    for reason in [*bad, "sequence_backwards"]:
        assert m[f'ecg_frames_rejected_total{{reason="{reason}"}}'] == 1, reason
    # the acknowledged dead letters and the records on the dead-letter topic agree
    m = wait_until(
        lambda: (
            (mm := worker.metrics()).get('ecg_output_messages_total{topic="dead_letter"}', 0)
            >= len(dead)
            and mm
        )
    )
    assert m['ecg_output_messages_total{topic="dead_letter"}'] == len(dead)
    assert m['ecg_output_publish_failures_total{topic="dead_letter"}'] == 0
    assert m["ecg_frames_received_total"] == len(messages)


def test_worker_restart_mid_replay_loses_no_frame(
    settings: Settings, workers: WorkerFactory
) -> None:
    first = workers.start()
    sources = resolve_sources(["mitdb/100", "mitdb/119"], settings.data_dir)
    plans = plan_streams(
        sources,
        4,
        prefix="rs",
        offset_step_s=300,
        faults=lambda i, sid, leads: [FaultSpec("flatline", None, 4.0, 8.0)] if i == 0 else [],
    )
    n_frames = 60
    box: dict[str, Replay] = {}
    thread = threading.Thread(
        target=lambda: box.setdefault("r", _replay(settings, plans, speed=4.0, max_frames=n_frames))
    )
    thread.start()
    try:
        # let the first worker process part of the replay, then kill it without any clean shutdown
        assert wait_until(
            lambda: len(consume(settings, settings.topics.beats, timeout_s=2, idle_s=0.3)) >= 40,
            timeout_s=60,
        )
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        done_before = len(consume(settings, settings.topics.beats, idle_s=0.5))
        assert done_before < 4 * n_frames, (
            "the replay finished before the restart; the test proves nothing"
        )
        second = workers.start()
    finally:
        thread.join(60)
    replay = box["r"]
    expected = {(p.stream_id, s) for p in plans for s in range(n_frames)}
    assert set(replay.sent or []) == expected
    receipts = _receipts(settings, expected, timeout_s=90)
    got = [(r.stream_id, r.seq) for r in receipts]
    assert set(got) >= expected  # at-least-once: nothing lost ...
    assert len(got) >= len(expected)  # ... duplicates allowed
    assert second.metrics()["ecg_frames_received_total"] >= 4 * n_frames - done_before
    # alerts are de-duplicated by (id, status): ids are deterministic across the restart
    alerts = [
        AlertMessage.from_bytes(v) for v in consume(settings, settings.topics.alerts, idle_s=1)
    ]
    assert any(a.stream_id == plans[0].stream_id and a.status == "raised" for a in alerts)
    first_seen: dict[tuple[str, str], AlertMessage] = {}
    for a in alerts:
        prev = first_seen.setdefault((a.id, a.status), a)
        assert (prev.kind, prev.stream_id, prev.start_ts) == (a.kind, a.stream_id, a.start_ts)
