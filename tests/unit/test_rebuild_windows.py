"""Two-lead streams (MIT-BIH): a masked lead is cut as a ``leads_rebuild`` window and either rebuilt from
the other lead or published as unrecoverable with the reason, on the recovered topic (no broker)."""

from __future__ import annotations

import json
from pathlib import Path

from stream.pipeline import FramePipeline
from stream.settings import Settings
from stream.stages.scoring import WindowScorer
from stream.testing import record_frames, telemetry_messages

FS = 360


def test_lost_v1_on_a_two_lead_stream_is_published_with_provenance_or_reason(
    data_dir: Path,
) -> None:
    scorer = WindowScorer(("cae",))
    pipe = FramePipeline(Settings(), scorer=scorer)
    frames = record_frames(
        "mitdb/119",
        data_dir,
        seconds=40,
        stream_id="rb1",
        nan_spans=[],
        transform=None,
    )
    frames = list(frames)
    for f in frames[12:18]:  # V1 missing from 12 s to 18 s
        f.samples[:, 1] = float("nan")
    out = []
    for i, (key, value) in enumerate(telemetry_messages(frames)):
        out += pipe.handle(key, value, "ecg.telemetry.v1", 0, i)
    out += pipe.flush_all()
    runs = [json.loads(o.value) for o in out if o.topic == pipe.topics.recovered]
    v1 = [r for r in runs if r["lead"] == "V1" and r["window"] == "leads_rebuild"]
    assert v1, runs
    covered = sum(r["end_ts"] - r["start_ts"] for r in v1)
    assert 5.5 <= covered <= 8.0, covered  # the 6 s gap (plus the filter's settle tail)
    for r in v1:
        if r["provenance"] == "unrecoverable":
            assert r["reason"] and r["samples"] is None
        else:
            assert r["recovered_by"] and len(r["samples"]) == len(r["half_width_90"])
    assert not [r for r in runs if r["lead"] == "MLII"]  # MLII was never masked there
