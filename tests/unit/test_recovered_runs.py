"""stream.stages.recovery: a recovered window becomes runs of one lead's masked samples, with provenance."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from models.runtime.protocol import Recovered, Window
from stream.schemas import RecoveredMessage
from stream.settings import TopicNames
from stream.stages.recovery import MAX_RUNS_PER_LEAD, recovered_runs

LEADS = ("I", "II", "V1")


def _window(data: np.ndarray) -> Window:
    return Window("p1", "leads_10s", None, 100.0, 100.0, data)


def test_masked_lead_becomes_one_model_run_and_derived_lead_has_zero_width() -> None:
    x = np.ones((1000, 3), dtype=np.float32)
    x[200:500, 2] = np.nan  # V1 masked from 2 s to 5 s
    x[:, 0] = np.nan  # I masked over the whole window, derivable
    filled = np.nan_to_num(x, nan=0.5)
    prov = np.zeros(x.shape, dtype=np.uint8)
    prov[200:500, 2] = 1
    prov[:, 0] = 2
    width = np.where(prov == 1, 0.07, 0.0).astype(np.float32)
    rec = Recovered(replace(_window(x), data=filled), "lead_recon", 0.4, prov, width)
    runs = recovered_runs(_window(x), LEADS, rec)
    by = {(r.lead, r.provenance): r for r in runs}
    assert set(by) == {("I", "derived"), ("V1", "model")}
    v1 = by[("V1", "model")]
    assert (v1.start, v1.end) == (102.0, 105.0)
    assert v1.samples is not None and v1.samples.size == 300
    assert v1.half_width_90 is not None and np.allclose(v1.half_width_90, 0.07)
    assert v1.recovered_by == "lead_recon"
    lead_i = by[("I", "derived")]
    assert lead_i.half_width_90 is not None and not lead_i.half_width_90.any()


def test_unrecovered_window_gives_unrecoverable_runs_with_the_reason() -> None:
    x = np.ones(720, dtype=np.float32)
    x[100:700] = np.nan
    w = Window("p2", "beat_720", "MLII", 50.0, 360.0, x)
    (run,) = recovered_runs(w, (), None, "dropout")
    assert run.provenance == "unrecoverable" and run.reason == "dropout"
    assert run.samples is None and run.half_width_90 is None and run.lead == "MLII"
    msg = RecoveredMessage(
        stream_id=run.stream_id,
        lead=run.lead,
        window=run.window,
        window_start_ts=run.window_start,
        provenance="unrecoverable",
        reason=run.reason,
        start="",
        start_ts=run.start,
        end_ts=run.end,
        fs=run.fs,
    )
    assert RecoveredMessage.from_bytes(msg.to_bytes()).reason == "dropout"
    assert TopicNames().recovered == "ecg.recovered.v1"


def test_intact_window_gives_no_run_and_a_shredded_mask_is_bounded() -> None:
    assert recovered_runs(_window(np.zeros((1000, 3), dtype=np.float32)), LEADS) == []
    x = np.ones((1000, 3), dtype=np.float32)
    x[::3, 1] = np.nan  # hostile: 334 one-sample gaps
    runs = recovered_runs(_window(x), LEADS, None, "dropout")
    assert 1 <= len(runs) <= MAX_RUNS_PER_LEAD
    assert all(r.lead == "II" and r.provenance == "unrecoverable" for r in runs)
