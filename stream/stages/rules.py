"""Alert rules with hysteresis: asystole, pause, bradycardia, tachycardia and signal loss.

Each rule is a small state machine: a condition that holds long enough raises ONE ``raised`` alert; the
episode ends with ONE ``resolved`` alert once the condition has cleared (for rate alarms: the rate is back
inside the limits, with a margin, for ``resolve_s``). Alert ids are deterministic (stream, kind, episode
start) so a replay or a restarted worker produces the same ids.

- asystole (critical): no beat for ``asystole_s`` (4 s) of usable signal on the QRS lead -- time spent in
  a dropout does not count, so a lost lead raises ``signal_loss``, not asystole; resolved by the next beat;
- pause (warning, then critical): no beat for ``pause_warning_s`` (2.5 s) of usable signal. A gap that
  reaches ``pause_critical_s`` (3 s) raises a critical ``pause`` in real time (resolved by the next beat;
  asystole is raised on top of it at 4 s); a gap that ends (with a beat) between 2.5 and 3 s raises a
  warning ``pause`` and resolves it at that beat. Evidence: ``pause_s``, ``last_beat_time`` (resolution
  adds ``resumed_beat_time`` and the full ``pause_s``). Asystole covers the pause it explains: when it is
  raised, an open pause is resolved then with ``closed_by: covered`` and ``covered_by: asystole`` (one
  critical alarm open for one event); ``pause_enabled`` switches the rule off;
- bradycardia / tachycardia (warning): heart rate (median of the last 8 RR) below ``brady_bpm`` / above
  ``tachy_bpm`` at every beat for ``sustain_s``; resolved when back inside the limits by ``hysteresis_bpm``
  for ``resolve_s``;
- signal_loss (warning): every lead in a dropout (any kind) for ``signal_loss_s``; resolved when a lead
  has carried signal again for ``resolve_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stream.stages.events import AlertEvent, Beat, alert_id


@dataclass(frozen=True)
class RuleConfig:
    """Thresholds of the alert rules (seconds, beats per minute)."""

    asystole_s: float = 4.0
    brady_bpm: float = 40.0
    tachy_bpm: float = 150.0
    sustain_s: float = 10.0
    hysteresis_bpm: float = 5.0
    resolve_s: float = 5.0
    signal_loss_s: float = 5.0
    signal_resolve_s: float = 2.0
    #: the pause rule (seconds without a beat on usable signal): warning from pause_warning_s when the gap
    #: has ended, critical in real time from pause_critical_s
    pause_enabled: bool = True
    pause_warning_s: float = 2.5
    pause_critical_s: float = 3.0


@dataclass
class _Episode:
    start: float
    evidence: dict[str, Any]


class RuleEngine:
    """Evaluates the rules of one stream as beats and signal-quality information arrive in time order."""

    def __init__(self, stream_id: str, config: RuleConfig | None = None) -> None:
        self.stream_id = stream_id
        self.config = config or RuleConfig()
        self._open: dict[str, _Episode] = {}
        self._last_beat: float | None = None
        self._valid_since: float | None = None  # QRS lead usable since (None: in dropout now)
        self._lost_since: float | None = None  # all leads in dropout since
        self._recovered_since: float | None = None
        self._rate_since: dict[str, float | None] = {"bradycardia": None, "tachycardia": None}
        self._normal_since: dict[str, float | None] = {"bradycardia": None, "tachycardia": None}
        self._started = False
        self._now: float | None = None

    # -------------------------------------------------------------- helpers
    def active(self) -> tuple[str, ...]:
        """Kinds of the alerts currently raised."""
        return tuple(self._open)

    def _raise(
        self, kind: str, severity: str, start: float, evidence: dict[str, Any]
    ) -> AlertEvent:
        self._open[kind] = _Episode(start, evidence)
        return AlertEvent(
            alert_id(self.stream_id, kind, start),
            self.stream_id,
            kind,
            severity,
            "raised",
            start,
            None,
            evidence,
            self._now,
        )

    def _resolve(
        self, kind: str, severity: str, end: float, evidence: dict[str, Any]
    ) -> AlertEvent:
        ep = self._open.pop(kind)
        ev = {**ep.evidence, **evidence, "duration_s": round(end - ep.start, 3)}
        return AlertEvent(
            alert_id(self.stream_id, kind, ep.start),
            self.stream_id,
            kind,
            severity,
            "resolved",
            ep.start,
            end,
            ev,
            self._now,
        )

    # --------------------------------------------------------------- update
    def update(
        self,
        now: float,
        beats: list[Beat],
        qrs_lead_ok: bool = True,
        all_leads_lost_since: float | None = None,
    ) -> list[AlertEvent]:
        """Advance the rules to time ``now`` (the latest instant the QRS detector has fully decided).

        ``beats`` are the new beats (time order, all <= ``now``); ``qrs_lead_ok`` tells whether the QRS lead
        carries signal at ``now``; ``all_leads_lost_since`` is the start time of a dropout covering every
        lead, or None.
        """
        c = self.config
        out: list[AlertEvent] = []
        self._now = now
        if not self._started:
            self._started = True
            self._valid_since = now if qrs_lead_ok else None
        for b in beats:
            out += self._on_beat(b)
        # signal quality on the QRS lead: asystole only counts usable signal
        if not qrs_lead_ok:
            self._valid_since = None
        elif self._valid_since is None:
            self._valid_since = now
        # asystole
        if "asystole" not in self._open and self._valid_since is not None:
            ref = (
                self._valid_since
                if self._last_beat is None
                else max(self._last_beat, self._valid_since)
            )
            if now - ref >= c.asystole_s:
                if "pause" in self._open:  # asystole explains the pause: one critical alarm open
                    out.append(
                        self._resolve(
                            "pause",
                            "critical",
                            now,
                            {"closed_by": "covered", "covered_by": "asystole"},
                        )
                    )
                out.append(
                    self._raise(
                        "asystole",
                        "critical",
                        ref,
                        {"no_beat_s": round(now - ref, 3), "last_beat_time": self._last_beat},
                    )
                )
        # pause (critical, in real time): only between beats
        if (
            c.pause_enabled
            and "pause" not in self._open
            and "asystole" not in self._open
            and self._last_beat is not None
            and self._valid_since is not None
        ):
            ref = max(self._last_beat, self._valid_since)
            if now - ref >= c.pause_critical_s:
                out.append(
                    self._raise(
                        "pause",
                        "critical",
                        ref,
                        {"pause_s": round(now - ref, 3), "last_beat_time": self._last_beat},
                    )
                )
        # signal loss
        if all_leads_lost_since is not None:
            self._recovered_since = None
            if self._lost_since is None:
                self._lost_since = all_leads_lost_since
            if "signal_loss" not in self._open and now - self._lost_since >= c.signal_loss_s:
                out.append(
                    self._raise(
                        "signal_loss",
                        "warning",
                        self._lost_since,
                        {"lost_s": round(now - self._lost_since, 3)},
                    )
                )
        else:
            self._lost_since = None
            if "signal_loss" in self._open:
                if self._recovered_since is None:
                    self._recovered_since = now
                if now - self._recovered_since >= c.signal_resolve_s:
                    out.append(self._resolve("signal_loss", "warning", self._recovered_since, {}))
                    self._recovered_since = None
        return out

    def _on_beat(self, b: Beat) -> list[AlertEvent]:
        c = self.config
        out: list[AlertEvent] = []
        if "pause" in self._open:
            ep = self._open["pause"]
            out.append(
                self._resolve(
                    "pause",
                    "critical",
                    b.time,
                    {"pause_s": round(b.time - ep.start, 3), "resumed_beat_time": b.time},
                )
            )
        elif (
            c.pause_enabled
            and "asystole" not in self._open  # the asystole covers this gap already
            and self._last_beat is not None
            and self._valid_since is not None
        ):
            ref = max(self._last_beat, self._valid_since)
            gap = b.time - ref
            if gap >= c.pause_warning_s:  # raised and resolved by this beat
                # (critical when the gap passed pause_critical_s before any update could raise it)
                sev = "critical" if gap >= c.pause_critical_s else "warning"
                ev = {"pause_s": round(gap, 3), "last_beat_time": self._last_beat}
                out.append(self._raise("pause", sev, ref, ev))
                out.append(self._resolve("pause", sev, b.time, {"resumed_beat_time": b.time}))
        if "asystole" in self._open:
            out.append(self._resolve("asystole", "critical", b.time, {"resumed_beat_time": b.time}))
        self._last_beat = b.time
        hr = b.hr_bpm
        if hr is None:
            return out
        for kind, bad, normal in (
            ("bradycardia", hr < c.brady_bpm, hr >= c.brady_bpm + c.hysteresis_bpm),
            ("tachycardia", hr > c.tachy_bpm, hr <= c.tachy_bpm - c.hysteresis_bpm),
        ):
            if bad:
                self._normal_since[kind] = None
                since = self._rate_since[kind]
                if since is None:
                    self._rate_since[kind] = since = b.time
                if kind not in self._open and b.time - since >= c.sustain_s:
                    out.append(
                        self._raise(
                            kind,
                            "warning",
                            since,
                            {"hr_bpm": round(hr, 1), "sustained_s": round(b.time - since, 3)},
                        )
                    )
            else:
                self._rate_since[kind] = None
                if kind in self._open:
                    if not normal:
                        self._normal_since[kind] = None
                        continue
                    ns = self._normal_since[kind]
                    if ns is None:
                        self._normal_since[kind] = ns = b.time
                    if b.time - ns >= c.resolve_s:
                        out.append(
                            self._resolve(
                                kind, "warning", ns, {"hr_bpm_at_resolution": round(hr, 1)}
                            )
                        )
                        self._normal_since[kind] = None
        return out

    def flush(self, now: float) -> list[AlertEvent]:
        """End of stream: resolve every open episode at ``now``."""
        self._now = now
        sev = {"asystole": "critical", "pause": "critical"}
        return [
            self._resolve(kind, sev.get(kind, "warning"), now, {"closed_by": "end_of_stream"})
            for kind in list(self._open)
        ]
