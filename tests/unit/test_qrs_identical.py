"""R-peak detector on whole MIT-BIH records: 1 s chunks, other chunk sizes and one call over the whole
record (processed internally in blocks) give identical peaks; the compiled helpers equal their numpy
definitions; Se/PPV."""

from __future__ import annotations

import numpy as np
import pytest

import stream.stages.qrs as qrs
from stream.records import read_annotations, read_record
from stream.stages.qrs import QrsDetector, detect_qrs
from training.eval_detectors import match_beats


@pytest.fixture(scope="module")
def records(data_dir):
    return {name: read_record(data_dir / "mitdb" / name) for name in ("100", "119", "208")}


@pytest.mark.parametrize("name", ["100", "119", "208"])
def test_chunk_360_1000_and_whole_record_identical(records, name):
    rec = records[name]
    for lead in range(2):
        x = rec.signal[:, lead]
        ref = detect_qrs(x, rec.fs, chunk=360)
        assert ref.size > 1000
        np.testing.assert_array_equal(detect_qrs(x, rec.fs, chunk=1000), ref)
        np.testing.assert_array_equal(detect_qrs(x, rec.fs, chunk=x.size), ref)
        det = QrsDetector(rec.fs)  # one process() call, as the stream would with a huge frame
        np.testing.assert_array_equal(det.process(x, 0), ref)


def test_compiled_helpers_equal_their_numpy_definitions():
    rng = np.random.default_rng(0)
    hist = np.zeros((5, 400))
    hist[0] = rng.standard_normal(400)
    qrs._nb_derivative(hist, 4, 400, 45.0)
    hb = hist[0]
    d = (2.0 * hb[4:] + hb[3:-1] - hb[1:-3] - 2.0 * hb[:-4]) * 45.0
    np.testing.assert_array_equal(hist[3, 4:], np.abs(d))
    np.testing.assert_array_equal(hist[4, 4:], d * d)
    x = rng.standard_normal(300)
    for lo, hi in ((0, 300), (17, 18), (40, 90)):
        assert qrs._nb_max(x, lo, hi) == x[lo:hi].max()
        assert qrs._nb_argmax_abs(x, lo, hi) == int(np.abs(x[lo:hi]).argmax())
    x[50] = np.nan
    assert np.isnan(qrs._nb_max(x, 40, 90))
    assert qrs._nb_argmax_abs(x, 40, 90) == int(np.abs(x[40:90]).argmax())  # the first NaN


@pytest.mark.parametrize("name", ["100", "119"])
def test_whole_record_sensitivity_and_ppv(records, data_dir, name):
    rec = records[name]
    ann = read_annotations(data_dir / "mitdb" / name).beats().sample
    ann = ann[ann < rec.signal.shape[0] - 200]
    peaks = detect_qrs(rec.lead("MLII"), rec.fs, chunk=360)
    tp, fn, fp = match_beats(ann, peaks, round(0.15 * rec.fs))
    assert tp / (tp + fn) > 0.995 and tp / (tp + fp) > 0.995
