"""The worker's beats messages carry each lead's signal quality per second and the lead the beats came
from (multi-lead fusion), from the real processor on a real record (no broker, no models)."""

from __future__ import annotations

import json
from pathlib import Path

from stream.pipeline import FramePipeline
from stream.settings import Settings
from stream.testing import record_frames, telemetry_messages


def test_beats_messages_carry_lead_quality_and_beat_lead(data_dir: Path) -> None:
    pipe = FramePipeline(Settings())
    frames = record_frames("mitdb/100", data_dir, seconds=15, stream_id="q1")
    out = []
    for i, (key, value) in enumerate(telemetry_messages(frames)):
        out += pipe.handle(key, value, "ecg.telemetry.v1", 0, i)
    beats = [json.loads(o.value) for o in out if o.topic == pipe.topics.beats]
    assert len(beats) == 15
    quality = [q for b in beats for q in b["quality"]]
    assert {q["lead"] for q in quality} == {"MLII", "V5"}  # record 100: MLII and V5
    # one assessment per lead per second, every second of the clean record but the filter's warm-up
    starts = sorted({q["start_ts"] for q in quality})
    assert len(starts) >= 13 and len(quality) == 2 * len(starts)
    later = [q for q in quality if q["start_ts"] - starts[0] >= 5 and q["lead"] == "MLII"]
    assert later and all(q["usable"] and q["reason"] is None for q in later)
    assert {b["beat_lead"] for b in beats if b["beats"]} == {"MLII"}
    assert all(b["beat_lead"] is None for b in beats if not b["beats"])
