"""The vectorised scoring path gives the same numbers as the per-window reference computation.

Real windows: MIT-BIH records cut by the real StreamProcessor (warm-up with growing RR histories, then
steady state; record 208 has many ventricular beats, so the beat template restarts and misses). The
references are the per-window code the stream ran before (``RRContext.score`` per beat, ``round`` per
latent value and probability, and a frozen copy of the beat featurizer: ``reference_beatfeatures``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.card import BEAT_400, BEAT_720
from models.preprocessing import beatfeatures
from models.preprocessing.rhythm import RRContext, context_scores
from models.runtime.beat_class import BeatClassifier
from models.runtime.beat_vae import BeatVaeModel, normalise
from models.runtime.cae import CaeScorer
from models.runtime.protocol import ModelScore, Window, stack_data
from stream.records import read_record
from stream.stages.beatclass import BeatClassStage
from stream.stages.events import BEAT_CLASSES, ClassifiedBeat
from stream.stages.processor import StageConfig, StreamProcessor
from stream.testing import record_frames, run_processor
from tests.unit import reference_beatfeatures as ref_bf

CHUNK = 24  # windows per scoring call, as the stream batches them


def _windows(data_dir, record: str, seconds: int) -> list[Window]:
    rec = read_record(data_dir / "mitdb" / record, sampto=int(360 * seconds))
    proc = StreamProcessor(record, rec.fs, rec.leads, StageConfig(windows=(BEAT_720, BEAT_400)))
    frames = record_frames(rec, seconds=seconds, stream_id=record)
    return run_processor(proc, frames, flush=False).windows


@pytest.fixture(scope="module")
def windows(data_dir) -> list[Window]:
    return _windows(data_dir, "100", 240) + _windows(data_dir, "208", 120)


@pytest.fixture(scope="module")
def cae() -> CaeScorer:
    return CaeScorer.load()


@pytest.fixture(scope="module")
def vae() -> BeatVaeModel:
    return BeatVaeModel.load()


def _chunks(items: list, n: int = CHUNK) -> list[list]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def _clean(windows: list[Window], kind: str) -> list[Window]:
    return [w for w in windows if w.kind == kind and np.isfinite(w.data).all()]


# ------------------------------------------------------------------------------------------ rhythm
def test_context_scores_equal_the_per_beat_scores(windows):
    rrs = [w.rr for w in windows if w.kind == BEAT_720.name]
    lengths = {len(r.history) for r in rrs if r is not None}
    assert len(lengths) > 50 and max(lengths) > 128  # warm-up and steady state
    odd = [
        None,
        RRContext(None, 0.8, (0.8, 0.9)),
        RRContext(0.4, None, (0.8, 0.9, 1.0)),
        RRContext(0.8, 1.2, ()),
        RRContext(0.05, 3.0, (0.7,)),
        RRContext(0.8, 0.8, (float("nan"), 0.8)),
    ]
    contexts = rrs + odd
    for history, quantile in ((128, 0.9), (16, 0.5), (256, 0.75)):
        got = context_scores(contexts, history, quantile)
        want = np.array(
            [0.0 if c is None else c.score(history, quantile) for c in contexts], dtype=np.float64
        )
        np.testing.assert_array_equal(got, want)
    assert context_scores([], 128, 0.9).shape == (0,)


# ------------------------------------------------------------------------------------------ CAE
def _cae_reference(cae: CaeScorer, ws: list[Window]) -> list[ModelScore]:
    rp = cae.rhythm
    assert rp is not None
    rhythm = np.array(
        [w.rr.score(rp.history, rp.quantile) if w.rr is not None else 0.0 for w in ws]
    )
    p = cae.predict(np.stack([w.data for w in ws]), rhythm)
    return [
        ModelScore(
            stream_id=w.stream_id,
            model=cae.name,
            window=w.kind,
            lead=w.lead,
            time=w.start,
            score=float(s),
            threshold=p.threshold,
            anomalous=bool(a),
        )
        for w, s, a in zip(ws, p.scores, p.anomalous, strict=True)
    ]


def test_cae_scores_equal_the_reference(windows, cae):
    beats = _clean(windows, BEAT_720.name)
    assert len(beats) > 300
    for ws in [*_chunks(beats), beats[:1]]:
        assert cae.score(ws) == _cae_reference(cae, ws)


# ------------------------------------------------------------------------------------------ VAE
def _vae_reference(vae: BeatVaeModel, ws: list[Window]) -> list[ModelScore]:
    enc = vae.predict(normalise(np.stack([w.data for w in ws])))
    th = vae.card.threshold_value
    return [
        ModelScore(
            stream_id=w.stream_id,
            model=vae.name,
            window=w.kind,
            lead=w.lead,
            time=w.start,
            score=float(e),
            threshold=th,
            anomalous=bool(th is not None and e > th),
            embedding=[round(float(v), 5) for v in mu],
        )
        for w, e, mu in zip(ws, enc.mse, enc.mu, strict=True)
    ]


def test_beat_vae_scores_equal_the_reference(windows, vae):
    cycles = [w for w in windows if w.kind == BEAT_400.name]
    assert len(cycles) > 300
    for ws in [*_chunks(cycles), cycles[:1]]:
        assert vae.score(ws) == _vae_reference(vae, ws)


def test_rounding_latents_at_once_equals_round_per_value():
    rng = np.random.default_rng(0)
    mu = np.concatenate(
        [
            rng.normal(0, 3, (2000, 25)),
            np.full((1, 25), 0.015625),  # exact decimal ties (half-even both ways)
            np.full((1, 25), -2.5e-5),
            rng.uniform(-1e-4, 1e-4, (50, 25)),
        ]
    ).astype(np.float32)
    got = np.round(mu.astype(np.float64), 5).tolist()
    assert got == [[round(float(v), 5) for v in row] for row in mu]
    probs = rng.dirichlet(np.ones(5), 3000).astype(np.float32)
    assert np.round(probs.astype(np.float64), 4).tolist() == [
        [round(float(v), 4) for v in row] for row in probs
    ]


# ------------------------------------------------------------------------------------------ classes
def _classify_reference(
    clf: BeatClassifier,
    featurizers: dict[str, ref_bf.BeatFeaturizer],
    windows: list[Window],
    scores: list[ModelScore],
) -> tuple[np.ndarray, list[ClassifiedBeat]]:
    """The stage's join, the frozen featurizer and the per-beat rounding of the code before."""

    def key(s: str, k: str, t: float) -> tuple[str, str, float]:
        return (s, k, round(float(t), 6))

    cae = {key(s.stream_id, s.window, s.time): s for s in scores if s.model == "cae"}
    vae = {key(s.stream_id, s.window, s.time): s for s in scores if s.model == "beat_vae"}
    cycles = {
        (w.stream_id, round(w.beat_time, 6)): w
        for w in windows
        if w.kind == BEAT_400.name and w.beat_time is not None
    }
    beats = [
        (w, cae[key(w.stream_id, w.kind, w.start)])
        for w in windows
        if w.kind == BEAT_720.name and key(w.stream_id, w.kind, w.start) in cae
    ]
    feats, vae_scores, embs = [], [], []
    for w, _ in beats:
        feats.append(featurizers.setdefault(w.stream_id, ref_bf.BeatFeaturizer()))
        assert w.beat_time is not None
        cyc = cycles.get((w.stream_id, round(w.beat_time, 6)))
        vs = vae.get(key(cyc.stream_id, cyc.kind, cyc.start)) if cyc is not None else None
        vae_scores.append(None if vs is None else vs.score)
        embs.append(None if vs is None else vs.embedding)
    x, q = ref_bf.featurize(
        feats,
        np.stack([w.data for w, _ in beats]),
        [w.rr for w, _ in beats],
        [s.score for _, s in beats],
        vae_scores,
        embs,
        [s.recovered_by is not None for _, s in beats],
    )
    labels, probs = clf.classify(x)
    out = []
    for (w, _), qi, lab, p in zip(beats, q, labels.tolist(), probs, strict=True):
        out.append(
            ClassifiedBeat(
                stream_id=w.stream_id,
                time=float(w.beat_time if w.beat_time is not None else w.start),
                label=lab,
                confidence=round(float(p[BEAT_CLASSES.index(lab)]), 4),
                rr_s=None if w.rr is None else w.rr.pre_s,
                probs=tuple(round(float(v), 4) for v in p),
                sqi=round(float(qi), 4),
            )
        )
    return x, out


def test_beat_classes_and_features_equal_the_reference(windows, cae, vae):
    clf = BeatClassifier.load()
    stage = BeatClassStage(clf)
    ref_state: dict[str, ref_bf.BeatFeaturizer] = {}
    beats = [w for w in windows if w.kind == BEAT_720.name]
    n = 0
    for chunk in _chunks(beats):
        times = {w.beat_time for w in chunk}
        ws = [w for w in windows if w.beat_time in times]
        scores = cae.score(_clean(ws, BEAT_720.name)) + vae.score(
            [w for w in ws if w.kind == BEAT_400.name]
        )
        ref_x, ref_classes = _classify_reference(clf, ref_state, ws, scores)
        # features from the state before this chunk (a fresh copy of the stage's featurizers)
        probe = BeatClassStage(None)
        probe._featurizers = {k: _copy_state(f) for k, f in stage._featurizers.items()}
        got_x = np.stack([f for _, f, _ in probe.features(ws, scores)])
        np.testing.assert_array_equal(got_x, ref_x)
        assert stage.classify(ws, scores) == ref_classes
        n += len(ref_classes)
    assert n > 300
    assert {c.label for c in ref_classes} <= set(BEAT_CLASSES)


def _copy_state(f: beatfeatures.BeatFeaturizer) -> beatfeatures.BeatFeaturizer:
    import copy

    return copy.deepcopy(f)


def test_featurize_with_missing_or_bad_embeddings_equals_the_reference(windows, cae, vae):
    beats = _clean(windows, BEAT_720.name)[:40]
    x = np.stack([w.data for w in beats])
    rrs = [w.rr for w in beats]
    caes = [s.score for s in cae.score(beats)]
    cycles = [w for w in windows if w.kind == BEAT_400.name][:40]
    vs = vae.score(cycles)
    embs: list[list[float] | None] = [s.embedding for s in vs]
    embs[3] = None
    embs[5] = embs[5][:10]  # type: ignore[index]
    embs[7] = [float("nan")] * 25
    vaes: list[float | None] = [s.score for s in vs]
    vaes[9] = None
    for e in (embs, [s.embedding for s in vs], [None] * 40):
        new = beatfeatures.BeatFeaturizer()
        old = ref_bf.BeatFeaturizer()
        got = beatfeatures.featurize([new] * 40, x, rrs, caes, vaes, e)
        want = ref_bf.featurize([old] * 40, x, rrs, caes, vaes, e)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


# ------------------------------------------------------------------------------------------ stacking
def test_stack_data_equals_np_stack(windows):
    ws = windows[:50]
    for kind in (BEAT_720.name, BEAT_400.name):
        sub = [w for w in ws if w.kind == kind]
        np.testing.assert_array_equal(
            stack_data(sub), np.stack([w.data for w in sub]).astype(np.float32)
        )
    w64 = replace(ws[0], data=ws[0].data.astype(np.float64) / 3.0)
    np.testing.assert_array_equal(
        stack_data([w64, w64]), np.stack([w64.data, w64.data]).astype(np.float32)
    )
    with pytest.raises(ValueError):
        stack_data([ws[0], replace(ws[0], data=ws[0].data[:10])])
