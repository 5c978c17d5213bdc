"""Per-lead dropout detection: every kind, frame-boundary invariance, clean real records."""

from __future__ import annotations

import numpy as np
import pytest

from simulators.faults import FaultSpec, inject
from stream.records import read_record
from stream.stages.dropouts import DropoutDetector, detect_dropouts


@pytest.fixture(scope="module")
def rec(data_dir):
    return read_record(data_dir / "mitdb" / "119", sampto=360 * 90)


def _faulted(rec):
    faults = [
        FaultSpec("flatline", "MLII", 10.0, 0.2),
        FaultSpec("zero", "V1", 20.0, 3.0),
        FaultSpec("nan", "MLII", 30.0, 0.2),
        FaultSpec("lead_off", "V1", 40.0, 0.2),
        FaultSpec("saturation", "MLII", 50.0, 0.2),
        FaultSpec("lead_off", "MLII", 60.0, 8.0),
    ]
    return faults, inject(rec.signal, rec.fs, rec.leads, faults, rng=np.random.default_rng(0))


def test_each_kind_found_on_its_lead_with_accurate_bounds(rec):
    faults, x = _faulted(rec)
    segs = detect_dropouts(x, rec.fs, rec.leads)
    expected = {
        "flatline": "flatline",
        "zero": "flatline",
        "nan": "nan",
        "lead_off": "lead_off",
        "saturation": "saturation",
    }
    for f in faults:
        hits = [s for s in segs if s.lead == f.lead and s.start < f.end_s and s.end > f.start_s]
        assert [s.kind for s in hits] == [expected[f.kind]], (f, hits)
        assert hits[0].start == pytest.approx(f.start_s, abs=0.02)
        assert hits[0].end == pytest.approx(f.end_s, abs=0.02)
    assert len(segs) == len(faults)  # nothing else on 90 s of a clean record


@pytest.mark.parametrize("chunk", [1, 97, 360, 3600])
def test_chunking_does_not_change_segments(rec, chunk):
    _, x = _faulted(rec)
    x = x[: 360 * 45] if chunk == 1 else x
    ref = detect_dropouts(x, rec.fs, rec.leads, chunk=360)
    got = detect_dropouts(x, rec.fs, rec.leads, chunk=chunk)
    assert got == ref


def test_runs_across_frame_boundaries_and_gaps():
    fs = 100.0
    t = np.arange(1000) / fs
    x = np.stack([np.sin(2 * np.pi * 1.3 * t), np.cos(2 * np.pi * 0.9 * t)], axis=1)
    x[95:130, 0] = np.nan  # 0.35 s across the frame boundary at 100
    det = DropoutDetector("s", fs, ("II", "V1"), t0=50.0)
    out = det.process(x[:100], 0)
    assert out == [] and det.active().tolist() == [True, False]
    out = det.process(x[100:200], 100)
    assert [(s.lead, s.kind, s.start, s.end) for s in out] == [("II", "nan", 50.95, 51.3)]
    gap = det.process(x[500:600], 500)  # samples 200..499 lost
    miss = [s for s in gap if s.kind == "missing_frames"]
    assert (
        sorted(s.lead for s in miss) == ["II", "V1"]
        and miss[0].start == 52.0
        and miss[0].end == 55.0
    )
    assert det.flush() == []


def test_nan_only_frames_and_flush_close_open_runs():
    det = DropoutDetector("s", 360.0, ("MLII",))
    assert det.process(np.full((360, 1), np.nan), 0) == []
    assert det.open_since() == [0.0]
    segs = det.flush()
    assert [(s.kind, s.start, s.end) for s in segs] == [("nan", 0.0, 1.0)]


def test_short_glitches_are_ignored():
    fs = 360.0
    x = np.sin(2 * np.pi * 1.1 * np.arange(3600) / fs)[:, None] * 0.5
    x[1000:1010] = np.nan  # 28 ms
    x[2000:2030] = 0.2  # 83 ms flat
    assert detect_dropouts(x, fs, ("MLII",)) == []


def test_clean_records_have_no_dropouts(data_dir):
    for name in ("100", "105", "208"):
        r = read_record(data_dir / "mitdb" / name, sampto=360 * 300)
        assert detect_dropouts(r.signal, r.fs, r.leads) == [], name


# ------------------------------------------------------------------- saturation: the stream's own rails
MITDB_RAILS = (-5.12, 5.115)


def _offset(rec, offsets, drift_mv=0.0):
    """The record with a DC offset per lead plus a linear baseline drift over its length."""
    ramp = np.linspace(0.0, drift_mv, rec.signal.shape[0], dtype=np.float32)[:, None]
    return rec.signal + np.asarray(offsets, dtype=np.float32) + ramp


@pytest.mark.parametrize("offset", [-10.0, -7.5, -5.0, -3.0, 3.0, 5.0, 7.5, 10.0])
def test_dc_offsets_are_never_dropouts(rec, offset):
    """MIT-BIH 119 (90 s, both leads) moved by up to +-10 mV: no dropout of any kind, with or without
    a declared range (the range moves with the offset, as a front end's would)."""
    x = _offset(rec, [offset, -offset])
    assert detect_dropouts(x, rec.fs, rec.leads) == []
    det = DropoutDetector("o", rec.fs, rec.leads)
    det.set_adc_range([(MITDB_RAILS[0] + o, MITDB_RAILS[1] + o) for o in (offset, -offset)])
    segs = []
    for s in range(0, x.shape[0], 360):
        segs += det.process(x[s : s + 360], s)
    assert segs + det.flush() == []


def test_baseline_drift_of_20_mv_is_not_a_dropout(rec):
    x = _offset(rec, [-10.0, 10.0], drift_mv=20.0)  # -10 -> +10 mV on MLII, +10 -> +30 mV on V1
    assert detect_dropouts(x, rec.fs, rec.leads) == []


def test_nstdb_bw_with_offsets_has_no_saturation(data_dir):
    """The NSTDB baseline-wander record (real electrode-motion wander, 12-bit ADC) 8 mV below zero."""
    import wfdb

    bw = wfdb.rdrecord(str(data_dir / "nstdb" / "bw"), sampto=360 * 300).p_signal.astype(np.float32)
    for offset in (-8.0, 8.0):
        segs = detect_dropouts(bw + offset, 360.0, ("MLII", "V1"))
        assert [s for s in segs if s.kind == "saturation"] == []


@pytest.mark.parametrize("declared", [False, True])
@pytest.mark.parametrize("offset", [-8.0, 0.0, 8.0])
def test_clipping_at_the_rail_is_still_saturation(rec, declared, offset):
    """A 0.5 s clip at the ADC rail of an offset lead (12-bit rails at +-10.24 mV, e.g. NSTDB) is found
    with the declared range and, without it, as a plateau at the lead's running extreme. The front end
    clips the offset signal at its rails (at +-8 mV, 119's largest waves already touch them briefly)."""
    rails = [(-10.24, 10.235)] * 2
    x = np.clip(_offset(rec, [offset, offset]), -10.24, 10.235)
    faults = [FaultSpec("saturation", "MLII", 30.0, 0.5), FaultSpec("saturation", "V1", 60.0, 0.5)]
    x = inject(x, rec.fs, rec.leads, faults, adc_range_mv=rails)
    det = DropoutDetector("c", rec.fs, rec.leads)
    if declared:
        det.set_adc_range(rails)
    segs = []
    for s in range(0, x.shape[0], 360):
        segs += det.process(x[s : s + 360], s)
    segs += det.flush()
    assert [(s.lead, s.kind) for s in segs] == [("MLII", "saturation"), ("V1", "saturation")]
    for seg, f in zip(segs, faults, strict=True):
        assert abs(seg.start - f.start_s) < 0.02 and abs(seg.end - f.end_s) < 0.02


def test_a_frozen_signal_near_its_baseline_stays_a_flatline_without_a_range():
    fs = 360.0
    t = np.arange(int(fs * 10)) / fs
    x = (-8.0 + 0.8 * np.sin(2 * np.pi * 1.2 * t)).astype(np.float32)[:, None]
    x[1800:2160, 0] = x[1799, 0]  # frozen 1 s, inside the lead's excursion
    segs = detect_dropouts(x, fs, ("MLII",))
    assert [s.kind for s in segs] == ["flatline"]


def test_bad_declared_range_raises():
    det = DropoutDetector("b", 360.0, ("MLII", "V1"))
    with pytest.raises(ValueError):
        det.set_adc_range([(-5.0, 5.0)])
    with pytest.raises(ValueError):
        det.set_adc_range([(5.0, -5.0), (-5.0, 5.0)])


# ------------------------------------------------------- flatline: the stream's own natural plateaus
def _longest_plateau_s(rec) -> float:
    best = 0
    for col in rec.signal.T:
        d = np.concatenate([[0], (np.diff(col) == 0).astype(np.int8), [0]])
        st, en = np.flatnonzero(np.diff(d) == 1), np.flatnonzero(np.diff(d) == -1)
        if st.size:
            best = max(best, int((en - st).max()) + 1)
    return best / rec.fs


@pytest.mark.parametrize(
    ("path", "longest_s"),
    [
        ("ptbxl/records100/07000/07857_lr", 0.27),  # 100 Hz, 1 uV steps: 27 equal samples on V6
        ("ludb/data/128", 0.576),  # 500 Hz: 288 equal samples on II, >= 0.5 s on 5 leads
    ],
)
@pytest.mark.parametrize("chunk", [None, 97])
def test_natural_plateaus_of_finely_quantised_records_are_not_flatlines(
    data_dir, path, longest_s, chunk
):
    rec = read_record(data_dir / path)
    assert _longest_plateau_s(rec) == pytest.approx(longest_s, abs=1e-6)
    assert detect_dropouts(rec.signal, rec.fs, rec.leads, chunk=chunk) == []


def test_a_flatline_longer_than_the_natural_plateaus_is_still_found_on_ludb(data_dir):
    rec = read_record(data_dir / "ludb" / "data" / "128")
    x = rec.signal.copy()
    li = rec.leads.index("V2")
    x[3000:3750, li] = x[2999, li]  # 1.5 s frozen at 6 s
    segs = detect_dropouts(x, rec.fs, rec.leads)
    assert [(s.lead, s.kind) for s in segs] == [("V2", "flatline")]
    assert segs[0].start == pytest.approx(6.0, abs=0.01) and segs[0].end == pytest.approx(7.5)
    for chunk in (1, 333):
        assert detect_dropouts(x[:4500], rec.fs, rec.leads, chunk=chunk) == detect_dropouts(
            x[:4500], rec.fs, rec.leads
        )


def test_the_flatline_minimum_follows_the_stream(data_dir, rec):
    det = DropoutDetector("m", rec.fs, rec.leads)
    assert det.flat_minimum_s() == pytest.approx(1.0)  # warm-up: no plateau seen yet
    for s in range(0, 360 * 20, 360):
        det.process(rec.signal[s : s + 360], s)
    assert det.flat_minimum_s() == pytest.approx(0.15)  # MIT-BIH: natural runs of a few samples
    lud = read_record(data_dir / "ludb" / "data" / "128")
    det = DropoutDetector("l", lud.fs, lud.leads)
    for s in range(0, 5000, 500):
        det.process(lud.signal[s : s + 500], s)
    assert det.flat_minimum_s() == pytest.approx(1.0)  # 4 x 0.576 s, capped at max_flat_s


@pytest.mark.parametrize("kind", ["flatline", "zero"])
@pytest.mark.parametrize("start_s", [5.0, 12.3, 47.9])
def test_short_injected_flatlines_on_mitdb_are_still_found(rec, kind, start_s):
    x = inject(rec.signal, rec.fs, rec.leads, [FaultSpec(kind, "V1", start_s, 0.2)])
    segs = detect_dropouts(x, rec.fs, rec.leads)
    assert [(s.lead, s.kind) for s in segs] == [("V1", "flatline")]
    assert segs[0].start == pytest.approx(start_s, abs=0.02)
    assert segs[0].end == pytest.approx(start_s + 0.2, abs=0.02)


def test_a_flatline_in_the_warm_up_needs_the_longest_minimum():
    fs = 360.0
    x = (0.5 * np.sin(2 * np.pi * 1.1 * np.arange(3600) / fs))[:, None]
    x[180:360] = x[179]  # 0.5 s frozen at 0.5 s: no evidence yet, below max_flat_s
    x[400:900] = x[399]  # 1.39 s frozen at 1.1 s: found
    segs = detect_dropouts(x, fs, ("MLII",))
    assert [(s.kind, round(s.start, 3)) for s in segs] == [("flatline", round(399 / fs, 3))]


# ------------------------------------------- lead_off: a re-learned baseline, and no ECG on the lead
def test_baseline_steps_that_carry_ecg_are_not_lead_off(data_dir):
    """MIT-BIH 100 with +5 mV and -10 mV baseline steps (2 s ramps) on both leads and a 0.5 s +5 mV step
    on MLII: the ECG goes on at the new level, so no dropout (the frame-mean reference gave 187)."""
    from simulators.nst import OffsetStep, nst_record

    steps = [OffsetStep(30.0, 5.0), OffsetStep(60.0, -10.0), OffsetStep(90.0, 5.0, "MLII", 0.5)]
    r = nst_record(data_dir, "100", None, None, seconds=120, offset_steps=steps).record()
    assert detect_dropouts(r.signal, r.fs, r.leads) == []


@pytest.mark.parametrize("record", ["119", "103"])
@pytest.mark.parametrize("offset", [(0.0, 0.0), (10.0, -10.0)])
def test_nst_baseline_wander_at_6_db_has_no_dropouts(data_dir, record, offset):
    """The project's NST records (NSTDB bw at 6 dB, NST convention, seed 0), replayed as the stream
    sends them (1 s frames declaring the range): no dropout (103 gave lead_off segments on V2)."""
    from simulators.nst import nst_record
    from training.eval_detectors import sent_signal

    r = nst_record(data_dir, record, "bw", 6.0, offset_mv=offset).record()
    x, adc = sent_signal(r)
    det = DropoutDetector("n", r.fs, r.leads)
    det.set_adc_range(adc)
    segs = []
    for s in range(0, x.shape[0], 360):
        segs += det.process(x[s : s + 360], s)
    assert segs + det.flush() == []


def test_a_short_lead_off_at_the_leads_new_extreme_is_found(rec):
    """A 0.25 s lead-off stepping above the lead's running maximum, two of its samples equal (hum and
    noise): without a declared range that sample is raw saturation, which must not cut the run."""
    f = FaultSpec("lead_off", "MLII", 40.0, 0.25)
    x = inject(rec.signal, rec.fs, rec.leads, [f], rng=np.random.default_rng(3))
    s = round(f.start_s * rec.fs)
    assert x[s : s + 90, 0].min() > x[:s, 0].max()  # a new running maximum
    x[s + 41 : s + 43, 0] = x[s : s + 90, 0].max()
    segs = detect_dropouts(x, rec.fs, rec.leads)
    assert [(sg.lead, sg.kind) for sg in segs] == [("MLII", "lead_off")]
    assert segs[0].start == pytest.approx(f.start_s, abs=0.02)
    assert segs[0].end == pytest.approx(f.end_s, abs=0.02)


@pytest.mark.parametrize(
    "path", ["08000/08705_lr", "04000/04575_lr", "11000/11641_lr"]
)  # V4, V3/V4, V4 gave lead_off
@pytest.mark.parametrize("chunk", [None, 37])
def test_clean_ptbxl_records_with_large_precordial_waves_have_no_dropouts(data_dir, path, chunk):
    rec = read_record(data_dir / "ptbxl" / "records100" / path)
    assert detect_dropouts(rec.signal, rec.fs, rec.leads, chunk=chunk) == []


def test_the_baseline_does_not_depend_on_frames_or_gaps(rec):
    """The lead-off baseline is learned in absolute sample blocks: any chunking (and a gap) gives
    the same segments, and a lead-off after a step that carries ECG is still found."""
    x = _offset(rec, [0.0, 0.0]).astype(np.float64)
    x[360 * 20 :, 1] += 6.0  # instant 6 mV step on V1 at 20 s (inside a beat or not)
    faults = [FaultSpec("lead_off", "V1", 30.0, 0.3), FaultSpec("lead_off", "MLII", 50.0, 2.0)]
    x = inject(x, rec.fs, rec.leads, faults, rng=np.random.default_rng(0))
    ref = detect_dropouts(x, rec.fs, rec.leads)
    assert [(s.lead, s.kind) for s in ref if s.start > 21.0] == [
        ("V1", "lead_off"),
        ("MLII", "lead_off"),
    ]
    for chunk in (1, 50, 97, 1000):
        xx = x[: 360 * 35] if chunk == 1 else x
        want = [s for s in ref if s.end <= xx.shape[0] / rec.fs]
        assert detect_dropouts(xx, rec.fs, rec.leads, chunk=chunk) == want
