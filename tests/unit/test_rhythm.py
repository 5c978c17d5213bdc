"""Beat rhythm features: the offline functions, the stream's RR context, and the processor's windows."""

from __future__ import annotations

import numpy as np
import pytest

from models.preprocessing.rhythm import (
    RRContext,
    record_rhythm_scores,
    reference_rr,
    rhythm_score,
    rr_pre_post,
)
from stream.records import read_annotations, read_record
from stream.stages.processor import StreamProcessor
from stream.testing import record_frames, run_processor


def test_reference_is_a_causal_rolling_quantile():
    pre = np.random.default_rng(0).uniform(0.5, 1.2, 300)
    ref = reference_rr(pre, 32, 0.9)
    naive = [pre[0]] + [np.quantile(pre[max(0, k - 32) : k], 0.9) for k in range(1, 300)]
    np.testing.assert_allclose(ref, naive)


def test_regular_rhythm_scores_zero_and_a_premature_beat_with_a_pause_scores_high():
    t = np.arange(40) * 0.8
    t[20] -= 0.3  # premature by 0.3 s, followed by a compensatory pause
    s = record_rhythm_scores(t, 16, 0.9)
    assert s[20] == pytest.approx(np.log(0.8 / 0.5) + np.log(1.1 / 0.5))
    assert np.allclose(s[:20], 0, atol=1e-9) and s[21] == pytest.approx(
        0, abs=1e-9
    )  # on time or late: no prematurity; the next beat's pre is long
    pre, post = rr_pre_post(t)
    assert pre[20] == pytest.approx(0.5) and post[20] == pytest.approx(1.1)
    assert rhythm_score(np.array([np.nan]), np.array([1.0]), np.array([1.0]))[0] == 0.0


def test_rr_context_gives_the_offline_score():
    t = np.cumsum(np.random.default_rng(1).uniform(0.4, 1.1, 200))
    pre, post = rr_pre_post(t)
    offline = record_rhythm_scores(t, 64, 0.75)
    k = 150
    ctx = RRContext(
        pre[k], post[k], tuple(pre[1:k])
    )  # pre[0] repeats pre[1]: a stream never sees it
    ref_off = reference_rr(pre, 64, 0.75)[k]
    assert ctx.score(64, 0.75) == pytest.approx(
        float(rhythm_score(pre[k : k + 1], post[k : k + 1], np.array([ref_off]))[0])
    )
    assert ctx.score(64, 0.75) == pytest.approx(offline[k])
    assert RRContext(None, None, ()).score(64, 0.75) == 0.0


def test_stream_windows_carry_the_beats_rr_context(data_dir):
    rec = read_record(data_dir / "mitdb" / "209", sampto=360 * 600)
    out = run_processor(StreamProcessor("p1", rec.fs, rec.leads), record_frames(rec))
    w720 = [w for w in out.windows if w.kind == "beat_720"]
    assert len(w720) >= len(out.beats) - 3 and all(w.rr is not None for w in w720)
    peaks = np.array([b.sample for b in out.beats])
    centre = np.array(
        [round((w.start - out.beats[0].time) * 360.0) + 360 + out.beats[0].sample for w in w720]
    )
    idx = np.searchsorted(peaks, centre)
    assert np.all(peaks[idx] == centre)
    for w, i in zip(w720[1:-1], idx[1:-1], strict=True):
        assert w.rr.pre_s == pytest.approx((peaks[i] - peaks[i - 1]) / 360.0)
        assert w.rr.post_s == pytest.approx((peaks[i + 1] - peaks[i]) / 360.0)
        assert len(w.rr.history) == min(i - 1, 256)
    # atrial premature beats (annotated A) get a higher rhythm score than normal beats
    ann = read_annotations(data_dir / "mitdb" / "209").beats()
    near = {int(s): sym for s, sym in zip(ann.sample, ann.symbol, strict=True)}
    scores = {"A": [], "N": []}
    for w, c in zip(w720, centre, strict=True):
        sym = next((near[s] for s in range(c - 18, c + 19) if s in near), None)
        if sym in scores:
            scores[sym].append(w.rr.score(128, 0.9))
    assert len(scores["A"]) > 10
    assert np.median(scores["A"]) > 0.2 > np.median(scores["N"])
