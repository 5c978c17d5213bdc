"""Per-stream sanity on sequence and time: a forged frame never blinds a patient, a confirmed jump
resynchronises, an offset reset (broker lost its log) is followed instead of dropped."""

from __future__ import annotations

import dataclasses

from stream.metrics import PipelineMetrics
from stream.pipeline import FramePipeline
from stream.schemas import BeatBatchMessage, DeadLetterMessage
from stream.settings import Settings
from stream.testing import FakeClock, encode_frames, feed_pipeline, synthetic_frames

TOPIC = "telemetry"


def _value(m: PipelineMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels or None) or 0.0


def _pipe() -> tuple[FramePipeline, PipelineMetrics]:
    m = PipelineMetrics()
    return FramePipeline(Settings(), m, clock=FakeClock()), m


def _frames(n: int, **kw):
    return list(synthetic_frames(fs=250.0, seconds=n, leads=("MLII", "V5"), **kw))


def _receipts(pipe: FramePipeline, outs) -> list[int]:
    return [BeatBatchMessage.from_bytes(o.value).seq for o in outs if o.topic == pipe.topics.beats]


def _dead(pipe: FramePipeline, outs) -> list[DeadLetterMessage]:
    return [
        DeadLetterMessage.from_bytes(o.value) for o in outs if o.topic == pipe.topics.dead_letter
    ]


def test_a_forged_frame_far_ahead_never_blinds_the_stream():
    pipe, m = _pipe()
    frames = _frames(40)
    msgs = list(encode_frames(frames))
    out = feed_pipeline(pipe, msgs[:10], key=b"p1", topic=TOPIC)
    out = []
    for offset, (seq, ahead_s) in enumerate(((1_000_000, 116 * 86400.0), (2**62, 5.0)), 100):
        forged = dataclasses.replace(
            frames[10], seq=seq, start_time=frames[10].start_time + ahead_s
        )
        (fmsg,) = encode_frames([forged])
        out += pipe.handle(b"p1", fmsg, TOPIC, 0, offset)  # held, never applied
    assert not _receipts(pipe, out)
    out += feed_pipeline(pipe, msgs[10:], key=b"p1", topic=TOPIC, first_offset=200)
    assert _receipts(pipe, out) == list(range(10, 40))  # every real frame processed, in order
    dead = _dead(pipe, out)
    assert [d.reason for d in dead] == ["sequence_jump", "sequence_jump"]
    assert _value(m, "ecg_frames_quarantined_total") == 2
    assert _value(m, "ecg_frames_missing_total") == 0  # the forged seq never reached the counters
    assert _value(m, "ecg_frames_rejected_total", reason="sequence_backwards") == 0


def test_a_confirmed_jump_resynchronises_the_stream():
    pipe, m = _pipe()
    before = _frames(10)
    feed_pipeline(pipe, encode_frames(before), key=b"p1", topic=TOPIC)
    # the device was away for two hours: seq and clock both moved on, consistently
    after = _frames(5, start_time=before[0].start_time + 7200.0)
    after = [dataclasses.replace(f, seq=f.seq + 7200) for f in after]
    out = feed_pipeline(pipe, encode_frames(after), key=b"p1", topic=TOPIC, first_offset=10)
    assert _receipts(pipe, out) == [7200, 7201, 7202, 7203, 7204]
    assert not _dead(pipe, out)
    assert _value(m, "ecg_stream_resyncs_total") == 1


def test_an_offset_reset_is_followed_and_old_redeliveries_stay_duplicates():
    pipe, m = _pipe()
    msgs = list(encode_frames(_frames(20)))
    feed_pipeline(pipe, msgs[:10], key=b"p1", topic=TOPIC)
    # the broker restarted with memory storage: new frames arrive at offsets starting again from 0
    out = feed_pipeline(pipe, msgs[10:15], key=b"p1", topic=TOPIC, first_offset=0)
    assert _receipts(pipe, out) == [10, 11, 12, 13, 14]
    assert _value(m, "ecg_offset_resets_total") == 1
    assert pipe.positions[(TOPIC, 0)] == 5
    # a redelivery of old frames below the position is still a duplicate
    assert feed_pipeline(pipe, msgs[12:14], key=b"p1", topic=TOPIC, first_offset=2) == []
    assert _value(m, "ecg_frames_duplicate_total") == 2


def test_a_forged_first_frame_is_outvoted_by_the_real_stream():
    pipe, m = _pipe()
    frames = _frames(15)
    # a forged first frame: a high seq, and a start time 30 s ahead of the real stream's
    forged = dataclasses.replace(frames[0], seq=999_999, start_time=frames[0].start_time + 30.0)
    pipe.handle(b"p1", next(iter(encode_frames([forged]))), TOPIC, 0, 0)
    out = feed_pipeline(pipe, encode_frames(frames), key=b"p1", topic=TOPIC, first_offset=1)
    dead = _dead(pipe, out)
    n = Settings().resync_frames
    assert [d.reason for d in dead] == ["sequence_backwards"] * n
    assert _receipts(pipe, out) == list(range(n, 15))  # after the run, the real stream is followed
    assert _value(m, "ecg_stream_resyncs_total") == 1


def test_losing_a_partition_closes_its_streams_episodes_and_keeps_the_others():
    from stream.schemas import AlertMessage

    pipe, _ = _pipe()

    def flat(seq, x):  # a flat line on every lead from the 10th second: signal loss
        return x * 0 + 0.1 if seq >= 10 else x

    lost = list(encode_frames(_frames(20, stream_id="a", transform=flat)))
    kept = list(encode_frames(_frames(20, stream_id="b")))
    out = feed_pipeline(pipe, lost, key=b"a", topic=TOPIC, partition=0)
    feed_pipeline(pipe, kept, key=b"b", topic=TOPIC, partition=1)
    raised = [AlertMessage.from_bytes(o.value) for o in out if o.topic == pipe.topics.alerts]
    assert [a.status for a in raised] == ["raised"] and raised[0].kind == "signal_loss"
    out = pipe.flush_partitions([(TOPIC, 0)])
    closed = [AlertMessage.from_bytes(o.value) for o in out if o.topic == pipe.topics.alerts]
    assert [(a.id, a.status) for a in closed] == [(raised[0].id, "resolved")]
    assert pipe.stream_ids == ["b"]  # the other partition's stream is untouched
    assert pipe.flush_partitions([(TOPIC, 0)]) == []
