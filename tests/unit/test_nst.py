"""Noise stress test records (simulators.nst): protocol, SNR convention, offsets, WFDB round trip, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import wfdb
from typer.testing import CliRunner

from simulators.cli import nst_app
from simulators.nst import (
    MAX_OFFSET_MV,
    NORMAL_SYMBOLS,
    OffsetStep,
    load_noise,
    nst_name,
    nst_record,
    nst_spans,
    write_nst_record,
)
from simulators.replay import _sent_range
from stream.records import read_annotations, read_record

SECONDS = 600.0  # 5 clean minutes, a 2-minute noisy segment, 2 clean minutes, 1 noisy minute


@pytest.fixture(scope="module")
def noise(data_dir):
    return {k: load_noise(data_dir, k) for k in ("bw", "ma")}


def _sigamp_snr(clean, noisy, fs, beats, mask):
    """The NST SNR computed independently: (trimmed-mean QRS p-p)^2 / 8 over (trimmed-mean 1 s RMS)^2."""

    def trimmed(v):
        v = np.sort(v)
        k = v.size // 20
        return v[k : v.size - k].mean()

    w = round(0.05 * fs)
    beats = beats[(beats > w) & (beats < clean.size - w)]
    ptp = np.array([np.ptp(clean[b - w : b + w + 1]) for b in beats])
    nz = (noisy - clean)[mask]
    win = nz[: nz.size // int(fs) * int(fs)].reshape(-1, int(fs))
    rms = np.sqrt(((win - win.mean(axis=1, keepdims=True)) ** 2).mean(axis=1))
    return 10 * np.log10((trimmed(ptp) ** 2 / 8) / trimmed(rms) ** 2)


def test_protocol_spans_and_names():
    assert nst_spans(1805.0) == [
        (300.0, 420.0),
        (540.0, 660.0),
        (780.0, 900.0),
        (1020.0, 1140.0),
        (1260.0, 1380.0),
        (1500.0, 1620.0),
        (1740.0, 1805.0),
    ]
    assert nst_spans(200.0) == []
    assert nst_name("119", "ma", 0) == "119ma00"
    assert nst_name("118", "bw", -6) == "118bw_6"
    assert nst_name("100", None, None, 10.0) == "100clean_op10"


def test_deterministic_for_a_seed(data_dir, noise):
    a = nst_record(data_dir, "119", "ma", 6, seed=3, seconds=SECONDS, noise_records=noise)
    b = nst_record(data_dir, "mitdb/119", "ma", 6, seed=3, seconds=SECONDS, noise_records=noise)
    c = nst_record(data_dir, "119", "ma", 6, seed=4, seconds=SECONDS, noise_records=noise)
    assert np.array_equal(a.signal, b.signal) and a.noise_start == b.noise_start
    assert not np.array_equal(a.signal, c.signal)
    clean = read_record(data_dir / "mitdb" / "119", sampto=a.signal.shape[0]).signal
    quiet = ~a.noisy_mask()
    assert np.array_equal(a.signal[quiet], clean[quiet])  # clean segments untouched (no offset)
    assert not np.allclose(a.signal[~quiet], clean[~quiet])


@pytest.mark.parametrize(("kind", "snr"), [("ma", 0.0), ("ma", 12.0), ("bw", -6.0), ("bw", 24.0)])
def test_measured_snr_of_the_noisy_segments(data_dir, noise, kind, snr):
    rec = nst_record(data_dir, "118", kind, snr, seed=1, seconds=SECONDS, noise_records=noise)
    clean = read_record(data_dir / "mitdb" / "118", sampto=rec.signal.shape[0]).signal
    ann = read_annotations(data_dir / "mitdb" / "118")
    beats = ann.sample[np.isin(ann.symbol, NORMAL_SYMBOLS) & (ann.sample < clean.shape[0])]
    mask = rec.noisy_mask()
    assert mask.sum() == round(180 * rec.fs)  # 300-420 s and 540-600 s
    for li in range(len(rec.leads)):
        got = _sigamp_snr(
            clean[:, li].astype(float), rec.signal[:, li].astype(float), rec.fs, beats, mask
        )
        assert abs(got - snr) <= 0.5, (kind, snr, li, got)


def test_offsets_and_steps_stay_inside_the_adc_range(data_dir):
    rec = nst_record(
        data_dir,
        "100",
        None,
        None,
        seconds=120.0,
        offset_mv=(10.0, -10.0),
        offset_steps=[OffsetStep(60.0, -5.0, "MLII", 2.0)],
    )
    clean = read_record(data_dir / "mitdb" / "100", sampto=rec.signal.shape[0]).signal
    diff = rec.signal - clean
    fs = int(rec.fs)
    assert np.allclose(diff[: 59 * fs, 0], 10.0, atol=1e-4)
    assert np.allclose(diff[63 * fs :, 0], 5.0, atol=1e-4)  # after the step
    assert np.allclose(diff[:, 1], -10.0, atol=1e-4)
    for li, (lo, hi) in enumerate(rec.adc_range_mv):
        assert lo < -MAX_OFFSET_MV - 20 and hi > MAX_OFFSET_MV + 20  # far from the offsets
        assert rec.signal[:, li].min() > lo and rec.signal[:, li].max() < hi
    sent = _sent_range(rec.record(), "i16le")
    assert sent is not None
    for li, (lo, hi) in enumerate(sent):  # what the frames declare: still not at a rail
        assert rec.signal[:, li].min() > lo + 1.0 and rec.signal[:, li].max() < hi - 1.0
    meta = rec.metadata()
    assert meta["offset_range_mv"] == [[5.0, 10.0], [-10.0, -10.0]]
    with pytest.raises(ValueError, match="10 mV"):
        nst_record(data_dir, "100", None, None, seconds=10.0, offset_mv=10.5)
    with pytest.raises(ValueError, match="10 mV"):
        nst_record(
            data_dir, "100", None, None, seconds=10.0, offset_mv=8.0,
            offset_steps=[OffsetStep(1.0, 3.0)],
        )  # fmt: skip


def test_written_record_reads_back(data_dir, noise, tmp_path):
    rec = nst_record(
        data_dir, "119", "ma", 0.0, seconds=SECONDS, offset_mv=-10.0, noise_records=noise
    )
    path = write_nst_record(rec, tmp_path, data_dir)
    assert path == tmp_path / "119ma00_om10"
    back = read_record(path)
    assert back.leads == rec.leads == ("MLII", "V1") and back.fs == rec.fs
    assert back.adc_range_mv == rec.adc_range_mv
    assert np.max(np.abs(back.signal - rec.signal)) <= 0.5 / rec.adc_gain + 1e-6
    header = wfdb.rdheader(str(path))
    assert header.fmt == ["16", "16"] and any("ma at 0 dB" in c for c in header.comments)
    raw = wfdb.rdrecord(str(path))
    assert raw.p_signal.shape == rec.signal.shape
    src = wfdb.rdann(str(data_dir / "mitdb" / "119"), "atr", sampto=rec.signal.shape[0] - 1)
    ann = wfdb.rdann(str(path), "atr")
    assert np.array_equal(ann.sample, src.sample) and ann.symbol == src.symbol
    assert ann.aux_note == src.aux_note
    ours = read_annotations(path)
    assert ours.beats().sample.size == np.isin(src.symbol, list("NLRejAaJSVEF/fQ")).sum()
    pro = wfdb.rdann(str(path), "pro")
    assert pro.sample.tolist() == [300 * 360, 420 * 360, 540 * 360, 600 * 360]


def test_cli_writes_records(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ECG_DATA_DIR", str(data_dir))
    res = CliRunner().invoke(
        nst_app(),
        ["nst", "-r", "100", "--noise", "bw,none", "--snr", "12", "--offset-mv", "5",
         "--step", "200:-3:V5", "--seconds", "320", "--out", str(tmp_path), "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [o["name"] for o in out] == ["100bw12_op5", "100clean_op5"]
    assert out[0]["snr_db"] == 12.0 and out[0]["noise_spans_s"] == [[300.0, 320.0]]
    assert out[1]["offset_range_mv"] == [[5.0, 5.0], [2.0, 5.0]]
    for o in out:
        assert (tmp_path / f"{o['name']}.hea").is_file()
    bad = CliRunner().invoke(nst_app(), ["nst", "-r", "100", "--offset-mv", "12", "--out", "x"])
    assert bad.exit_code == 2
    missing = CliRunner().invoke(nst_app(), ["nst", "-r", "999", "--out", str(tmp_path)])
    assert missing.exit_code == 6
