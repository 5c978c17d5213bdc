"""Worker logic and its Prometheus metrics without a broker: FramePipeline on real MIT-BIH frames."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.metrics import LATENCY_BUCKETS, PipelineMetrics, serve_metrics
from stream.pipeline import FramePipeline
from stream.records import read_record
from stream.schemas import AlertMessage, BeatBatchMessage, DeadLetterMessage
from stream.settings import Settings
from stream.testing import (
    T0,
    FakeClock,
    encode_frames,
    feed_pipeline,
    frame_end_time,
    record_frames,
)


def _value(m: PipelineMetrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, labels or None)
    return 0.0 if v is None else v


@pytest.fixture
def record(data_dir: Path):
    return read_record(data_dir / "mitdb" / "100", 0, 360 * 40)


def _frames(
    record,
    stream: str = "p1",
    n: int = 30,
    flat: tuple[int, int] | None = None,
    sent_at: float | None = None,
    **options,
) -> list[bytes]:
    """``n`` one-second frames of ``record`` (sent when they end unless ``sent_at``); the frames with
    seq in ``flat`` hold their first sample."""

    def hold(seq: int, x: np.ndarray) -> np.ndarray:
        if flat and flat[0] <= seq < flat[1]:
            x[:] = x[0]
        return x

    frames = record_frames(record, seconds=n, stream_id=stream, transform=hold, **options)
    sent = sent_at if sent_at is not None else frame_end_time
    return list(encode_frames(frames, record="mitdb/100", sent_at=sent))


def test_pipeline_counts_frames_samples_beats_and_latency(record) -> None:
    m, clock = PipelineMetrics(), FakeClock(T0 + 1000.0)
    pipe = FramePipeline(Settings(), m, clock=clock)
    outs = feed_pipeline(pipe, _frames(record, sent_at=clock.now - 0.2), key=b"p1")
    receipts = [BeatBatchMessage.from_bytes(o.value) for o in outs if o.topic == pipe.topics.beats]
    assert [r.seq for r in receipts] == list(range(30))  # one receipt per processed frame
    assert all(o.key == b"p1" for o in outs)
    n_beats = sum(len(r.beats) for r in receipts)
    assert 25 <= n_beats <= 45  # record 100: ~75 bpm over 30 s
    assert _value(m, "ecg_frames_received_total") == 30
    assert _value(m, "ecg_samples_processed_total") == 30 * 360
    assert _value(m, "ecg_beats_detected_total") == n_beats
    assert _value(m, "ecg_end_to_end_latency_seconds_count", point="processed") == 30
    assert _value(m, "ecg_end_to_end_latency_seconds_sum", point="processed") == pytest.approx(
        30 * 0.2
    )
    # frame age counts from each frame's start time, so it is never shorter than the sent_at latency
    assert _value(m, "ecg_frame_age_seconds_count", point="processed") == 30
    assert _value(m, "ecg_frame_age_seconds_sum", point="processed") >= 30 * 0.2
    assert _value(m, "ecg_stage_duration_seconds_count", stage="qrs") == 30
    pipe.expire_idle()
    assert _value(m, "ecg_active_streams") == 1


def test_flatline_raises_one_deduplicated_alert(record) -> None:
    m, clock = PipelineMetrics(), FakeClock(T0 + 1000.0)
    pipe = FramePipeline(Settings(), m, clock=clock)
    outs = feed_pipeline(pipe, _frames(record, n=30, flat=(10, 20)), key=b"p1")
    alerts = [AlertMessage.from_bytes(o.value) for o in outs if o.topic == pipe.topics.alerts]
    raised = [a for a in alerts if a.status == "raised"]
    assert raised and raised[0].kind in ("asystole", "signal_loss")
    assert T0 + 10 <= raised[0].start_ts <= T0 + 16
    assert sum(
        _value(m, "ecg_alerts_total", kind=a.kind, severity=a.severity) for a in raised
    ) == len(raised)
    assert len({(a.id, a.status) for a in alerts}) == len(alerts)
    assert sum(1 for o in outs if o.topic == pipe.topics.dropouts) >= 1
    assert _value(m, "ecg_end_to_end_latency_seconds_count", point="alert") == len(alerts)


def test_redelivery_duplicates_and_backwards_sequences(record) -> None:
    m = PipelineMetrics()
    pipe = FramePipeline(Settings(), m)
    frames = _frames(record, n=5)
    for off in range(3):
        pipe.handle(b"p1", frames[off], "t", 0, off)
    assert pipe.handle(b"p1", frames[1], "t", 0, 1) == []  # redelivered offset (rebalance)
    assert pipe.handle(b"p1", frames[2], "t", 0, 3) == []  # same seq again at a new offset (retry)
    assert _value(m, "ecg_frames_duplicate_total") == 2
    (dead,) = pipe.handle(b"p1", frames[0], "t", 0, 4)  # going backwards
    msg = DeadLetterMessage.from_bytes(dead.value)
    assert (
        dead.topic == pipe.topics.dead_letter
        and msg.reason == "sequence_backwards"
        and msg.offset == 4
    )
    assert _value(m, "ecg_frames_rejected_total", reason="sequence_backwards") == 1
    assert pipe.positions == {("t", 0): 5}
    # a gap is counted as missing frames
    pipe.handle(b"p1", frames[4], "t", 0, 5)
    assert _value(m, "ecg_frames_missing_total") == 1


def test_device_restart_with_later_start_time_is_a_new_session(record) -> None:
    m = PipelineMetrics()
    pipe = FramePipeline(Settings(), m)
    feed_pipeline(pipe, _frames(record, n=10), key=b"p1", topic="t")
    # the device power-cycles: seq restarts at 0, but its frames start after the last one received
    (restarted,) = _frames(record, n=1, start_time=T0 + 20)
    outs = pipe.handle(b"p1", restarted, "t", 0, 10)
    assert all(o.topic != pipe.topics.dead_letter for o in outs)
    receipts = [BeatBatchMessage.from_bytes(o.value) for o in outs if o.topic == pipe.topics.beats]
    assert [r.seq for r in receipts] == [0]
    assert _value(m, "ecg_stream_restarts_total") == 1
    assert _value(m, "ecg_frames_rejected_total", reason="sequence_backwards") == 0


def test_bad_frame_is_dead_lettered_with_reason_and_source(record) -> None:
    m = PipelineMetrics()
    pipe = FramePipeline(Settings(), m)
    bad = json.loads(_frames(record, n=1)[0])
    bad["fs"] = 1.0
    (dead,) = pipe.handle(b"p9", json.dumps(bad).encode(), "telemetry", 3, 17)
    msg = DeadLetterMessage.from_bytes(dead.value)
    assert (msg.reason, msg.topic, msg.partition, msg.offset, msg.key) == (
        "sampling_rate",
        "telemetry",
        3,
        17,
        "p9",
    )
    assert _value(m, "ecg_frames_rejected_total", reason="sampling_rate") == 1


def test_a_failing_stage_is_dead_lettered_and_the_stream_restarts(record) -> None:
    class Boom:
        def __init__(self, *a: object) -> None: ...
        def process(self, frame: object) -> None:
            raise RuntimeError("bug")

    m = PipelineMetrics()
    pipe = FramePipeline(Settings(), m, processor_factory=Boom)
    (dead,) = pipe.handle(b"p1", _frames(record, n=1)[0], "t", 0, 0)
    assert DeadLetterMessage.from_bytes(dead.value).reason == "processing_error"
    assert pipe.stream_ids == []


def test_metrics_endpoint_names_units_and_labels(record) -> None:
    m = PipelineMetrics()
    pipe = FramePipeline(Settings(), m)
    feed_pipeline(pipe, _frames(record, n=3), key=b"p1", topic="t")
    m.consumer_lag.labels("t", "0").set(0)
    server = serve_metrics(m.registry, "127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        server.stop()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "ecg_frames_received",
        "ecg_frames_rejected",
        "ecg_samples_processed",
        "ecg_beats_detected",
        "ecg_dropouts",
        "ecg_alerts",
    ):
        assert families[name].type == "counter", name  # exported as <name>_total
    assert families["ecg_end_to_end_latency_seconds"].type == "histogram"
    assert families["ecg_stage_duration_seconds"].type == "histogram"
    assert families["ecg_consumer_lag_messages"].type == "gauge"
    assert "ecg_active_streams" in families and "process_cpu_seconds" in families
    buckets = sorted(
        {
            float(s.labels["le"])
            for s in families["ecg_end_to_end_latency_seconds"].samples
            if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"
        }
    )
    assert buckets == list(LATENCY_BUCKETS) and buckets[0] == 0.01 and buckets[-1] == 30.0
    # no stream / patient ids in any label
    for fam in families.values():
        for s in fam.samples:
            assert "p1" not in s.labels.values()
    assert np.isfinite(families["ecg_frames_received"].samples[0].value)


def test_onnx_scores_are_published_per_frame(record) -> None:
    from stream.schemas import ScoresMessage
    from stream.stages.scoring import WindowScorer

    m = PipelineMetrics()
    pipe = FramePipeline(Settings(), m, scorer=WindowScorer(("cae", "beat_vae")))
    outs = feed_pipeline(pipe, _frames(record, n=12), key=b"p1", topic="t")
    outs += pipe.flush_scores()  # the worker's timer does this every 0.25 s
    assert pipe.flush_scores() == []
    scores = [ScoresMessage.from_bytes(o.value) for o in outs if o.topic == pipe.topics.scores]
    assert scores and all(s.stream_id == "p1" for s in scores)
    models = {sc.model for s in scores for sc in s.scores}
    assert models == {"cae", "beat_vae"}
    n = sum(len(s.scores) for s in scores)
    assert (
        _value(m, "ecg_model_scores_total", model="cae")
        + _value(m, "ecg_model_scores_total", model="beat_vae")
        == n
    )
    assert _value(m, "ecg_stage_duration_seconds_count", stage="model_cae") >= 1


def test_recovered_windows_are_counted_and_marked_in_the_scores(record) -> None:
    from stream.schemas import ScoresMessage
    from stream.stages.scoring import WindowScorer

    m = PipelineMetrics()
    pipe = FramePipeline(Settings(), m, scorer=WindowScorer(("cae",)))
    gap = [(6 * 360 + 100, 6 * 360 + 190)]  # 0.25 s of missing samples on both leads in frame 6
    outs = feed_pipeline(pipe, _frames(record, n=12, nan_spans=gap), key=b"p1", topic="t")
    outs += pipe.flush_scores()
    scores = [
        sc
        for o in outs
        if o.topic == pipe.topics.scores
        for sc in ScoresMessage.from_bytes(o.value).scores
    ]
    recovered = [sc for sc in scores if sc.recovered_by == "lstm_ae"]
    assert recovered and all(0 < sc.recovered_fraction <= 0.4 for sc in recovered)
    assert _value(m, "ecg_model_windows_recovered_total", model="lstm_ae") == len(recovered)
