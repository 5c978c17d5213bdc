"""stream.testing: the fake clock, the synthetic/real-record frame feeders and the message feeders."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest

import stream.testing as testing_module
from stream.pipeline import FramePipeline
from stream.records import TWELVE_LEADS, read_record
from stream.schemas import BeatBatchMessage, decode_frame
from stream.settings import Settings
from stream.stages.processor import StreamProcessor
from stream.testing import (
    T0,
    FakeClock,
    encode_frames,
    feed_pipeline,
    frame_end_time,
    frames_from_array,
    make_frame,
    record_frames,
    run_processor,
    synthetic_ecg,
    synthetic_frames,
    telemetry_messages,
)


def test_module_imports_only_the_package_layers_below_tests() -> None:
    tree = ast.parse(inspect.getsource(testing_module))
    roots = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
        if not (isinstance(node, ast.ImportFrom) and node.level)
    }
    assert roots and not roots & {"training", "simulators", "tests", "torch"}


def test_fake_clock() -> None:
    clock = FakeClock()
    assert clock() == T0
    assert clock.advance(2.5) == T0 + 2.5 == clock()
    with pytest.raises(ValueError):
        clock.advance(-1)
    clock.set(T0 - 10)
    assert clock() == T0 - 10


def test_fake_clock_drives_the_pipeline_idle_expiry() -> None:
    clock = FakeClock(T0 + 100)
    pipe = FramePipeline(Settings(), clock=clock)
    feed_pipeline(pipe, telemetry_messages(synthetic_frames(seconds=3, stream_id="syn")))
    assert pipe.stream_ids == ["syn"]
    clock.advance(299)
    pipe.expire_idle(idle_s=300)
    assert pipe.stream_ids == ["syn"]
    clock.advance(2)
    pipe.expire_idle(idle_s=300)
    assert pipe.stream_ids == []


def test_synthetic_ecg_is_deterministic_and_ecg_shaped() -> None:
    x = synthetic_ecg(360.0, 20, ("MLII", "V5"), 72, seed=3)
    assert x.shape == (7200, 2) and x.dtype == np.float32
    np.testing.assert_array_equal(x, synthetic_ecg(360.0, 20, ("MLII", "V5"), 72, seed=3))
    assert not np.array_equal(x, synthetic_ecg(360.0, 20, ("MLII", "V5"), 72, seed=4))
    assert 0.8 < float(x[:, 0].max()) < 1.6  # R waves of about 1 mV
    assert np.isfinite(x).all()
    twelve = synthetic_ecg(500.0, 1, 12)
    assert twelve.shape == (500, 12)
    with pytest.raises(ValueError):
        synthetic_ecg(hr_bpm=0)


@pytest.mark.parametrize(
    ("fs", "leads", "hr"),
    [(360.0, ("MLII", "V5"), 72.0), (250.0, ("MLII", "V1"), 95.0), (500.0, TWELVE_LEADS, 60.0)],
)
def test_processor_finds_the_synthetic_heart_rate(
    fs: float, leads: tuple[str, ...], hr: float
) -> None:
    sp = StreamProcessor("syn", fs, leads)
    out = run_processor(sp, synthetic_frames(fs, 30, leads, hr, seed=1, stream_id="syn"))
    rates = [b.hr_bpm for b in out.beats if b.hr_bpm is not None]
    assert len(out.beats) == pytest.approx(30 * hr / 60, abs=3)
    assert float(np.median(rates)) == pytest.approx(hr, rel=0.05)
    assert not out.dropouts and not out.alerts


def test_frames_from_array_cuts_in_order() -> None:
    x = np.arange(2 * 1050, dtype=np.float32).reshape(1050, 2)
    frames = list(frames_from_array(x, 100.0, ("I", "II"), "s", 1.0, T0, first_seq=5))
    assert [f.seq for f in frames] == list(range(5, 16))
    assert [f.start_time for f in frames] == [T0 + k for k in range(11)]
    assert frames[-1].samples.shape == (50, 2)  # the last frame is what is left
    np.testing.assert_array_equal(np.concatenate([f.samples for f in frames]), x)
    assert all(f.stream_id == "s" and f.leads == ("I", "II") and f.fs == 100.0 for f in frames)
    assert frame_end_time(frames[0]) == T0 + 1.0
    quarter = list(frames_from_array(x[:, 0], 100.0, ("II",), frame_seconds=0.25))
    assert len(quarter) == 42 and quarter[0].samples.shape == (25, 1)


def test_frames_from_array_drops_frames_injects_nan_and_transforms() -> None:
    x = np.ones((1000, 2), dtype=np.float32)

    def negate(seq: int, chunk: np.ndarray) -> np.ndarray:
        return -chunk if seq == 9 else chunk

    frames = list(
        frames_from_array(
            x, 100.0, ("I", "II"), drop={2, 3}, nan_spans=[(450, 470)], transform=negate
        )
    )
    assert [f.seq for f in frames] == [0, 1, 4, 5, 6, 7, 8, 9]
    f4 = frames[2]
    assert f4.start_time == T0 + 4.0
    nan = np.isnan(f4.samples)  # samples 450..469 are in frame 4 (400..499)
    assert nan[50:70].all() and nan.sum() == 40
    assert all(np.isfinite(f.samples).all() for f in frames if f.seq != 4)
    assert (frames[-1].samples == -1).all()
    assert np.isfinite(x).all() and (x == 1).all()  # the input is untouched


def test_record_frames_reads_a_real_record(data_dir) -> None:
    ref = read_record(data_dir / "mitdb" / "100", 0, 360 * 3)
    frames = list(record_frames("mitdb/100", data_dir, seconds=3, stream_id="bed-1"))
    assert [f.seq for f in frames] == [0, 1, 2]
    assert frames[0].leads == ("MLII", "V5") and frames[0].fs == 360.0
    np.testing.assert_array_equal(np.concatenate([f.samples for f in frames]), ref.signal)
    # a path, a loaded Record and an offset give the same samples
    by_path = list(record_frames(data_dir / "mitdb" / "100", seconds=1, sampfrom=360))
    from_rec = list(record_frames(ref, seconds=1, sampfrom=360))
    np.testing.assert_array_equal(by_path[0].samples, ref.signal[360:720])
    np.testing.assert_array_equal(from_rec[0].samples, ref.signal[360:720])
    assert len(list(record_frames(ref))) == 3


def test_encoded_messages_round_trip(data_dir) -> None:
    frames = list(record_frames("mitdb/100", data_dir, seconds=2, stream_id="bed-7"))
    pairs = list(telemetry_messages(frames, record="mitdb/100", sent_at=frame_end_time))
    assert [k for k, _ in pairs] == [b"bed-7", b"bed-7"]
    for f, (_, value) in zip(frames, pairs, strict=True):
        d = decode_frame(value)
        assert (d.stream_id, d.seq, d.leads, d.fs, d.record) == (
            "bed-7",
            f.seq,
            f.leads,
            360.0,
            "mitdb/100",
        )
        assert d.start_time == f.start_time and d.sent_at == f.start_time + 1.0
        np.testing.assert_allclose(d.samples, f.samples, atol=5e-4)
    (exact,) = encode_frames(frames[:1], encoding="f32le", sent_at=T0 + 9)
    d = decode_frame(exact)
    np.testing.assert_array_equal(d.samples, frames[0].samples)
    assert d.sent_at == T0 + 9
    # NaN survives the int16 encoding
    (gap,) = encode_frames(
        frames_from_array(frames[0].samples, 360.0, ("MLII", "V5"), nan_spans=[(0, 9)])
    )
    assert np.isnan(decode_frame(gap).samples[:9]).all()


def test_feed_pipeline_hands_over_consecutive_offsets() -> None:
    pipe = FramePipeline(Settings())
    msgs = list(telemetry_messages(synthetic_frames(seconds=6, stream_id="syn", drop={3})))
    outs = feed_pipeline(pipe, msgs, topic="t", partition=2, first_offset=10)
    assert pipe.positions == {("t", 2): 15}
    receipts = [BeatBatchMessage.from_bytes(o.value) for o in outs if o.topic == pipe.topics.beats]
    assert [r.seq for r in receipts] == [0, 1, 2, 4, 5]
    assert [r.gap_frames for r in receipts] == [0, 0, 0, 1, 0]
    # bare values take the given key
    pipe2 = FramePipeline(Settings())
    outs2 = feed_pipeline(pipe2, [v for _, v in msgs], key=b"syn")
    assert {o.key for o in outs2} == {b"syn"}


def test_make_frame_and_run_processor_without_flush() -> None:
    x = synthetic_ecg(360.0, 12, ("MLII", "V5"))
    f = make_frame("p", 0, 360, ["MLII", "V5"], T0, x)
    assert f.leads == ("MLII", "V5") and isinstance(f.fs, float)
    sp = StreamProcessor("p", 360.0, ("MLII", "V5"))
    out = run_processor(sp, [f], flush=False)
    assert out.samples == 12 * 360 and out.beats
