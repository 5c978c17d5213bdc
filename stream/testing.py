"""Helpers for testing code built on ecg-monitor: a fake clock, synthetic and real-record frame feeders.

Shipped with the package (like ``bytewax.testing``) so tests of the stages, the pipeline and user code
need no broker and no hand-written frame loops::

    from stream.testing import FakeClock, feed_pipeline, run_processor, synthetic_frames, telemetry_messages

    frames = list(synthetic_frames(fs=360.0, seconds=30, leads=("MLII", "V5"), hr_bpm=75, drop={10}))
    out = run_processor(StreamProcessor("p1", 360.0, ("MLII", "V5")), frames)  # beats, dropouts...
    clock = FakeClock()
    outs = feed_pipeline(FramePipeline(Settings(), clock=clock), telemetry_messages(frames))
    clock.advance(600)  # then e.g. pipeline.expire_idle()

Frames are :class:`stream.stages.frame.Frame`, the type :func:`stream.schemas.decode_frame` returns and
:meth:`stream.stages.processor.StreamProcessor.process` accepts; they are built in one place
(:func:`make_frame`), so a change of that type is a one-line change here. Of ecg-monitor it imports
only ``stream`` (never training, simulators or tests).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stream.records import TWELVE_LEADS, Record, read_record
from stream.schemas import DEFAULT_GAIN, encode_frame
from stream.stages.frame import Frame
from stream.stages.processor import ProcessorOutput, StreamProcessor

__all__ = [
    "T0",
    "FakeClock",
    "Frame",
    "encode_frames",
    "feed_pipeline",
    "frame_end_time",
    "frames_from_array",
    "load_record",
    "make_frame",
    "record_frames",
    "run_processor",
    "synthetic_ecg",
    "synthetic_frames",
    "telemetry_messages",
]

#: Default start time of the first frame: 2026-01-01T00:00:00Z.
T0 = 1_767_225_600.0

#: One frame-level hook: ``(seq, samples) -> samples`` (may modify and return a copy).
FrameTransform = Callable[[int, np.ndarray], np.ndarray]


def make_frame(
    stream_id: str,
    seq: int,
    fs: float,
    leads: Sequence[str],
    start_time: float,
    samples: np.ndarray,
) -> Frame:
    """One frame of the type the stream processor accepts (the single place that builds it)."""
    return Frame(stream_id, seq, float(fs), tuple(leads), float(start_time), samples)


def frame_end_time(frame: Frame) -> float:
    """Acquisition time just after the frame's last sample (a ``sent_at`` for :func:`encode_frames`)."""
    return frame.end_time


# ----------------------------------------------------------------------------------------------- clock
class FakeClock:
    """A controllable clock: call it for the current time, :meth:`advance` to move it forward.

    Pass it wherever a ``clock: Callable[[], float]`` is taken (e.g. ``FramePipeline(clock=...)``).
    """

    def __init__(self, start: float = T0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock ``seconds`` forward (never backwards); returns the new time."""
        if seconds < 0:
            raise ValueError(f"a clock does not go backwards (advance({seconds}))")
        self.now += float(seconds)
        return self.now

    def set(self, now: float) -> None:
        """Jump to ``now`` (any direction: a wall clock can be adjusted)."""
        self.now = float(now)


# -------------------------------------------------------------------------------------- synthetic ECG
# P, Q, R, S, T waves of one lead-II-like beat: (amplitude mV, centre s after the R peak, width s).
_WAVES: tuple[tuple[float, float, float], ...] = (
    (0.15, -0.20, 0.025),
    (-0.12, -0.035, 0.010),
    (1.10, 0.0, 0.011),
    (-0.25, 0.035, 0.011),
    (0.30, 0.26, 0.045),
)
# rough per-lead scale of the limb/precordial projections (negative: mostly inverted complex)
_LEAD_SCALE: dict[str, float] = {
    "I": 0.6,
    "II": 1.0,
    "III": 0.5,
    "aVR": -0.8,
    "aVL": 0.3,
    "aVF": 0.7,
    "V1": -0.6,
    "V2": -0.4,
    "V3": 0.6,
    "V4": 1.1,
    "V5": 1.0,
    "V6": 0.8,
    "MLII": 1.0,
    "MLI": 0.6,
    "MLIII": 0.5,
}


def _lead_names(leads: int | Sequence[str]) -> tuple[str, ...]:
    if isinstance(leads, int):
        if leads < 1:
            raise ValueError(f"need at least one lead, got {leads}")
        return (
            TWELVE_LEADS[:leads]
            if leads <= len(TWELVE_LEADS)
            else tuple(f"L{i}" for i in range(leads))
        )
    names = tuple(leads)
    if not names:
        raise ValueError("need at least one lead")
    return names


def synthetic_ecg(
    fs: float = 360.0,
    seconds: float = 10.0,
    leads: int | Sequence[str] = ("MLII", "V5"),
    hr_bpm: float = 72.0,
    seed: int = 0,
    *,
    noise_mv: float = 0.01,
    wander_mv: float = 0.05,
    hrv: float = 0.03,
) -> np.ndarray:
    """ECG-like float32 signal ``[n, n_leads]`` in mV: PQRST beats at ``hr_bpm`` (RR jittered by ``hrv``),
    baseline wander and white noise; lead projections roughly follow the named leads (an int = that
    many of I, II, III, aVR...). Deterministic for a given ``seed``; R peaks are ~1 mV on lead II/MLII."""
    if fs <= 0 or seconds <= 0 or hr_bpm <= 0:
        raise ValueError("fs, seconds and hr_bpm must be positive")
    names = _lead_names(leads)
    rng = np.random.default_rng(seed)
    n = round(seconds * fs)
    t = np.arange(n) / fs
    rr = 60.0 / hr_bpm
    peaks: list[float] = []
    tp = rr * (0.3 + 0.4 * rng.random())
    while tp < seconds + 0.5:
        peaks.append(tp)
        tp += rr * (1.0 + hrv * rng.standard_normal())
    beat = np.zeros(n)
    for pk in peaks:
        for amp, centre, width in _WAVES:
            c = pk + centre
            lo, hi = np.searchsorted(t, [c - 5 * width, c + 5 * width])
            if hi > lo:
                beat[lo:hi] += amp * np.exp(-0.5 * ((t[lo:hi] - c) / width) ** 2)
    out = np.empty((n, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        scale = _LEAD_SCALE.get(name, 0.4 + 0.6 * rng.random())
        phase = 2 * math.pi * rng.random()
        wander = wander_mv * np.sin(2 * math.pi * 0.25 * t + phase)
        out[:, j] = scale * beat + wander + noise_mv * rng.standard_normal(n)
    return out


# -------------------------------------------------------------------------------------- frame feeders
def frames_from_array(
    samples: np.ndarray,
    fs: float,
    leads: Sequence[str],
    stream_id: str = "p1",
    frame_seconds: float = 1.0,
    start_time: float = T0,
    *,
    first_seq: int = 0,
    drop: Collection[int] = (),
    nan_spans: Iterable[tuple[int, int]] = (),
    transform: FrameTransform | None = None,
) -> Iterator[Frame]:
    """Cut ``samples`` ``[n, n_leads]`` (or 1-D for one lead) into consecutive frames of
    ``frame_seconds``; frame ``seq`` (from ``first_seq``) starts at ``start_time + offset / fs``.

    ``drop``: seqs not yielded (lost frames: the processor sees a sequence gap). ``nan_spans``: sample
    ranges ``[a, b)`` set to NaN on every lead (the input is not modified). ``transform``: a per-frame
    hook ``(seq, samples) -> samples`` applied last (flatten, clip, add noise...).
    """
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    spans = list(nan_spans)
    if spans:
        x = np.array(x, dtype=np.float32, copy=True)
        for a, b in spans:
            x[a:b] = np.nan
    n = max(1, round(frame_seconds * fs))
    for i, s in enumerate(range(0, x.shape[0], n)):
        seq = first_seq + i
        if seq in drop:
            continue
        chunk = x[s : s + n]
        if transform is not None:
            chunk = transform(seq, chunk.copy())
        yield make_frame(stream_id, seq, fs, leads, start_time + s / fs, chunk)


def synthetic_frames(
    fs: float = 360.0,
    seconds: float = 10.0,
    leads: Sequence[str] = ("MLII", "V5"),
    hr_bpm: float = 72.0,
    seed: int = 0,
    stream_id: str = "p1",
    frame_seconds: float = 1.0,
    start_time: float = T0,
    **options: Any,
) -> Iterator[Frame]:
    """Frames of :func:`synthetic_ecg` (``options`` go to :func:`frames_from_array`: drop, nan_spans...)."""
    x = synthetic_ecg(fs, seconds, leads, hr_bpm, seed)
    return frames_from_array(x, fs, leads, stream_id, frame_seconds, start_time, **options)


def load_record(
    record: str | Path | Record,
    data_dir: str | Path | None = None,
    *,
    sampfrom: int = 0,
    sampto: int | None = None,
    seconds: float | None = None,
) -> Record:
    """A :class:`~stream.records.Record`: ``record`` is one already, a path, or a name such as
    ``"mitdb/100"`` under ``data_dir`` (default :attr:`Settings.data_dir <stream.settings.Settings>`,
    i.e. ``$ECG_DATA_DIR``). ``seconds`` (instead of ``sampto``) keeps that much from ``sampfrom``."""
    if isinstance(record, Record):
        if seconds is not None:
            sampto = sampfrom + round(seconds * record.fs)
        if sampfrom or sampto is not None:
            return Record(
                record.name, record.fs, record.leads, record.signal[sampfrom:sampto], record.units
            )
        return record
    path = Path(record)
    if not path.is_absolute():
        if data_dir is None:
            from stream.settings import Settings

            data_dir = Settings().data_dir
        path = Path(data_dir) / path
    if seconds is not None:
        sampto = sampfrom + round(seconds * _header_fs(path))
    return read_record(path, sampfrom, sampto)


def _header_fs(path: Path) -> float:
    """Sampling rate from a WFDB header (a missing/corrupt one raises DataError like read_record)."""
    import wfdb

    try:
        return float(wfdb.rdheader(str(path)).fs)
    except Exception:
        return read_record(path, 0, 1).fs


def record_frames(
    record: str | Path | Record,
    data_dir: str | Path | None = None,
    *,
    seconds: float | None = None,
    sampfrom: int = 0,
    stream_id: str = "p1",
    frame_seconds: float = 1.0,
    start_time: float = T0,
    first_seq: int = 0,
    drop: Collection[int] = (),
    nan_spans: Iterable[tuple[int, int]] = (),
    transform: FrameTransform | None = None,
) -> Iterator[Frame]:
    """Frames of a WFDB record (see :func:`load_record`; ``seconds`` limits how much is used), in
    order, with the options of :func:`frames_from_array`."""
    rec = load_record(record, data_dir, sampfrom=sampfrom, seconds=seconds)
    return frames_from_array(
        rec.signal,
        rec.fs,
        rec.leads,
        stream_id,
        frame_seconds,
        start_time,
        first_seq=first_seq,
        drop=drop,
        nan_spans=nan_spans,
        transform=transform,
    )


# --------------------------------------------------------------------------------- encoded messages
def encode_frames(
    frames: Iterable[Frame],
    *,
    record: str | None = None,
    sent_at: float | Callable[[Frame], float | None] | None = None,
    encoding: str = "i16le",
    gain: float = DEFAULT_GAIN,
) -> Iterator[bytes]:
    """Telemetry messages (JSON bytes, :func:`stream.schemas.encode_frame`) of ``frames``, in order.

    ``record``/``sent_at`` default to the frame's own; ``sent_at`` may also be a function of the frame
    (e.g. :func:`frame_end_time`).
    """
    for f in frames:
        sent = sent_at(f) if callable(sent_at) else sent_at
        yield encode_frame(
            stream_id=f.stream_id,
            seq=f.seq,
            fs=f.fs,
            leads=f.leads,
            start_time=f.start_time,
            samples=f.samples,
            record=f.record if record is None else record,
            units=f.units,
            sent_at=f.sent_at if sent is None else sent,
            encoding=encoding,
            gain=gain,
        )


def telemetry_messages(
    frames: Iterable[Frame],
    *,
    record: str | None = None,
    sent_at: float | Callable[[Frame], float | None] | None = None,
    encoding: str = "i16le",
    gain: float = DEFAULT_GAIN,
) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` pairs as a producer sends them: key = the UTF-8 stream id (see
    :func:`encode_frames` for the value options)."""
    for f in frames:
        (value,) = encode_frames([f], record=record, sent_at=sent_at, encoding=encoding, gain=gain)
        yield f.stream_id.encode(), value


class _Handler(Protocol):
    def handle(
        self, key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int
    ) -> list[Any]: ...


def feed_pipeline(
    pipeline: _Handler,
    messages: Iterable[bytes | tuple[bytes | None, bytes | None]],
    *,
    key: bytes | None = None,
    topic: str = "telemetry",
    partition: int = 0,
    first_offset: int = 0,
) -> list[Any]:
    """Hand messages to ``pipeline.handle`` at consecutive offsets of one partition, as the worker's
    consumer would; returns every outgoing message, in order. A message is a ``(key, value)`` pair
    (:func:`telemetry_messages`) or a bare value (:func:`encode_frames`), sent with ``key``."""
    out: list[Any] = []
    for offset, msg in enumerate(messages, start=first_offset):
        k, value = msg if isinstance(msg, tuple) else (key, msg)
        out += pipeline.handle(k, value, topic, partition, offset)
    return out


def run_processor(
    processor: StreamProcessor, frames: Iterable[Frame], *, flush: bool = True
) -> ProcessorOutput:
    """Feed every frame to a :class:`~stream.stages.processor.StreamProcessor` (then ``flush`` it);
    returns the accumulated output."""
    total = ProcessorOutput()
    for f in frames:
        total.extend(processor.process(f))
    if flush:
        total.extend(processor.flush())
    return total


def wait_until(predicate: Callable[[], Any], timeout_s: float = 30.0, every_s: float = 0.3) -> Any:
    """Poll ``predicate`` until it returns a truthy value; return it (or the last falsy one after timeout)."""
    deadline = time.monotonic() + timeout_s
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(every_s)
        value = predicate()
    return value
