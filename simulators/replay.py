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
ground-truth topic with its times in stream time. A plan's own ``faults`` apply to the first pass of its
record; a ``fault_planner`` plans the faults of every stream lazily, window by window (``fault_window_s`` of
stream time, and each pass of a looping replay starts a new window), so faults keep coming for as long as the
replay runs; each window's faults are injected and published when the stream reaches it.

Delivery (:class:`Sender`): sends are not awaited one by one (that would serialise the replay on the
broker's round trip); up to ``max_in_flight`` messages wait for their acknowledgement at once, taken in as
they arrive and at every tick. A failed send is retried ``send_retries`` times with exponential backoff, then
given up. ``ecg_replay_frames_sent_total`` counts acknowledged frames only; ``ecg_replay_send_retries_total``
the retries and ``ecg_replay_send_failures_total{topic}`` the messages given up (lost). At the end the
replay waits up to ``drain_timeout_s`` for the outstanding acknowledgements and counts the rest as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from simulators.errors import DataError
from stream.metrics import ReplayMetrics
from stream.records import Record, read_record, resolve_record_specs
from stream.schemas import I16_MAX_MV, FaultTruthMessage, encode_frame, iso
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


@dataclass(frozen=True)
class FaultWindow:
    """A span of one stream whose faults a ``fault_planner`` plans: stream ``index`` / ``stream_id`` with its
    ``leads`` at ``fs`` Hz, ``length_s`` seconds starting ``start_s`` seconds after the stream's start (over
    every pass of a looping replay), ``pass_offset_s`` seconds into pass ``pass_no`` of the record."""

    index: int
    stream_id: str
    leads: tuple[str, ...]
    fs: float
    start_s: float
    length_s: float
    pass_no: int
    pass_offset_s: float


#: Plans the faults of a :class:`FaultWindow`: ``simulators.faults.FaultSpec`` in seconds from the window's
#: start (a fault starting after the window's end is ignored; one running past it is cut there).
FaultPlanner = Callable[[FaultWindow], Sequence[Any]]

#: Stream seconds a ``fault_planner`` plans at once (a window never spans the end of a record's pass).
FAULT_WINDOW_S = 600.0


def resolve_sources(specs: Sequence[str], data_dir: Path) -> list[tuple[str, Path]]:
    """Turn record paths (``mitdb/100``) and database dirs (``mitdb``, ``ludb/data``, ``ptbxl/records100``)
    into ``(display name, WFDB path)`` pairs. Paths are tried as given, then under ``data_dir``; a missing
    database is :class:`stream.errors.DataMissingError`, an unknown record
    :class:`stream.errors.UnknownRecordError` (:func:`stream.records.resolve_record_specs`)."""
    return resolve_record_specs(specs, data_dir)


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


def demo_fault_planner(window: FaultWindow) -> list[Any]:
    """:func:`demo_faults` at the start of every pass of the record (a looping ``up`` keeps raising alerts)."""
    if window.pass_offset_s > 0:
        return []
    return demo_faults(window.index, window.stream_id, window.leads)


def random_fault_planner(
    rate_per_min: float, rng: np.random.Generator, kinds: Sequence[str] | None = None
) -> FaultPlanner:
    """Random faults (:func:`simulators.faults.random_faults`) at ``rate_per_min`` per stream over every window;
    NSTDB noise kinds only on 360 Hz records (the noise records' rate)."""
    from simulators.faults import FAULT_KINDS, random_faults

    chosen = tuple(kinds or FAULT_KINDS)

    def plan(window: FaultWindow) -> list[Any]:
        usable = [k for k in chosen if not k.startswith("noise_") or abs(window.fs - 360.0) < 1e-6]
        return random_faults(window.length_s, window.leads, rate_per_min, usable, rng)

    return plan


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


def is_retriable(exc: BaseException) -> bool:
    """Whether a failed send is worth retrying: timeouts, lost connections and Kafka's retriable errors; not
    a closed producer, a record too large, an authorisation failure or a serialisation error."""
    from aiokafka.errors import KafkaError, KafkaTimeoutError, ProducerClosed

    if isinstance(exc, ProducerClosed):
        return False
    if isinstance(exc, KafkaTimeoutError):
        return True
    if isinstance(exc, KafkaError):
        return bool(exc.retriable)
    return isinstance(exc, (TimeoutError, ConnectionError))


def _consume_result(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


@dataclass
class _Message:
    topic: str
    key: bytes
    value: bytes
    role: str  # metric label: telemetry | ground_truth
    frame: tuple[str, int] | None  # (stream id, seq) of a telemetry frame
    attempts: int = 0


class Sender:
    """Sends through a producer without awaiting each acknowledgement, and accounts for every message.

    ``producer.send(topic, value=, key=)`` (aiokafka: enqueues the message and returns a future the broker's
    acknowledgement resolves) is awaited; the future is kept. At most ``max_in_flight`` messages are
    outstanding (waiting for their acknowledgement or for a retry): beyond, :meth:`send` waits for
    acknowledgements (backpressure). Acknowledgements and failures are taken in by :meth:`poll` (called by
    every :meth:`send` and at every tick of the replay). A failure that :func:`is_retriable` is sent again
    after ``backoff_s * 2**(attempt - 1)`` (at most ``max_backoff_s``) seconds, up to ``retries`` times, then
    given up. A producer whose ``send`` returns None (no delivery report) counts the message as acknowledged.
    ``on_frame_acked(stream_id, seq)`` is called for every acknowledged telemetry frame.
    """

    def __init__(
        self,
        producer: Any,
        metrics: ReplayMetrics,
        *,
        max_in_flight: int = 1000,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 5.0,
        on_frame_acked: Callable[[str, int], None] | None = None,
    ) -> None:
        if max_in_flight < 1 or retries < 0:
            raise ValueError("max_in_flight must be >= 1 and retries >= 0")
        self.producer = producer
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.on_frame_acked = on_frame_acked
        self.acked = self.lost = self.retried = 0  # messages (any topic); retried counts re-sends
        self.frames_acked = self.frames_lost = 0  # telemetry frames
        self.peak_in_flight = 0
        self.last_error = ""
        self._in_flight: dict[asyncio.Future[Any], _Message] = {}
        self._done: deque[asyncio.Future[Any]] = deque()
        self._retry: list[tuple[float, int, _Message]] = []  # heap of (due, tie-break, message)
        self._order = itertools.count()
        self._progress = asyncio.Event()
        self._interrupted = False

    @property
    def outstanding(self) -> int:
        """Messages sent and not acknowledged yet, or waiting for a retry."""
        return len(self._in_flight) + len(self._retry)

    def interrupt(self) -> None:
        """Stop waiting for room in :meth:`send` (the replay is stopping); :meth:`drain` still waits."""
        self._interrupted = True
        self._progress.set()

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes,
        *,
        role: str = "telemetry",
        frame: tuple[str, int] | None = None,
    ) -> None:
        """Send one message; wait first while ``max_in_flight`` messages are outstanding."""
        await self.poll()
        if self.outstanding >= self.max_in_flight and not self._interrupted:
            await self._wait(lambda: self.outstanding < self.max_in_flight or self._interrupted)
        await self._submit(_Message(topic, key, value, role, frame))

    async def poll(self) -> None:
        """Take in the acknowledgements and failures that arrived; send again the retries that are due."""
        while self._done:
            fut = self._done.popleft()
            msg = self._in_flight.pop(fut, None)
            if msg is None:
                continue
            exc: BaseException | None = (
                asyncio.CancelledError("send future cancelled")
                if fut.cancelled()
                else fut.exception()
            )
            if exc is None:
                self._acked(msg)
            else:
                self._failed(msg, exc)
        now = time.monotonic()
        while self._retry and self._retry[0][0] <= now:
            _, _, msg = heapq.heappop(self._retry)
            await self._submit(msg)

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until every message is acknowledged or given up (retries included); after ``timeout_s``
        give up on the rest. Return whether nothing had to be given up for the timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if await self._wait(lambda: self.outstanding == 0, deadline):
            return True
        reason = f"not acknowledged within the {timeout_s:g} s drain timeout"
        for fut, msg in list(self._in_flight.items()):
            fut.remove_done_callback(self._on_done)
            fut.add_done_callback(
                _consume_result
            )  # no "Future exception was never retrieved" later
            self._give_up(msg, reason)
        for _, _, msg in self._retry:
            self._give_up(msg, reason)
        self._in_flight.clear()
        self._retry.clear()
        self._done.clear()
        return False

    # --------------------------------------------------------------------------------------- internals
    async def _submit(self, msg: _Message) -> None:
        msg.attempts += 1
        try:
            fut = await self.producer.send(msg.topic, value=msg.value, key=msg.key)
        except (
            Exception
        ) as exc:  # could not even be enqueued (buffer full for request_timeout, closed)
            self._failed(msg, exc)
            return
        if fut is None:
            self._acked(msg)
            return
        self._in_flight[fut] = msg
        self.peak_in_flight = max(self.peak_in_flight, len(self._in_flight))
        fut.add_done_callback(self._on_done)

    def _on_done(self, fut: asyncio.Future[Any]) -> None:
        self._done.append(fut)
        self._progress.set()

    def _acked(self, msg: _Message) -> None:
        self.acked += 1
        if msg.frame is not None:
            self.frames_acked += 1
            self.metrics.frames_sent.inc()
            if self.on_frame_acked is not None:
                self.on_frame_acked(*msg.frame)

    def _failed(self, msg: _Message, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if msg.attempts <= self.retries and is_retriable(exc):
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** (msg.attempts - 1))
            heapq.heappush(self._retry, (time.monotonic() + delay, next(self._order), msg))
            self.retried += 1
            self.metrics.send_retries.inc()
            log.warning(
                "send to %s failed (%s); retry %d of %d in %.1f s",
                msg.topic,
                self.last_error,
                msg.attempts,
                self.retries,
                delay,
            )
        else:
            self._give_up(msg, self.last_error)

    def _give_up(self, msg: _Message, reason: str) -> None:
        self.lost += 1
        self.metrics.send_failures.labels(msg.role).inc()
        if msg.frame is not None:
            self.frames_lost += 1
        log.warning(
            "gave up a message to %s after %d attempt(s): %s", msg.topic, msg.attempts, reason
        )

    async def _wait(self, done: Callable[[], bool], deadline: float | None = None) -> bool:
        """Take in acknowledgements and send due retries until ``done()`` or ``deadline``; return ``done()``."""
        while True:
            await self.poll()
            if done():
                return True
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            self._progress.clear()
            if self._done:
                continue
            wakes = [
                t for t in (deadline, self._retry[0][0] if self._retry else None) if t is not None
            ]
            timeout = max(0.0, min(wakes) - now) if wakes else 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), timeout)


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
    index: int = 0  # of the stream in the replay's plans
    passes: int = 0  # completed passes over the record (looping)
    win_pass: int = -1  # pass of the window planned by the fault planner (-1: none yet)
    win_end: int = 0  # sample of `signal` where that window ends
    win_head: np.ndarray | None = None  # faulted copy of the window's samples from win_head_pos
    win_head_pos: int = 0
    pending_truth: list[tuple[bytes, bytes]] = field(default_factory=list)  # to publish


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
        fault_planner: FaultPlanner | None = None,
        fault_window_s: float = FAULT_WINDOW_S,
        max_frames: int | None = None,
        record_sent: bool = False,
        max_in_flight: int = 1000,
        send_retries: int = 3,
        retry_backoff_s: float = 0.5,
        drain_timeout_s: float = 2.0,
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
        self.fault_planner = fault_planner
        if fault_window_s <= 0:
            raise ValueError("fault_window_s must be > 0")
        self.fault_window_s = fault_window_s
        self.max_frames = max_frames
        self.max_in_flight = max_in_flight
        self.send_retries = send_retries
        self.retry_backoff_s = retry_backoff_s
        self.drain_timeout_s = drain_timeout_s
        #: frames acknowledged by the broker / given up after their retries / withheld by lost_frames faults
        self.frames_sent = 0
        self.frames_lost = 0
        self.frames_withheld = 0
        #: False when the final wait for acknowledgements timed out (the broker is probably gone)
        self.drained = True
        #: (stream id, seq) of every frame acknowledged, when ``record_sent``
        self.sent: list[tuple[str, int]] | None = [] if record_sent else None
        self.sender: Sender | None = None
        self._stop = asyncio.Event()
        self._records: dict[Path, Record] = {}
        self._noise: dict[str, np.ndarray] | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to return after the frame being sent (it still waits up to ``drain_timeout_s`` for
        the outstanding acknowledgements)."""
        self._stop.set()
        if self.sender is not None:
            self.sender.interrupt()

    def summary(self) -> str:
        """One line: frames sent (acknowledged), lost and withheld, sends retried."""
        s = self.sender
        retried = s.retried if s is not None else 0
        other = (s.lost - s.frames_lost) if s is not None else 0
        line = (
            f"sent {self.frames_sent} frames (acknowledged), lost {self.frames_lost} "
            f"(given up after {self.send_retries} retries), {retried} send(s) retried, "
            f"{self.frames_withheld} withheld by lost_frames faults"
        )
        if other:
            line += f", {other} ground-truth message(s) lost"
        if s is not None and s.last_error and (s.lost or retried):
            line += f"; last send error: {s.last_error}"
        return line

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
                np.array(signal[:span]),
                rec.fs,
                rec.leads,
                sample_faults,
                noise=noise,
                rng=self.rng,
                adc_range_mv=_sent_range(rec, self.encoding),
            )
        return _Stream(plan, rec, signal, head, lost, frame_len, t0, index=index)

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
            s.head = None  # a plan's own faults are injected on the first pass only
            s.passes += 1
        if self.fault_planner is not None and (s.win_pass != s.passes or s.pos >= s.win_end):
            self._plan_window(s)
        end = s.pos + s.frame_len
        if s.head is not None and end <= s.head.shape[0]:
            chunk = s.head[s.pos : end]
        elif (
            s.win_head is not None
            and s.win_head_pos <= s.pos
            and end <= s.win_head_pos + s.win_head.shape[0]
        ):
            chunk = s.win_head[s.pos - s.win_head_pos : end - s.win_head_pos]
        else:
            chunk = s.signal[s.pos : end]
        seq = s.seq
        s.seq += 1
        s.pos += s.frame_len
        return seq, chunk

    def _plan_window(self, s: _Stream) -> None:
        """Plan the faults of the stream's next window (from ``s.pos``, at most ``fault_window_s``, never past
        the end of the pass): inject them into a copy of its samples, withhold its lost frames and queue its
        ground truth (``s.pending_truth``)."""
        from simulators.faults import frames_to_drop, inject

        assert self.fault_planner is not None
        fs = s.record.fs
        pass_end = (s.signal.shape[0] // s.frame_len) * s.frame_len
        window = max(1, round(self.fault_window_s * fs / s.frame_len)) * s.frame_len
        start, end = s.pos, min(s.pos + window, pass_end)
        s.win_pass, s.win_end, s.win_head = s.passes, end, None
        length_s = (end - start) / fs
        faults = [
            f
            for f in self.fault_planner(
                FaultWindow(
                    index=s.index,
                    stream_id=s.plan.stream_id,
                    leads=s.record.leads,
                    fs=fs,
                    start_s=s.seq * self.settings.frame_seconds,
                    length_s=length_s,
                    pass_no=s.passes,
                    pass_offset_s=start / fs,
                )
            )
            if f.start_s < length_s
        ]
        if not faults:
            return
        s.lost = {q for q in s.lost if q >= s.seq} | {
            s.seq + q for q in frames_to_drop(faults, end - start, fs, s.frame_len)
        }
        sample_faults = [f for f in faults if f.kind != "lost_frames"]
        if sample_faults:
            # the second before: what a flatline holds, where a lead-off steps from
            ctx = min(start, int(fs))
            span = min(end, start + int(max(f.end_s for f in sample_faults) * fs) + s.frame_len)
            noise = (
                self._noise_arrays()
                if any(f.kind.startswith("noise") for f in sample_faults)
                else None
            )
            shifted = [replace(f, start_s=f.start_s + ctx / fs) for f in sample_faults]
            x = inject(
                np.array(s.signal[start - ctx : span]),
                fs,
                s.record.leads,
                shifted,
                noise=noise,
                rng=self.rng,
                adc_range_mv=_sent_range(s.record, self.encoding),
            )
            s.win_head, s.win_head_pos = x[ctx:], start
        for f in faults:
            self.metrics.faults.labels(f.kind).inc()
        t_window = s.t0 + s.seq * self.settings.frame_seconds
        s.pending_truth.extend(self._truth(s, faults, t_window, end - start))

    def truth_messages(self, streams: Sequence[_Stream]) -> list[tuple[bytes, bytes]]:
        """Ground-truth messages (key, value) for every fault of every stream's plan (first pass of the
        record; a ``fault_planner``'s faults are published as their windows come)."""
        out = []
        for s in streams:
            if s.plan.faults:
                out += self._truth(s, s.plan.faults, s.t0, s.signal.shape[0])
        return out

    def _truth(
        self, s: _Stream, faults: Sequence[Any], t0: float, n_samples: int
    ) -> list[tuple[bytes, bytes]]:
        """Ground-truth messages (key, value) of ``faults`` of stream ``s``, seconds from stream time ``t0``
        over ``n_samples`` samples."""
        from simulators.faults import ground_truth

        out = []
        snrs = [(f.kind, f.lead, t0 + f.start_s, f.snr_db) for f in faults if f.snr_db is not None]
        for ev in ground_truth(s.plan.stream_id, faults, t0, s.record.fs, s.frame_len, n_samples):
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
        """Publish until every stream ends, ``duration_s`` elapses or :meth:`stop`; return the frames
        acknowledged (:attr:`frames_lost` holds the frames given up).

        ``producer`` is a started ``aiokafka.AIOKafkaProducer`` (or anything whose ``async send(topic, value=,
        key=)`` returns a future of the acknowledgement, or None for no delivery report); see :class:`Sender`.
        """
        for plan in self.plans:  # read every record before the clock starts
            self._record(plan.path)
        wall0 = time.time()
        t_start = self.start_time if self.start_time is not None else wall0
        streams = [self._build(p, i, t_start) for i, p in enumerate(self.plans)]
        wall0 = time.time()  # fault injection above may take a while on many streams
        self.metrics.streams.set(len(streams))

        def acked(stream_id: str, seq: int) -> None:
            self.frames_sent += 1
            if self.sent is not None:
                self.sent.append((stream_id, seq))

        sender = self.sender = Sender(
            producer,
            self.metrics,
            max_in_flight=self.max_in_flight,
            retries=self.send_retries,
            backoff_s=self.retry_backoff_s,
            on_frame_acked=acked,
        )
        if self._stop.is_set():
            sender.interrupt()
        try:
            await self._publish(sender, streams, wall0, t_start)
        except asyncio.CancelledError:  # no waiting: what is outstanding is counted neither way
            self.frames_lost = sender.frames_lost
            raise
        self.drained = await sender.drain(self.drain_timeout_s)
        self.frames_lost = sender.frames_lost
        return self.frames_sent

    async def _publish(
        self, sender: Sender, streams: list[_Stream], wall0: float, t_start: float
    ) -> None:
        topics = self.settings.topics
        frame_s = self.settings.frame_seconds
        for key, value in self.truth_messages(streams):
            await sender.send(topics.ground_truth, value=value, key=key, role="ground_truth")
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
                await sender.poll()  # every tick: take in acknowledgements, send due retries
                now = time.time()
            if self.speed > 0 and due > now:
                try:
                    await asyncio.wait_for(self._stop.wait(), due - now)
                    break
                except TimeoutError:
                    pass
            elif self.speed == 0 and sent % 200 == 0:
                await asyncio.sleep(0)  # let the producer flush
                await sender.poll()
            s = streams[i]
            nxt = self._next_frame(s)
            if s.pending_truth:  # faults the planner just planned for the window this frame opens
                for key, value in s.pending_truth:
                    await sender.send(
                        topics.ground_truth, value=value, key=key, role="ground_truth"
                    )
                s.pending_truth.clear()
            if nxt is None:
                continue
            seq, chunk = nxt
            start = s.t0 + seq * frame_s
            if seq in s.lost:
                self.metrics.frames_dropped.inc()
                self.frames_withheld += 1
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
                    adc_range_mv=_sent_range(s.record, self.encoding),
                )
                await sender.send(
                    topics.telemetry,
                    value=value,
                    key=s.plan.stream_id.encode(),
                    frame=(s.plan.stream_id, seq),
                )
                sent += 1
            heapq.heappush(heap, (self._due(s, s.seq, wall0, t_start, frame_s), i))

    def _due(self, s: _Stream, seq: int, wall0: float, t_start: float, frame_s: float) -> float:
        """Wall time at which frame ``seq`` of stream ``s`` is complete (0 for as-fast-as-possible)."""
        if self.speed == 0:
            return float(seq)  # round-robin across streams, frame by frame
        return wall0 + ((s.t0 - t_start) + (seq + 1) * frame_s) / self.speed


#: Delivery timeout of the replay's producer: a message not acknowledged within it fails (and is retried).
REQUEST_TIMEOUT_MS = 10_000


def _sent_range(record: Record, encoding: str) -> list[list[float]] | None:
    """The ``adc_range_mv`` a frame of ``record`` declares: the record's ADC rails (from its header),
    narrowed to what the encoding can carry (i16le at the default gain clips at +-32.767 mV)."""
    if record.adc_range_mv is None:
        return None
    cap = I16_MAX_MV if encoding == "i16le" else math.inf
    return [[max(lo, -cap), min(hi, cap)] for lo, hi in record.adc_range_mv]


async def replay_to_kafka(
    settings: Settings,
    plans: Sequence[StreamPlan],
    bootstrap: str | None = None,
    *,
    request_timeout_ms: int = REQUEST_TIMEOUT_MS,
    stop_timeout_s: float = 5.0,
    **kwargs: Any,
) -> int:
    """Run a :class:`Replay` (built from ``kwargs``, or passed as ``replay=``) with its own aiokafka producer;
    return the number of frames acknowledged. Stopping the producer is bounded by ``stop_timeout_s``, and by
    1 s when the replay's final wait for acknowledgements timed out (the broker is gone: the producer would
    wait for every queued batch to time out)."""
    from aiokafka import AIOKafkaProducer

    from stream.broker import client_kwargs

    replay = kwargs.pop("replay", None) or Replay(settings, plans, **kwargs)
    producer = AIOKafkaProducer(
        **client_kwargs(settings, bootstrap),
        linger_ms=settings.replay_linger_ms,
        acks=1,
        request_timeout_ms=request_timeout_ms,
    )
    await producer.start()
    try:
        return await replay.run(producer)
    finally:
        timeout = stop_timeout_s if replay.drained else min(stop_timeout_s, 1.0)
        try:
            await asyncio.wait_for(producer.stop(), timeout)
        except TimeoutError:
            log.warning("producer did not stop within %.0f s (broker unreachable?)", timeout)
