"""The topics' JSON Schemas: committed files and README table never drift from the models, and what the
pipeline really writes (real records, faults, bad frames, the ONNX models) validates against them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from typer.testing import CliRunner

from simulators.faults import FAULT_KINDS
from stream.cli import app
from stream.pipeline import FramePipeline
from stream.schemas import AlertMessage, FaultTruthMessage, encode_frame, iso
from stream.settings import Settings, TopicNames
from stream.stages.events import Beat
from stream.stages.rules import RuleEngine
from stream.stages.scoring import WindowScorer
from stream.testing import T0, feed_pipeline, frame_end_time, record_frames, telemetry_messages
from stream.topic_schemas import (
    DRAFT,
    SCHEMA_DIR,
    SUFFIX,
    TOPIC_NAMES,
    committed_schemas,
    dumps,
    render_topics_table,
    table_in,
    topic_json_schemas,
)

README = Path(__file__).resolve().parents[2] / "README.md"
REGENERATE = "regenerate with `python -m stream.topic_schemas` (schema files and README table)"


@pytest.fixture(scope="module")
def schemas() -> dict[str, dict[str, Any]]:
    return topic_json_schemas()


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema)


def errors(schema: dict[str, Any], message: Any) -> list[str]:
    return [e.message for e in validator(schema).iter_errors(message)]


# ------------------------------------------------------------------------------------------- no drift
def test_committed_schema_files_are_what_the_generator_produces(
    schemas: dict[str, dict[str, Any]],
) -> None:
    assert sorted(p.name for p in SCHEMA_DIR.glob(f"*{SUFFIX}")) == sorted(
        f"{n}{SUFFIX}" for n in TOPIC_NAMES
    ), REGENERATE
    for name, schema in schemas.items():
        committed = (SCHEMA_DIR / f"{name}{SUFFIX}").read_text(encoding="utf-8")
        assert committed == dumps(schema), f"{name}{SUFFIX} is stale: {REGENERATE}"
    assert committed_schemas() == schemas


def test_readme_holds_exactly_the_rendered_topics_table(
    schemas: dict[str, dict[str, Any]],
) -> None:
    readme = README.read_text(encoding="utf-8")
    assert readme.count("<!-- topics-table:start -->") == 1
    assert readme.count("<!-- topics-table:end -->") == 1
    assert table_in(readme) == render_topics_table(schemas), f"README topics table: {REGENERATE}"


def test_every_schema_is_draft_2020_12_with_titles_and_descriptions(
    schemas: dict[str, dict[str, Any]],
) -> None:
    assert list(schemas) == list(TOPIC_NAMES) == list(TopicNames.model_fields)
    for name, schema in schemas.items():
        assert schema["$schema"] == DRAFT
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["title"] and schema["description"], name
        assert schema["x-topic"] == TopicNames.model_fields[name].default
        props = dict(schema["properties"])
        for d in schema.get("$defs", {}).values():
            props.update({f"{k} ({d['title']})": v for k, v in d.get("properties", {}).items()})
        undocumented = [k for k, v in props.items() if not v.get("description")]
        assert not undocumented, f"{name}: fields without a description: {undocumented}"


def test_table_documents_score_fields_windows_epoch_times_and_evidence() -> None:
    table = render_topics_table()
    rows = {line.split(" | ")[1].strip("`"): line for line in table.splitlines() if " | `" in line}
    for field in (
        "scores[].recovered_by",
        "scores[].recovered_fraction",
        "scores[].lead_scores",
        "scores[].lead_attention",
        "scores[].attention_peak",
        "evidence.no_beat_s",
        "evidence.last_beat_time",
        "evidence.hr_bpm",
        "evidence.lost_s",
        "evidence.duration_s",
    ):
        assert field in rows, field
    for window in ("beat_720", "beat_400", "leads_10s"):
        assert window in rows["scores[].window"]
    for epoch in (
        "scores[].time",
        "scores[].attention_peak",
        "beats[].time",
        "start_ts",
        "time_ts",
    ):
        assert "number (epoch s)" in rows[epoch], epoch
    assert rows["evidence.lost_s"].endswith(
        "| signal_loss: Seconds every lead had been in a dropout when raised. |"
    )


# --------------------------------------------------------------------------------- alerts and evidence
def _engine_alerts() -> list[AlertMessage]:
    """Real alert transitions of every kind from the rules stage (raised, resolved, closed by the end)."""
    events = []
    asy = RuleEngine("a")
    events += asy.update(T0, [Beat("a", 0, T0, None, None)])
    events += asy.update(T0 + 5, [])  # 5 s without a beat: asystole
    events += asy.update(T0 + 6, [Beat("a", 1, T0 + 6, 6.0, 10.0)])  # resolved by the next beat
    brady = RuleEngine("b")
    for i in range(16):  # 30 bpm for 30 s: bradycardia raised, then closed by the end of the stream
        t = T0 + 2 * i
        events += brady.update(t, [Beat("b", i, t, 2.0, 30.0)])
    tachy = RuleEngine("c")
    for i in range(60):  # 180 bpm for 20 s, then 80 bpm: raised and resolved
        t = T0 + i / 3
        events += tachy.update(t, [Beat("c", i, t, 1 / 3, 180.0)])
    for i in range(20):
        t = T0 + 20 + 0.75 * i
        events += tachy.update(t, [Beat("c", 100 + i, t, 0.75, 80.0)])
    loss = RuleEngine("d")
    events += loss.update(T0, [])
    events += loss.update(T0 + 6, [], False, T0)  # every lead lost for 6 s
    events += loss.update(T0 + 9, [], True, None)  # signal back ...
    events += loss.update(T0 + 11.5, [], True, None)  # ... for 2.5 s: resolved
    events += brady.flush(T0 + 40)
    return [AlertMessage.from_event(e, record="mitdb/100", published_at=T0) for e in events]


def test_alerts_of_every_kind_validate_and_evidence_is_checked_by_kind(
    schemas: dict[str, dict[str, Any]],
) -> None:
    schema = schemas["alerts"]
    alerts = _engine_alerts()
    seen = Counter((a.kind, a.status) for a in alerts)
    for kind in ("asystole", "bradycardia", "tachycardia", "signal_loss"):
        assert seen[(kind, "raised")] == 1 and seen[(kind, "resolved")] == 1, seen
    assert any(a.evidence.get("closed_by") == "end_of_stream" for a in alerts)
    for a in alerts:
        assert errors(schema, json.loads(a.to_bytes())) == [], a
    raised = json.loads(next(a for a in alerts if a.kind == "asystole").to_bytes())
    assert errors(schema, {**raised, "evidence": {"lost_s": 3.0}})  # asystole without no_beat_s
    assert errors(schema, {**raised, "kind": "bradycardia"})  # asystole evidence, bradycardia kind
    assert errors(schema, {**raised, "status": "resolved"})  # resolved without duration_s
    assert errors(schema, {**raised, "start_ts": "yesterday"})
    del raised["published_at"]
    assert errors(schema, raised)  # output messages carry every field


# ------------------------------------------------------------------------------- the other messages
def test_telemetry_schema_accepts_frames_and_rejects_what_decoding_rejects(
    schemas: dict[str, dict[str, Any]],
) -> None:
    schema = schemas["telemetry"]
    frame = json.loads(
        encode_frame(
            stream_id="p1",
            seq=3,
            fs=360.0,
            leads=("MLII", "V1"),
            start_time=T0,
            samples=np.full((360, 2), 0.1, np.float32),
            sent_at=T0 + 1,
        )
    )
    assert errors(schema, frame) == []
    assert errors(schema, {**frame, "vendor": {"bed": 7}}) == []  # extra keys are kept as extra
    for bad in (
        {"v": 2},
        {"leads": ["MLII", "V9"]},
        {"leads": ["MLII", "MLII"]},
        {"seq": -1},
        {"stream_id": ""},
        {"encoding": "u8"},
        {"n_samples": 0},
    ):
        assert errors(schema, {**frame, **bad}), bad
    assert errors(schema, {k: v for k, v in frame.items() if k != "samples"})


def test_fault_truth_kinds_are_those_of_the_simulators(schemas: dict[str, dict[str, Any]]) -> None:
    schema = schemas["ground_truth"]
    described = schema["properties"]["kind"]["description"]
    assert all(kind in described for kind in FAULT_KINDS)
    msg = FaultTruthMessage(
        stream_id="p1",
        record="mitdb/100",
        lead="V1",
        kind="noise_ma",
        start=iso(T0) or "",
        start_ts=T0,
        end=iso(T0 + 5) or "",
        end_ts=T0 + 5,
        snr_db=6.0,
    )
    assert errors(schema, json.loads(msg.to_bytes())) == []


def test_pipeline_outputs_on_real_records_validate(
    schemas: dict[str, dict[str, Any]], data_dir: Path
) -> None:
    """MIT-BIH with a 9 s all-lead gap (signal loss), short gaps (recovered beat windows), lost frames
    and a non-JSON message; LUDB 12-lead (a 12-lead score with attention): every message validates."""
    settings = Settings(data_dir=data_dir)
    topic_of = {getattr(settings.topics, n): n for n in TOPIC_NAMES}
    pipe = FramePipeline(
        settings, scorer=WindowScorer(("cae", "beat_vae", "vae_bilstm_mha")), score_batch=16
    )
    fs = 360
    mit = record_frames(
        "mitdb/100",
        data_dir,
        seconds=40,
        stream_id="m1",
        nan_spans=[(12 * fs, 21 * fs), (30 * fs + 100, 30 * fs + 300)],
        drop=[35, 36],
    )
    ludb = record_frames("ludb/data/1", data_dir, seconds=10, stream_id="l1")
    messages = [
        *telemetry_messages(mit, sent_at=frame_end_time),
        *telemetry_messages(ludb, sent_at=frame_end_time),
        (b"m1", b"not json"),
    ]
    out = feed_pipeline(pipe, messages) + pipe.flush_scores() + pipe.flush_all()
    out += pipe.flush_scores()
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for o in out:
        name = topic_of[o.topic]
        msg = json.loads(o.value)
        assert errors(schemas[name], msg) == [], (name, msg)
        by_topic.setdefault(name, []).append(msg)
    assert {"beats", "dropouts", "alerts", "scores", "dead_letter"} <= set(by_topic)
    scores = [s for m in by_topic["scores"] for s in m["scores"]]
    assert any(s["recovered_by"] == "lstm_ae" for s in scores)
    assert any(s["window"] == "leads_10s" and s["lead_attention"] for s in scores)


# ------------------------------------------------------------------------------------------------ CLI
runner = CliRunner()


def test_cli_schema_prints_one_topic_or_all(schemas: dict[str, dict[str, Any]]) -> None:
    result = runner.invoke(app, ["schema", "alerts"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == schemas["alerts"]
    result = runner.invoke(app, ["schema", "ecg.scores.v1"])
    assert result.exit_code == 0 and json.loads(result.stdout) == schemas["scores"]
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0 and json.loads(result.stdout) == schemas


def test_cli_schema_writes_files(tmp_path: Path) -> None:
    result = runner.invoke(app, ["schema", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    for name in TOPIC_NAMES:
        written = (tmp_path / "s" / f"{name}{SUFFIX}").read_text(encoding="utf-8")
        assert written == (SCHEMA_DIR / f"{name}{SUFFIX}").read_text(encoding="utf-8")
    result = runner.invoke(app, ["schema", "beats", "--out", str(tmp_path / "one")])
    assert result.exit_code == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == [f"beats{SUFFIX}"]


def test_cli_schema_unknown_topic_lists_the_known_ones() -> None:
    result = runner.invoke(app, ["schema", "nope"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ecg-monitor: unknown topic 'nope'; known: ")
    assert all(name in lines[0] for name in TOPIC_NAMES)
