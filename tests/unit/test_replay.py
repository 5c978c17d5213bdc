"""Replay of WFDB records as telemetry (no broker: a recording producer stands in for aiokafka)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from simulators.faults import FaultSpec
from simulators.replay import Replay, demo_faults, plan_streams, resolve_sources
from stream.errors import DataError
from stream.schemas import FaultTruthMessage, decode_frame
from stream.settings import Settings


class RecordingProducer:
    """Collects (topic, key, value) like aiokafka's producer.send() would publish them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> None:
        self.sent.append((topic, key, value))

    async def flush(self) -> None:
        return None

    def on(self, topic: str) -> list[tuple[bytes, bytes]]:
        return [(k, v) for t, k, v in self.sent if t == topic]


def _run(settings: Settings, plans: list, **kw: object) -> tuple[Replay, RecordingProducer]:
    replay = Replay(settings, plans, record_sent=True, **kw)  # type: ignore[arg-type]
    producer = RecordingProducer()
    asyncio.run(replay.run(producer))
    return replay, producer


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir)


@pytest.mark.parametrize(
    ("spec", "fs", "n_leads"),
    [
        ("mitdb/100", 360.0, 2),  # format 212
        ("ludb/data/1", 500.0, 12),  # format 16, 12 leads
        ("ptbxl/records100/00000/00001_lr", 100.0, 12),  # format 16
        ("ptbxl/records100/01000/01002_lr", 100.0, 12),
    ],  # FLAC, format 516
)
def test_replays_each_database_format(
    settings: Settings, spec: str, fs: float, n_leads: int
) -> None:
    plans = plan_streams(resolve_sources([spec], settings.data_dir), 1)
    _, producer = _run(settings, plans, speed=0, max_frames=3)
    frames = [decode_frame(v) for _, v in producer.on(settings.topics.telemetry)]
    assert [f.seq for f in frames] == [0, 1, 2]
    assert all(
        f.fs == fs and len(f.leads) == n_leads and f.samples.shape == (int(fs), n_leads)
        for f in frames
    )
    assert frames[1].start_time - frames[0].start_time == pytest.approx(1.0)
    assert all(f.record == spec and f.sent_at is not None for f in frames)


def test_database_directory_and_many_patients_with_offsets(settings: Settings) -> None:
    sources = resolve_sources(["mitdb"], settings.data_dir)
    assert len(sources) == 48
    plans = plan_streams(sources[:2], 5, offset_step_s=60)
    assert [p.record for p in plans] == ["mitdb/100", "mitdb/101"] * 2 + ["mitdb/100"]
    assert [p.offset_s for p in plans] == [0, 0, 60, 60, 120]
    _, producer = _run(settings, plans, speed=0, max_frames=2)
    frames = [decode_frame(v) for _, v in producer.on(settings.topics.telemetry)]
    by_stream: dict[str, list] = {}
    for f in frames:
        by_stream.setdefault(f.stream_id, []).append(f)
    assert len(by_stream) == 5
    # the same record replayed at another offset is another signal
    a, c = by_stream[plans[0].stream_id][0], by_stream[plans[2].stream_id][0]
    assert not np.allclose(a.samples, c.samples)
    keys = {k for k, _ in producer.on(settings.topics.telemetry)}
    assert keys == {p.stream_id.encode() for p in plans}  # keyed by stream id


def test_faults_are_injected_withheld_and_published_as_ground_truth(settings: Settings) -> None:
    faults = [
        FaultSpec("flatline", None, 2.0, 2.0),
        FaultSpec("lost_frames", None, 5.0, 2.0),
        FaultSpec("noise_ma", "MLII", 8.0, 1.0, snr_db=6.0),
    ]
    plans = plan_streams(
        resolve_sources(["mitdb/100"], settings.data_dir), 1, faults=lambda i, s, leads: faults
    )
    replay, producer = _run(settings, plans, speed=0, max_frames=10)
    frames = {
        f.seq: f for f in (decode_frame(v) for _, v in producer.on(settings.topics.telemetry))
    }
    assert sorted(frames) == [0, 1, 2, 3, 4, 7, 8, 9]  # frames 5 and 6 withheld
    assert (
        np.ptp(frames[2].samples, axis=0).max() == 0.0
        and np.ptp(frames[3].samples, axis=0).max() == 0.0
    )
    assert np.ptp(frames[1].samples, axis=0).min() > 0.1
    truth = [FaultTruthMessage.from_bytes(v) for _, v in producer.on(settings.topics.ground_truth)]
    assert [t.kind for t in truth] == ["flatline", "lost_frames", "noise_ma"]
    t0 = frames[0].start_time
    assert truth[0].start_ts == pytest.approx(t0 + 2.0) and truth[0].end_ts == pytest.approx(
        t0 + 4.0
    )
    assert truth[1].start_ts == pytest.approx(t0 + 5.0) and truth[1].end_ts == pytest.approx(
        t0 + 7.0
    )
    assert truth[2].snr_db == 6.0 and truth[2].lead == "MLII"
    assert replay.metrics.frames_dropped._value.get() == 2


def test_demo_faults_fit_the_record_leads(settings: Settings) -> None:
    plans = plan_streams(resolve_sources(["mitdb/100"], settings.data_dir), 2, faults=demo_faults)
    leads = {f.lead for p in plans for f in p.faults}
    assert leads <= {None, "MLII", "V5"}


def test_pacing_loop_and_stop(settings: Settings) -> None:
    plans = plan_streams(resolve_sources(["mitdb/100"], settings.data_dir), 4)
    replay = Replay(settings, plans, speed=2.0)
    # frame k of a stream is due when its last sample is acquired, divided by the speed; streams are phase shifted
    from simulators.replay import _Stream

    s = _Stream(plans[1], None, np.zeros((10, 1)), None, set(), 360, t0=100.25)  # type: ignore[arg-type]
    assert replay._due(s, 0, wall0=1000.0, t_start=100.0, frame_s=1.0) == pytest.approx(
        1000.0 + 1.25 / 2
    )
    assert replay._due(s, 3, wall0=1000.0, t_start=100.0, frame_s=1.0) == pytest.approx(
        1000.0 + 4.25 / 2
    )
    # looping past the end of a short record keeps seq and time increasing
    short = Settings(data_dir=settings.data_dir, frame_seconds=5.0)
    ludb = plan_streams(resolve_sources(["ludb/data/1"], settings.data_dir), 1)
    _, producer = _run(short, ludb, speed=0, loop=True, max_frames=5)
    seqs = [json.loads(v)["seq"] for _, v in producer.on(short.topics.telemetry)]
    assert seqs == [0, 1, 2, 3, 4]  # a 10 s record gives 2 frames of 5 s per pass
    # stop() ends a real-time replay
    replay = Replay(settings, plans, speed=1.0)
    producer = RecordingProducer()

    async def stop_soon() -> int:
        task = asyncio.create_task(replay.run(producer))
        await asyncio.sleep(1.5)
        replay.stop()
        return await asyncio.wait_for(task, 5)

    sent = asyncio.run(stop_soon())
    assert 0 < sent < 4 * 3


def test_unknown_source_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(DataError, match="no WFDB record or database"):
        resolve_sources(["mitdb/999"], settings.data_dir)


@pytest.mark.parametrize(
    ("spec", "rails"),
    [
        ("mitdb/100", (-5.12, 5.115)),  # 11-bit ADC, zero 1024, gain 200 adu/mV
        # 16 bits at 1000 adu/mV, capped to what i16le carries
        ("ptbxl/records100/00000/00001_lr", (-32.767, 32.767)),
    ],
)
def test_frames_declare_the_record_adc_range(settings: Settings, spec: str, rails: tuple) -> None:
    plans = plan_streams(resolve_sources([spec], settings.data_dir), 1)
    _, producer = _run(settings, plans, speed=0, max_frames=2)
    frames = [decode_frame(v) for _, v in producer.on(settings.topics.telemetry)]
    assert frames and all(f.adc_range_mv is not None for f in frames)
    for lo, hi in frames[0].adc_range_mv or ():
        assert (lo, hi) == pytest.approx(rails)
