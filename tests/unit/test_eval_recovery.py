"""``training.recovery.evaluate_recovery`` on two small records, and the two-lead evaluation's keys."""

from __future__ import annotations

import math

from models.runtime.lead_recon import LeadReconModel
from training.recovery import FAULT_KINDS, evaluate_recovery, evaluate_two_lead, ptbxl_records

KEYS = {"rebuilt_share", "pearson", "rmse", "coverage_90", "fpr_with_faults", "fpr_clean"}


def test_evaluate_recovery_on_two_records(data_dir):
    norm = ptbxl_records(data_dir, (10,))
    rel = str(norm[norm["norm"]]["filename_lr"].iloc[0])
    out = evaluate_recovery(data_dir, records_ptbxl=[rel], records_ludb=["1"])
    for kind in (*FAULT_KINDS, "overall"):
        assert set(out[kind]) >= KEYS, kind
        assert out[kind]["affected"] == (2 if kind != "overall" else 10)
    for kind in ("lead_off", "flatline", "nan"):
        assert out[kind]["rebuilt_share"] == 1.0, out[kind]["not_rebuilt"]
    lost = out["lost_frames"]
    assert lost["rebuilt_share"] == 0.0 and lost["not_rebuilt"]["count"] == 2
    assert "every lead" in next(iter(lost["not_rebuilt"]["by_reason"]))
    assert out["overall"]["fpr_clean"] is not None and out["setup"]["records"]["ptbxl_norm"] == 1
    cov = out["overall"]["coverage_90"]
    assert cov is None or 0.0 <= cov <= 1.0


def test_evaluate_two_lead_keys(data_dir):
    res = evaluate_two_lead(data_dir, LeadReconModel.load("lead_recon"), ["101"], 2)
    assert set(res) == {"II->V1", "V1->II"}
    for v in res.values():
        assert v["windows"] == 2 and isinstance(v["usable"], bool)
        assert math.isfinite(v["pearson_median"]) and v["rmse_median_mv"] > 0
        assert v["usable"] or v["reason"]
