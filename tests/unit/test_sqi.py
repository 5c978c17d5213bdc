"""Signal quality indices per lead per second on real MIT-BIH segments, clean and spoiled."""

from __future__ import annotations

import numpy as np
import pytest

from simulators.faults import load_nstdb_noise
from stream.records import read_annotations, read_record
from stream.stages.sqi import (
    QUALITY_REASONS,
    EnergyQrsDetector,
    LeadQuality,
    SignalQuality,
    clipped_fraction,
    match_f1,
)

FS = 360.0


@pytest.fixture(scope="module")
def rec119(data_dir):
    return read_record(data_dir / "mitdb" / "119", sampto=int(FS * 60))


@pytest.fixture(scope="module")
def ma_noise(data_dir):
    return load_nstdb_noise(data_dir)["ma"]


def nst_noise(sig: np.ndarray, noise: np.ndarray, snr_db: float, ann: np.ndarray) -> np.ndarray:
    """``sig`` [n, leads] plus NSTDB noise at ``snr_db`` as the NSTDB defines it: signal power = (median
    QRS peak-to-peak amplitude)^2 / 8, noise power = its variance (Moody, Muldrow & Mark 1984)."""
    out = sig.astype(np.float64).copy()
    for li in range(sig.shape[1]):
        qrs = [np.ptp(sig[max(0, s - 18) : s + 18, li]) for s in ann if s < sig.shape[0]]
        nz = noise[: sig.shape[0], li % noise.shape[1]].astype(np.float64)
        nz = nz - nz.mean()
        scale = np.sqrt(np.median(qrs) ** 2 / 8 / (np.var(nz) * 10 ** (snr_db / 10)))
        out[:, li] += scale * nz
    return out


def run_quality(x: np.ndarray, leads=("MLII", "V1"), qrs_leads=(0, 1)) -> list[LeadQuality]:
    sq = SignalQuality("s", FS, leads, 0.0, qrs_leads=qrs_leads, own_detectors=True)
    out: list[LeadQuality] = []
    for k in range(0, x.shape[0], int(FS)):
        out += sq.process(x[k : k + int(FS)], k)
    return out


def lead_seconds(q: list[LeadQuality], lead: str, after: float = 10.0) -> list[LeadQuality]:
    return [r for r in q if r.lead == lead and r.start >= after]


def test_one_entry_per_lead_per_second_json_ready(rec119):
    q = run_quality(rec119.signal[: int(FS * 12.5)])
    assert len(q) == 24 and {r.lead for r in q} == {"MLII", "V1"}
    d = q[-1].to_dict()
    assert set(d) >= {"bsqi", "ksqi", "psqi", "bassqi", "flat", "clipped", "usable", "reason"}
    assert d["start"] == 11.0 and d["seconds"] == 1.0
    assert all(r.reason in (None, *QUALITY_REASONS) for r in q)
    # a lead without a detector has no bSQI
    q1 = run_quality(rec119.signal[: int(FS * 3)], qrs_leads=(0,))
    assert all(r.bsqi is None for r in q1 if r.lead == "V1")


def test_clean_segment_is_usable(rec119):
    q = lead_seconds(run_quality(rec119.signal), "MLII")
    assert all(r.usable and r.reason is None for r in q)
    assert np.median([r.bsqi for r in q]) >= 0.95
    assert np.median([r.psqi for r in q]) > 0.6 and np.median([r.ksqi for r in q]) > 5


def test_muscle_noise_lowers_psqi_and_bsqi_and_is_noise(rec119, ma_noise, data_dir):
    ann = read_annotations(data_dir / "mitdb" / "119").beats().sample
    clean = lead_seconds(run_quality(rec119.signal), "MLII")
    x = rec119.signal.astype(np.float64).copy()
    a = int(
        FS * 20
    )  # the noise starts after 20 clean seconds (the lead's own reference is learned)
    x[a:, :1] = nst_noise(rec119.signal[a:, :1], ma_noise, -6.0, ann[ann >= a] - a)
    noisy = lead_seconds(run_quality(x), "MLII", after=21.0)
    clean = [r for r in clean if r.start >= 21.0]
    assert np.median([r.psqi for r in noisy]) < 0.6 * np.median([r.psqi for r in clean])
    assert np.mean([r.bsqi for r in noisy]) < np.mean([r.bsqi for r in clean])
    assert np.mean([r.reason == "noise" for r in noisy]) > 0.8
    assert not any(r.usable for r in noisy if r.reason == "noise")


def test_flat_segment_is_flat(rec119):
    x = rec119.signal.astype(np.float64).copy()
    x[int(FS * 20) : int(FS * 30), 0] = x[int(FS * 20), 0]
    q = {r.start: r for r in lead_seconds(run_quality(x), "MLII")}
    assert all(q[t].reason == "flat" and q[t].flat == 1.0 for t in range(20, 30))
    assert q[35.0].usable and q[35.0].flat == 0.0


def test_clipped_segment_is_clipped(rec119):
    x = rec119.signal.astype(np.float64).copy()
    seg = x[int(FS * 20) : int(FS * 40), 0]
    lo, hi = np.percentile(seg, [2, 92])
    x[int(FS * 20) : int(FS * 40), 0] = np.clip(seg, lo, hi)  # the amplifier clips the R waves
    q = {r.start: r for r in lead_seconds(run_quality(x), "MLII")}
    assert np.mean([q[t].reason == "clipped" for t in range(21, 40)]) > 0.8
    assert q[15.0].clipped < 0.05 and q[15.0].usable


@pytest.mark.parametrize("record", ["101", "114", "124", "201"])
def test_clean_records_are_never_clipped(data_dir, record):
    """Clean 10 min of MIT-BIH: no second of either lead is ``clipped`` (samples near the second's max
    are no plateau at a rail; these records used to get 1-6 such verdicts on MLII)."""
    rec = read_record(data_dir / "mitdb" / record, sampto=int(FS * 600))
    sq = SignalQuality("s", FS, rec.leads, 0.0)
    q = [
        r
        for k in range(0, rec.signal.shape[0], int(FS))
        for r in sq.process(rec.signal[k : k + 360], k)
    ]
    assert len(q) == 600 * len(rec.leads)
    assert not [r for r in q if r.reason == "clipped"]
    assert max(r.clipped for r in q) == 0.0


def test_clipped_fraction_counts_plateaus_not_peaks():
    t = np.arange(360) / FS
    rng = np.random.default_rng(0)
    beat = np.exp(-(((t - 0.5) / 0.025) ** 2)) - 0.3 * np.exp(-(((t - 0.56) / 0.01) ** 2))
    beat = np.round((beat + rng.normal(0, 0.01, t.size)) / 0.005) * 0.005  # 5 uV ADC codes
    flat_top = np.minimum(beat, 0.3)  # the same beat clipped at 0.3 mV: a plateau of ~20 samples
    x = np.stack([beat, flat_top], axis=1)
    hi, lo = x.max(axis=0), x.min(axis=0)
    frac = clipped_fraction(x, hi, lo, min_run=7)
    assert frac[0] == 0.0  # the R apex and the S trough are single samples
    assert frac[1] == pytest.approx(np.mean(flat_top == 0.3), abs=3 / 360)
    assert frac[1] > 0.05
    assert clipped_fraction(x * 0.1, hi * 0.1, lo * 0.1, min_run=7)[1] == 0.0  # swings < 0.2 mV


def test_baseline_wander_lowers_bassqi(rec119, data_dir):
    bw = load_nstdb_noise(data_dir)["bw"][: rec119.signal.shape[0], 0]
    clean = lead_seconds(run_quality(rec119.signal), "MLII")
    x = rec119.signal.astype(np.float64).copy()
    x[:, 0] += 3.0 * (bw - bw.mean()) / np.std(bw)  # wander of 3 mV RMS
    wander = lead_seconds(run_quality(x), "MLII")
    assert np.median([r.bassqi for r in wander]) < 0.5 * np.median([r.bassqi for r in clean])
    assert any(r.reason == "baseline" for r in wander)


@pytest.mark.parametrize("offset_mv", [10.0, -10.0])
def test_dc_offset_does_not_change_usability(rec119, offset_mv):
    base = run_quality(rec119.signal)
    moved = run_quality(rec119.signal.astype(np.float64) + offset_mv)
    assert [r.usable for r in moved] == [r.usable for r in base]
    assert [round(r.psqi, 6) for r in moved] == [round(r.psqi, 6) for r in base]
    assert [round(r.bassqi, 3) for r in moved] == [round(r.bassqi, 3) for r in base]


def test_quiet_isoelectric_line_is_not_noise(rec119):
    x = rec119.signal.astype(np.float64).copy()
    rng = np.random.default_rng(0)
    a, b = int(FS * 30), int(FS * 40)  # asystole: an isoelectric line with a little noise
    x[a:b] = np.median(x[a - 360 : a], axis=0) + rng.normal(0, 0.01, (b - a, 2))
    q = [r for r in lead_seconds(run_quality(x), "MLII") if 30 <= r.start < 40]
    assert not any(r.reason == "noise" for r in q)


def test_energy_detector_finds_the_annotated_beats(rec119, data_dir):
    ann = read_annotations(data_dir / "mitdb" / "119").beats().sample
    ann = ann[(ann > FS * 2) & (ann < rec119.signal.shape[0] - FS)]
    det = EnergyQrsDetector(FS)
    x = rec119.lead("MLII")
    peaks = np.concatenate([det.process(x[k : k + 360], k) for k in range(0, x.size, 360)])
    assert match_f1(peaks[peaks > FS * 2], ann, round(0.15 * FS)) > 0.98


def test_match_f1():
    a = np.array([100, 400, 700])
    assert match_f1(a, a + 20, 54) == 1.0
    assert match_f1(a, np.array([100, 700]), 54) == pytest.approx(0.8)
    assert match_f1(np.array([], dtype=int), np.array([], dtype=int), 54) == 1.0
    assert match_f1(a, np.array([], dtype=int), 54) == 0.0
