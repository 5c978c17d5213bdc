"""StreamProcessor on real records fed frame by frame: beats, windows, gaps, duplicates, dropouts."""

from __future__ import annotations

import numpy as np
import pytest

from models.card import BEAT_720
from stream.records import TWELVE_LEADS, read_annotations, read_record
from stream.schemas import AlertMessage
from stream.stages.events import DROPOUT_KINDS
from stream.stages.processor import Frame, StageConfig, StreamProcessor
from stream.stages.qrs import detect_qrs
from stream.testing import T0, frames_from_array, record_frames, run_processor


@pytest.fixture(scope="module")
def rec100(data_dir):
    return read_record(data_dir / "mitdb" / "100", sampto=360 * 120)


def test_beats_match_the_whole_record_detector_and_annotations(rec100, data_dir):
    out = run_processor(StreamProcessor("p1", rec100.fs, rec100.leads), record_frames(rec100))
    peaks = np.array([b.sample for b in out.beats])
    np.testing.assert_array_equal(peaks, detect_qrs(rec100.lead("MLII"), rec100.fs))
    ann = read_annotations(data_dir / "mitdb" / "100").beats().sample
    ann = ann[ann < 360 * 119]
    assert abs(peaks.size - ann.size) <= 2
    b = out.beats[10]
    assert b.time == pytest.approx(T0 + b.sample / 360.0)
    assert 60 < b.hr_bpm < 90 and b.rr_s == pytest.approx((b.sample - out.beats[9].sample) / 360.0)
    assert not out.dropouts and not out.alerts


def test_windows_are_model_shaped_and_centred(rec100):
    out = run_processor(StreamProcessor("p1", rec100.fs, rec100.leads), record_frames(rec100))
    w720 = [w for w in out.windows if w.kind == "beat_720"]
    w400 = [w for w in out.windows if w.kind == "beat_400"]
    assert len(w720) >= len(out.beats) - 3 and len(w400) >= len(out.beats) - 3
    assert all(w.data.shape == (720,) and w.lead == "MLII" and w.fs == 360.0 for w in w720)
    assert all(w.data.shape == (400,) for w in w400)
    # the R peak sits at the centre of the filtered window
    assert np.median([np.argmax(np.abs(w.data[340:380])) + 340 for w in w720]) == pytest.approx(
        360, abs=6
    )
    assert not any(w.kind == "leads_10s" for w in out.windows)  # 2-lead stream


def test_twelve_lead_stream_emits_leads_10s(data_dir):
    rec = read_record(data_dir / "ludb" / "data" / "1")
    assert set(TWELVE_LEADS) <= set(rec.leads)
    out = run_processor(StreamProcessor("l1", rec.fs, rec.leads), record_frames(rec))
    w = [w for w in out.windows if w.kind == "leads_10s"]
    assert len(w) == 1 and w[0].data.shape == (1000, 12) and w[0].fs == 100.0
    assert len(out.beats) >= 8
    assert all(x.data.shape == (720,) for x in out.windows if x.kind == "beat_720")


def test_duplicates_are_ignored_and_gaps_become_missing_frames(rec100):
    sp = StreamProcessor("p1", rec100.fs, rec100.leads)
    fs = list(record_frames(rec100, seconds=30))
    outs = []
    for f in fs[:10]:
        outs.append(sp.process(f))
    dup = sp.process(fs[9])
    assert dup.duplicate and dup.samples == 0 and not dup.beats
    gap = sp.process(fs[13])  # frames 10, 11, 12 lost
    assert gap.gap_frames == 3
    miss = [d for d in gap.dropouts if d.kind == "missing_frames"]
    assert sorted(d.lead for d in miss) == ["MLII", "V5"]
    assert miss[0].start == pytest.approx(T0 + 10) and miss[0].end == pytest.approx(T0 + 13)
    assert sp.samples_seen == 14 * 360  # the buffer advanced over the gap
    later = [sp.process(f) for f in fs[14:]]
    beats = [b for o in later for b in o.beats]
    assert beats and all(b.time >= T0 + 13 for b in beats)


def test_bad_signal_content_never_raises(rec100):
    sp = StreamProcessor("p1", rec100.fs, rec100.leads)
    sig = rec100.signal[: 360 * 20].copy()
    sig[360 * 10 : 360 * 12, 0] = 5.12  # clipped at the rail
    sig[360 * 14 : 360 * 16, 1] = 0.0  # flat
    nan_only = [(360 * 5, 360 * 7)]  # NaN-only frames
    out = run_processor(sp, frames_from_array(sig, rec100.fs, rec100.leads, nan_spans=nan_only))
    kinds = {(d.lead, d.kind) for d in out.dropouts}
    assert {("MLII", "nan"), ("V5", "nan"), ("MLII", "saturation"), ("V5", "flatline")} <= kinds
    assert all(d.kind in DROPOUT_KINDS for d in out.dropouts)


def test_stage_timings_are_reported(rec100):
    sp = StreamProcessor("p1", rec100.fs, rec100.leads)
    o = sp.process(next(record_frames(rec100)))
    assert set(o.stage_seconds) == {"filter", "qrs", "dropouts", "rules", "windows"}
    assert all(v >= 0 for v in o.stage_seconds.values()) and o.samples == 360


@pytest.mark.parametrize("frame_s", [0.25, 2.0])
def test_frame_length_does_not_change_beats(rec100, frame_s):
    ref = run_processor(StreamProcessor("p1", rec100.fs, rec100.leads), record_frames(rec100))
    got = run_processor(
        StreamProcessor("p1", rec100.fs, rec100.leads),
        record_frames(rec100, frame_seconds=frame_s),
    )
    assert [b.sample for b in got.beats] == [b.sample for b in ref.beats]
    assert [b.hr_bpm for b in got.beats] == [b.hr_bpm for b in ref.beats]


def test_frames_that_do_not_fit_the_stream_are_rejected(rec100):
    from stream.errors import FrameValidationError

    sp = StreamProcessor("p1", rec100.fs, rec100.leads)
    with pytest.raises(FrameValidationError) as exc:
        sp.process(Frame("p1", 0, 360.0, ("MLII",), T0, rec100.signal[:360, :1]))
    assert exc.value.reason == "lead_mismatch"
    with pytest.raises(FrameValidationError) as exc:
        sp.process(Frame("p1", 0, 250.0, rec100.leads, T0, rec100.signal[:360]))
    assert exc.value.reason == "fs_mismatch"
    assert (
        sp.process(Frame("p1", 0, 360.0, rec100.leads, T0, rec100.signal[:360])).samples == 360
    )  # state untouched


def test_without_model_windows_beats_dropouts_and_alerts_are_unchanged(rec100):
    from stream.stages.processor import StageConfig

    sig = rec100.signal.copy()
    sig[360 * 30 : 360 * 31, 1] = np.nan
    on = run_processor(
        StreamProcessor("p1", rec100.fs, rec100.leads),
        frames_from_array(sig, rec100.fs, rec100.leads, drop={50, 51}),
    )
    cfg = StageConfig(windows=())
    off = run_processor(
        StreamProcessor("p1", rec100.fs, rec100.leads, cfg),
        frames_from_array(sig, rec100.fs, rec100.leads, drop={50, 51}),
    )
    assert not off.windows and on.windows
    assert [b.to_dict() for b in off.beats] == [b.to_dict() for b in on.beats]
    assert [d.to_dict() for d in off.dropouts] == [d.to_dict() for d in on.dropouts]
    assert [AlertMessage.from_event(a) for a in off.alerts] == [
        AlertMessage.from_event(a) for a in on.alerts
    ]


def test_a_gap_in_a_250_hz_stream_gives_beat_windows_with_nan_at_360_hz(rec100):
    """Damaged beat windows are resampled around their gap: NaN only near the missing input samples."""
    from fractions import Fraction

    import scipy.signal as sps

    from stream.stages.processor import StageConfig, _resample_with_gaps

    fs = 250.0
    ratio = Fraction(250, 360)
    sig = sps.resample_poly(
        rec100.signal[: 360 * 20].astype(np.float64), ratio.numerator, ratio.denominator, axis=0
    ).astype(np.float32)
    sig[250 * 10 : 250 * 10 + 50] = np.nan  # 0.2 s missing on both leads
    cfg = StageConfig(windows=(BEAT_720,))
    out = run_processor(
        StreamProcessor("p1", fs, rec100.leads, cfg), frames_from_array(sig, fs, rec100.leads)
    )
    damaged = [w for w in out.windows if np.isnan(w.data).any()]
    assert damaged and all(w.data.shape == (720,) and w.fs == 360.0 for w in damaged)
    fracs = [float(np.isnan(w.data).mean()) for w in damaged]
    assert max(fracs) <= (0.2 + 0.03) * 360 / 720  # at most the gap plus a 10 ms guard each side
    assert max(fracs) >= 0.2 * 360 / 720  # a window holding the whole gap
    # the helper itself: NaN exactly around the gap, finite elsewhere
    seg = np.sin(np.linspace(0, 20, 500)).astype(np.float32)
    miss = np.zeros(500, bool)
    miss[200:250] = True
    y = _resample_with_gaps(np.where(miss, np.nan, seg), miss, 250.0, 360.0, 720)
    nan_t = np.flatnonzero(np.isnan(y)) / 360.0
    assert nan_t.min() >= 200 / 250 - 0.02 and nan_t.max() <= 250 / 250 + 0.02
    assert np.isfinite(y[: int(0.75 * 360)]).all() and np.isfinite(y[int(1.05 * 360) :]).all()


def test_a_window_longer_than_the_default_buffer_is_cut():
    from models.card import WindowSpec
    from stream.testing import run_processor, synthetic_frames

    long = WindowSpec(name="leads_20s", kind="leads", fs=100.0, samples=2000, leads=("I", "II"))
    proc = StreamProcessor("s", 250.0, ("I", "II"), StageConfig(windows=(long,)))
    out = run_processor(
        proc, synthetic_frames(fs=250.0, seconds=45, leads=("I", "II")), flush=False
    )
    assert [w.kind for w in out.windows] == ["leads_20s", "leads_20s"]
    assert all(w.data.shape == (2000, 2) and np.isfinite(w.data).all() for w in out.windows)


@pytest.mark.parametrize("frame_s", [0.05, 1.0])
def test_dropout_samples_are_masked_in_the_windows_back_to_the_run_start(rec100, frame_s):
    """Every sample of a confirmed flatline / lead-off run is NaN in the cut windows, from the run's first
    sample (confirmed only min_flat_s / min_lead_off_s later, possibly frames later), so no model sees it."""
    from simulators.faults import FaultSpec, inject

    fs = rec100.fs
    x = inject(
        rec100.signal[: round(fs * 30)],
        fs,
        rec100.leads,
        [FaultSpec("flatline", "MLII", 10.02, 0.4), FaultSpec("lead_off", "MLII", 20.02, 0.6)],
    )
    windows = {}
    for mask in (True, False):
        proc = StreamProcessor(
            "s1", fs, rec100.leads, StageConfig(windows=(BEAT_720,), mask_dropouts=mask)
        )
        out = run_processor(proc, frames_from_array(x, fs, rec100.leads, "s1", frame_s))
        windows[mask] = [w for w in out.windows if w.kind == "beat_720"]
    # a flatline holds the last sample before it: the run starts one sample early; lead-off: +1.5 s settle
    for a, b in (
        (round(10.02 * fs) - 1, round(10.42 * fs)),
        (round(20.02 * fs), round(22.12 * fs)),
    ):
        hit = [
            w
            for w in windows[True]
            if round((w.start - T0) * fs) < b and round((w.start - T0) * fs) + 720 > a
        ]
        assert hit
        for w in hit:
            s = round((w.start - T0) * fs)
            span = np.zeros(720, dtype=bool)
            span[max(a - s, 0) : max(min(b - s, 720), 0)] = True
            assert np.isnan(w.data[span]).all() and np.isfinite(w.data[~span]).all()
    assert not any(np.isnan(w.data).any() for w in windows[False])  # unmasked: scored raw before


@pytest.mark.parametrize("declared", [False, True])
def test_offset_stream_saturation_only_at_its_rails(rec100, declared):
    """MIT-BIH 100 sent 8 mV below zero (as NSTDB-like front ends do), 12-bit rails at +-10.24 mV:
    no dropout from the offset; a 0.5 s clip at the lower rail is one saturation, whether the frames
    declare their range or not."""
    x = np.clip(rec100.signal[: 360 * 60] - 8.0, -10.24, 10.235)
    x[360 * 30 : 360 * 30 + 180, 0] = -10.24
    rails = ((-10.24, 10.235),) * 2 if declared else None
    frames = [
        Frame("o1", i, 360.0, rec100.leads, T0 + i, x[i * 360 : (i + 1) * 360], adc_range_mv=rails)
        for i in range(60)
    ]
    out = run_processor(StreamProcessor("o1", rec100.fs, rec100.leads), frames)
    assert [(d.lead, d.kind) for d in out.dropouts] == [("MLII", "saturation")]
    assert out.dropouts[0].start - T0 == pytest.approx(30.0, abs=0.02)
    assert not out.alerts
