"""A short fuzz run on the real local stack: hostile messages of every kind beside good streams."""

from __future__ import annotations

import pytest

from simulators.fuzz import KINDS, run_fuzz

pytestmark = pytest.mark.integration


def test_hostile_messages_never_stall_good_streams(tmp_path):
    report = run_fuzz(n_hostile=3 * len(KINDS), streams=4, seconds=8, log_dir=tmp_path)
    assert report.kinds == len(KINDS)
    assert report.worker_alive and report.worker_tracebacks == 0
    # every hostile message is on the dead-letter topic with the reason its kind declares
    assert report.hostile_dead_lettered == report.hostile_sent and report.wrong_reason == 0
    assert report.rejected_counter == report.dead_letters == report.dead_letters_acknowledged
    assert report.good_processed == report.good_sent
    assert report.good_p99_s is not None and report.good_p99_s < 1.0, report.to_dict()
