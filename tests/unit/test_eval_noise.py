"""The noise stress test and DC-offset additions of the detector and alarm evaluations, on real records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simulators.nst import nst_record
from simulators.replay import _sent_range
from stream.stages.frame import Frame
from stream.stages.processor import StageConfig, StreamProcessor
from training.eval_alarms import evaluate_alarms_noise
from training.eval_detectors import (
    evaluate_dropouts_noise,
    evaluate_dropouts_offsets,
    evaluate_qrs_noise,
    span_counts,
)


def test_span_counts_counts_edges_once():
    ref = np.array([100, 200, 300, 400, 500])
    det = np.array([102, 198, 305, 460, 499])
    # span [190, 410): ref 200, 300, 400 inside; det 198, 305 inside (400 missed); 460 outside the span
    assert span_counts(ref, det, [(190, 410)], 10) == (2, 1, 0)
    assert span_counts(ref, det, [(199, 210)], 10) == (1, 0, 0)  # beat 200 with detection 198


def test_evaluate_qrs_noise_short_run(data_dir):
    res = evaluate_qrs_noise(data_dir, records=["119"], kinds=["ma"], snrs=[0.0], seconds=420.0)
    json.dumps(res)
    for key in (
        "table",
        "results",
        "goal_met",
        "goals_by_snr",
        "ma_0db",
        "detectors",
        "noise_kinds_unavailable",
        "protocol",
    ):
        assert key in res, key
    assert res["noise_kinds"] == ["ma"] and res["records"] == ["119"]
    assert set(res["results"]) == {"clean", "ma"}
    cell = res["results"]["ma"]["0"]
    assert {"ecg_monitor", "xqrs", "gqrs", "neurokit2"} <= set(cell)
    for det in cell.values():
        assert set(det) == {"noisy", "whole"}
        assert det["noisy"]["tp"] + det["noisy"]["fn"] > 100  # 2 min of 119's beats
    assert res["results"]["clean"]["clean"]["ecg_monitor"]["whole"]["se"] > 99.0
    assert set(res["goal_met"]) == {"ge_best_peer_every_snr", "ma_0db_se95_ppv90", "all"}
    assert res["ma_0db"]["se"] == cell["ecg_monitor"]["noisy"]["se"]


@pytest.mark.parametrize("record", ["100", "119"])
def test_dc_offsets_of_10mv_give_no_dropout(data_dir, record):
    for offset in (10.0, -10.0, (10.0, -10.0)):
        nst = nst_record(data_dir, record, None, None, seconds=180.0, offset_mv=offset)
        rec = nst.record()
        adc = _sent_range(rec, "i16le")  # what the replay's frames carry, from the header
        assert adc is not None
        proc = StreamProcessor("p", rec.fs, rec.leads, StageConfig(windows=()))
        n = int(rec.fs)
        dropouts, beats = [], 0
        for seq, s in enumerate(range(0, rec.signal.shape[0], n)):
            out = proc.process(
                Frame(
                    "p",
                    seq,
                    rec.fs,
                    rec.leads,
                    1.7e9 + seq,
                    rec.signal[s : s + n],
                    adc_range_mv=tuple((lo, hi) for lo, hi in adc),
                )
            )
            dropouts += out.dropouts
            beats += len(out.beats)
        out = proc.flush()
        dropouts += out.dropouts
        assert dropouts == [], (record, offset, dropouts[:3])
        assert beats > 150  # the ECG is still seen under the offset


def test_dropout_offsets_and_noise_sections(data_dir):
    off = evaluate_dropouts_offsets(data_dir, records=["100"], minutes=2.0)
    json.dumps(off)
    assert {"none", "-10mV", "+10mV", "+10/-10mV", "+5mV_steps_2s"} <= set(off["cases"])
    assert off["goal_met"] is True and off["false_per_hour"] == 0.0
    noise = evaluate_dropouts_noise(
        data_dir, records=["119"], kinds=["ma"], snrs=[12.0, 6.0], seconds=420.0
    )
    json.dumps(noise)
    assert set(noise["by_noise_snr"]) == {"ma/12", "ma/6"}
    assert noise["goal_met"]["no_false_dropouts_snr_ge_6db"] is True
    assert noise["false_asystole_pause_alerts"] == 0


@pytest.mark.slow  # the whole pipeline with its models on two short NST records
def test_evaluate_alarms_noise_short_run(data_dir):
    res = evaluate_alarms_noise(
        data_dir, records=["119"], kinds=["ma"], snrs=[0.0], seconds=420.0, processes=1
    )
    json.dumps(res)
    assert set(res["by_noise_snr"]) == {"clean", "ma/0"}
    cell = res["by_noise_snr"]["ma/0"]
    for key in ("false_asystole", "false_pause", "false_alarms_per_hour", "by_kind", "hours"):
        assert key in cell
    assert "no_false_asystole_pause" in res["goal_met"]
