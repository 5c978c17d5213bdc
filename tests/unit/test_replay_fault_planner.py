"""Faults keep coming in a looping replay: the replay's fault planner plans them window by window (and pass
by pass) for as long as it runs, not only for the first 600 s (no broker: a recording producer)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simulators.faults import FaultSpec
from simulators.replay import (
    FaultWindow,
    Replay,
    demo_fault_planner,
    plan_streams,
    random_fault_planner,
    resolve_sources,
)
from stream.schemas import FaultTruthMessage, decode_frame
from stream.settings import Settings

T0 = 1_767_225_600.0  # stream time of the first sample (2026-01-01)


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> None:
        self.sent.append((topic, key, value))

    def on(self, topic: str) -> list[bytes]:
        return [v for t, _, v in self.sent if t == topic]


def _run(settings: Settings, spec: str, **kw: Any) -> tuple[Replay, RecordingProducer]:
    plans = plan_streams(resolve_sources([spec], settings.data_dir), 1)
    replay = Replay(settings, plans, speed=0, start_time=T0, **kw)
    producer = RecordingProducer()
    asyncio.run(replay.run(producer))
    return replay, producer


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir)


def test_random_faults_keep_coming_after_600_s_of_a_looping_replay(settings: Settings) -> None:
    # LUDB record 1: 10 s, so 90 passes over 900 s of stream time
    frames = 900
    rng = np.random.default_rng(7)
    replay, producer = _run(
        settings,
        "ludb/data/1",
        loop=True,
        max_frames=frames,
        rng=rng,
        fault_planner=random_fault_planner(12.0, rng),
    )
    _, clean = _run(settings, "ludb/data/1", loop=True, max_frames=frames)
    sent = {f.seq: f for f in map(decode_frame, producer.on(settings.topics.telemetry))}
    ref = {f.seq: f for f in map(decode_frame, clean.on(settings.topics.telemetry))}
    t0 = T0
    truth = [FaultTruthMessage.from_bytes(v) for v in producer.on(settings.topics.ground_truth)]
    late = [t for t in truth if t.start_ts - t0 > 600]
    assert len(late) >= 5, [(t.kind, t.start_ts - t0) for t in truth]
    assert {t.kind for t in late} - {"lost_frames"}  # sample faults too, not only withheld frames
    # every late fault is in the telemetry: withheld frames, or frames that differ from the clean replay
    for t in late:
        seqs = range(int(t.start_ts - t0), int(np.ceil(t.end_ts - t0)))
        if t.kind == "lost_frames":
            assert all(q not in sent for q in seqs), t
        else:
            assert any(
                q in sent and not np.array_equal(sent[q].samples, ref[q].samples, equal_nan=True)
                for q in seqs
            ), t
    # after 600 s, frames go missing (lost_frames) and the rest are the record's, faulted or not
    assert any(q not in sent for q in range(600, frames))
    assert replay.frames_withheld == frames - len(sent)
    assert sum(
        replay.metrics.faults.labels(k)._value.get() for k in {t.kind for t in truth}
    ) == len(truth)


def test_windows_follow_the_stream_across_passes(settings: Settings) -> None:
    windows: list[FaultWindow] = []

    def planner(w: FaultWindow) -> list[FaultSpec]:
        windows.append(w)
        return [FaultSpec("flatline", None, 2.0, 1.0)]

    # a 10 s record, frames of 1 s, windows of 4 s: 4 + 4 + 2 s per pass
    _, producer = _run(
        settings,
        "ludb/data/1",
        loop=True,
        max_frames=24,
        fault_planner=planner,
        fault_window_s=4.0,
    )
    assert [(w.pass_no, w.pass_offset_s, w.length_s) for w in windows] == [
        (0, 0.0, 4.0),
        (0, 4.0, 4.0),
        (0, 8.0, 2.0),
        (1, 0.0, 4.0),
        (1, 4.0, 4.0),
        (1, 8.0, 2.0),
        (2, 0.0, 4.0),
    ]
    assert [w.start_s for w in windows] == [0.0, 4.0, 8.0, 10.0, 14.0, 18.0, 20.0]
    truth = [FaultTruthMessage.from_bytes(v) for v in producer.on(settings.topics.ground_truth)]
    starts = [round(t.start_ts - T0, 3) for t in truth]
    assert starts == [2.0, 6.0, 12.0, 16.0, 22.0]  # the 2 s windows end before their fault starts
    frames = {f.seq: f for f in map(decode_frame, producer.on(settings.topics.telemetry))}
    for q in (2, 6, 12, 16, 22):  # each planned flatline, in the frame where it was planned
        assert np.ptp(frames[q].samples, axis=0).max() == 0.0, q
    assert np.ptp(frames[3].samples, axis=0).min() > 0.0


def test_demo_faults_repeat_on_every_pass(settings: Settings) -> None:
    windows = [
        FaultWindow(0, "p-0", ("MLII", "V5"), 360.0, 0.0, 600.0, 0, 0.0),
        FaultWindow(0, "p-0", ("MLII", "V5"), 360.0, 600.0, 600.0, 0, 600.0),
        FaultWindow(0, "p-0", ("MLII", "V5"), 360.0, 1805.0, 600.0, 1, 0.0),
    ]
    kinds = [[f.kind for f in demo_fault_planner(w)] for w in windows]
    assert kinds == [
        ["flatline", "lead_off", "lost_frames"],
        [],
        ["flatline", "lead_off", "lost_frames"],
    ]


def test_random_planner_skips_nstdb_noise_off_360_hz() -> None:
    rng = np.random.default_rng(0)
    plan = random_fault_planner(30.0, rng)
    ludb = FaultWindow(0, "p-0", ("I", "II"), 500.0, 0.0, 600.0, 0, 0.0)
    mitdb = FaultWindow(0, "p-0", ("MLII", "V5"), 360.0, 0.0, 600.0, 0, 0.0)
    assert not any(f.kind.startswith("noise_") for f in plan(ludb))
    assert any(f.kind.startswith("noise_") for f in plan(mitdb))
