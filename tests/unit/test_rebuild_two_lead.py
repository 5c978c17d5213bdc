"""``LeadReconModel.rebuild_leads``: any lead set (MIT-BIH's two leads) rebuilt through lead_recon at
100 Hz and back, with provenance, intervals and clear reasons when a lead cannot be rebuilt."""

from __future__ import annotations

import numpy as np
import pytest

from models.errors import ModelError
from models.preprocessing.filtering import filter_signal
from models.runtime.lead_recon import LeadReconModel
from models.runtime.protocol import MEASURED, MODEL, UNRECOVERABLE
from stream.records import read_record


@pytest.fixture(scope="module")
def recon() -> LeadReconModel:
    return LeadReconModel.load("lead_recon")


@pytest.fixture(scope="module")
def mitdb_101(data_dir) -> tuple[np.ndarray, float, tuple[str, ...]]:
    """10 s of MIT-BIH 101 (MLII, V1), band-passed as the stream does."""
    rec = read_record(data_dir / "mitdb" / "101", sampto=3600)
    return filter_signal(rec.signal, rec.fs), rec.fs, rec.leads


def test_rebuild_v1_from_mlii_shape_and_provenance(recon, mitdb_101):
    x, fs, leads = mitdb_101
    assert leads == ("MLII", "V1")
    inp = x.copy()
    inp[1000:2500, 1] = np.nan  # part of V1 missing
    res = recon.rebuild_leads(inp, fs, leads, allow_unusable=True)
    assert res.recovered is not None and res.rebuilt == ("V1",) and res.unrecoverable == ()
    out, prov, hw = res.recovered.window.data, res.recovered.provenance, res.recovered.half_width_90
    assert out.shape == prov.shape == x.shape and hw is not None and hw.shape == x.shape
    assert np.isfinite(out).all()
    assert (prov[:, 0] == MEASURED).all() and (out[:, 0] == x[:, 0]).all()
    assert (prov[1000:2500, 1] == MODEL).all() and (prov[:1000, 1] == MEASURED).all()
    assert (out[:1000, 1] == x[:1000, 1]).all()  # measured samples kept
    assert (hw[1000:2500, 1] > 0).all() and (hw[:1000] == 0).all() and (hw[:, 0] == 0).all()
    assert res.recovered.fraction == pytest.approx(1500 / x.size)
    assert res.recovered.window.fs == fs and res.recovered.by == "lead_recon"


def test_unusable_direction_is_withheld_with_the_reason(recon, mitdb_101):
    """The card's two-lead verdict (MIT-BIH DS1) decides; an unusable direction is not published."""
    x, fs, leads = mitdb_101
    verdicts = recon.calibration.two_lead if recon.calibration else {}
    inp = x.copy()
    inp[:, 0] = np.nan  # MLII lost: rebuild II from V1
    res = recon.rebuild_leads(inp, fs, leads)
    verdict = verdicts.get("V1->II")
    assert verdict is not None
    if verdict["usable"]:
        assert res.usable and res.recovered is not None
    else:
        assert not res.usable and res.recovered is None
        assert res.reason and res.reason.startswith("unusable: V1->II") and "Pearson" in res.reason
        assert recon.rebuild_leads(inp, fs, leads, allow_unusable=True).recovered is not None


def test_unknown_lead_and_no_present_lead(recon, mitdb_101):
    x, fs, _ = mitdb_101
    inp = x.copy()
    inp[:, 1] = np.nan
    res = recon.rebuild_leads(inp, fs, ("MLII", "ML5"))
    assert res.recovered is None and res.unrecoverable == ("ML5",)
    assert res.reason == "unrecoverable: lead 'ML5' has no 12-lead equivalent"
    both = np.full_like(x, np.nan)
    both[:, 1] = x[:, 1]
    res = recon.rebuild_leads(both, fs, ("MLII", "ML5"))  # the only complete lead is unknown
    assert res.recovered is None and res.reason is not None
    assert res.reason.startswith("unrecoverable: no complete lead with a 12-lead equivalent")
    assert set(res.unrecoverable) == {"MLII"}
    with pytest.raises(ModelError):
        recon.rebuild_leads(x, fs, ("MLII",))


def test_complete_input_is_measured_and_unknown_lead_stays_nan_beside_a_rebuilt_one(recon):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.2, size=(5000, 3)).astype(np.float32)  # 10 s at 500 Hz
    res = recon.rebuild_leads(x, 500.0, ("I", "II", "X9"))
    assert res.recovered is not None and (res.recovered.provenance == MEASURED).all()
    x[:, 2] = np.nan
    x[100:200, 1] = np.nan
    res = recon.rebuild_leads(x, 500.0, ("I", "V2", "X9"), allow_unusable=True)
    assert res.recovered is not None and res.rebuilt == ("V2",) and res.unrecoverable == ("X9",)
    prov = res.recovered.provenance
    assert prov is not None and (prov[:, 2] == UNRECOVERABLE).all()
    assert np.isnan(res.recovered.window.data[:, 2]).all()
    assert res.reason == "unrecoverable: lead 'X9' has no 12-lead equivalent"
