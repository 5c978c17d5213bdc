"""The scoring stage runs the committed ONNX models on windows cut by the real StreamProcessor."""

from __future__ import annotations

import numpy as np
import pytest

from stream.errors import ModelError
from stream.records import read_record
from stream.stages.events import ModelWindow
from stream.stages.processor import Frame, StageConfig, StreamProcessor
from stream.stages.scoring import WindowScorer


def _run(rec, seconds: int, cfg: StageConfig) -> list[ModelWindow]:
    proc = StreamProcessor("s1", rec.fs, rec.leads, cfg)
    n = int(rec.fs)
    windows: list[ModelWindow] = []
    for seq in range(seconds):
        chunk = rec.signal[seq * n : (seq + 1) * n]
        windows += proc.process(Frame("s1", seq, rec.fs, rec.leads, 1_700_000_000.0 + seq, chunk)).windows
    return windows


@pytest.fixture(scope="module")
def scorer() -> WindowScorer:
    return WindowScorer()


def test_mitdb_beats_get_cae_and_beat_vae_scores(data_dir, scorer):
    rec = read_record(data_dir / "mitdb" / "100", sampto=360 * 40)
    windows = _run(rec, 40, StageConfig(emit_beat_720=True, emit_beat_400=True, emit_leads_10s=False))
    res = scorer.score(windows)
    cae = [s for s in res.scores if s.model == "cae"]
    vae = [s for s in res.scores if s.model == "beat_vae"]
    assert len(cae) >= 40 and len(vae) >= 40  # record 100 runs at ~75 bpm
    assert all(np.isfinite(s.score) for s in cae + vae)
    assert all(s.embedding is not None and len(s.embedding) == 25 for s in vae)
    # record 100 is almost all normal beats: most are below the CAE threshold
    assert np.mean([s.anomalous for s in cae]) < 0.5
    assert res.model_seconds["cae"] > 0


def test_ptbxl_window_gets_cae12_score(data_dir, scorer):
    rec = read_record(data_dir / "ptbxl" / "records100" / "01000" / "01002_lr")
    windows = _run(rec, 10, StageConfig(emit_beat_720=False, emit_beat_400=False, emit_leads_10s=True))
    res = scorer.score(windows)
    assert [s.model for s in res.scores] == ["cae12"] * len([w for w in windows if w.kind == "leads_10s"])
    assert all(s.threshold is not None for s in res.scores)


def test_nan_window_is_skipped_with_reason(scorer):
    data = np.zeros(720, dtype=np.float32)
    data[100:200] = np.nan
    res = scorer.score([ModelWindow("s1", "beat_720", "MLII", 0.0, 360.0, data)])
    assert res.scores == [] and res.skipped[0][1] == "dropout"


def test_unknown_model_is_an_error():
    with pytest.raises(ModelError):
        WindowScorer(models=("nope",))
