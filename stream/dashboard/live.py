"""The live view's fan-out hub: parsed Kafka messages in, per-stream state and per-browser event queues out.

:class:`LiveHub` is pure (no Kafka, no web framework, no clock of its own: every call takes ``now``, wall
clock epoch seconds) so it is unit-tested without a broker. :mod:`stream.dashboard.livefeed` feeds it from
Kafka and :mod:`stream.dashboard.app` serves its clients as Server-Sent Events.

- :meth:`LiveHub.ingest` takes one raw message of a topic kind (``telemetry``, ``beats``, ``scores``,
  ``dropouts``, ``alerts``, ``alarm_actions``); a message that does not parse is counted (``malformed``)
  and skipped, never raised.
- Ward clients get an immediate ``alert`` event for each new alert transition (de-duplicated by
  (id, status): ids are deterministic and delivery at-least-once) and, on each :meth:`LiveHub.tick`
  (``ECG_DASHBOARD_WARD_HZ``), one ``tiles`` event with what changed: heart rate, states, and the first
  lead's new samples decimated to :data:`WARD_FS`.
- Patient clients (one stream) get every frame of that stream (all leads, at most :data:`PATIENT_MAX_FS`),
  its beats and classes, scores, dropouts, alerts and actions as they come.
- Each client has a bounded queue: past ``queue_size`` the oldest event is dropped, counted, and the client
  is marked to receive a full snapshot before its next events, so a slow browser catches up and never
  slows the others.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.errors import FrameValidationError
from stream.schemas import (
    AlarmActionMessage,
    AlertMessage,
    BeatBatchMessage,
    DropoutMessage,
    FrameLimits,
    ScoresMessage,
    decode_frame,
)

#: Topic kinds the hub reads (the :class:`~stream.settings.TopicNames` field names).
TOPIC_KINDS: tuple[str, ...] = (
    "telemetry",
    "beats",
    "scores",
    "dropouts",
    "alerts",
    "alarm_actions",
)
#: Views a client can open (the ``view`` label of the live metrics).
VIEWS: tuple[str, ...] = ("ward", "patient")
#: Sampling rate (Hz) of the ward tiles' waveform.
WARD_FS = 50.0
#: Highest sampling rate (Hz) pushed to a patient view (decimated above).
PATIENT_MAX_FS = 250.0
#: Seconds of waveform kept per stream (catch-up of a new client).
HISTORY_S = 12.0
#: Alarms (transitions) kept per stream, and on the whole ward.
ALARMS_PER_STREAM = 50
WARD_ALARMS = 500
#: Scores kept per stream and model, dropouts per stream, beats per stream.
SCORES_PER_MODEL = 240
DROPOUTS_PER_STREAM = 50
BEATS_KEPT = 64
#: Severity order (higher first) of the tiles.
SEVERITY_RANK: dict[str, int] = {"critical": 4, "warning": 3, "advisory": 2, "info": 1}


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _samples_json(x: np.ndarray) -> list[float | None]:
    """mV samples -> a JSON list (3 decimals; NaN -> null)."""
    out: list[float | None] = [None if not math.isfinite(v) else round(v, 3) for v in x.tolist()]
    return out


def decimate(x: np.ndarray, fs: float, target_fs: float) -> tuple[np.ndarray, float]:
    """Every k-th sample so the rate is at most ``target_fs`` (peak-preserving: the sample of largest
    magnitude of each block, so QRS complexes keep their height); returns (samples, new fs)."""
    k = max(1, math.ceil(fs / target_fs))
    if k == 1:
        return x, fs
    n = (len(x) // k) * k
    if n == 0:
        return x[:0], fs / k
    blocks = x[:n].reshape(-1, k, *x.shape[1:])
    finite = np.isfinite(x)
    centre = np.median(np.where(finite, x, 0.0), axis=0) if finite.any() else 0.0
    dev = np.where(np.isnan(blocks), -1.0, np.abs(blocks - centre))
    idx = np.argmax(dev, axis=1)
    picked = np.take_along_axis(blocks, idx[:, None, ...], axis=1)[:, 0, ...]
    return picked, fs / k


@dataclass
class StreamState:
    """What the hub knows of one patient stream."""

    stream_id: str
    record: str = ""
    leads: tuple[str, ...] = ()
    fs: float = 0.0
    last_seen: float = 0.0
    last_ts: float | None = None  # stream time of the latest sample
    hr_bpm: float | None = None
    active: dict[str, dict[str, Any]] = field(default_factory=dict)  # alert id -> raised alert
    alarms: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=ALARMS_PER_STREAM))
    last_alarm: dict[str, Any] | None = None
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)  # lead -> latest dropout
    dropouts: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=DROPOUTS_PER_STREAM)
    )
    frames: deque[dict[str, Any]] = field(default_factory=deque)  # patient-view frame events
    ward_wave: deque[tuple[float, float, list[float | None]]] = field(default_factory=deque)
    ward_pending: list[tuple[float, float, list[float | None]]] = field(default_factory=list)
    beats: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=BEATS_KEPT))
    classes: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=BEATS_KEPT))
    scores: dict[str, deque[dict[str, Any]]] = field(default_factory=dict)
    attention: dict[str, Any] | None = None
    actions: dict[str, dict[str, Any]] = field(default_factory=dict)  # alert id -> latest action
    dirty: bool = True
    was_stale: bool = False

    def severity(self) -> str | None:
        """The highest severity among the active (raised, unresolved) alarms."""
        sev = [a["severity"] for a in self.active.values()]
        return max(sev, key=lambda s: SEVERITY_RANK.get(s, 0)) if sev else None

    def signal_state(self, now_ts: float | None) -> str:
        """``ok``, or the dropout kinds of leads whose latest dropout ended within 5 s (stream time)."""
        if now_ts is None:
            return "ok"
        recent = sorted({d["kind"] for d in self.quality.values() if d["end_ts"] > now_ts - 5.0})
        return ", ".join(recent) if recent else "ok"

    def tile(self, now: float, stale_s: float) -> dict[str, Any]:
        """The ward tile (without waveform)."""
        return {
            "stream_id": self.stream_id,
            "record": self.record,
            "lead": self.leads[0] if self.leads else None,
            "hr_bpm": self.hr_bpm,
            "severity": self.severity(),
            "rank": SEVERITY_RANK.get(self.severity() or "", 0),
            "active": sorted(
                (
                    {"id": a["id"], "kind": a["kind"], "severity": a["severity"]}
                    for a in self.active.values()
                ),
                key=lambda a: -SEVERITY_RANK.get(a["severity"], 0),
            ),
            "acknowledged": sorted(i for i in self.active if i in self.actions),
            "signal": self.signal_state(self.last_ts),
            "last_alarm": self.last_alarm,
            "last_seen": self.last_seen,
            "stale": now - self.last_seen > stale_s,
        }


class Client:
    """One browser's event stream: a bounded queue of serialised events (oldest dropped when full)."""

    def __init__(
        self, view: str, stream_id: str | None, queue_size: int, notify: Callable[[], None]
    ) -> None:
        self.view = view
        self.stream_id = stream_id
        self.queue: deque[str] = deque(maxlen=queue_size)
        self.dropped = 0
        self.needs_snapshot = True
        self._notify = notify

    def put(self, event: str) -> bool:
        """Queue one event; False when the oldest had to be dropped to make room."""
        full = len(self.queue) == self.queue.maxlen
        if full:
            self.dropped += 1
            self.needs_snapshot = True  # what was dropped comes back with the snapshot
        self.queue.append(event)
        self._notify()
        return not full

    def drain(self) -> list[str]:
        out = list(self.queue)
        self.queue.clear()
        return out


def event(kind: str, payload: dict[str, Any]) -> str:
    """One serialised event: ``{"type": kind, ...payload}`` as compact JSON."""
    return json.dumps({"type": kind, **payload}, separators=(",", ":"), allow_nan=False)


@dataclass
class HubCounters:
    """What the hub counted (the metrics read them): messages by topic kind and result, dropped events by
    view, duplicates skipped."""

    messages: dict[tuple[str, str], int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VIEWS, 0))
    duplicates: int = 0

    def count(self, kind: str, result: str) -> None:
        self.messages[(kind, result)] = self.messages.get((kind, result), 0) + 1


class LiveHub:
    """Per-stream state of the ward and per-client bounded queues (see the module docs)."""

    def __init__(
        self,
        *,
        stale_s: float = 10.0,
        forget_s: float = 600.0,
        queue_size: int = 512,
        frame_limits: FrameLimits | None = None,
        on_drop: Callable[[str], None] | None = None,
        on_alert: Callable[[AlertMessage, float], None] | None = None,
    ) -> None:
        self.stale_s = stale_s
        self.forget_s = forget_s
        self.queue_size = queue_size
        self.frame_limits = frame_limits or FrameLimits()
        self.streams: dict[str, StreamState] = {}
        self.clients: set[Client] = set()
        self.ward_alarms: deque[dict[str, Any]] = deque(maxlen=WARD_ALARMS)
        self.counters = HubCounters()
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._on_drop = on_drop
        self._on_alert = on_alert

    # ------------------------------------------------------------------------------------- clients
    def connect(
        self, view: str, stream_id: str | None = None, notify: Callable[[], None] = lambda: None
    ) -> Client:
        """A new client of ``view`` (``ward``, or ``patient`` of ``stream_id``)."""
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, not {view!r}")
        c = Client(view, stream_id, self.queue_size, notify)
        self.clients.add(c)
        return c

    def disconnect(self, client: Client) -> None:
        self.clients.discard(client)

    def watched(self) -> set[str]:
        """Streams some patient view is watching."""
        return {c.stream_id for c in self.clients if c.view == "patient" and c.stream_id}

    def _send(self, ev: str, *, ward: bool, stream_id: str | None) -> None:
        for c in list(self.clients):
            wanted = (ward and c.view == "ward") or (
                c.view == "patient" and c.stream_id == stream_id
            )
            if wanted and not c.put(ev):
                self.counters.dropped[c.view] += 1
                if self._on_drop is not None:
                    self._on_drop(c.view)

    def take(self, client: Client, now: float) -> list[str]:
        """The events to send to ``client`` now: a snapshot first when it is new or dropped events."""
        out: list[str] = []
        if client.needs_snapshot:
            client.needs_snapshot = False
            client.queue.clear()  # the snapshot holds everything they said
            snap = (
                self.ward_snapshot(now)
                if client.view == "ward"
                else self.patient_snapshot(client.stream_id or "", now)
            )
            out.append(snap)
        out += client.drain()
        return out

    # ------------------------------------------------------------------------------------ snapshots
    def _sorted_tiles(self, now: float) -> list[dict[str, Any]]:
        tiles = [s.tile(now, self.stale_s) for s in self.streams.values()]
        tiles.sort(key=lambda t: (t["stale"], -t["rank"], t["signal"] == "ok", t["stream_id"]))
        return tiles

    def ward_snapshot(self, now: float) -> str:
        """Every tile with its last seconds of waveform, and the ward's recent alarms."""
        tiles = self._sorted_tiles(now)
        for t in tiles:
            t["wave"] = [
                {"t0": t0, "fs": fs, "x": x} for t0, fs, x in self.streams[t["stream_id"]].ward_wave
            ]
        return event("snapshot", {"now": now, "tiles": tiles, "alarms": list(self.ward_alarms)})

    def patient_snapshot(self, stream_id: str, now: float) -> str:
        """One stream: tile, recent frames, beats, classes, scores, attention, alarms, dropouts, actions."""
        s = self.streams.get(stream_id)
        if s is None:
            return event("snapshot", {"now": now, "stream_id": stream_id, "known": False})
        return event(
            "snapshot",
            {
                "now": now,
                "stream_id": stream_id,
                "known": True,
                "tile": s.tile(now, self.stale_s),
                "leads": list(s.leads),
                "frames": list(s.frames),
                "beats": list(s.beats),
                "classes": list(s.classes),
                "scores": {m: list(v) for m, v in s.scores.items()},
                "attention": s.attention,
                "alarms": list(s.alarms),
                "dropouts": list(s.dropouts),
                "actions": list(s.actions.values()),
            },
        )

    # --------------------------------------------------------------------------------------- ingest
    def _stream(self, stream_id: str, now: float) -> StreamState:
        s = self.streams.get(stream_id)
        if s is None:
            s = self.streams[stream_id] = StreamState(stream_id)
        s.last_seen = now
        return s

    def ingest(self, kind: str, value: bytes | None, now: float) -> bool:
        """Apply one raw message of topic ``kind``; False (counted ``malformed``) when it does not parse."""
        if kind not in TOPIC_KINDS:
            raise ValueError(f"topic kind must be one of {TOPIC_KINDS}, not {kind!r}")
        try:
            if value is None:
                raise ValueError("empty message")
            getattr(self, f"_on_{kind}")(value, now)
        except (ValueError, FrameValidationError, KeyError, TypeError, RecursionError):
            self.counters.count(kind, "malformed")
            return False
        self.counters.count(kind, "ok")
        return True

    def _on_telemetry(self, value: bytes, now: float) -> None:
        f = decode_frame(value, self.frame_limits)
        s = self._stream(f.stream_id, now)
        if s.leads and (s.leads != f.leads or s.fs != f.fs):
            s.frames.clear()
            s.ward_wave.clear()
        s.record, s.leads, s.fs = f.record or s.record, f.leads, f.fs
        t0 = float(f.start_time)
        n = f.samples.shape[0]
        s.last_ts = t0 + n / f.fs
        # ward tile: the first lead, decimated
        w, wfs = decimate(f.samples[:, 0], f.fs, WARD_FS)
        chunk = (t0, wfs, _samples_json(w))
        s.ward_wave.append(chunk)
        s.ward_pending.append(chunk)
        while s.ward_wave and s.ward_wave[0][0] < s.last_ts - HISTORY_S:
            s.ward_wave.popleft()
        s.dirty = True
        # patient view: every lead
        p, pfs = decimate(f.samples, f.fs, PATIENT_MAX_FS)
        frame = {
            "t0": t0,
            "fs": pfs,
            "seq": f.seq,
            "leads": list(f.leads),
            "x": [_samples_json(p[:, i]) for i in range(p.shape[1])],
        }
        s.frames.append(frame)
        while s.frames and s.frames[0]["t0"] < s.last_ts - HISTORY_S:
            s.frames.popleft()
        self._send(
            event("frame", {"stream_id": s.stream_id, **frame}), ward=False, stream_id=s.stream_id
        )

    def _on_beats(self, value: bytes, now: float) -> None:
        m = BeatBatchMessage.from_bytes(value)
        s = self._stream(m.stream_id, now)
        if m.duplicate:
            return
        if m.heart_rate_bpm is not None:
            s.hr_bpm = _finite(m.heart_rate_bpm)
        beats = [{"t": b.time, "hr": _finite(b.hr_bpm)} for b in m.beats]
        classes = [{"t": c.time, "label": c.label, "p": round(c.confidence, 3)} for c in m.classes]
        s.beats.extend(beats)
        s.classes.extend(classes)
        s.dirty = True
        if beats or classes or m.heart_rate_bpm is not None:
            self._send(
                event(
                    "beats",
                    {
                        "stream_id": s.stream_id,
                        "hr_bpm": s.hr_bpm,
                        "beats": beats,
                        "classes": classes,
                    },
                ),
                ward=False,
                stream_id=s.stream_id,
            )

    def _on_scores(self, value: bytes, now: float) -> None:
        m = ScoresMessage.from_bytes(value)
        s = self._stream(m.stream_id, now)
        out = []
        for sc in m.scores:
            rec = {
                "model": sc.model,
                "t": sc.time,
                "score": _finite(sc.score),
                "threshold": _finite(sc.threshold) if sc.threshold is not None else None,
                "anomalous": sc.anomalous,
                "recovered_by": sc.recovered_by,
                "recovered_fraction": sc.recovered_fraction,
            }
            s.scores.setdefault(sc.model, deque(maxlen=SCORES_PER_MODEL)).append(rec)
            out.append(rec)
            att = getattr(sc, "lead_attention", None)
            if att:
                s.attention = {"model": sc.model, "t": sc.time, "lead_attention": dict(att)}
        self._send(
            event("scores", {"stream_id": s.stream_id, "scores": out, "attention": s.attention}),
            ward=False,
            stream_id=s.stream_id,
        )

    def _on_dropouts(self, value: bytes, now: float) -> None:
        m = DropoutMessage.from_bytes(value)
        s = self._stream(m.stream_id, now)
        d = {"lead": m.lead, "kind": m.kind, "start_ts": m.start_ts, "end_ts": m.end_ts}
        s.dropouts.append(d)
        prev = s.quality.get(m.lead)
        if prev is None or prev["end_ts"] <= m.end_ts:
            s.quality[m.lead] = d
        s.dirty = True
        self._send(
            event("dropout", {"stream_id": s.stream_id, **d}), ward=False, stream_id=s.stream_id
        )

    def _on_alerts(self, value: bytes, now: float) -> None:
        m = AlertMessage.from_bytes(value)
        key = (m.id, m.status)
        if key in self._seen:
            self.counters.duplicates += 1
            return
        self._seen[key] = None
        if len(self._seen) > 200_000:
            self._seen.popitem(last=False)
        s = self._stream(m.stream_id, now)
        s.record = m.record or s.record
        a = {
            "id": m.id,
            "stream_id": m.stream_id,
            "kind": m.kind,
            "severity": m.severity,
            "status": m.status,
            "start_ts": m.start_ts,
            "end_ts": m.end_ts,
            "at_ts": m.at_ts,
            "evidence": m.evidence,
            "published_at": m.published_at,
        }
        if m.status == "raised":
            s.active[m.id] = a
        else:
            s.active.pop(m.id, None)
        s.alarms.append(a)
        s.last_alarm = a
        s.dirty = True
        self.ward_alarms.append(a)
        if self._on_alert is not None:
            self._on_alert(m, now)
        tile = s.tile(now, self.stale_s)
        self._send(event("alert", {"alert": a, "tile": tile}), ward=True, stream_id=s.stream_id)

    def _on_alarm_actions(self, value: bytes, now: float) -> None:
        m = AlarmActionMessage.from_bytes(value)
        s = self.streams.get(m.stream_id)
        if s is None:
            s = self._stream(m.stream_id, now)
        a = {
            "action": m.action,
            "alert_id": m.alert_id,
            "user": m.user,
            "at_ts": m.at_ts,
            "silence_until_ts": m.silence_until_ts,
        }
        s.actions[m.alert_id] = a
        s.dirty = True
        self._send(
            event("action", {"stream_id": m.stream_id, **a}), ward=True, stream_id=m.stream_id
        )

    # ------------------------------------------------------------------------------------------ tick
    def tick(self, now: float) -> int:
        """Push one ``tiles`` event (what changed since the last tick, and stale flags) to ward clients;
        forget streams silent for ``forget_s``. Returns the number of tiles sent."""
        for sid in [sid for sid, s in self.streams.items() if now - s.last_seen > self.forget_s]:
            del self.streams[sid]
        tiles = []
        for s in self.streams.values():
            stale = now - s.last_seen > self.stale_s
            if s.dirty or stale != s.was_stale:
                t = s.tile(now, self.stale_s)
                t["wave"] = [{"t0": t0, "fs": fs, "x": x} for t0, fs, x in s.ward_pending]
                tiles.append(t)
                s.ward_pending = []
                s.dirty = False
                s.was_stale = stale
        if tiles and any(c.view == "ward" for c in self.clients):
            self._send(event("tiles", {"now": now, "tiles": tiles}), ward=True, stream_id=None)
        return len(tiles)

    def ingest_many(self, items: Iterable[tuple[str, bytes | None]], now: float) -> int:
        """:meth:`ingest` each (kind, value); returns how many parsed."""
        return sum(self.ingest(k, v, now) for k, v in items)
