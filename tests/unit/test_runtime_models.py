"""The committed ONNX artifacts through the runtime wrappers (no torch): integrity, shapes, behaviour on real beats."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from models.card import load_card
from models.preprocessing.filtering import filter_signal
from models.preprocessing.rhythm import record_rhythm_scores
from models.preprocessing.segmentation import beat_windows
from models.runtime.base import DEFAULT_ARTIFACTS_DIR, OnnxModel
from models.runtime.cae import CaeScorer, normalise_windows
from models.runtime.lstm_ae import GapFiller
from stream.errors import ModelError
from stream.records import read_annotations, read_record

ARTIFACTS = ("cae", "cae_pooled", "lstm_ae", "lstm_ae_seed", "lstm_ae_seed_pooled")


@pytest.mark.parametrize("name", ARTIFACTS)
def test_artifact_sha256_matches_card_and_is_small(name):
    import hashlib

    onnx = DEFAULT_ARTIFACTS_DIR / f"{name}.onnx"
    card = json.loads((DEFAULT_ARTIFACTS_DIR / f"{name}.card.json").read_text())
    assert hashlib.sha256(onnx.read_bytes()).hexdigest() == card["onnx_sha256"]
    assert onnx.stat().st_size < 3 * 1024 * 1024
    assert card["parity"]["max_abs_diff"] <= 1e-4
    assert card["opset"] >= 17
    for key in (
        "card_version",
        "role",
        "runtime",
        "inputs",
        "outputs",
        "sampling_rate_hz",
        "preprocessing",
        "data",
        "metrics",
        "parameters",
        "command",
    ):
        assert key in card, key
    typed = load_card(DEFAULT_ARTIFACTS_DIR / f"{name}.card.json")  # the typed contract parses
    assert typed.window.samples > 0 and typed.preprocessing.filter.lowpass_hz == 40.0


def test_runtime_does_not_import_torch():
    code = "import sys, models, models.runtime.cae, models.runtime.lstm_ae; m = models.runtime.cae.CaeScorer.load(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tampered_artifact_is_refused(tmp_path):
    shutil.copy(DEFAULT_ARTIFACTS_DIR / "cae.onnx", tmp_path / "cae.onnx")
    card = json.loads((DEFAULT_ARTIFACTS_DIR / "cae.card.json").read_text())
    card["onnx_sha256"] = "0" * 64
    (tmp_path / "cae.card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="sha256"):
        OnnxModel.load("cae", tmp_path)
    with pytest.raises(ModelError, match="not found"):
        OnnxModel.load("missing", tmp_path)


def _windows(data_dir, record, rhythm=None):
    rec = read_record(data_dir / "mitdb" / record, sampto=360 * 600)
    ann = read_annotations(data_dir / "mitdb" / record).beats()
    keep = ann.sample < 360 * 600
    x = filter_signal(rec.lead("MLII"), rec.fs)
    w, kept = beat_windows(x, ann.sample[keep], rec.fs)
    if rhythm is None:
        return w, ann.symbol[keep][kept]
    rh = record_rhythm_scores(ann.sample[keep] / rec.fs, rhythm.history, rhythm.quantile)[kept]
    return w, ann.symbol[keep][kept], rh


def test_cae_scores_ventricular_beats_higher_than_normal(data_dir):
    scorer = CaeScorer.load()
    assert scorer.rhythm is not None
    w, sym, rh = _windows(data_dir, "119", scorer.rhythm)  # DS1 record with ventricular bigeminy
    pred = scorer.predict(w, rh)
    assert pred.scores.shape == (w.shape[0],) and np.isfinite(pred.scores).all()
    for scores in (pred.scores, pred.morphology):  # the shape alone already separates V beats
        assert scores is not None and np.median(scores[sym == "V"]) > np.median(scores[sym == "N"])
    assert pred.anomalous[sym == "V"].mean() > pred.anomalous[sym == "N"].mean()
    one = scorer.predict(w[0], rh[:1])
    assert one.scores.shape == (1,)
    with pytest.raises(ModelError, match="rhythm"):
        scorer.predict(w[:3])


def test_cae_rhythm_term_catches_premature_supraventricular_beats(data_dir):
    scorer = CaeScorer.load()
    from sklearn.metrics import roc_auc_score

    w, sym, rh = _windows(
        data_dir, "209", scorer.rhythm
    )  # DS1 record with frequent atrial premature beats
    pred = scorer.predict(w, rh)
    s, n = np.isin(sym, ["A", "a", "J", "S"]), sym == "N"
    assert s.sum() > 20
    assert np.median(rh[s]) > 0.2 > np.median(rh[n])
    assert pred.anomalous[s].mean() > pred.anomalous[n].mean()
    y = s[s | n].astype(int)
    auc_decision = roc_auc_score(y, pred.scores[s | n])
    auc_morphology = roc_auc_score(y, pred.morphology[s | n])
    assert auc_decision > auc_morphology and auc_decision > 0.95


def test_cae_rejects_bad_windows():
    scorer = CaeScorer.load()
    with pytest.raises(ModelError, match="720"):
        scorer.predict(np.zeros((2, 700), np.float32))
    bad = np.zeros((1, 720), np.float32)
    bad[0, 5] = np.nan
    with pytest.raises(ModelError, match="NaN"):
        scorer.predict(bad)
    z = normalise_windows(np.random.default_rng(0).normal(size=(3, 720)))
    assert np.allclose(z.mean(axis=1), 0, atol=1e-5)


def test_gap_filler_recovers_real_gaps_better_than_linear(data_dir):
    from training.tasks.lstm_ae import gap_metrics, linear_fill

    filler = GapFiller.load()
    rec = read_record(data_dir / "mitdb" / "100", sampto=360 * 120)
    x = filter_signal(rec.lead("MLII"), rec.fs)
    segs = np.stack([x[s : s + 720] for s in range(3600, 3600 + 720 * 30, 720)])
    mask = np.zeros_like(segs, dtype=bool)
    rng = np.random.default_rng(0)
    for i in range(segs.shape[0]):
        a = int(rng.integers(50, 720 - 250))
        mask[i, a : a + int(rng.integers(36, 200))] = True
    gapped = np.where(mask, np.nan, segs)
    out = filler.predict(gapped)
    assert np.array_equal(out.mask, mask)
    np.testing.assert_array_equal(out.signal[~mask], segs[~mask])  # observed samples untouched
    model = gap_metrics(segs, out.signal, mask.astype(np.float32))
    lin = gap_metrics(
        segs, linear_fill(np.where(mask, 0, segs), mask.astype(np.float32)), mask.astype(np.float32)
    )
    assert model["rmse"] < lin["rmse"]


def test_gap_filler_rejects_bad_input():
    filler = GapFiller.load()
    with pytest.raises(ModelError, match="720"):
        filler.predict(np.zeros((1, 100), np.float32))
    x = np.zeros((1, 720), np.float32)
    x[0, :400] = np.nan  # 55 % missing
    with pytest.raises(ModelError, match="missing"):
        filler.predict(x)
