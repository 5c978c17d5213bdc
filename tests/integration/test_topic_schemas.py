"""What a real worker publishes validates against the committed topic schemas (stream/topic_schemas/)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from stream.settings import Settings
from stream.testing import record_frames, telemetry_messages
from stream.topic_schemas import committed_schemas
from tests.integration.conftest import WorkerFactory, consume, produce

pytestmark = pytest.mark.integration

FS = 360


def test_worker_outputs_validate_against_the_committed_schemas(
    settings: Settings, workers: WorkerFactory, data_dir: Path
) -> None:
    schemas = committed_schemas()
    workers.start()  # default models: cae, beat_vae, vae_bilstm, vae_bilstm_mha
    # MIT-BIH: a 9 s gap on every lead (all-NaN frames: dead letters, then missing frames and a signal
    # loss raised and resolved), short NaN spans (beat windows recovered by lstm_ae), two lost frames;
    # LUDB: one 10 s 12-lead window (a vae_bilstm_mha score with lead scores and attention)
    mit = record_frames(
        "mitdb/100",
        data_dir,
        seconds=40,
        stream_id="schema-mit",
        nan_spans=[(12 * FS, 21 * FS), (30 * FS + 100, 30 * FS + 300)],
        drop=[35, 36],
    )
    ludb = record_frames("ludb/data/1", data_dir, seconds=10, stream_id="schema-ludb")
    now = time.time()
    messages = [
        *telemetry_messages(mit, sent_at=now),
        *telemetry_messages(ludb, sent_at=now),
        (b"schema-mit", b'{"v": 1, "stream_id": "schema-mit"}'),  # bad_shape
    ]
    telemetry = jsonschema.Draft202012Validator(schemas["telemetry"])
    for _, value in messages[:-1]:
        telemetry.validate(json.loads(value))
    produce(settings, settings.topics.telemetry, messages)

    def has_score(window: str) -> Any:
        return lambda values: any(
            s["window"] == window for v in values for s in json.loads(v)["scores"]
        )

    wanted = {
        "beats": lambda values: len(values) >= 39,  # 40 + 10 frames, minus 9 rejected and 2 lost
        "alerts": lambda values: (
            {  # the signal loss raised and resolved
                (a["kind"], a["status"]) for a in map(json.loads, values)
            }
            >= {("signal_loss", "raised"), ("signal_loss", "resolved")}
        ),
        "dropouts": lambda values: len(values) >= 1,
        "scores": has_score("leads_10s"),
        "dead_letter": lambda values: len(values) >= 10,  # 9 all-NaN frames and the bad one
    }
    counts = {}
    for name, until in wanted.items():
        values = consume(settings, getattr(settings.topics, name), until=until, timeout_s=40)
        assert until(values), f"{name}: only {len(values)} message(s)"
        check = jsonschema.Draft202012Validator(schemas[name])
        for value in values:
            msg = json.loads(value)
            problems = [e.message for e in check.iter_errors(msg)]
            assert not problems, (name, problems, msg)
        counts[name] = len(values)
    print("validated", counts)
