"""Fault injection with ground truth (simulators.faults)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from simulators.faults import (
    DROPOUT_FAULT_KINDS,
    FAULT_KINDS,
    RAIL_MV,
    FaultSpec,
    frames_to_drop,
    ground_truth,
    inject,
    load_nstdb_noise,
    random_faults,
)
from stream.records import read_record


@pytest.fixture(scope="module")
def rec(data_dir):
    return read_record(data_dir / "mitdb" / "100", sampto=360 * 60)


def test_inject_sample_faults(rec):
    faults = [
        FaultSpec("flatline", "MLII", 2.0, 0.5),
        FaultSpec("zero", "V5", 5.0, 1.0),
        FaultSpec("nan", None, 8.0, 0.2),
        FaultSpec("lead_off", "MLII", 12.0, 2.0),
        FaultSpec("saturation", "V5", 20.0, 0.3),
        FaultSpec("lost_frames", None, 30.0, 0.4),
    ]
    x = inject(rec.signal, rec.fs, rec.leads, faults)
    assert x.shape == rec.signal.shape and x is not rec.signal
    fl = x[720:900, 0]
    assert np.all(fl == rec.signal[719, 0])
    assert np.all(x[1800:2160, 1] == 0.0)
    assert np.isnan(x[2880:2952]).all() and not np.isnan(x[2952:3000]).any()
    off = x[4320:5040, 0]
    assert abs(float(off.mean()) - float(rec.signal[3960:4320, 0].mean())) == pytest.approx(
        3.5, abs=0.05
    )
    assert float(np.ptp(off)) < 0.05  # no ECG on the detached lead
    assert np.all(np.abs(x[7200:7308, 1]) >= RAIL_MV)
    np.testing.assert_array_equal(
        x[10_800:11_000], rec.signal[10_800:11_000]
    )  # lost frames: not applied
    np.testing.assert_array_equal(x[:700], rec.signal[:700])  # untouched elsewhere


def test_nstdb_noise_at_requested_snr(rec, data_dir):
    noise = load_nstdb_noise(data_dir)
    assert set(noise) == {"bw", "ma"} and noise["ma"].shape[1] == 2
    x = inject(
        rec.signal,
        rec.fs,
        rec.leads,
        [FaultSpec("noise_ma", "MLII", 10.0, 10.0, snr_db=6.0)],
        noise=noise,
        rng=np.random.default_rng(1),
    )
    seg = slice(3600, 7200)
    added = x[seg, 0].astype(np.float64) - rec.signal[seg, 0]
    snr = 10 * np.log10(np.var(rec.signal[seg, 0]) / np.var(added))
    assert snr == pytest.approx(6.0, abs=0.2)
    with pytest.raises(ValueError, match="NSTDB"):
        inject(rec.signal, rec.fs, rec.leads, [FaultSpec("noise_bw", "MLII", 1.0, 1.0, snr_db=0.0)])


def test_random_faults_cover_every_kind_without_overlap():
    rng = np.random.default_rng(3)
    faults = random_faults(600.0, ("MLII", "V1"), 4.0, FAULT_KINDS, rng)
    assert {f.kind for f in faults} == set(FAULT_KINDS)
    assert all(0.2 <= f.duration_s <= 10.0 for f in faults)
    starts = sorted(faults, key=lambda f: f.start_s)
    assert all(b.start_s - a.end_s >= 3.0 - 1e-6 for a, b in itertools.pairwise(starts))
    assert all(f.lead is None for f in faults if f.kind == "lost_frames")
    again = random_faults(600.0, ("MLII", "V1"), 4.0, FAULT_KINDS, np.random.default_rng(3))
    assert again == faults  # deterministic for a seed


def test_lost_frames_ground_truth_is_frame_aligned():
    faults = [FaultSpec("lost_frames", None, 10.5, 1.0), FaultSpec("nan", "V1", 20.0, 0.5)]
    assert frames_to_drop(faults, 36_000, 360.0, 360) == {10, 11}
    truth = ground_truth("s", faults, 1000.0, 360.0, 360, 36_000)
    assert truth[0].to_dict() == {
        "stream_id": "s",
        "lead": None,
        "start": 1010.0,
        "end": 1012.0,
        "kind": "lost_frames",
    }
    assert (truth[1].start, truth[1].end, truth[1].lead) == (1020.0, 1020.5, "V1")
    assert set(DROPOUT_FAULT_KINDS) < set(FAULT_KINDS)


def test_bad_specs_are_rejected():
    with pytest.raises(ValueError, match="kind"):
        FaultSpec("unplugged", None, 0.0, 1.0)
    with pytest.raises(ValueError, match="snr_db"):
        FaultSpec("noise_ma", None, 0.0, 1.0)
    with pytest.raises(ValueError, match="duration"):
        FaultSpec("nan", None, 0.0, 0.0)
