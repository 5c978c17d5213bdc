"""The pieces of FramePipeline on hand-made results (no records, no models): alert de-duplication,
routing, the score batcher and the metrics observer, and the order of one frame's messages."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stream.metrics import PipelineMetrics, PipelineObserver
from stream.pipeline import AlertDeduplicator, FramePipeline, MessageRouter, ScoreBatcher
from stream.schemas import (
    AlertMessage,
    BeatBatchMessage,
    DropoutMessage,
    ScoresMessage,
    decode_frame,
    encode_frame,
)
from stream.settings import Settings, TopicNames
from stream.stages.events import AlertEvent, Beat, DropoutSegment, ModelWindow
from stream.stages.frame import Frame
from stream.stages.processor import ProcessorOutput
from stream.stages.scoring import ModelScore, ScoringResult

T0 = 1_767_225_600.0


def _alert(ident: str, status: str = "raised") -> AlertEvent:
    end = None if status == "raised" else T0 + 5
    return AlertEvent(ident, "p1", "asystole", "critical", status, T0, end)


def _window(stream_id: str, start: float = T0) -> ModelWindow:
    return ModelWindow(stream_id, "beat_720", "MLII", start, 360.0, np.zeros(720, np.float32))


class FakeScorer:
    """Scores every window 1.0 (anomalous) with model ``m``; remembers the batches it got."""

    window_specs = ()  # the scripted processor below cuts its own windows

    def __init__(self) -> None:
        self.batches: list[int] = []

    def score(self, windows: Sequence[ModelWindow]) -> ScoringResult:
        self.batches.append(len(windows))
        scores = [
            ModelScore(
                stream_id=w.stream_id,
                model="m",
                window=w.kind,
                lead=w.lead,
                time=w.start,
                score=1.0,
                threshold=0.5,
                anomalous=True,
            )
            for w in windows
        ]
        return ScoringResult(scores=scores, model_seconds={"m": 0.001})


def test_alert_transitions_pass_once_and_old_ones_are_forgotten() -> None:
    dedup = AlertDeduplicator(max_ids=2)
    assert dedup.fresh([_alert("a"), _alert("a"), _alert("a", "resolved")]) == [
        _alert("a"),
        _alert("a", "resolved"),
    ]
    assert dedup.fresh([_alert("a")]) == []
    assert dedup.fresh([_alert("b")]) == [_alert("b")]  # evicts (a, raised), the oldest
    assert dedup.fresh([_alert("a")]) == [_alert("a")]


def test_router_builds_messages_without_metrics() -> None:
    topics = TopicNames()
    router = MessageRouter(topics)
    seg = DropoutSegment("p1", "MLII", T0, T0 + 1, "flatline")
    out = router.events("p1", "mitdb/100", [seg], [_alert("a")], now=T0 + 9)
    assert [o.topic for o in out] == [topics.dropouts, topics.alerts]
    assert all(o.key == b"p1" for o in out)
    assert DropoutMessage.from_bytes(out[0].value).duration_s == 1.0
    alert = AlertMessage.from_bytes(out[1].value)
    assert (alert.record, alert.published_at) == ("mitdb/100", T0 + 9)

    frame = Frame("p1", 4, 360.0, ("MLII",), T0 + 4, np.zeros((360, 1), np.float32))
    result = ProcessorOutput(beats=[Beat("p1", 1500, T0 + 4.2, 0.8, 75.0)], samples=360)
    receipt = router.receipt(frame, result, now=T0 + 6)
    msg = BeatBatchMessage.from_bytes(receipt.value)
    assert receipt.topic == topics.beats and receipt.key == b"p1"
    assert (msg.seq, msg.sent_at, msg.latency_s, msg.samples) == (4, None, None, 360)
    assert msg.beats[0].hr_bpm == 75.0


def test_score_batcher_scores_full_batches_and_flushes_the_rest() -> None:
    scorer, results = FakeScorer(), []
    batcher = ScoreBatcher(scorer, "scores", batch_size=3, on_scored=results.append)
    assert (
        batcher.flush() == [] and scorer.batches == []
    )  # nothing pending: the scorer is not called
    assert batcher.add("p1", []) == [] and len(batcher) == 0
    assert batcher.add("p1", [_window("p1")], seq=7) == []
    out = batcher.add("p2", [_window("p2"), _window("p2", T0 + 1)], seq=3)
    assert scorer.batches == [3] and len(batcher) == 0 and len(results) == 1
    msgs = {o.key: ScoresMessage.from_bytes(o.value) for o in out}
    assert all(o.topic == "scores" for o in out)
    assert (msgs[b"p1"].seq, len(msgs[b"p1"].scores)) == (7, 1)
    assert (msgs[b"p2"].seq, len(msgs[b"p2"].scores)) == (3, 2)
    assert msgs[b"p2"].scores[1].time == T0 + 1
    batcher.add("p1", [_window("p1")])  # windows of a flush: no frame seq
    (rest,) = batcher.flush()
    assert ScoresMessage.from_bytes(rest.value).seq is None


def test_observer_counts_published_alerts_and_latencies() -> None:
    m = PipelineMetrics()
    obs = PipelineObserver(m)
    frame = Frame("p1", 0, 360.0, ("MLII",), T0, np.zeros((360, 1), np.float32), sent_at=T0 + 1)
    seg = DropoutSegment("p1", "MLII", T0, T0 + 1, "nan")
    result = ProcessorOutput(dropouts=[seg], samples=360, gap_frames=2, stage_seconds={"qrs": 1e-4})
    obs.processed(result, [_alert("a"), _alert("a", "resolved")], frame, now=T0 + 1.5)
    obs.scored(FakeScorer().score([_window("p1")]))
    obs.rejected("bad_json")

    def value(name: str, **labels: str) -> float:
        return m.registry.get_sample_value(name, labels or None) or 0.0

    assert value("ecg_samples_processed_total") == 360 and value("ecg_frames_missing_total") == 2
    assert value("ecg_dropouts_total", kind="nan") == 1
    assert value("ecg_alerts_total", kind="asystole", severity="critical") == 1  # raised only
    assert value("ecg_end_to_end_latency_seconds_count", point="alert") == 2
    assert value("ecg_end_to_end_latency_seconds_sum", point="processed") == 0.5
    assert value("ecg_frame_age_seconds_sum", point="processed") == 1.5
    assert value("ecg_model_scores_total", model="m") == 1
    assert value("ecg_model_anomalies_total", model="m") == 1
    assert value("ecg_frames_rejected_total", reason="bad_json") == 1


class ScriptedProcessor:
    """Every frame yields one dropout, the same raised alert, two windows and one beat."""

    def __init__(self, stream_id: str, fs: float, leads: tuple[str, ...]) -> None:
        self.stream_id = stream_id

    def process(self, frame: Frame) -> ProcessorOutput:
        sid, t = self.stream_id, frame.start_time
        return ProcessorOutput(
            beats=[Beat(sid, frame.seq * 360, t, None, None)],
            dropouts=[DropoutSegment(sid, "MLII", t, t + 0.5, "nan")],
            alerts=[_alert("a")],
            windows=[_window(sid, t), _window(sid, t + 0.5)],
            samples=frame.n_samples,
        )

    def flush(self) -> ProcessorOutput:
        return ProcessorOutput(alerts=[_alert("a", "resolved")])


def test_one_frame_publishes_events_then_scores_then_its_receipt() -> None:
    scorer = FakeScorer()
    pipe = FramePipeline(
        Settings(), processor_factory=ScriptedProcessor, scorer=scorer, score_batch=4
    )
    t = pipe.topics
    values = [
        encode_frame(
            stream_id="p1",
            seq=seq,
            fs=360.0,
            leads=("MLII",),
            start_time=T0 + seq,
            samples=np.zeros((360, 1), np.float32),
        )
        for seq in range(2)
    ]
    assert decode_frame(values[0]).samples.shape == (360, 1)
    first = pipe.handle(b"p1", values[0], "t", 0, 0)
    assert [o.topic for o in first] == [t.dropouts, t.alerts, t.beats]
    second = pipe.handle(b"p1", values[1], "t", 0, 1)  # same alert: not again; 4 windows: a batch
    assert [o.topic for o in second] == [t.dropouts, t.scores, t.beats]
    assert ScoresMessage.from_bytes(second[1].value).seq == 1 and scorer.batches == [4]
    assert pipe.flush_scores() == []
    flushed = pipe.flush_all()
    assert [AlertMessage.from_bytes(o.value).status for o in flushed] == ["resolved"]
    assert pipe.stream_ids == []
