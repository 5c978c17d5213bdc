"""A replayed arrhythmia record raises its alarm on the alerts topic of the real embedded broker: MIT-BIH 119
(ventricular bigeminy from 21 s) through a worker with the default models; its beats carry AAMI classes,
and every alarm validates against the committed alerts schema (its kind's evidence included)."""

from __future__ import annotations

import time
from pathlib import Path

import jsonschema
import pytest

from stream.schemas import AlertMessage, BeatBatchMessage
from stream.settings import Settings
from stream.testing import record_frames, telemetry_messages
from stream.topic_schemas import committed_schemas
from tests.integration.conftest import WorkerFactory, consume, produce

pytestmark = pytest.mark.integration


def test_bigeminy_record_raises_its_alarm_on_the_alerts_topic(
    settings: Settings, workers: WorkerFactory, data_dir: Path
) -> None:
    workers.start()  # default models: cae, beat_vae, vae_bilstm, vae_bilstm_mha (+ beat_class)
    frames = list(record_frames("mitdb/119", data_dir, seconds=75, stream_id="arr-119"))
    messages = telemetry_messages(frames, record="mitdb/119", sent_at=time.time())
    produce(settings, settings.topics.telemetry, list(messages))

    def bigeminy(values: list[bytes]) -> bool:
        return any(
            AlertMessage.from_bytes(v).kind == "ventricular_bigeminy"
            and AlertMessage.from_bytes(v).status == "raised"
            for v in values
        )

    values = consume(settings, settings.topics.alerts, until=bigeminy, timeout_s=120)
    alerts = [AlertMessage.from_bytes(v) for v in values]
    raised = [a for a in alerts if a.kind == "ventricular_bigeminy" and a.status == "raised"]
    assert raised, f"no bigeminy alarm; alerts: {[(a.kind, a.status) for a in alerts]}"
    a = raised[0]
    assert a.severity == "warning" and a.stream_id == "arr-119" and a.record == "mitdb/119"
    t0 = frames[0].start_time
    # the annotated bigeminy runs 21.1-31.4 s; the alarm's episode starts inside it, decided soon after
    assert 15 <= a.start_ts - t0 <= 45 and a.at_ts is not None and a.at_ts >= a.start_ts
    assert a.evidence, "an alarm carries its evidence"
    # no critical alarm on this record (no VT, VF, asystole or pause in its first 75 s)
    assert not [x for x in alerts if x.severity == "critical"], alerts
    schema = committed_schemas()["alerts"]
    for v in values:
        jsonschema.validate(AlertMessage.from_bytes(v).model_dump(mode="json"), schema)
    # the beats topic carries the beats' AAMI classes, V among them
    receipts = [
        BeatBatchMessage.from_bytes(v)
        for v in consume(settings, settings.topics.beats, timeout_s=30, idle_s=1.5)
    ]
    labels = [c.label for r in receipts for c in r.classes]
    assert labels.count("V") >= 5 and labels.count("N") >= 20, labels
