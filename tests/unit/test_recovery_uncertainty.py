"""Provenance and calibrated 90 % intervals of the recoverers (lead_recon, lstm_ae): fields present and
shaped, 0 on measured and derived samples, plausible coverage on validation-like windows, and the LUDB
faulty-lead replay through the stream's processor and scorer."""

from __future__ import annotations

import numpy as np
import pytest

from models.runtime.lead_recon import LeadReconModel
from models.runtime.lstm_ae import GapFiller
from models.runtime.protocol import DERIVED, MEASURED, MODEL, PROVENANCE, Window
from stream.stages.processor import StageConfig, StreamProcessor
from stream.stages.scoring import WindowScorer
from stream.testing import record_frames, run_processor
from training.recovery import _gap_segments, _ptbxl_window, ptbxl_records


@pytest.fixture(scope="module")
def recon() -> LeadReconModel:
    return LeadReconModel.load("lead_recon")


@pytest.fixture(scope="module")
def filler() -> GapFiller:
    return GapFiller.load("lstm_ae")


@pytest.fixture(scope="module")
def val_windows(data_dir) -> np.ndarray:
    """Six PTB-XL fold-9 (validation) records as the stream cuts them."""
    rows = ptbxl_records(data_dir, (9,))
    return np.stack([_ptbxl_window(data_dir, r) for r in rows["filename_lr"].iloc[:60:10]])


def test_provenance_codes():
    assert PROVENANCE == ("measured", "model", "derived", "unrecoverable")
    assert (MEASURED, MODEL, DERIVED) == (0, 1, 2)


def test_cards_carry_a_calibration(recon, filler):
    assert recon.calibration is not None and filler.calibration is not None
    for card in (recon.card, filler.card):
        unc = card.get("uncertainty")
        assert unc["coverage"] == 0.9 and "validation" in unc and unc["date"]
        assert 0.85 <= unc["validation"]["coverage_half_b"] <= 0.95
    assert all(recon.calibration_for(m) is not None for _, m in recon.dedicated)


def test_lead_recon_fields_shaped_and_zero_on_measured_and_derived(recon, val_windows):
    x = val_windows[0].copy()
    x[:, [0, 7]] = np.nan  # I (derivable from the other limb leads) and V2 (learned)
    (rec,), lost = recon.recover([Window("s", "leads_10s", None, 0.0, 100.0, x)])
    assert not lost and rec.by == "lead_recon"
    prov, hw = rec.provenance, rec.half_width_90
    assert prov is not None and hw is not None
    assert prov.shape == hw.shape == x.shape and prov.dtype == np.uint8 and hw.dtype == np.float32
    assert (prov[:, 0] == DERIVED).all() and (prov[:, 7] == MODEL).all()
    assert (prov[:, [1, 2, 3, 4, 5, 6, 8, 9, 10, 11]] == MEASURED).all()
    assert (hw[:, 0] == 0).all() and (hw[:, 1:7] == 0).all() and (hw[:, 8:] == 0).all()
    assert (hw[:, 7] > 0).all() and np.isfinite(rec.window.data).all()
    # derived exactly: I from II and III etc. (PTB-XL leads satisfy Einthoven to the quantisation)
    assert np.abs(rec.window.data[:, 0] - val_windows[0][:, 0]).max() < 0.01


def test_lead_recon_interval_coverage_is_plausible(recon, val_windows):
    """One V lead missing per window, every V lead: the stated 90 % interval covers most true samples
    (a handful of windows: a loose band, not the calibration figure)."""
    covered = []
    for x in val_windows:
        for j in range(6, 12):
            m = np.ones(12, dtype=bool)
            m[j] = False
            pred = recon.predict(np.where(m, x, 0.0), m)
            assert pred.half_width_90 is not None
            covered.append(np.abs(pred.leads[0, :, j] - x[:, j]) <= pred.half_width_90[0, :, j])
    cov = float(np.mean(covered))
    assert 0.7 <= cov <= 0.99, cov


def test_gap_filler_fields_and_coverage(filler, data_dir):
    x, m, _ = _gap_segments(data_dir, ["114", "124"], 40, np.random.default_rng(5))
    windows = [
        Window("s", "beat_720", "MLII", 0.0, 360.0, np.where(mi, np.nan, xi).astype(np.float32))
        for xi, mi in zip(x, m, strict=True)
    ]
    ok, lost = filler.recover(
        windows
    )  # gaps of at most 0.8 s: every window within the card's limit
    assert not lost and len(ok) == len(windows)
    cov = []
    for r, xi, mi in zip(ok, x, m, strict=True):
        prov, hw = r.provenance, r.half_width_90
        assert prov is not None and hw is not None and prov.shape == hw.shape == (720,)
        assert ((prov == MODEL) == mi).all() and (hw[~mi] == 0).all() and (hw[mi] > 0).all()
        cov.append(np.abs(r.window.data[mi] - xi[mi]) <= hw[mi])
    share = float(np.mean(np.concatenate(cov)))
    assert 0.75 <= share <= 0.99, share


@pytest.mark.slow
def test_ludb_faulty_leads_rebuilt_with_provenance_and_intervals(data_dir):
    """LUDB record 1 looped to 70 s, V1 lead-off (11-22 s), V2 NaN (31-42 s), V3 flatline (51-62 s):
    through StreamProcessor + WindowScorer those windows are rebuilt by lead_recon, scored below the
    card threshold, and the recoverer's output marks the faulty lead as model-rebuilt with intervals."""
    from tests.unit.test_scoring import _ludb_faulty_leads

    rec = _ludb_faulty_leads(data_dir)
    sc = WindowScorer(("vae_bilstm_mha",), classify=False)
    proc = StreamProcessor("s1", rec.fs, rec.leads, StageConfig(windows=sc.window_specs))
    windows = run_processor(proc, record_frames(rec, stream_id="s1")).windows
    res = sc.score(windows)
    assert not res.skipped
    scores = {round(s.time - proc.t0): s for s in res.scores}
    damaged = [w for w in windows if not np.isfinite(w.data).all()]
    recovered, lost = sc.recoverers["leads_10s"].recover(damaged)
    assert not lost
    by_t = {round(r.window.start - proc.t0): r for r in recovered}
    for t, lead in ((10, "V1"), (20, "V1"), (30, "V2"), (40, "V2"), (50, "V3"), (60, "V3")):
        s = scores[t]
        assert s.recovered_by == "lead_recon" and s.score < s.threshold, (t, lead)
        r = by_t[t]
        j = rec.leads.index(lead)
        assert r.provenance is not None and r.half_width_90 is not None
        assert (r.provenance[:, j] == MODEL).all()
        assert (np.delete(r.provenance, j, axis=1) == MEASURED).all()
        assert (r.half_width_90[:, j] > 0).all()
        assert (np.delete(r.half_width_90, j, axis=1) == 0).all()
