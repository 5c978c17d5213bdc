"""A forged frame (the patient's stream id, seq 10^6, a start time 116 days ahead) on a real worker: the
patient's next real frames are all processed, the forged one is dead-lettered as ``sequence_jump``."""

from __future__ import annotations

import dataclasses

import pytest

from stream.schemas import BeatBatchMessage, DeadLetterMessage
from stream.testing import encode_frames, synthetic_frames
from tests.integration.conftest import consume, produce

pytestmark = pytest.mark.integration


def test_a_forged_frame_does_not_blind_the_patient(settings, workers) -> None:
    worker = workers.start()
    frames = list(synthetic_frames(fs=360.0, seconds=30, stream_id="forge-01"))
    forged = dataclasses.replace(
        frames[10], seq=1_000_000, start_time=frames[10].start_time + 116 * 86400.0
    )
    values = list(encode_frames(frames[:10])) + list(encode_frames([forged]))
    values += list(encode_frames(frames[10:]))
    produce(settings, settings.topics.telemetry, [(b"forge-01", v) for v in values])

    def all_processed(vals: list[bytes]) -> bool:
        return {BeatBatchMessage.from_bytes(v).seq for v in vals} >= set(range(30))

    receipts = consume(settings, settings.topics.beats, until=all_processed, timeout_s=60)
    assert sorted({BeatBatchMessage.from_bytes(v).seq for v in receipts}) == list(range(30))
    dead = [
        DeadLetterMessage.from_bytes(v)
        for v in consume(settings, settings.topics.dead_letter, until=lambda v: len(v) >= 1)
    ]
    assert [d.reason for d in dead] == ["sequence_jump"]
    m = worker.metrics()
    assert m["ecg_frames_quarantined_total"] == 1
    assert m["ecg_frames_missing_total"] == 0
    assert m.get('ecg_frames_rejected_total{reason="sequence_backwards"}', 0) == 0
