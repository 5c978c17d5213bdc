"""Bad input for the alarms (issue 12), through the worker's own per-message logic with the committed
models: a stream whose only lead is noise, a 12-lead stream missing half its leads, and a sampling rate the
models do not take give no arrhythmia or model alarm from garbage, a reason in a counter, and no crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream.pipeline import FramePipeline
from stream.schemas import AlertMessage, DeadLetterMessage
from stream.settings import Settings
from stream.stages.events import ALARM_KINDS
from stream.stages.scoring import WindowScorer
from stream.testing import (
    FakeClock,
    encode_frames,
    feed_pipeline,
    frames_from_array,
    load_record,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scorer() -> WindowScorer:
    return WindowScorer(models=("cae", "beat_vae", "vae_bilstm_mha"))


def _run(scorer: WindowScorer, signal: np.ndarray, fs: float, leads: tuple[str, ...], sid: str):
    # windows scored two at a time: as promptly as the worker, which flushes its batch every 0.25 s
    pipe = FramePipeline(Settings(), scorer=scorer, clock=FakeClock(), score_batch=2)
    frames = frames_from_array(signal.astype(np.float32), fs, leads, sid)
    out = feed_pipeline(pipe, encode_frames(frames, record=sid), key=sid.encode())
    out += pipe.flush_all()
    alerts = [AlertMessage.from_bytes(o.value) for o in out if o.topic == pipe.topics.alerts]
    dead = [
        DeadLetterMessage.from_bytes(o.value) for o in out if o.topic == pipe.topics.dead_letter
    ]
    return pipe, alerts, dead


def _counter(pipe: FramePipeline, name: str, **labels: str) -> float:
    return pipe.metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_noise_only_lead_raises_no_cardiac_alarm(scorer: WindowScorer, data_dir: Path) -> None:
    import wfdb

    # muscle-artefact noise recorded without ECG, sent as the stream's only (QRS) lead
    sig, fields = wfdb.rdsamp(str(data_dir / "nstdb" / "ma"), sampto=360 * 120)
    pipe, alerts, dead = _run(scorer, sig[:, :1], float(fields["fs"]), ("MLII",), "noise-only")
    assert not alerts, [(a.kind, a.status, a.evidence) for a in alerts]  # no alarm from garbage
    assert not dead  # nothing crashed or was dead-lettered
    classified = sum(
        _counter(pipe, "ecg_beats_classified_total", label=c) for c in ("N", "S", "V", "F", "Q")
    )
    noise = {
        k: _counter(pipe, "ecg_alarms_suppressed_total", kind=k, reason="noise")
        for k in (*ALARM_KINDS, "asystole", "pause")
    }
    # the detector finds "beats" in the noise and the classifier calls most of them V; the alarms they
    # would give (VT, runs, couplets, frequent PVCs) and the asystole and pause between them are not
    # raised: the beats' signal quality says noise, and each is counted
    assert classified > 0 and noise["asystole"] > 0 and sum(noise.values()) > noise["asystole"]


def test_a_12_lead_stream_missing_half_its_leads_is_counted(
    scorer: WindowScorer, data_dir: Path
) -> None:
    rec = load_record("ludb/data/1", data_dir, seconds=10)
    keep = [i for i, ld in enumerate(rec.leads) if ld in ("I", "II", "III", "aVR", "aVL", "aVF")]
    pipe, alerts, dead = _run(
        scorer, rec.signal[:, keep], rec.fs, tuple(rec.leads[i] for i in keep), "six-leads"
    )
    assert not dead and not [a for a in alerts if a.kind == "abnormal_12lead"]
    assert (
        _counter(
            pipe, "ecg_model_streams_unsupported_total", window="leads_10s", reason="missing_leads"
        )
        == 1
    )


def test_a_rate_the_models_do_not_take_is_counted(scorer: WindowScorer, data_dir: Path) -> None:
    rec = load_record("mitdb/119", data_dir, seconds=60)
    fs = 60.0  # above the frame limit (50 Hz), below the models' lowest rate (100 Hz)
    n = int(rec.signal.shape[0] * fs / rec.fs)
    idx = np.linspace(0, rec.signal.shape[0] - 1, n).astype(int)
    pipe, alerts, dead = _run(scorer, rec.signal[idx], fs, rec.leads, "low-rate")
    assert not dead
    assert not [a for a in alerts if a.kind in ALARM_KINDS]
    for window in ("beat_720", "beat_400", "leads_10s", "vf"):
        assert (
            _counter(
                pipe, "ecg_model_streams_unsupported_total", window=window, reason="sampling_rate"
            )
            == 1
        ), window
