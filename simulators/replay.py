"""Replay WFDB records as live ECG telemetry on Kafka, with optional fault injection and ground truth.

Any WFDB record or database directory works: MIT-BIH (360 Hz, 2 leads, format 212), PTB-XL (100 Hz, 12 leads,
format 16 and FLAC 516), LUDB (500 Hz, 12 leads). Many patients replay concurrently: ``patients`` streams
cycle through the records, and streams sharing a record start at different offsets into it.

Pacing: ``speed`` 1 = real time, K = K times faster, 0 = as fast as possible. Each frame is published once
its last sample has been "acquired" (start + frame duration, divided by ``speed``); streams are phase-shifted
across the frame period so the load is even, as with unsynchronised bedside monitors. ``loop`` restarts a
stream at the record's start (sequence numbers and times keep increasing). :meth:`Replay.stop` stops it.

Faults (``simulators.faults``) are injected into the samples before framing; a ``lost_frames`` fault makes
the replay skip the frames it overlaps (their ``seq`` is never sent). Every fault is published to the
ground-truth topic with its times in stream time.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simulators.errors import DataError
from stream.metrics import ReplayMetrics
from stream.records import Record, list_records, read_record
from stream.schemas import FaultTruthMessage, encode_frame, iso
from stream.settings import DEMO_RECORDS, Settings

log = logging.getLogger(__name__)

#: Default records of ``ecg-monitor up`` and ``replay`` (``Settings.demo_records`` defaults to them).
DEFAULT_RECORDS: tuple[str, ...] = DEMO_RECORDS


@dataclass(frozen=True)
class StreamPlan:
    """One simulated patient stream: which record, where in it to start, which faults to inject."""

    stream_id: str
    record: str  # display name, e.g. "mitdb/100"
    path: Path  # WFDB path without extension
    offset_s: float = 0.0
    faults: tuple[Any, ...] = ()  # simulators.faults.FaultSpec


def resolve_sources(specs: Sequence[str], data_dir: Path) -> list[tuple[str, Path]]:
    """Turn record paths (``mitdb/100``) and database dirs (``mitdb``, ``ludb/data``, ``ptbxl/records100``)
    into ``(display name, WFDB path)`` pairs. Paths are tried as given, then under ``data_dir``."""
    out: list[tuple[str, Path]] = []
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        for base in (Path(spec), data_dir / spec):
            if base.with_suffix(".hea").is_file() or Path(f"{base}.hea").is_file():
                out.append((spec, base))
                break
            if base.is_dir():
                out += [(f"{spec.rstrip('/')}/{name}", base / name) for name in list_records(base)]
                break
        else:
            raise DataError(
                f"no WFDB record or database at {spec!r} (also tried under ECG_DATA_DIR={data_dir})"
            )
    if not out:
        raise DataError(f"no records found in {list(specs)}")
    return out


def record_leads(path: Path) -> tuple[str, ...]:
    """Canonical lead names of a WFDB record, from its header only."""
    import wfdb

    from stream.records import canonical_lead

    try:
        header = wfdb.rdheader(str(path))
    except Exception as exc:
        raise DataError(f"unreadable WFDB header {path}.hea: {exc}") from exc
    return tuple(canonical_lead(n) for n in header.sig_name or [])


def plan_streams(
    sources: Sequence[tuple[str, Path]],
    patients: int,
    *,
    offset_step_s: float = 97.0,
    faults: Callable[[int, str, tuple[str, ...]], Sequence[Any]] | None = None,
    prefix: str = "patient",
) -> list[StreamPlan]:
    """``patients`` stream plans cycling through ``sources``; the k-th reuse of a record starts
    ``k * offset_step_s`` seconds later in it. ``faults(i, stream_id, leads)`` gives stream i's faults."""
    plans = []
    leads: dict[Path, tuple[str, ...]] = {}
    for i in range(patients):
        name, path = sources[i % len(sources)]
        offset = (i // len(sources)) * offset_step_s
        sid = f"{prefix}-{i:04d}"
        specs: tuple[Any, ...] = ()
        if faults is not None:
            if path not in leads:
                leads[path] = record_leads(path)
            specs = tuple(faults(i, sid, leads[path]))
        plans.append(StreamPlan(sid, name, path, offset, specs))
    return plans


def demo_faults(index: int, stream_id: str, leads: Sequence[str]) -> list[Any]:
    """The faults of ``ecg-monitor up``: a 6 s flatline on all leads (asystole / signal loss), a lead-off
    on the second lead and 3 s of lost frames, staggered by stream so alerts keep arriving."""
    from simulators.faults import FaultSpec

    t = 12.0 + 7.0 * (index % 6)
    return [
        FaultSpec(kind="flatline", lead=None, start_s=t, duration_s=6.0),
        FaultSpec(
            kind="lead_off",
            lead=leads[-1] if len(leads) > 1 else None,
            start_s=t + 20.0,
            duration_s=5.0,
        ),
        FaultSpec(kind="lost_frames", lead=None, start_s=t + 35.0, duration_s=3.0),
    ]


@dataclass
class _Stream:
    plan: StreamPlan
    record: Record
    signal: np.ndarray  # samples from the plan's offset (view)
    head: np.ndarray | None  # faulted copy of the first samples, or None
    lost: set[int]  # seqs withheld (lost_frames faults, first pass)
    frame_len: int
    t0: float  # stream time of sample 0 (epoch seconds)
    seq: int = 0
    pos: int = 0  # next sample of `signal` to send
    done: bool = False


class Replay:
    """Publishes frames of many streams on the telemetry topic (see module docs)."""

    def __init__(
        self,
        settings: Settings,
        plans: Sequence[StreamPlan],
        *,
        speed: float = 1.0,
        loop: bool = False,
        duration_s: float | None = None,
        encoding: str = "i16le",
        metrics: ReplayMetrics | None = None,
        start_time: float | None = None,
        rng: np.random.Generator | None = None,
        max_frames: int | None = None,
        record_sent: bool = False,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0 (0 = as fast as possible)")
        self.settings = settings
        self.plans = list(plans)
        self.speed = speed
        self.loop = loop
        self.duration_s = duration_s
        self.encoding = encoding
        self.metrics = metrics or ReplayMetrics()
        self.start_time = start_time
        self.rng = rng or np.random.default_rng(0)
        self.max_frames = max_frames
        self.frames_sent = 0
        #: (stream id, seq) of every frame published, when ``record_sent``
        self.sent: list[tuple[str, int]] | None = [] if record_sent else None
        self._stop = asyncio.Event()
        self._records: dict[Path, Record] = {}
        self._noise: dict[str, np.ndarray] | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to return after the frame being sent."""
        self._stop.set()

    # ------------------------------------------------------------------------------------------- setup
    def _record(self, path: Path) -> Record:
        if path not in self._records:
            self._records[path] = read_record(path)
        return self._records[path]

    def _noise_arrays(self) -> dict[str, np.ndarray]:
        if self._noise is None:
            from simulators.faults import load_nstdb_noise

            self._noise = load_nstdb_noise(self.settings.data_dir)
        return self._noise

    def _build(self, plan: StreamPlan, index: int, t_start: float) -> _Stream:
        rec = self._record(plan.path)
        frame_len = max(1, round(self.settings.frame_seconds * rec.fs))
        offset = int(plan.offset_s * rec.fs) % max(1, rec.signal.shape[0] - frame_len)
        signal = rec.signal[offset:]
        # phase-shift streams over one frame period so publication is spread evenly
        t0 = t_start + (index / max(1, len(self.plans))) * self.settings.frame_seconds
        head = None
        lost: set[int] = set()
        sample_faults = [f for f in plan.faults if f.kind != "lost_frames"]
        if plan.faults:
            from simulators.faults import frames_to_drop, inject

            lost = frames_to_drop(plan.faults, signal.shape[0], rec.fs, frame_len)
        if sample_faults:
            span = int(max(f.start_s + f.duration_s for f in sample_faults) * rec.fs) + frame_len
            span = min(span, signal.shape[0])
            noise = (
                self._noise_arrays()
                if any(f.kind.startswith("noise") for f in sample_faults)
                else None
            )
            head = inject(
                np.array(signal[:span]), rec.fs, rec.leads, sample_faults, noise=noise, rng=self.rng
            )
        return _Stream(plan, rec, signal, head, lost, frame_len, t0)

    # -------------------------------------------------------------------------------------------- run
    def _next_frame(self, s: _Stream) -> tuple[int, np.ndarray] | None:
        """(seq, samples) of the stream's next frame; None at the end (unless looping)."""
        n = s.signal.shape[0]
        if self.max_frames is not None and s.seq >= self.max_frames:
            s.done = True
            return None
        if s.pos + s.frame_len > n:
            if not self.loop:
                s.done = True
                return None
            s.pos = 0
            s.head = None  # faults are injected on the first pass only
        src = s.head if s.head is not None and s.pos + s.frame_len <= s.head.shape[0] else s.signal
        chunk = src[s.pos : s.pos + s.frame_len]
        seq = s.seq
        s.seq += 1
        s.pos += s.frame_len
        return seq, chunk

    def truth_messages(self, streams: Sequence[_Stream]) -> list[tuple[bytes, bytes]]:
        """Ground-truth messages (key, value) for every fault of every stream (first pass of the record)."""
        from simulators.faults import ground_truth

        out = []
        for s in streams:
            if not s.plan.faults:
                continue
            snrs = [
                (f.kind, f.lead, s.t0 + f.start_s, f.snr_db)
                for f in s.plan.faults
                if f.snr_db is not None
            ]
            for ev in ground_truth(
                s.plan.stream_id, s.plan.faults, s.t0, s.record.fs, s.frame_len, s.signal.shape[0]
            ):
                msg = FaultTruthMessage(
                    stream_id=ev.stream_id,
                    record=s.plan.record,
                    lead=ev.lead,
                    kind=ev.kind,
                    start=iso(ev.start) or "",
                    start_ts=ev.start,
                    end=iso(ev.end) or "",
                    end_ts=ev.end,
                    snr_db=next(
                        (
                            v
                            for k, ld, t, v in snrs
                            if k == ev.kind and ld == ev.lead and abs(t - ev.start) < 1e-3
                        ),
                        None,
                    ),
                )
                out.append((s.plan.stream_id.encode(), msg.to_bytes()))
        return out

    async def run(self, producer: Any) -> int:
        """Publish until every stream ends, ``duration_s`` elapses or :meth:`stop`; return frames sent.

        ``producer`` is a started ``aiokafka.AIOKafkaProducer`` (or anything with ``send(topic, value, key)``).
        """
        topics = self.settings.topics
        frame_s = self.settings.frame_seconds
        for plan in self.plans:  # read every record before the clock starts
            self._record(plan.path)
        wall0 = time.time()
        t_start = self.start_time if self.start_time is not None else wall0
        streams = [self._build(p, i, t_start) for i, p in enumerate(self.plans)]
        wall0 = time.time()  # fault injection above may take a while on many streams
        self.metrics.streams.set(len(streams))
        for key, value in self.truth_messages(streams):
            await producer.send(topics.ground_truth, value=value, key=key)
        for s in streams:
            for f in s.plan.faults:
                self.metrics.faults.labels(f.kind).inc()
        # heap of (due wall time, stream index); a frame is due once its last sample is acquired
        heap: list[tuple[float, int]] = []
        for i, s in enumerate(streams):
            heapq.heappush(heap, (self._due(s, 0, wall0, t_start, frame_s), i))
        deadline = None if self.duration_s is None else wall0 + self.duration_s
        sent = 0
        while heap and not self._stop.is_set():
            due, i = heapq.heappop(heap)
            now = time.time()
            if deadline is not None and (now if self.speed == 0 else due) >= deadline:
                break
            if self.speed > 0 and due > now:
                try:
                    await asyncio.wait_for(self._stop.wait(), due - now)
                    break
                except TimeoutError:
                    pass
            elif self.speed == 0 and sent % 200 == 0:
                await asyncio.sleep(0)  # let the producer flush
            s = streams[i]
            nxt = self._next_frame(s)
            if nxt is None:
                continue
            seq, chunk = nxt
            start = s.t0 + seq * frame_s
            if seq in s.lost:
                self.metrics.frames_dropped.inc()
            else:
                sent_at = time.time()
                if self.speed > 0:
                    self.metrics.behind.set(max(0.0, sent_at - due))
                value = encode_frame(
                    stream_id=s.plan.stream_id,
                    seq=seq,
                    fs=s.record.fs,
                    leads=s.record.leads,
                    start_time=start,
                    samples=chunk,
                    record=s.plan.record,
                    units=s.record.units,
                    sent_at=sent_at,
                    encoding=self.encoding,
                )
                await producer.send(topics.telemetry, value=value, key=s.plan.stream_id.encode())
                self.metrics.frames_sent.inc()
                sent += 1
                if self.sent is not None:
                    self.sent.append((s.plan.stream_id, seq))
            heapq.heappush(heap, (self._due(s, s.seq, wall0, t_start, frame_s), i))
        self.frames_sent = sent
        await producer.flush()
        return sent

    def _due(self, s: _Stream, seq: int, wall0: float, t_start: float, frame_s: float) -> float:
        """Wall time at which frame ``seq`` of stream ``s`` is complete (0 for as-fast-as-possible)."""
        if self.speed == 0:
            return float(seq)  # round-robin across streams, frame by frame
        return wall0 + ((s.t0 - t_start) + (seq + 1) * frame_s) / self.speed


async def replay_to_kafka(
    settings: Settings, plans: Sequence[StreamPlan], bootstrap: str | None = None, **kwargs: Any
) -> int:
    """Run a :class:`Replay` (built from ``kwargs``, or passed as ``replay=``) with its own aiokafka producer;
    return the number of frames sent."""
    from aiokafka import AIOKafkaProducer

    from stream.broker import client_kwargs

    replay = kwargs.pop("replay", None) or Replay(settings, plans, **kwargs)
    producer = AIOKafkaProducer(**client_kwargs(settings, bootstrap), linger_ms=5, acks=1)
    await producer.start()
    try:
        return await replay.run(producer)
    finally:
        await producer.stop()
