"""Every topic and message schema of ecg-monitor, in one place.

All messages are UTF-8 JSON objects carrying ``"v"`` (schema version). Keys are the stream id (UTF-8), so one
patient stream always lands on one partition and is processed in order. Times are rendered twice: an ISO-8601
UTC string (``start``) and the float seconds since the Unix epoch (``start_ts``) that the stages use.

Telemetry frame (topic ``ecg.telemetry.v1``, version 1)::

    {"v": 1, "stream_id": "p0001", "record": "mitdb/100", "leads": ["MLII", "V1"], "fs": 360.0,
     "seq": 12, "start_time": "2026-01-01T00:00:12+00:00", "start_ts": 1767225612.0, "sent_at": 1767225613.01,
     "units": ["mV", "mV"], "n_samples": 360, "encoding": "i16le", "gain": [1000.0, 1000.0],
     "samples": "<base64>"}

``samples`` is base64 of the sample-major interleaved array (``s0/lead0, s0/lead1, s1/lead0 ...``) in one of:

* ``i16le`` - little-endian int16; physical value = int / gain[lead]; ``-32768`` marks a missing sample (NaN).
  With gain 1000 (1 uV per unit, range +-32.767 mV) this is lossless for MIT-BIH (5 uV resolution) and
  1.9 KB per second of 2-lead 360 Hz signal.
* ``f32le`` - little-endian float32 in ``units``; NaN marks a missing sample (``gain`` ignored).

Optional ``adc_range_mv`` (``[[lo, hi], ...]``, one pair per lead, finite, ``lo < hi``, in ``units``) declares
each lead's representable range, i.e. the ADC rails (MIT-BIH: ``[-5.12, 5.115]``); the dropout stage judges
saturation against it (without it, against the stream's running min/max). A malformed range, or samples
beyond it by more than :data:`ADC_RANGE_TOL_MV` (plus the i16le step ``1/gain``), is rejected ``bad_value``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.runtime.protocol import ScoreFields
from stream.errors import FrameValidationError
from stream.records import KNOWN_LEADS
from stream.stages.events import ALERT_KINDS, DROPOUT_KINDS, AlertEvent, DropoutSegment, jsonable
from stream.stages.frame import Frame

if TYPE_CHECKING:
    from stream.settings import Settings

#: Version of every message schema below; a frame with another version is dead-lettered.
SCHEMA_VERSION = 1
ENCODINGS: tuple[str, ...] = ("i16le", "f32le")
#: int16 value that encodes a missing (NaN) sample.
I16_MISSING = -32768
DEFAULT_GAIN = 1000.0
#: Largest magnitude (mV) i16le carries at the default gain.
I16_MAX_MV = 32767 / DEFAULT_GAIN
#: How far (mV) a sample may lie beyond its frame's declared ``adc_range_mv`` before the frame is rejected.
ADC_RANGE_TOL_MV = 0.05

#: Largest ``seq`` accepted (a signed 64-bit integer, as in Kafka clients of other languages).
MAX_SEQ = 2**63 - 1

#: Bounded set of dead-letter reasons (the ``reason`` label of ``ecg_frames_rejected_total``).
REJECT_REASONS: tuple[str, ...] = (
    "oversized",  # message larger than Settings.max_frame_bytes
    "bad_json",  # not UTF-8 JSON object, or samples not valid base64
    "schema_version",  # "v" missing or not SCHEMA_VERSION
    "bad_shape",  # missing/mistyped fields, sample count != n_samples x leads, duplicate leads
    "bad_value",  # empty stream id, negative seq, naive or unparsable start time, bad gain/encoding,
    # bad adc_range_mv or samples beyond it
    "nan_only",  # every sample missing
    "unknown_lead",  # a lead name outside stream.records.KNOWN_LEADS
    "sampling_rate",  # fs outside [Settings.min_fs, Settings.max_fs]
    "sequence_backwards",  # seq lower than the last one processed for the stream (checked by the worker)
    "sequence_jump",  # seq or start time far ahead of the stream's, never confirmed by the next frames
    "processing_error",  # the stages raised on a valid frame (a bug; the stream's state is restarted)
    "lead_mismatch",  # raised by the stages: samples do not match the stream's leads
    "fs_mismatch",  # raised by the stages: sampling rate differs from the stream's
)


# ---------------------------------------------------------------------------------------------- times
def iso(ts: float | None) -> str | None:
    """Float epoch seconds -> ISO-8601 UTC string (None stays None)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def parse_time(value: str) -> float:
    """ISO-8601 string with an explicit offset -> epoch seconds; naive times raise ``ValueError``."""
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError(f"time {value!r} has no UTC offset")
    return dt.timestamp()


# ------------------------------------------------------------------------------------- telemetry frame
@dataclass(frozen=True)
class FrameLimits:
    """Validation limits of incoming frames (from :class:`~stream.settings.Settings`)."""

    max_bytes: int = 1_000_000
    min_fs: float = 50.0
    max_fs: float = 2000.0

    @classmethod
    def from_settings(cls, settings: Settings) -> FrameLimits:
        return cls(settings.max_frame_bytes, settings.min_fs, settings.max_fs)


def _frame_schema_extra(schema: dict[str, Any]) -> None:
    """JSON Schema of a telemetry frame: ``start_ts`` is sent (informational; ``start_time`` is parsed)."""
    schema["properties"]["start_ts"] = {
        "type": "number",
        "title": "Start Ts",
        "description": "Epoch seconds of start_time (informational: decoders parse start_time).",
    }


class _FrameEnvelope(BaseModel):
    """Topic ``telemetry``: one frame (default 1 s) of one stream's multi-lead ECG, as a bedside gateway or
    the replay publishes it. Other keys are kept as the frame's ``extra``. ``decode_frame`` checks more than
    this schema can say (sample bytes = n_samples x leads x width, ``fs`` within ECG_MIN_FS..ECG_MAX_FS,
    gains positive) and dead-letters what fails, with a reason."""

    model_config = ConfigDict(
        extra="allow", strict=False, title="TelemetryFrame", json_schema_extra=_frame_schema_extra
    )

    v: int = Field(
        description="Schema version; any other value is dead-lettered (schema_version).",
        json_schema_extra={"const": SCHEMA_VERSION},
    )
    stream_id: str = Field(
        description="Patient stream id (1-128 characters); also the message key.",
        json_schema_extra={"minLength": 1, "maxLength": 128},
    )
    record: str = Field("", description="Source record, e.g. mitdb/100 (informational).")
    leads: list[str] = Field(
        description="Lead names, distinct, in the order of the interleaved samples.",
        json_schema_extra={
            "minItems": 1,
            "uniqueItems": True,
            "items": {"type": "string", "enum": list(sorted(KNOWN_LEADS))},
        },
    )
    fs: float = Field(description="Sampling rate, Hz (50-2000 by default: ECG_MIN_FS, ECG_MAX_FS).")
    seq: int = Field(
        description="Frame sequence number of the stream (0, 1, 2 ...; a gap is reported as missing_frames).",
        json_schema_extra={"minimum": 0, "maximum": MAX_SEQ},
    )
    start_time: str = Field(
        description="ISO-8601 time of the frame's first sample, with an explicit UTC offset (stream time).",
        json_schema_extra={"format": "date-time"},
    )
    sent_at: float | None = Field(
        None,
        description="Epoch seconds (wall clock) when the frame was published; end-to-end latency starts here.",
    )
    units: list[str] = Field(
        default_factory=list, description="Physical unit per lead (default mV for every lead)."
    )
    n_samples: int = Field(
        description="Samples per lead in this frame.", json_schema_extra={"minimum": 1}
    )
    encoding: str = Field(
        "i16le",
        description="Encoding of samples: i16le (int16 / gain, -32768 = missing) or f32le (float32, NaN = missing).",
        json_schema_extra={"enum": list(ENCODINGS)},
    )
    gain: list[float] | None = Field(
        None,
        description="i16le only: units per mV, one per lead (default 1000 = 1 uV per unit).",
    )
    adc_range_mv: list[list[float]] | None = Field(
        None,
        description="Optional ADC range per lead, [[lo, hi], ...] in units (lo < hi, finite): the rails "
        "saturation is judged against (e.g. MIT-BIH [-5.12, 5.115]); samples beyond it are rejected.",
        json_schema_extra={
            "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}
        },
    )
    samples: str = Field(
        description="Base64 of the sample-major interleaved array (s0/lead0, s0/lead1, s1/lead0 ...).",
        json_schema_extra={"contentEncoding": "base64"},
    )


_ENVELOPE_FIELDS = frozenset([*_FrameEnvelope.model_fields, "start_ts"])


def encode_samples(
    samples: np.ndarray, encoding: str = "i16le", gain: float | np.ndarray = DEFAULT_GAIN
) -> str:
    """Encode float [n, leads] samples to the base64 text of ``encoding`` (see module docs)."""
    x = np.asarray(samples, dtype=np.float32)
    if encoding == "f32le":
        raw = x.astype("<f4", copy=False).tobytes()
    elif encoding == "i16le":
        scaled = x * np.asarray(gain, dtype=np.float32)
        missing = ~np.isfinite(scaled)
        q = np.rint(np.clip(np.nan_to_num(scaled, nan=0.0), -32767, 32767)).astype("<i2")
        q[missing] = I16_MISSING
        raw = q.tobytes()
    else:
        raise ValueError(f"unknown encoding {encoding!r}; use one of {ENCODINGS}")
    return base64.b64encode(raw).decode("ascii")


def encode_frame(
    *,
    stream_id: str,
    seq: int,
    fs: float,
    leads: tuple[str, ...] | list[str],
    start_time: float,
    samples: np.ndarray,
    record: str = "",
    units: tuple[str, ...] | list[str] = (),
    sent_at: float | None = None,
    encoding: str = "i16le",
    gain: float = DEFAULT_GAIN,
    adc_range_mv: Sequence[Sequence[float]] | None = None,
) -> bytes:
    """Serialize one telemetry frame (schema version :data:`SCHEMA_VERSION`) to JSON bytes."""
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    msg = {
        "v": SCHEMA_VERSION,
        "stream_id": stream_id,
        "record": record,
        "leads": list(leads),
        "fs": float(fs),
        "seq": int(seq),
        "start_time": iso(start_time),
        "start_ts": float(start_time),
        "sent_at": sent_at,
        "units": list(units) or ["mV"] * x.shape[1],
        "n_samples": int(x.shape[0]),
        "encoding": encoding,
        "gain": [float(gain)] * x.shape[1] if encoding == "i16le" else None,
        "samples": encode_samples(x, encoding, gain),
    }
    if adc_range_mv is not None:
        msg["adc_range_mv"] = [[float(lo), float(hi)] for lo, hi in adc_range_mv]
    return json.dumps(msg, separators=(",", ":")).encode()


def _reject(reason: str, detail: str) -> FrameValidationError:
    return FrameValidationError(reason, detail)


def decode_frame(data: bytes | str | None, limits: FrameLimits | None = None) -> Frame:
    """Parse and validate one telemetry frame; raise :class:`FrameValidationError` with a reason in
    :data:`REJECT_REASONS` for anything a processor must not see (sequence order is checked per stream
    by the worker)."""
    limits = limits or FrameLimits()
    if data is None:
        raise _reject("bad_json", "empty message value")
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if len(raw) > limits.max_bytes:
        raise _reject("oversized", f"{len(raw)} bytes > max_frame_bytes={limits.max_bytes}")
    try:
        obj = json.loads(
            raw.decode("utf-8-sig")
        )  # UTF-8 only (json.loads(bytes) would take UTF-16/32)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _reject("bad_json", str(exc)[:200]) from None
    except RecursionError:  # deeply nested JSON: a poison message, never a crash of the agent
        raise _reject("bad_json", "JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise _reject("bad_json", f"expected a JSON object, got {type(obj).__name__}")
    if obj.get("v") != SCHEMA_VERSION:
        raise _reject("schema_version", f"v={obj.get('v')!r}, expected {SCHEMA_VERSION}")
    try:
        env = _FrameEnvelope.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise _reject("bad_shape", f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    if not env.stream_id.strip() or len(env.stream_id) > 128:
        raise _reject("bad_value", "stream_id must be 1-128 characters")
    if not 0 <= env.seq <= MAX_SEQ:
        raise _reject("bad_value", f"seq={str(env.seq)[:40]} outside [0, 2**63 - 1]")
    try:
        start = parse_time(env.start_time)
    except ValueError as exc:
        raise _reject("bad_value", f"start_time: {exc}") from None
    n_leads = len(env.leads)
    if n_leads == 0 or len(set(env.leads)) != n_leads:
        raise _reject("bad_shape", f"leads must be non-empty and distinct, got {env.leads}")
    unknown = [name for name in env.leads if name not in KNOWN_LEADS]
    if unknown:
        raise _reject("unknown_lead", f"{unknown} not in {sorted(KNOWN_LEADS)}")
    if not (math.isfinite(env.fs) and limits.min_fs <= env.fs <= limits.max_fs):
        raise _reject("sampling_rate", f"fs={env.fs} outside [{limits.min_fs}, {limits.max_fs}] Hz")
    if env.n_samples <= 0:
        raise _reject("bad_shape", f"n_samples={env.n_samples}")
    try:
        payload = base64.b64decode(env.samples, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _reject("bad_json", f"samples are not base64: {exc}") from None
    if env.encoding == "i16le":
        width = 2
    elif env.encoding == "f32le":
        width = 4
    else:
        raise _reject("bad_value", f"encoding {env.encoding!r} not in {ENCODINGS}")
    expected = env.n_samples * n_leads * width
    if len(payload) != expected:
        raise _reject(
            "bad_shape",
            f"{len(payload)} sample bytes, expected {env.n_samples}x{n_leads}x{width}={expected}",
        )
    # the sample arrays are checked with as few numpy passes as possible: this runs once per frame
    if env.encoding == "i16le":
        q = np.frombuffer(payload, dtype="<i2").reshape(env.n_samples, n_leads)
        gains = env.gain if env.gain is not None else [DEFAULT_GAIN] * n_leads
        if len(gains) != n_leads or not all(math.isfinite(g) and g > 0 for g in gains):
            raise _reject("bad_value", f"gain must be {n_leads} positive numbers, got {env.gain}")
        gain = np.asarray(gains, dtype=np.float32)
        qt = np.ascontiguousarray(q.T)  # [leads, n]: per-lead extremes over contiguous rows
        missing = qt == I16_MISSING
        any_missing = bool(missing.any())
        if any_missing and missing.all():
            raise _reject("nan_only", f"all {q.size} samples missing")
        x = q.astype(np.float32)
        x /= gain
        if any_missing:
            x[missing.T] = np.nan
            # the lowest int16 is the missing marker: it never counts as a lead's minimum
            lows = np.where(missing, np.int16(32767), qt).min(axis=1).astype(np.float32) / gain
        else:
            lows = qt.min(axis=1).astype(np.float32) / gain
        highs = qt.max(axis=1).astype(np.float32) / gain
        if any_missing:
            # a lead with every sample missing has no extreme (never beyond its range)
            gone = missing.all(axis=1)
            highs[gone] = -np.inf
            lows[gone] = np.inf
    else:
        x = np.frombuffer(payload, dtype="<f4").reshape(env.n_samples, n_leads).astype(np.float32)
        bad = ~np.isfinite(x)
        if bad.any():
            if bad.all():
                raise _reject("nan_only", f"all {x.size} samples missing")
            x[bad] = np.nan
            lows = np.where(bad, np.float32(np.inf), x).min(axis=0)
            highs = np.where(bad, np.float32(-np.inf), x).max(axis=0)
        else:
            xt = np.ascontiguousarray(x.T)
            lows, highs = xt.min(axis=1), xt.max(axis=1)
    if env.units and len(env.units) != n_leads:
        raise _reject("bad_shape", f"{len(env.units)} units for {n_leads} leads")
    adc_range = None
    if env.adc_range_mv is not None:
        # a handful of numbers: checked in Python (numpy's per-call cost is larger than the work)
        pairs = env.adc_range_mv
        if len(pairs) != n_leads or not all(
            len(p) == 2 and math.isfinite(p[0]) and math.isfinite(p[1]) and p[0] < p[1]
            for p in pairs
        ):
            raise _reject(
                "bad_value",
                f"adc_range_mv must be {n_leads} finite [lo, hi] pairs with lo < hi, "
                f"got {str(env.adc_range_mv)[:200]}",
            )
        if env.encoding == "i16le":
            tols = [ADC_RANGE_TOL_MV + 1.0 / g for g in gain.tolist()]
        else:
            tols = [ADC_RANGE_TOL_MV] * n_leads
        worst = [
            max(p[0] - lo, hi - p[1])
            for p, lo, hi in zip(pairs, lows.tolist(), highs.tolist(), strict=True)
        ]
        excess = [w - t for w, t in zip(worst, tols, strict=True)]
        li = max(range(n_leads), key=excess.__getitem__)
        if excess[li] > 0:
            raise _reject(
                "bad_value",
                f"lead {env.leads[li]}: samples {worst[li]:.3f} mV beyond its declared "
                f"adc_range_mv [{pairs[li][0]:g}, {pairs[li][1]:g}] (tolerance {max(tols):.3f} mV)",
            )
        adc_range = tuple((float(lo), float(hi)) for lo, hi in pairs)
    extra = {k: v for k, v in obj.items() if k not in _ENVELOPE_FIELDS}
    return Frame(
        stream_id=env.stream_id,
        seq=env.seq,
        fs=env.fs,
        leads=tuple(env.leads),
        start_time=start,
        samples=x,
        record=env.record,
        units=tuple(env.units) or ("mV",) * n_leads,
        sent_at=env.sent_at,
        extra=extra,
        adc_range_mv=adc_range,
    )


# -------------------------------------------------------------------------------------- output messages
class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = Field(
        SCHEMA_VERSION,
        description="Schema version of the message.",
        json_schema_extra={"const": SCHEMA_VERSION},
    )

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Any:
        return cls.model_validate_json(data)


class _Evidence(BaseModel):
    """What every ``resolved`` alert adds to the evidence of its ``raised`` message."""

    duration_s: float | None = Field(
        None,
        description="Resolved only (every resolved message has it): seconds from the episode start "
        "to its end.",
    )
    closed_by: Literal["end_of_stream", "covered"] | None = Field(
        None,
        description="Resolved only, when the episode was closed by the end of its stream (end_of_stream: "
        "worker shutdown, partition revoked, stream idle) or by a higher-priority alarm that explains it "
        "(covered: VF > VT > ventricular_run > bigeminy/trigeminy/couplet/frequent_pvcs) rather than by "
        "the signal.",
    )
    covered_by: str | None = Field(
        None, description="Resolved with closed_by=covered only: the kind of the covering alarm."
    )


class AsystoleEvidence(_Evidence):
    """``evidence`` of an ``asystole`` alert (critical): no beat for 4 s of usable signal on the QRS lead."""

    no_beat_s: float = Field(description="Seconds of usable signal without a beat when raised.")
    last_beat_time: float | None = Field(
        description="Epoch seconds (stream time) of the last beat before the pause; null when the stream "
        "had no beat yet."
    )
    resumed_beat_time: float | None = Field(
        None,
        description="Resolved only: epoch seconds (stream time) of the beat that ended the pause.",
    )


class HeartRateEvidence(_Evidence):
    """``evidence`` of a ``bradycardia`` or ``tachycardia`` alert (warning): heart rate below 40 / above
    150 bpm at every beat for 10 s (default thresholds, ``stream.stages.rules.RuleConfig``)."""

    hr_bpm: float = Field(description="Heart rate (median of the last 8 RR), bpm, when raised.")
    sustained_s: float = Field(description="Seconds the rate had been out of limits when raised.")
    hr_bpm_at_resolution: float | None = Field(
        None,
        description="Resolved only: heart rate, bpm, at the beat that resolved the episode "
        "(back inside the limits by 5 bpm for 5 s).",
    )


class SignalLossEvidence(_Evidence):
    """``evidence`` of a ``signal_loss`` alert (warning): every lead in a dropout for 5 s."""

    lost_s: float = Field(description="Seconds every lead had been in a dropout when raised.")


class PauseEvidence(_Evidence):
    """``evidence`` of a ``pause`` alert: no beat for 2.5 s of usable signal on the QRS lead (warning,
    raised and resolved by the beat that ends it), critical in real time from 3 s (default thresholds,
    ``stream.stages.rules.RuleConfig``)."""

    pause_s: float = Field(
        description="Seconds of usable signal without a beat: when raised (critical, in real time) or "
        "the whole gap (warning, and every resolved message)."
    )
    last_beat_time: float | None = Field(
        description="Epoch seconds (stream time) of the last beat before the pause."
    )
    resumed_beat_time: float | None = Field(
        None,
        description="Resolved only: epoch seconds (stream time) of the beat that ended the pause.",
    )


class VentricularRunEvidence(_Evidence):
    """``evidence`` of a ``ventricular_tachycardia`` (critical: 5+ consecutive V beats at >= 100 bpm) or
    ``ventricular_run`` alert (warning: 3+ consecutive V beats that are not VT), default thresholds of
    ``stream.stages.alarms.AlarmConfig``; the run is the one that raised the episode."""

    beats: int = Field(description="Consecutive V beats in the run when raised.")
    rate_bpm: float = Field(description="Rate of the run: 60 / median RR inside the run, bpm.")
    vt_rate_bpm: float = Field(description="VT rate threshold (AlarmConfig.vt_rate_bpm), bpm.")
    vt_min_beats: int = Field(description="V beats needed for VT (AlarmConfig.vt_min_beats).")
    beat_times: list[float] = Field(
        description="Epoch seconds (stream time) of the run's V beats (the last 32 at most)."
    )
    median_sqi: float = Field(description="Median beat signal quality (0..1) of the run's beats.")
    reason: Literal["rate_below_vt", "shorter_than_vt"] | None = Field(
        None, description="ventricular_run only: why the run is not VT."
    )
    occurrences: int | None = Field(
        None, description="Resolved only: beats (VT) or runs (ventricular_run) seen in the episode."
    )


class CoupletEvidence(_Evidence):
    """``evidence`` of a ``pvc_couplet`` alert (warning): exactly two consecutive V beats; the episode
    lasts while couplets recur within 10 s (AlarmConfig.ventricular_resolve_s)."""

    beat_times: list[float] = Field(
        description="Epoch seconds (stream time) of the couplet that raised the episode."
    )
    rate_bpm: float = Field(description="Coupling rate of the two V beats: 60 / their RR, bpm.")
    median_sqi: float = Field(description="Median beat signal quality (0..1) of the two beats.")
    occurrences: int | None = Field(None, description="Resolved only: couplets in the episode.")


class PatternEvidence(_Evidence):
    """``evidence`` of a ``ventricular_bigeminy`` (every other beat V) or ``ventricular_trigeminy``
    (every third beat V) alert (warning): 4 consecutive cycles by default."""

    cycles: int = Field(description="Consecutive cycles of the pattern when raised.")
    min_cycles: int = Field(description="Cycles needed (AlarmConfig.*_min_cycles).")
    v_times: list[float] = Field(
        description="Epoch seconds (stream time) of the V beats of the last min_cycles cycles."
    )


class FrequentPvcEvidence(_Evidence):
    """``evidence`` of a ``frequent_pvcs`` alert (warning): more than 10 V beats in the trailing 60 s."""

    pvcs_per_min: int = Field(description="V beats in the trailing 60 s when raised.")
    threshold_per_min: float = Field(description="AlarmConfig.pvc_per_min, PVCs per minute.")
    first_pvc_time: float = Field(description="Epoch seconds of the first V beat in that minute.")
    last_pvc_time: float = Field(description="Epoch seconds of the last V beat in that minute.")


class AtrialFibrillationEvidence(_Evidence):
    """``evidence`` of an ``atrial_fibrillation`` alert (warning): the last 64 RR intervals (those next
    to V, F or Q beats excluded) irregular by all four statistics for 30 s (AlarmConfig defaults)."""

    nrmssd: float = Field(description="RMSSD / mean RR of the window (outliers trimmed), unitless.")
    nrmssd_threshold: float = Field(description="AF needs nrmssd above this.")
    shannon_entropy: float = Field(
        description="Shannon entropy of the 16-bin RR histogram / log 16, 0..1."
    )
    shannon_threshold: float = Field(description="AF needs shannon_entropy above this.")
    tpr: float = Field(description="Turning-point ratio of the RR series, 0..1.")
    tpr_range: list[float] = Field(description="[low, high]: AF needs tpr inside.")
    cosen: float | None = Field(
        description="Coefficient of sample entropy (Lake & Moorman 2011); null: no template match."
    )
    cosen_threshold: float = Field(description="AF needs cosen above this.")
    n_rr: int = Field(description="RR intervals in the window.")
    hr_bpm: float = Field(description="60 / mean RR of the window, bpm.")
    sustained_s: float = Field(description="Seconds the window had been AF-like when raised.")


class VentricularFibrillationEvidence(_Evidence):
    """``evidence`` of a ``ventricular_fibrillation`` alert (critical): 3 of the last 5 one-second
    decisions of the VF/flutter detector (``stream.stages.vf``) are VF."""

    vf_decisions: int = Field(description="VF decisions among the last decisions when raised.")
    decisions: int = Field(description="Decisions in that window.")
    raise_k: int = Field(description="VF decisions needed (AlarmConfig.vf_raise_k).")
    index: float = Field(
        description="Spectral concentration around the dominant frequency of the raising decision, 0..1."
    )
    dominant_hz: float = Field(description="Dominant frequency of the raising decision, Hz.")
    sustained_s: float = Field(
        description="Seconds from the start of the first VF decision's window to the raise."
    )


class TwelveLeadEvidence(_Evidence):
    """``evidence`` of an ``abnormal_12lead`` alert (advisory): 3 consecutive anomalous windows of the
    configured 12-lead model (AlarmConfig.twelve_lead_model, default vae_bilstm, the best on the
    complete PTB-XL fold 9), with the attention model's (vae_bilstm_mha) attention as evidence."""

    model: str = Field(description="The 12-lead model whose windows raised the alert.")
    score: float = Field(description="Anomaly score of the raising window.")
    threshold: float | None = Field(description="The model card's threshold on score.")
    windows: int = Field(description="Consecutive anomalous windows when raised.")
    top_lead_scores: list[list[Any]] | None = Field(
        description="[[lead, score], ...]: the 3 leads with the highest lead_scores; null if absent."
    )
    top_lead_attention: list[list[Any]] | None = Field(
        description="[[lead, weight], ...]: the 3 leads with the highest attention (this model's or the "
        "vae_bilstm_mha score of the same window); null if absent."
    )
    attention_peak: float | None = Field(
        description="Epoch seconds where the temporal attention peaks; null if absent."
    )
    window_time: float = Field(description="Epoch seconds of the raising window's first sample.")
    recovered_by: str | None = Field(
        None,
        description="The recovery model that rebuilt masked leads of the raising window (lead_recon); "
        "null when every lead was measured.",
    )
    poor_quality_leads: list[list[Any]] | None = Field(
        None,
        description="[[lead, reason], ...]: leads of unusable signal quality (noise, baseline, clipped, "
        "flat, no_agreement) for at least half of the raising window; null if none. The finding may "
        "then be the signal's, not the heart's.",
    )
    score_at_resolution: float | None = Field(
        None, description="Resolved only: score of the window that resolved the episode."
    )


class MorphologyEvidence(_Evidence):
    """``evidence`` of a ``morphology_change`` alert (advisory): the rolling mean of the beat-VAE
    embeddings of the last 60 beats more than 1 baseline SD (RMS over latent dimensions) away from the
    patient's own baseline (first 5 minutes) for 30 s."""

    distance: float = Field(
        description="RMS over latent dims of (rolling mean - baseline mean) / baseline SD, when raised."
    )
    threshold: float = Field(description="AlarmConfig.morph_threshold, baseline SDs.")
    baseline_beats: int = Field(description="Embeddings in the patient's baseline.")
    rolling_beats: int = Field(description="Embeddings in the rolling mean.")
    top_dims: list[list[float]] = Field(
        description="[[dim, z], ...]: the 3 latent dimensions with the largest standardised shift."
    )
    sustained_s: float = Field(description="Seconds the shift had held when raised.")


#: The evidence model of each alert kind (the alerts schema selects it by ``kind``).
ALERT_EVIDENCE: dict[str, type[BaseModel]] = {
    "asystole": AsystoleEvidence,
    "pause": PauseEvidence,
    "bradycardia": HeartRateEvidence,
    "tachycardia": HeartRateEvidence,
    "signal_loss": SignalLossEvidence,
    "ventricular_fibrillation": VentricularFibrillationEvidence,
    "ventricular_tachycardia": VentricularRunEvidence,
    "ventricular_run": VentricularRunEvidence,
    "ventricular_bigeminy": PatternEvidence,
    "ventricular_trigeminy": PatternEvidence,
    "pvc_couplet": CoupletEvidence,
    "frequent_pvcs": FrequentPvcEvidence,
    "atrial_fibrillation": AtrialFibrillationEvidence,
    "abnormal_12lead": TwelveLeadEvidence,
    "morphology_change": MorphologyEvidence,
}


class AlertMessage(_Message):
    """Topic ``alerts``: one message per alert transition (``raised``, then ``resolved``) of an episode.

    ``id`` is deterministic (stream + kind + episode start), so consumers de-duplicate by (id, status).
    """

    id: str = Field(
        description="Episode id: a hash of stream, kind and episode start (same for raised and resolved)."
    )
    stream_id: str = Field(description="Patient stream id; also the message key.")
    kind: str = Field(
        description="Alert kind (one of stream.stages.events.ALERT_KINDS); selects the shape of evidence.",
        json_schema_extra={"enum": list(ALERT_KINDS)},
    )
    severity: Literal["critical", "warning", "advisory", "info"] = Field(
        description="critical (asystole, critical pause, ventricular tachycardia and fibrillation), "
        "warning (the other rhythm and signal alarms) or advisory (abnormal 12-lead ECG, morphology "
        "change); see the README's alarm table."
    )
    status: Literal["raised", "resolved"] = Field(
        description="raised when the condition has held long enough, resolved when the episode ends."
    )
    start: str = Field(
        description="ISO-8601 UTC time of the episode start (stream time).",
        json_schema_extra={"format": "date-time"},
    )
    start_ts: float = Field(description="Epoch seconds (stream time) of the episode start.")
    end: str | None = Field(
        None,
        description="ISO-8601 UTC time of the episode end (stream time); null while raised.",
        json_schema_extra={"format": "date-time"},
    )
    end_ts: float | None = Field(
        None, description="Epoch seconds (stream time) of the episode end; null while raised."
    )
    evidence: dict[str, Any] = Field(
        default_factory=dict,
        description="Measurements behind the alert; keys per kind (AsystoleEvidence, "
        "HeartRateEvidence, SignalLossEvidence); a resolved message repeats the raised evidence and adds "
        "duration_s.",
    )
    record: str = Field("", description="Source record of the stream (from its frames).")
    at_ts: float | None = Field(
        None,
        description="Epoch seconds (stream time) at which this transition was decided: for raised, when "
        "the condition had held long enough (start_ts is the onset, earlier); at_ts - start_ts is the "
        "detection delay.",
    )
    published_at: float | None = Field(
        None, description="Epoch seconds (wall clock) when the worker published the message."
    )

    @classmethod
    def from_event(
        cls, ev: AlertEvent, *, record: str = "", published_at: float | None = None
    ) -> AlertMessage:
        """The message of an alert event (the one serialisation of :class:`~stream.stages.events.AlertEvent`)."""
        return cls(
            id=ev.id,
            stream_id=ev.stream_id,
            kind=ev.kind,
            severity=ev.severity,
            status=ev.status,
            start=iso(ev.start) or "",
            start_ts=ev.start,
            end=iso(ev.end),
            end_ts=ev.end,
            evidence=jsonable(ev.evidence),
            at_ts=ev.at,
            record=record,
            published_at=published_at,
        )


class DropoutMessage(_Message):
    """Topic ``dropouts``: a closed segment of unusable signal on one lead (kind in DROPOUT_KINDS)."""

    stream_id: str = Field(description="Patient stream id; also the message key.")
    lead: str = Field(description="Lead of the segment (missing_frames: one message per lead).")
    kind: str = Field(
        description="flatline, nan (missing samples), saturation, lead_off, or missing_frames (frames "
        "never received: a sequence gap).",
        json_schema_extra={"enum": list(DROPOUT_KINDS)},
    )
    start: str = Field(
        description="ISO-8601 UTC time of the segment start (stream time).",
        json_schema_extra={"format": "date-time"},
    )
    start_ts: float = Field(description="Epoch seconds (stream time) of the segment start.")
    end: str = Field(
        description="ISO-8601 UTC time of the segment end, exclusive (stream time).",
        json_schema_extra={"format": "date-time"},
    )
    end_ts: float = Field(description="Epoch seconds (stream time) of the segment end, exclusive.")
    duration_s: float = Field(description="end_ts - start_ts, seconds.")

    @classmethod
    def from_event(cls, ev: DropoutSegment) -> DropoutMessage:
        """From a :class:`stream.stages.events.DropoutSegment`."""
        return cls(
            stream_id=ev.stream_id,
            lead=ev.lead,
            kind=ev.kind,
            start=iso(ev.start) or "",
            start_ts=ev.start,
            end=iso(ev.end) or "",
            end_ts=ev.end,
            duration_s=ev.end - ev.start,
        )


class BeatOut(BaseModel):
    """One detected beat (QRS complex) on the stream's QRS lead."""

    model_config = ConfigDict(frozen=True)

    sample: int = Field(description="Index of the R peak among the stream's samples (from 0).")
    time: float = Field(description="Epoch seconds (stream time) of the R peak.")
    rr_s: float | None = Field(
        None, description="Seconds since the previous beat; null for the stream's first beat."
    )
    hr_bpm: float | None = Field(
        None, description="Heart rate at this beat (median of the last 8 RR), bpm."
    )


class BeatClassOut(BaseModel):
    """A beat's AAMI class, decided once its windows were scored (a few seconds after its detection)."""

    model_config = ConfigDict(frozen=True)

    time: float = Field(
        description="Epoch seconds (stream time) of the beat's R peak (as in beats)."
    )
    label: Literal["N", "S", "V", "F", "Q"] = Field(
        description="AAMI EC57 class: N normal, S supraventricular ectopic, V ventricular ectopic, "
        "F fusion, Q unclassifiable."
    )
    confidence: float = Field(description="The classifier's probability of label, 0-1.")
    sqi: float | None = Field(
        None, description="Beat-level signal quality, 0 (noise) to 1 (clean); null: not measured."
    )


class LeadQualityOut(BaseModel):
    """Signal quality of one lead over one second (indices over the trailing analysis window)."""

    model_config = ConfigDict(frozen=True)

    lead: str = Field(description="Lead name.")
    start_ts: float = Field(description="Epoch seconds (stream time) of the second's first sample.")
    seconds: float = Field(description="Span of the assessment, seconds (1 s).")
    usable: bool = Field(
        description="False when the lead cannot carry beat detection or rhythm alarms this second."
    )
    reason: str | None = Field(
        None,
        description="Why the lead is not usable (dropout, flat, clipped, noise, baseline, "
        "no_agreement); null when usable.",
    )
    bsqi: float | None = Field(
        None,
        description="Agreement (F1, 150 ms) of two independent QRS detectors on this lead, 0-1; null "
        "where only one detector runs.",
    )
    ksqi: float = Field(description="Kurtosis of the band-passed lead (clean ECG: > 5).")
    psqi: float = Field(description="Power 5-15 Hz / power 5-40 Hz (QRS band share).")
    bassqi: float = Field(description="1 - power 0-1 Hz / power 0-40 Hz (baseline share).")
    flat: float = Field(description="Share of flat samples, 0-1.")
    clipped: float = Field(description="Share of samples at the lead's rails, 0-1.")


class BeatBatchMessage(_Message):
    """Topic ``beats``: exactly one message per processed frame (also the processed-frame receipt).

    ``beats`` are the beats detected while processing this frame; ``latency_s`` = ``processed_at - sent_at``.
    """

    stream_id: str = Field(description="Patient stream id; also the message key.")
    seq: int = Field(description="seq of the processed frame.")
    frame_start_ts: float = Field(
        description="Epoch seconds (stream time) of the frame's first sample."
    )
    sent_at: float | None = Field(
        None, description="Epoch seconds (wall clock): the frame's sent_at, null if it had none."
    )
    processed_at: float = Field(
        description="Epoch seconds (wall clock) when the worker processed the frame."
    )
    latency_s: float | None = Field(
        None, description="processed_at - sent_at, seconds (>= 0); null without sent_at."
    )
    samples: int = Field(description="Samples per lead processed from this frame.")
    gap_frames: int = Field(
        0, description="Frames missing (never received) just before this one: a sequence gap."
    )
    duplicate: bool = Field(
        False, description="True for a frame repeating an already processed seq (ignored)."
    )
    heart_rate_bpm: float | None = Field(
        None, description="The stream's current heart rate (median of the last 8 RR), bpm."
    )
    beats: list[BeatOut] = Field(
        default_factory=list, description="Beats detected while processing this frame."
    )
    classes: list[BeatClassOut] = Field(
        default_factory=list,
        description="Earlier beats of the stream classified since its previous message (a beat is "
        "classified once its windows were scored: its detection, the next beat or 2 s, and the score "
        "batch); empty without the beat_class model.",
    )
    beat_lead: str | None = Field(
        None,
        description="Lead the beats of this frame were detected on (multi-lead fusion picks the lead of "
        "best quality); null when the frame has no beats.",
    )
    quality: list[LeadQualityOut] = Field(
        default_factory=list,
        description="Per-lead signal quality of each second completed while processing this frame.",
    )


#: One window's score on the scores topic: the runtime's :class:`~models.runtime.protocol.ModelScore`
#: without its stream (the message carries it); one definition for both.
ScoreOut = ScoreFields


class ScoresMessage(_Message):
    """Topic ``scores``: ONNX model scores of one stream's windows, scored in a batch across streams
    (at most 64 windows or 0.25 s); ``seq`` is the stream's last frame in that batch."""

    stream_id: str = Field(description="Patient stream id; also the message key.")
    seq: int | None = Field(
        None,
        description="seq of the last frame whose windows are in the batch; null when they all came from "
        "the end of the stream (a flush).",
    )
    scores: list[ScoreOut] = Field(
        default_factory=list, description="One record per scored window (and model), in order."
    )


class RecoveredMessage(_Message):
    """Topic ``recovered``: one contiguous run of samples of one lead that a window's recovery filled
    (``model``: a recovery network; ``derived``: computed exactly from other leads, e.g. Einthoven /
    Goldberger), or could not fill (``unrecoverable``, with its reason and no samples).

    These are the samples the scoring models saw in place of the faulty ones. Runs of overlapping windows
    (2 s beat windows around consecutive beats) may overlap; each message names its window."""

    stream_id: str = Field(description="Patient stream id; also the message key.")
    lead: str = Field(description="Lead of the run.")
    window: str = Field(description="Model window the run belongs to (e.g. leads_10s, beat_720).")
    window_start_ts: float = Field(description="Epoch seconds (stream time) of the window start.")
    provenance: Literal["model", "derived", "unrecoverable"] = Field(
        description="model: filled by the recovery network; derived: computed exactly from measured "
        "leads; unrecoverable: not filled (reason says why), never scored."
    )
    recovered_by: str | None = Field(
        None, description="Recovery model (lstm_ae, lead_recon); null when unrecoverable."
    )
    reason: str | None = Field(
        None, description="Unrecoverable only: why the run could not be rebuilt."
    )
    start: str = Field(
        description="ISO-8601 UTC time of the run's first sample (stream time).",
        json_schema_extra={"format": "date-time"},
    )
    start_ts: float = Field(description="Epoch seconds (stream time) of the run's first sample.")
    end_ts: float = Field(
        description="Epoch seconds (stream time) just after the run's last sample."
    )
    fs: float = Field(description="Sampling rate of samples (the window's rate), Hz.")
    samples: list[float] | None = Field(
        None, description="Recovered samples, mV (band-passed, as scored); null when unrecoverable."
    )
    half_width_90: list[float] | None = Field(
        None,
        description="Per sample, the half width of the 90 % interval (mV) around samples, calibrated on "
        "validation data (split conformal; the model card's uncertainty); 0 for derived samples; null "
        "when unrecoverable.",
    )
    coverage_target: float = Field(
        0.9, description="Nominal coverage of [samples - half_width_90, samples + half_width_90]."
    )


class FaultTruthMessage(_Message):
    """Topic ``ground_truth``: one injected fault (simulator ground truth), times in stream time."""

    stream_id: str = Field(description="Patient stream id; also the message key.")
    record: str = Field("", description="Source record of the stream.")
    lead: str | None = Field(None, description="Faulted lead; null for every lead.")
    kind: str = Field(
        description="Injected fault: flatline, zero, nan, lead_off, saturation, lost_frames, noise_bw or "
        "noise_ma (simulators/faults.py)."
    )
    start: str = Field(
        description="ISO-8601 UTC time of the fault start (stream time).",
        json_schema_extra={"format": "date-time"},
    )
    start_ts: float = Field(description="Epoch seconds (stream time) of the fault start.")
    end: str = Field(
        description="ISO-8601 UTC time of the fault end (stream time).",
        json_schema_extra={"format": "date-time"},
    )
    end_ts: float = Field(description="Epoch seconds (stream time) of the fault end.")
    snr_db: float | None = Field(
        None, description="Signal-to-noise ratio of noise faults (noise_bw, noise_ma), dB."
    )


#: A dead-letter record keeps at most this many bytes of the rejected payload (with its length and hash),
#: so that an oversized or hostile message never makes a record above the producer's size limit.
DEAD_LETTER_PAYLOAD_MAX = 64 * 1024


class DeadLetterMessage(_Message):
    """Topic ``dead_letter``: a rejected input message with its reason and where it came from."""

    reason: str = Field(
        description="Why it was rejected (the reason label of ecg_frames_rejected_total).",
        json_schema_extra={"enum": list(REJECT_REASONS)},
    )
    detail: str = Field("", description="Human-readable detail (at most 1000 characters).")
    payload_b64: str = Field(
        description="Base64 of the first 64 KiB of the rejected message value.",
        json_schema_extra={"contentEncoding": "base64"},
    )
    payload_bytes: int = Field(0, description="Length of the whole rejected value, bytes.")
    payload_sha256: str = Field("", description="SHA-256 (hex) of the whole rejected value.")
    payload_truncated: bool = Field(
        False,
        description="True when the value was longer than 64 KiB (payload_b64 holds its start).",
    )
    key: str | None = Field(
        None, description="The rejected message's key (first 256 bytes, UTF-8 with replacement)."
    )
    topic: str = Field(description="Topic the rejected message was read from.")
    partition: int = Field(description="Its partition.")
    offset: int = Field(description="Its offset.")
    time: str = Field(
        description="ISO-8601 UTC time (wall clock) of the rejection.",
        json_schema_extra={"format": "date-time"},
    )
    time_ts: float = Field(description="Epoch seconds (wall clock) of the rejection.")

    @classmethod
    def build(
        cls,
        *,
        reason: str,
        detail: str,
        payload: bytes | None,
        key: bytes | None,
        topic: str,
        partition: int,
        offset: int,
        now: float,
    ) -> DeadLetterMessage:
        data = payload or b""
        return cls(
            reason=reason,
            detail=detail[:1000],
            payload_b64=base64.b64encode(data[:DEAD_LETTER_PAYLOAD_MAX]).decode(),
            payload_bytes=len(data),
            payload_sha256=hashlib.sha256(data).hexdigest(),
            payload_truncated=len(data) > DEAD_LETTER_PAYLOAD_MAX,
            key=key[:256].decode("utf-8", "replace") if key else None,
            topic=topic,
            partition=partition,
            offset=offset,
            time=iso(now) or "",
            time_ts=now,
        )


class AlarmActionMessage(_Message):
    """Topic ``alarm_actions``: a clinician's action on an alarm, from the dashboard's live view.

    ``acknowledge`` marks the alarm seen (it stays in the list while raised); ``silence`` mutes its audible
    and visual alarm on the dashboard until ``silence_until_ts``. Actions never change the alarm itself.
    """

    action: Literal["acknowledge", "silence"] = Field(description="What was done.")
    alert_id: str = Field(description="id of the alarm (AlertMessage.id).")
    stream_id: str = Field(description="Patient stream id of the alarm; also the message key.")
    kind: str = Field("", description="The alarm's kind, as shown when the action was taken.")
    user: str = Field(
        description="Who: the name the clinician gave on the dashboard (at most 64 characters)."
    )
    at: str = Field(
        description="ISO-8601 UTC time (wall clock) of the action.",
        json_schema_extra={"format": "date-time"},
    )
    at_ts: float = Field(description="Epoch seconds (wall clock) of the action.")
    silence_until_ts: float | None = Field(
        None, description="silence only: epoch seconds (wall clock) when the silence ends."
    )
    client: str = Field(
        "", description="Which dashboard took it: its host name and process id (no patient data)."
    )
