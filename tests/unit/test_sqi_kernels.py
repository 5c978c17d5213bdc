"""The compiled kernels of the signal quality stage: chunk invariance on a real noisy record, and the
exact numpy/scipy arithmetic they reproduce."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

from simulators.faults import FaultSpec, inject, load_nstdb_noise
from simulators.nst import nst_record
from stream.records import read_record
from stream.stages.sqi import (
    EnergyQrsDetector,
    LeadQuality,
    SignalQuality,
    _filter_held,
    clipped_fraction,
    flat_fraction,
    match_f1,
)

FS = 360.0


@pytest.fixture(scope="module")
def noisy(data_dir) -> np.ndarray:
    """MIT-BIH 119, 3 minutes, NSTDB muscle noise at -3 dB over a minute of it, a NaN gap."""
    rec = read_record(data_dir / "mitdb" / "119", sampto=int(180 * FS))
    noise = load_nstdb_noise(data_dir)
    fault = FaultSpec("noise_ma", None, 40.0, 60.0, snr_db=-3.0)
    x = inject(rec.signal, FS, rec.leads, [fault], noise=noise).astype(np.float64)
    x[int(95.2 * FS) : int(96.9 * FS), 0] = np.nan
    return x


def run(x: np.ndarray, chunk: float) -> list[LeadQuality]:
    sq = SignalQuality("s", FS, ("MLII", "V1"), 0.0, qrs_leads=(0, 1), own_detectors=True)
    step = max(1, round(chunk * FS))
    out: list[LeadQuality] = []
    for k in range(0, x.shape[0], step):
        out += sq.process(x[k : k + step], k)
    return out


def test_quality_is_chunk_invariant(noisy):
    a, b = run(noisy, 1.0), run(noisy, 0.37)
    assert len(a) == len(b) == 2 * 180
    # the indices of every second are the same; the verdicts once the first window is full (in
    # the first seconds the stream detector's warm-up depends on the chunking: a property of the stage
    # before the kernels too)
    assert [(q.lead, q.start) for q in a] == [(q.lead, q.start) for q in b]
    full = [(p, q) for p, q in zip(a, b, strict=True) if p.start >= 10.0]
    assert [(p.usable, p.reason) for p, _ in full] == [(q.usable, q.reason) for _, q in full]
    # bSQI: the second detector's mean energy is updated per call (see below), which can move a beat
    # in the noise; on clean signal it is the same
    same = [p.bsqi == q.bsqi for p, q in full]
    assert sum(same) >= 0.8 * len(full)
    assert all(p.bsqi == q.bsqi for p, q in full if p.start < 35.0 or p.start >= 110.0)
    assert {p.reason for p, _ in full} >= {None, "noise"}  # the noise segments are seen
    for p, q in zip(a, b, strict=True):
        for f in ("ksqi", "psqi", "bassqi", "flat", "clipped"):
            assert getattr(p, f) == pytest.approx(getattr(q, f), rel=1e-9, abs=1e-12)


def test_energy_detector_chunking(noisy):
    """Its mean energy is updated per call, so the chunking moves a beat or two at most."""
    beats = []
    for step in (360, 133, 1000, 7):
        det = EnergyQrsDetector(FS)
        col = noisy[:, 1]
        got = [det.process(col[k : k + step], k) for k in range(0, col.size, step)]
        beats.append(np.concatenate(got).tolist())
    assert len(beats[0]) > 150
    assert all(match_f1(beats[0], b, round(0.15 * FS)) > 0.99 for b in beats[1:])
    det = EnergyQrsDetector(FS)  # the same chunks: the same beats
    again = [det.process(noisy[k : k + 360, 1], k) for k in range(0, noisy.shape[0], 360)]
    assert np.concatenate(again).tolist() == beats[0]


def test_second_indices_match_the_pure_functions(data_dir):
    x = nst_record(data_dir, "208", None, None, seconds=30).signal.astype(np.float64)
    x[5 * 360 : 15 * 360] = np.clip(x[5 * 360 : 15 * 360], -0.5, 0.5)  # plateaus at the extremes
    x[20 * 360 : 22 * 360, 1] = x[20 * 360, 1]  # a flat line
    out = run(x, 1.0)
    for q in out:
        li, s = ("MLII", "V1").index(q.lead), round(q.start * FS)
        sec = x[s : s + 360, li : li + 1]
        assert q.flat == flat_fraction(sec, FS)[0]
        assert q.clipped == clipped_fraction(sec, sec.max(0), sec.min(0), 0.001, 7)[0]
    assert any(q.reason == "clipped" for q in out) and any(q.reason == "flat" for q in out)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_filter_is_scipy_lfilter_bit_for_bit(order):
    b, a = sps.butter(order, [1.0 / 180.0, 40.0 / 180.0], btype="bandpass")
    rng = np.random.default_rng(order)
    x = rng.normal(size=1000) + 5.0
    z = sps.lfilter_zi(b, a) * x[0]
    ref, zf = sps.lfilter(b, a, x, zi=z)
    y, zz = np.empty(1010), z.copy()
    assert _filter_held(x[:400], b, a, zz, y, 10, 0.0) == x[399]
    _filter_held(x[400:], b, a, zz, y, 410, 0.0)
    assert np.array_equal(y[10:], ref) and np.array_equal(zz, zf)
    # missing samples hold the last finite value
    xn = x.copy()
    xn[100:130] = np.nan
    held = x.copy()
    held[100:130] = x[99]
    y2, z2 = np.empty(1000), z.copy()
    _filter_held(xn, b, a, z2, y2, 0, 0.0)
    assert np.array_equal(y2, sps.lfilter(b, a, held, zi=z)[0])
