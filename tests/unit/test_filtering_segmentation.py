from __future__ import annotations

import numpy as np

from models.preprocessing.filtering import CausalFilter, filter_signal
from models.preprocessing.segmentation import beat_windows, lead_windows, resample
from stream.records import read_annotations, read_record


def test_chunked_filter_equals_whole_record(data_dir):
    rec = read_record(data_dir / "mitdb" / "100", sampto=36_000)
    whole = filter_signal(rec.signal, rec.fs)
    filt = CausalFilter(rec.fs, rec.signal.shape[1])
    chunks = [filt.process(rec.signal[i : i + 250]) for i in range(0, rec.signal.shape[0], 250)]
    np.testing.assert_array_equal(whole, np.concatenate(chunks))


def test_filter_removes_baseline_offset():
    fs = 360.0
    t = np.arange(int(20 * fs)) / fs
    x = 5.0 + 0.1 * np.sin(2 * np.pi * 10 * t)
    y = filter_signal(x, fs)
    assert abs(float(np.mean(y[-int(5 * fs) :]))) < 0.01


def test_beat_windows_are_720_centred_on_annotated_beats(data_dir):
    rec = read_record(data_dir / "mitdb" / "100", sampto=72_000)
    ann = read_annotations(data_dir / "mitdb" / "100").beats()
    peaks = ann.sample[ann.sample < 72_000]
    w, kept = beat_windows(rec.lead("MLII"), peaks, rec.fs)
    assert w.shape == (kept.size, 720) and kept.size >= peaks.size - 2
    np.testing.assert_array_equal(
        w[0], rec.lead("MLII")[peaks[kept[0]] - 360 : peaks[kept[0]] + 360]
    )


def test_beat_windows_resample_when_rate_differs(data_dir):
    rec = read_record(data_dir / "ludb" / "data" / "1")
    w, _kept = beat_windows(rec.lead("II"), np.array([2500]), rec.fs)
    assert w.shape == (1, 720)


def test_lead_windows_ptbxl_shape(data_dir):
    rec = read_record(data_dir / "ptbxl" / "records100" / "01000" / "01002_lr")
    assert lead_windows(rec.signal, rec.fs).shape == (1, 1000, 12)
    ludb = read_record(data_dir / "ludb" / "data" / "1")
    assert lead_windows(ludb.signal, ludb.fs).shape == (1, 1000, 12)
    assert resample(np.ones(500), 500, 100).shape == (100,)
