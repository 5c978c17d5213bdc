"""A replayed 12-lead stream with a lead-off lead publishes its rebuilt samples on ``ecg.recovered.v1``:
provenance, the recovery model and a calibrated 90 % interval per sample, validating against the
committed schema; the rebuilt window is scored, and not as abnormal."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from simulators.faults import FaultSpec, inject
from stream.settings import Settings
from stream.testing import frames_from_array, load_record, telemetry_messages
from stream.topic_schemas import committed_schemas
from tests.integration.conftest import WorkerFactory, consume, produce

pytestmark = pytest.mark.integration


def test_lead_off_lead_is_published_as_recovered_with_provenance_and_uncertainty(
    settings: Settings, workers: WorkerFactory, data_dir: Path
) -> None:
    rec = load_record("ludb/data/1", data_dir)  # 10 s at 500 Hz, looped to 30 s
    signal = np.tile(rec.signal, (3, 1))
    # V1 electrode off from 11 s to 22 s: the 10-20 s window has V1 masked (and 20-30 s too)
    x = inject(
        signal,
        rec.fs,
        rec.leads,
        [FaultSpec("lead_off", "V1", 11.0, 11.0)],
        rng=np.random.default_rng(0),
    )
    frames = list(frames_from_array(x, rec.fs, rec.leads, "rec-ludb"))
    workers.start()  # default models: cae, beat_vae, vae_bilstm, vae_bilstm_mha (+ lead_recon, lstm_ae)
    produce(
        settings, settings.topics.telemetry, list(telemetry_messages(frames, sent_at=time.time()))
    )

    def v1_model_runs(values: list[bytes]) -> list[dict]:
        return [
            m for m in map(json.loads, values) if m["lead"] == "V1" and m["provenance"] == "model"
        ]

    values = consume(
        settings,
        settings.topics.recovered,
        until=lambda v: len(v1_model_runs(v)) >= 2,
        timeout_s=60,
    )
    check = jsonschema.Draft202012Validator(committed_schemas()["recovered"])
    for value in values:
        msg = json.loads(value)
        problems = [e.message for e in check.iter_errors(msg)]
        assert not problems, (problems, msg)
    runs = v1_model_runs(values)
    assert len(runs) >= 2, [json.loads(v)["lead"] for v in values]
    for run in runs:
        assert run["stream_id"] == "rec-ludb"
        assert run["window"] == "leads_10s"
        assert run["recovered_by"] == "lead_recon"
        n = len(run["samples"])
        assert n == round((run["end_ts"] - run["start_ts"]) * run["fs"])
        assert run["half_width_90"] is not None and len(run["half_width_90"]) == n
        assert min(run["half_width_90"]) > 0.0  # a model's sample always has an interval
        assert all(np.isfinite(run["samples"]))
    # the masked span (plus the filter's settle tail) is what was published, nothing measured
    t0 = frames[0].start_time
    spans = sorted((r["start_ts"] - t0, r["end_ts"] - t0) for r in runs)
    assert spans[0][0] >= 10.0 and spans[0][0] <= 11.5, spans
    assert spans[-1][1] >= 21.5, spans
    # only V1 was faulty: no other lead is rebuilt by the model
    others = {m["lead"] for m in map(json.loads, values) if m["provenance"] == "model"}
    assert others == {"V1"}, others
    # the rebuilt windows were scored, recovered_by lead_recon, and not called abnormal
    scores = consume(
        settings,
        settings.topics.scores,
        until=lambda v: (
            sum(
                s.get("recovered_by") == "lead_recon"
                for m in map(json.loads, v)
                for s in m["scores"]
            )
            >= 2
        ),
        timeout_s=30,
    )
    rebuilt = [
        s
        for m in map(json.loads, scores)
        for s in m["scores"]
        if s.get("recovered_by") == "lead_recon"
    ]
    assert rebuilt and not any(s["anomalous"] for s in rebuilt), rebuilt
