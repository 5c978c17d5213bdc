"""Sequence tracking and the absolute-indexed sample buffer across frame boundaries and gaps."""

from __future__ import annotations

import numpy as np
import pytest

from stream.records import read_record
from stream.stages.buffering import SampleBuffer, SequenceTracker


def test_sequence_tracker_duplicates_and_gaps():
    tr = SequenceTracker()
    assert tr.observe(5).missing == 0  # first frame: no gap whatever its seq
    assert tr.observe(6).missing == 0
    dup = tr.observe(6)
    assert dup.duplicate and dup.missing == 0
    assert tr.observe(3).duplicate  # old frame
    gap = tr.observe(9)
    assert not gap.duplicate and gap.missing == 2
    assert tr.last_seq == 9


@pytest.mark.parametrize("frame", [1, 7, 360, 1000])
def test_buffer_windows_straddle_frames_like_the_whole_record(data_dir, frame):
    rec = read_record(data_dir / "mitdb" / "100", sampto=20_000)
    buf = SampleBuffer(capacity=4_000, n_leads=2)
    for s in range(0, rec.signal.shape[0], frame):
        buf.append(rec.signal[s : s + frame])
    assert buf.end == rec.signal.shape[0]
    assert buf.start == rec.signal.shape[0] - 4_000
    np.testing.assert_array_equal(buf.get(17_000, 19_500), rec.signal[17_000:19_500])
    with pytest.raises(IndexError):
        buf.get(15_000, 16_100)  # no longer held
    with pytest.raises(IndexError):
        buf.get(19_900, 20_001)  # not yet received


def test_buffer_gap_is_nan_and_keeps_indices_aligned():
    buf = SampleBuffer(capacity=100, n_leads=1)
    buf.append(np.arange(10, dtype=np.float32))
    buf.append_gap(5)
    buf.append(np.arange(100, 103, dtype=np.float32))
    got = buf.get(8, 18)[:, 0]
    np.testing.assert_array_equal(got[:2], [8, 9])
    assert np.isnan(got[2:7]).all()
    np.testing.assert_array_equal(got[7:], [100, 101, 102])
    buf.append_gap(1_000)  # longer than the capacity
    assert buf.end == 1_018 and np.isnan(buf.get(918, 1_018)).all()


def test_buffer_rejects_wrong_lead_count():
    with pytest.raises(ValueError, match="leads"):
        SampleBuffer(10, 2).append(np.zeros((3, 3)))
