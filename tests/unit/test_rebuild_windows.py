"""Two-lead streams (MIT-BIH): a masked lead is rebuilt from the other by the stream's own lead transfer
(learned online from its clean seconds) and published on the recovered topic with provenance and
intervals, or published as unrecoverable with the reason (no broker)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stream.pipeline import FramePipeline
from stream.settings import Settings
from stream.stages.processor import StageConfig, StreamProcessor
from stream.stages.scoring import WindowScorer
from stream.testing import record_frames, telemetry_messages

FS = 360


def _run(pipe: FramePipeline, frames: list) -> list[dict]:
    out = []
    for i, (key, value) in enumerate(telemetry_messages(frames)):
        out += pipe.handle(key, value, "ecg.telemetry.v1", 0, i)
    out += pipe.flush_all()
    return [json.loads(o.value) for o in out if o.topic == pipe.topics.recovered]


def test_lost_v1_is_rebuilt_by_the_lead_transfer_once_learned_and_says_why_not_before(
    data_dir: Path,
) -> None:
    pipe = FramePipeline(Settings(), scorer=WindowScorer(("cae",)))
    frames = list(record_frames("mitdb/119", data_dir, seconds=130, stream_id="rb1"))
    truth = {f.seq: f.samples[:, 1].copy() for f in frames}
    for f in (*frames[12:18], *frames[112:118]):  # V1 missing 12-18 s (early) and 112-118 s
        f.samples[:, 1] = np.nan
    runs = [r for r in _run(pipe, frames) if r["window"] == "leads_rebuild"]
    assert runs and {r["lead"] for r in runs} == {"V1"}, runs  # MLII was never masked
    t0 = frames[0].start_time
    early = [r for r in runs if r["start_ts"] - t0 < 20]
    late = [r for r in runs if r["start_ts"] - t0 > 100]
    assert early and all(r["provenance"] == "unrecoverable" for r in early)
    assert all("needed" in r["reason"] and r["samples"] is None for r in early), early
    (model,) = [r for r in late if r["provenance"] == "model"]
    assert model["recovered_by"] == "lead_transfer"
    assert abs(model["start_ts"] - t0 - 112) < 0.01 and abs(model["end_ts"] - t0 - 118) < 0.01
    got = np.asarray(model["samples"])
    width = np.asarray(model["half_width_90"])
    assert got.size == 6 * FS and width.size == got.size and (width > 0).all()
    # against the truth band-passed as the stream does (the same causal filter over the unmasked lead)
    from models.preprocessing.filtering import CausalFilter

    full = np.concatenate([np.column_stack([f.samples[:, 0], truth[f.seq]]) for f in frames])
    want = CausalFilter(FS, 2).process(full.astype(np.float32))[112 * FS : 118 * FS, 1]
    r = float(np.corrcoef(got, want)[0, 1])
    print("lead transfer r", r, "coverage", float(np.mean(np.abs(got - want) <= width)))
    assert r > 0.7
    assert 0.6 <= float(np.mean(np.abs(got - want) <= width)) <= 1.0


def test_without_the_transfer_the_network_says_why_not(data_dir: Path) -> None:
    scorer = WindowScorer(("cae",))
    pipe = FramePipeline(
        Settings(),
        scorer=scorer,
        processor_factory=lambda sid, fs, leads: StreamProcessor(
            sid, fs, leads, StageConfig(windows=scorer.window_specs, lead_transfer=False)
        ),
    )
    frames = list(record_frames("mitdb/119", data_dir, seconds=30, stream_id="rb2"))
    for f in frames[12:18]:
        f.samples[:, 1] = np.nan
    runs = [r for r in _run(pipe, frames) if r["lead"] == "V1"]
    assert runs and all(r["provenance"] == "unrecoverable" and r["reason"] for r in runs)
    assert abs(sum(r["end_ts"] - r["start_ts"] for r in runs) - 6.0) < 0.1
