"""Telemetry frame encoding/validation and output message schemas (no broker)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from stream.errors import FrameValidationError
from stream.records import read_record
from stream.schemas import (
    REJECT_REASONS,
    SCHEMA_VERSION,
    AlertMessage,
    DeadLetterMessage,
    FrameLimits,
    decode_frame,
    encode_frame,
    parse_time,
)
from stream.settings import Settings
from stream.stages.events import AlertEvent, alert_id

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _frame(**over: object) -> dict:
    x = np.linspace(-1, 1, 720, dtype=np.float32).reshape(360, 2)
    msg = json.loads(
        encode_frame(stream_id="p1", seq=3, fs=360, leads=("MLII", "V1"), start_time=T0, samples=x)
    )
    msg.update(over)
    return msg


def _bytes(msg: dict) -> bytes:
    return json.dumps(msg).encode()


@pytest.mark.parametrize("encoding", ["i16le", "f32le"])
def test_round_trip_real_record(data_dir, encoding: str) -> None:
    rec = read_record(data_dir / "mitdb" / "100", 0, 360)
    data = encode_frame(
        stream_id="bed-7",
        seq=0,
        fs=rec.fs,
        leads=rec.leads,
        start_time=T0,
        samples=rec.signal,
        record="mitdb/100",
        encoding=encoding,
        sent_at=T0 + 1,
    )
    frame = decode_frame(data)
    assert (
        frame.stream_id == "bed-7"
        and frame.leads == rec.leads == ("MLII", "V5")
        and frame.fs == 360.0
    )
    assert frame.samples.shape == (360, 2) and frame.samples.dtype == np.float32
    # MIT-BIH has 5 uV resolution: int16 at 1 uV per unit is lossless
    np.testing.assert_allclose(
        frame.samples, rec.signal, atol=1e-6 if encoding == "f32le" else 5e-4
    )
    assert frame.start_time == T0 and frame.end_time == T0 + 1.0 and frame.sent_at == T0 + 1
    if encoding == "i16le":
        assert len(data) < 2200  # compact: ~1.9 KB per second of 2-lead 360 Hz signal


def test_nan_samples_survive_int16() -> None:
    x = np.ones((100, 1), dtype=np.float32)
    x[10:20] = np.nan
    frame = decode_frame(
        encode_frame(stream_id="s", seq=0, fs=100, leads=("II",), start_time=T0, samples=x)
    )
    assert np.isnan(frame.samples[10:20]).all() and np.isfinite(frame.samples[:10]).all()


def test_start_time_is_tz_aware_utc() -> None:
    msg = _frame()
    assert msg["start_time"].endswith("+00:00")
    assert parse_time(msg["start_time"]) == T0
    with pytest.raises(FrameValidationError) as err:
        decode_frame(_bytes(_frame(start_time="2026-01-01T00:00:00")))
    assert err.value.reason == "bad_value"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe not json", "bad_json"),
        (b"[1, 2]", "bad_json"),
        (_bytes(_frame(v=SCHEMA_VERSION + 1)), "schema_version"),
        (_bytes({k: v for k, v in _frame().items() if k != "v"}), "schema_version"),
        (_bytes({k: v for k, v in _frame().items() if k != "leads"}), "bad_shape"),
        (_bytes(_frame(n_samples=359)), "bad_shape"),
        (_bytes(_frame(leads=["MLII", "MLII"])), "bad_shape"),
        (_bytes(_frame(samples="!!!")), "bad_json"),
        (_bytes(_frame(leads=["MLII", "V7"])), "unknown_lead"),
        (_bytes(_frame(fs=10.0)), "sampling_rate"),
        (_bytes(_frame(fs=50_000.0)), "sampling_rate"),
        (_bytes(_frame(seq=-1)), "bad_value"),
        (_bytes(_frame(stream_id="")), "bad_value"),
        (
            _bytes(
                _frame(samples=base64.b64encode(np.full(720, -32768, "<i2").tobytes()).decode())
            ),
            "nan_only",
        ),
        (
            _bytes(
                _frame(
                    encoding="f32le",
                    samples=base64.b64encode(np.full(720, np.nan, "<f4").tobytes()).decode(),
                )
            ),
            "nan_only",
        ),
    ],
)
def test_bad_frames_are_rejected_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(FrameValidationError) as err:
        decode_frame(data)
    assert err.value.reason == reason
    assert reason in REJECT_REASONS


def test_oversized_uses_settings_limit() -> None:
    limits = FrameLimits.from_settings(Settings(max_frame_bytes=1000))
    with pytest.raises(FrameValidationError) as err:
        decode_frame(_bytes(_frame()), limits)
    assert err.value.reason == "oversized"


def test_alert_and_dead_letter_messages_round_trip() -> None:
    ev = AlertEvent(
        "a1",
        "p1",
        "asystole",
        "critical",
        "raised",
        T0,
        None,
        {"flat_s": np.float32(4.5), "leads": ("MLII",)},
    )
    alert = AlertMessage.from_event(ev, record="mitdb/100")
    back = AlertMessage.from_bytes(alert.to_bytes())
    assert (
        back == alert
        and back.start == "2026-01-01T00:00:00+00:00"
        and back.evidence["flat_s"] == 4.5
    )
    dl = DeadLetterMessage.build(
        reason="bad_json",
        detail="x",
        payload=b"\x00\x01",
        key=b"p1",
        topic="t",
        partition=2,
        offset=7,
        now=T0,
    )
    back_dl = DeadLetterMessage.from_bytes(dl.to_bytes())
    assert (
        base64.b64decode(back_dl.payload_b64) == b"\x00\x01"
        and back_dl.offset == 7
        and back_dl.key == "p1"
    )


def test_alert_message_bytes_are_pinned() -> None:
    """The alerts topic's JSON, byte for byte (AlertMessage.from_event is the one alert serialiser)."""
    ev = AlertEvent(
        alert_id("bed-7", "bradycardia", T0 + 12.5),
        "bed-7",
        "bradycardia",
        "warning",
        "resolved",
        T0 + 12.5,
        T0 + 73.25,
        {
            "hr_bpm": np.float32(38.5),
            "beats": np.int64(7),
            "rr_s": np.array([1.5, np.nan]),
            "lead": ("MLII",),
            "inf": float("inf"),
        },
        T0 + 73.5,
    )
    assert AlertMessage.from_event(ev, record="mitdb/106", published_at=T0 + 74.0).to_bytes() == (
        b'{"v":1,"id":"1eb00e25abc688d2dce0","stream_id":"bed-7","kind":"bradycardia",'
        b'"severity":"warning","status":"resolved","start":"2026-01-01T00:00:12.500000+00:00",'
        b'"start_ts":1767225612.5,"end":"2026-01-01T00:01:13.250000+00:00","end_ts":1767225673.25,'
        b'"evidence":{"hr_bpm":38.5,"beats":7,"rr_s":[1.5,null],"lead":["MLII"],"inf":null},'
        b'"record":"mitdb/106","at_ts":1767225673.5,"published_at":1767225674.0}'
    )
    raised = AlertEvent("a1", "p1", "asystole", "critical", "raised", T0, None)
    assert AlertMessage.from_event(raised).to_bytes() == (
        b'{"v":1,"id":"a1","stream_id":"p1","kind":"asystole","severity":"critical",'
        b'"status":"raised","start":"2026-01-01T00:00:00+00:00","start_ts":1767225600.0,'
        b'"end":null,"end_ts":null,"evidence":{},"record":"","at_ts":null,"published_at":null}'
    )


def test_deeply_nested_json_is_a_bad_json_reject_not_a_crash():
    from stream.errors import FrameValidationError
    from stream.schemas import decode_frame

    nested = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(FrameValidationError) as exc:
        decode_frame(nested)
    assert exc.value.reason == "bad_json"
    deep_obj = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    with pytest.raises(FrameValidationError):
        decode_frame(deep_obj)


def test_dead_letter_record_is_bounded_and_keeps_length_and_hash():
    import base64
    import hashlib

    from stream.schemas import DEAD_LETTER_PAYLOAD_MAX, DeadLetterMessage

    payload = b"x" * 3_000_000
    msg = DeadLetterMessage.build(
        reason="oversized",
        detail="d" * 5000,
        payload=payload,
        key=b"k" * 10_000,
        topic="t",
        partition=0,
        offset=1,
        now=1.0,
    )
    raw = msg.to_bytes()
    assert len(raw) < 2 * DEAD_LETTER_PAYLOAD_MAX
    back = DeadLetterMessage.from_bytes(raw)
    assert back.payload_bytes == len(payload) and back.payload_truncated
    assert back.payload_sha256 == hashlib.sha256(payload).hexdigest()
    assert base64.b64decode(back.payload_b64) == payload[:DEAD_LETTER_PAYLOAD_MAX]


# ---------------------------------------------------------------------------------- declared ADC range
def test_adc_range_round_trips_into_the_frame() -> None:
    frame = decode_frame(_bytes(_frame(adc_range_mv=[[-5.12, 5.115], [-10.24, 10.235]])))
    assert frame.adc_range_mv == ((-5.12, 5.115), (-10.24, 10.235))
    assert "adc_range_mv" not in frame.extra
    assert decode_frame(_bytes(_frame())).adc_range_mv is None


def test_encode_frame_sends_the_range() -> None:
    x = np.zeros((360, 2), np.float32) - 8.0  # a DC offset well inside the rails
    data = encode_frame(
        stream_id="p", seq=0, fs=360.0, leads=("MLII", "V1"), start_time=T0, samples=x,
        adc_range_mv=[(-10.24, 10.235)] * 2,
    )  # fmt: skip
    assert decode_frame(data).adc_range_mv == ((-10.24, 10.235),) * 2


@pytest.mark.parametrize(
    "adc_range",
    [
        [[-5.0, 5.0]],  # one pair for two leads
        [[-5.0, 5.0], [-5.0, 5.0], [-5.0, 5.0]],
        [[5.0, -5.0], [-5.0, 5.0]],  # lo > hi
        [[1.0, 1.0], [-5.0, 5.0]],  # lo == hi
        [[-5.0], [-5.0, 5.0]],  # not a pair
        [[-5.0, 5.0, 6.0], [-5.0, 5.0]],
        [[float("nan"), 5.0], [-5.0, 5.0]],
        [[-5.0, float("inf")], [-5.0, 5.0]],
    ],
)
def test_malformed_adc_range_is_a_bad_value_reject(adc_range: list) -> None:
    with pytest.raises(FrameValidationError) as err:
        decode_frame(_bytes(_frame(adc_range_mv=adc_range)))
    assert err.value.reason == "bad_value"
    assert "adc_range_mv" in err.value.detail


@pytest.mark.parametrize("encoding", ["i16le", "f32le"])
def test_samples_beyond_the_declared_range_are_rejected(encoding: str) -> None:
    x = np.zeros((360, 2), np.float32)
    x[100, 1] = 6.0  # 0.885 mV above the declared rail of V1
    kw = dict(stream_id="p", seq=0, fs=360.0, leads=("MLII", "V1"), start_time=T0)
    with pytest.raises(FrameValidationError) as err:
        decode_frame(
            encode_frame(samples=x, encoding=encoding, adc_range_mv=[(-5.12, 5.115)] * 2, **kw)
        )
    assert err.value.reason == "bad_value"
    assert "V1" in err.value.detail and "beyond its declared adc_range_mv" in err.value.detail
    # at the rail (and within the tolerance beyond it) is accepted: that is what saturation looks like
    x[100, 1] = 5.115 + 0.04
    frame = decode_frame(
        encode_frame(samples=x, encoding=encoding, adc_range_mv=[(-5.12, 5.115)] * 2, **kw)
    )
    assert frame.adc_range_mv is not None
