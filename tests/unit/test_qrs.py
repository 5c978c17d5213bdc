"""Causal chunked R-peak detector: chunk invariance, causality, bounded latency, accuracy on real records."""

from __future__ import annotations

import numpy as np
import pytest

from stream.records import read_annotations, read_record
from stream.stages.qrs import QrsDetector, detect_qrs, heart_rate_bpm
from training.eval_detectors import match_beats


@pytest.fixture(scope="module")
def rec119(data_dir):
    return read_record(data_dir / "mitdb" / "119", sampto=360 * 60)


@pytest.mark.parametrize("chunk", [1, 7, 100, 360, 1000, 3600])
def test_any_chunk_size_gives_identical_peaks(rec119, chunk):
    x = rec119.lead("MLII")
    ref = detect_qrs(x, rec119.fs, chunk=360)
    assert ref.size > 60
    np.testing.assert_array_equal(detect_qrs(x, rec119.fs, chunk=chunk), ref)


def test_causal_prefix_and_bounded_latency(rec119):
    x = rec119.lead("MLII")
    full = detect_qrs(x, rec119.fs)
    det = QrsDetector(rec119.fs)
    delays = []
    for s in range(0, x.size, 36):  # 100 ms chunks: when was each peak reported?
        for p in det.process(x[s : s + 36], s):
            delays.append(s + 36 - p)
    assert delays and max(delays) <= det.max_latency_samples + 36
    assert np.median(delays) <= det.latency_samples + 36
    # the peaks of a prefix are a prefix of the peaks of the whole record (nothing looks ahead)
    part = detect_qrs(x[: 360 * 30], rec119.fs)
    np.testing.assert_array_equal(part, full[: part.size])


@pytest.mark.parametrize("name", ["100", "119", "208"])
def test_accuracy_against_annotations(data_dir, name):
    rec = read_record(data_dir / "mitdb" / name, sampto=360 * 300)
    ann = read_annotations(data_dir / "mitdb" / name).beats().sample
    ann = ann[ann < 360 * 300 - 100]
    peaks = detect_qrs(rec.lead("MLII"), rec.fs)
    tp, fn, fp = match_beats(ann, peaks, int(0.15 * rec.fs))
    assert tp / (tp + fn) > 0.99 and tp / (tp + fp) > 0.99
    # located on the R peak: median error against the annotation within 15 ms
    nearest = peaks[np.clip(np.searchsorted(peaks, ann), 0, peaks.size - 1)]
    assert abs(np.median(nearest - ann)) <= 0.015 * rec.fs


def test_nan_and_gaps_do_not_break_detection(rec119):
    x = rec119.lead("MLII").copy()
    x[360 * 20 : 360 * 22] = np.nan
    det = QrsDetector(rec119.fs)
    peaks = [det.process(x[s : s + 360], s) for s in range(0, 360 * 40, 360)]
    # samples 40 s..45 s never arrive: the detector holds through the jump
    peaks += [det.process(x[s : s + 360], s) for s in range(360 * 45, x.size, 360)]
    p = np.concatenate(peaks)
    assert np.all(np.diff(p) > 0.2 * rec119.fs)
    assert np.sum(p > 360 * 47) >= 0.9 * np.sum(
        detect_qrs(rec119.lead("MLII"), rec119.fs) > 360 * 47
    )


def test_other_sampling_rate_ludb(data_dir):
    rec = read_record(data_dir / "ludb" / "data" / "2")
    ann = read_annotations(data_dir / "ludb" / "data" / "2", "ii")
    qrs = ann.sample[ann.symbol == "N"]
    peaks = detect_qrs(rec.lead("II"), rec.fs)
    # LUDB leaves the first and last cycles of each record unannotated
    peaks = peaks[(peaks > qrs[0] - 0.1 * rec.fs) & (peaks < qrs[-1] + 0.1 * rec.fs)]
    _tp, fn, fp = match_beats(qrs, peaks, int(0.15 * rec.fs))
    assert fn <= 1 and fp == 0


def test_heart_rate_and_input_checks():
    assert heart_rate_bpm(np.array([0, 360, 720, 1080]), 360.0) == pytest.approx(60.0)
    assert heart_rate_bpm(np.array([5]), 360.0) is None
    with pytest.raises(ValueError):
        QrsDetector(0.0)
    with pytest.raises(ValueError):
        detect_qrs(np.zeros(10), 360.0, chunk=-1)
    assert detect_qrs(np.zeros(3600), 360.0).size == 0  # flat signal: no beats


def test_recovers_after_an_amplitude_drop(rec119, data_dir):
    x = rec119.lead("MLII").astype(np.float64).copy()
    x[: 360 * 30] *= 10.0  # a loud first half (gain change, artefact): levels learnt 10x too high
    peaks = detect_qrs(x, rec119.fs)
    ann = read_annotations(data_dir / "mitdb" / "119").beats().sample
    late = ann[(ann > 360 * 42) & (ann < 360 * 59)]
    _tp, fn, fp = match_beats(late, peaks[(peaks > 360 * 42) & (peaks < 360 * 59)], 54)
    assert fn == 0 and fp == 0
    stuck = detect_qrs(x, rec119.fs, decay_after_s=None)  # without the decay it stays deaf
    assert np.sum((stuck > 360 * 42) & (stuck < 360 * 59)) < late.size / 2
