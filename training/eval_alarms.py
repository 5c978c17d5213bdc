"""Beat classes and arrhythmia alarms of the stream, scored against the MIT-BIH annotations (AAMI EC57/EC38).

Every record is replayed causally, in 1 s frames, through the worker's own per-message logic
(:class:`stream.pipeline.FramePipeline` with a :class:`~stream.stages.scoring.WindowScorer`), and what the
pipeline publishes on the beats, alerts and scores topics is parsed with the topic schemas and scored:

- beat classes (EC57, bxb's rules): each reference beat is paired one-to-one with the nearest classified
  beat within 150 ms (closest pairs first; exactly 150 ms still matches); unpaired reference beats are
  missed (``o``), unpaired classified beats extra (``O``). Beats inside a reference ventricular flutter
  episode (``[`` ... ``]``) are not counted, as bxb does. VEB: TP = Vv, FN = Vn+Vs+Vf+Vq+Vo,
  FP = Nv+Sv+Ov (reference F and Q beats classified V are not false positives); SVEB: TP = Ss,
  FN = Sn+Sv+Sf+Sq+So, FP = Ns+Vs+Fs+Os (reference Q beats classified S are not false positives). Whole
  records (no 5-minute learning period) in the main figures; ``after_5min`` applies EC57's learning period.
  Gross figures on DS2 (test); DS1 beside them, labelled training data.
- AF (EC38 episode and duration statistics): reference = "(AFIB" and "(AFL" rhythm episodes; an episode is
  detected when an ``atrial_fibrillation`` alarm episode overlaps it; an alarm is true when it overlaps a
  reference episode; duration Se = reference seconds covered by alarms / reference seconds, duration
  +P = alarm seconds inside reference episodes / alarm seconds.
- VT/VF: reference = "(VT" and "(VFL" rhythm episodes, ``[``...``]`` flutter episodes, and runs of
  >= 3 consecutive beats of AAMI class V (symbols V, E) whose mean rate ((n-1) / (last - first beat)) is
  above 100 bpm, merged where they overlap; alarms = ``ventricular_tachycardia`` + ``ventricular_fibrillation``.
- False alarms per monitored hour: a raised alarm is false when no reference event of its kind
  (:func:`reference_events`) lies within ``tol_s`` (5 s) of its episode; monitored hours = record durations.
  ``signal_loss``, ``abnormal_12lead`` and ``morphology_change`` have no MIT-BIH reference and are reported
  apart (raised per hour), outside ``overall``. Detection delay = ``at_ts`` of the first alarm raised for a
  detected reference event minus the event's onset.

Paced records (102, 104, 107, 217) are replayed and reported apart, never in the gross figures.
``ptbxl_stream_vs_offline`` replays PTB-XL fold 10 through the same pipeline with the 12-lead model and
compares its record-level sensitivity/specificity with ``python -m training evaluate <model>``.

Command line: ``python -m training evaluate alarms [--json] [--records ...] [--seconds N]``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.datasets.mitdb_split import AAMI_CLASSES, MITDB_DS1, MITDB_DS2, MITDB_PACED

BEAT_TOLERANCE_S = 0.150
ALARM_TOLERANCE_S = 5.0
LEARNING_S = 300.0
#: scoring models of the MIT-BIH replay (the pipeline adds the beat classifier where its card exists)
MITDB_MODELS: tuple[str, ...] = ("cae", "beat_vae")
#: the stream's default 12-lead model (stream.cli.DEFAULT_MODELS)
PTBXL_MODEL = "vae_bilstm"
AF_RHYTHMS: tuple[str, ...] = ("AFIB", "AFL")
VT_RHYTHMS: tuple[str, ...] = ("VT", "VFL")
VT_KINDS: tuple[str, ...] = ("ventricular_tachycardia", "ventricular_fibrillation")
#: alert kinds without a MIT-BIH reference: reported apart, not in the false-alarm figures
UNSCORED_KINDS: tuple[str, ...] = ("signal_loss", "abnormal_12lead", "morphology_change")
SEVERITY_RANK = {"info": 0, "advisory": 1, "warning": 2, "critical": 3}
#: goals: figure -> (comparison, bound)
GOALS: dict[str, tuple[str, float]] = {
    "veb.se": (">=", 95.0),
    "veb.ppv": (">=", 95.0),
    "sveb.se": (">=", 80.0),
    "sveb.ppv": (">=", 60.0),
    "af.episode_se": (">=", 95.0),
    "af.episode_ppv": (">=", 90.0),
    "vt.episode_se": (">=", 90.0),
    "false_critical_per_hour": ("<=", 0.1),
    "false_alarms_per_hour.overall": ("<=", 1.0),
    "ptbxl_stream_vs_offline.abs_diff.sensitivity": ("<=", 0.01),
    "ptbxl_stream_vs_offline.abs_diff.specificity": ("<=", 0.01),
}


# ------------------------------------------------------------------------------------------ reference
@dataclass(frozen=True)
class Episode:
    """A span ``[start, end]`` in seconds from the record start, with a label (rhythm, kind...)."""

    start: float
    end: float
    label: str = ""

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True)
class RecordReference:
    """A record's reference annotations: beat times (s) and AAMI classes, rhythm episodes, VF spans."""

    name: str
    duration_s: float
    beat_times: np.ndarray
    beat_classes: np.ndarray
    rhythms: tuple[Episode, ...] = ()
    vf_spans: tuple[Episode, ...] = ()

    def rhythm(self, labels: Iterable[str]) -> list[Episode]:
        want = set(labels)
        return [e for e in self.rhythms if e.label in want]


@dataclass(frozen=True)
class ReferenceConfig:
    """Thresholds the reference events are built with (the stream's own where it has them)."""

    pause_s: float = 2.5
    asystole_s: float = 4.0
    brady_bpm: float = 40.0
    tachy_bpm: float = 150.0
    hr_beats: int = 8
    vt_min_beats: int = 3
    vt_min_bpm: float = 100.0
    run_min_beats: int = 3
    couplet_beats: int = 2
    pattern_min_v: int = 3
    frequent_pvcs_per_min: float = 10.0

    @classmethod
    def from_stream(cls) -> ReferenceConfig:
        """Rate and asystole limits from :class:`stream.stages.rules.RuleConfig`, the pause and PVC-rate
        thresholds from the rules / the alarm engine (``stream.stages.alarms.AlarmConfig.pvc_per_min``) when
        they have them. The VT reference stays the evaluation's own (>= 3 V beats above 100 bpm)."""
        from stream.stages.rules import RuleConfig

        rc = RuleConfig()
        kw: dict[str, Any] = {
            "asystole_s": rc.asystole_s,
            "brady_bpm": rc.brady_bpm,
            "tachy_bpm": rc.tachy_bpm,
        }
        for src in (rc, _alarm_config()):
            if src is None:
                continue
            for ours, theirs in (
                ("pause_s", "pause_s"),
                ("pause_s", "pause_warning_s"),
                ("frequent_pvcs_per_min", "frequent_pvcs_per_min"),
                ("frequent_pvcs_per_min", "pvc_per_min"),
            ):
                value = getattr(src, theirs, None)
                if isinstance(value, int | float):
                    kw[ours] = float(value)
        return cls(**kw)


def _alarm_config() -> Any:
    try:
        from stream.stages import alarms
    except ImportError:
        return None
    cfg = getattr(alarms, "AlarmConfig", None)
    try:
        return cfg() if cfg is not None else None
    except TypeError:
        return None


def rhythm_episodes(
    samples: Sequence[int], aux: Sequence[str], fs: float, n_samples: int
) -> list[Episode]:
    """Rhythm episodes from MIT-BIH rhythm annotations (aux notes ``(AFIB``, ``(N``...): each runs from its
    annotation to the next rhythm annotation or the record end; label without the parenthesis."""
    marks = [
        (int(s), a.strip("\x00 ").lstrip("("))
        for s, a in zip(samples, aux, strict=True)
        if a and a.strip("\x00 ").startswith("(")
    ]
    out = []
    for i, (s, label) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else n_samples
        if end > s:
            out.append(Episode(s / fs, end / fs, label))
    return out


def vf_spans(samples: Sequence[int], symbols: Sequence[str], fs: float) -> list[Episode]:
    """Ventricular flutter/fibrillation spans marked ``[`` ... ``]`` (EC57 VFON/VFOFF)."""
    out, start = [], None
    for s, sym in zip(samples, symbols, strict=True):
        if sym == "[":
            start = int(s)
        elif sym == "]" and start is not None:
            out.append(Episode(start / fs, int(s) / fs, "VF"))
            start = None
    return out


def read_reference(path: str | Path, seconds: float | None = None) -> RecordReference:
    """Reference of one MIT-BIH record (``path`` without extension): beats, rhythms, VF spans; ``seconds``
    keeps the first seconds only (as :func:`stream.testing.load_record` does)."""
    import wfdb

    path = Path(path)
    header = wfdb.rdheader(str(path))
    fs = float(header.fs)
    n = int(header.sig_len)
    if seconds is not None:
        n = min(round(seconds * fs), n)
    ann = wfdb.rdann(str(path), "atr", sampto=n)
    sample = np.asarray(ann.sample, dtype=np.int64)
    symbol = np.asarray(ann.symbol)
    aux = list(ann.aux_note or [""] * sample.size)
    is_beat = np.isin(symbol, list(AAMI_CLASSES))
    classes = np.array([AAMI_CLASSES[s] for s in symbol[is_beat]], dtype="<U1")
    return RecordReference(
        name=path.name,
        duration_s=n / fs,
        beat_times=sample[is_beat] / fs,
        beat_classes=classes,
        rhythms=tuple(rhythm_episodes(sample.tolist(), aux, fs, n)),
        vf_spans=tuple(vf_spans(sample.tolist(), symbol.tolist(), fs)),
    )


def merge(episodes: Iterable[Episode], label: str = "") -> list[Episode]:
    """Union of episodes as sorted disjoint spans (touching spans merged)."""
    out: list[Episode] = []
    for e in sorted(episodes, key=lambda e: (e.start, e.end)):
        if out and e.start <= out[-1].end:
            last = out[-1]
            out[-1] = Episode(last.start, max(last.end, e.end), label or last.label)
        else:
            out.append(Episode(e.start, e.end, label or e.label))
    return out


def v_runs(
    times: np.ndarray, classes: np.ndarray, min_beats: int = 3, min_bpm: float | None = None
) -> list[Episode]:
    """Maximal runs of >= ``min_beats`` consecutive class-V beats (first to last V beat), with a mean rate
    ``60 (n-1) / (last - first)`` above ``min_bpm`` when given."""
    out = []
    v = np.asarray(classes) == "V"
    i, n = 0, v.size
    while i < n:
        if not v[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and v[j + 1]:
            j += 1
        k = j - i + 1
        if k >= min_beats:
            span = float(times[j] - times[i])
            rate = 60.0 * (k - 1) / span if span > 0 else math.inf
            if min_bpm is None or rate > min_bpm:
                out.append(Episode(float(times[i]), float(times[j]), f"V{k}"))
        i = j + 1
    return out


def ectopic_pattern(
    times: np.ndarray, classes: np.ndarray, every: int, min_v: int = 3
) -> list[Episode]:
    """Spans where every ``every``-th beat is V and the others are not (2: bigeminy N V N V..., 3:
    trigeminy N N V N N V...), with at least ``min_v`` V beats (first to last V beat)."""
    cls = np.asarray(classes)
    idx = np.flatnonzero(cls == "V")
    out: list[Episode] = []
    chain = [int(idx[0])] if idx.size else []
    for a in idx[1:].tolist():
        prev = chain[-1]
        if a - prev == every and not (cls[prev + 1 : a] == "V").any():
            chain.append(a)
            continue
        if len(chain) >= min_v:
            out.append(Episode(float(times[chain[0]]), float(times[chain[-1]])))
        chain = [a]
    if len(chain) >= min_v:
        out.append(Episode(float(times[chain[0]]), float(times[chain[-1]])))
    return out


def _crosses(a: float, b: float, spans: Sequence[Episode]) -> bool:
    return any(s.start < b and s.end > a for s in spans)


def long_rr(
    times: np.ndarray, threshold_s: float, exclude: Sequence[Episode] = ()
) -> list[Episode]:
    """Reference RR intervals longer than ``threshold_s`` (from the beat before to the beat after), except
    those spanning an ``exclude`` span (a VF episode has no beat annotations)."""
    t = np.asarray(times, dtype=float)
    out = []
    for i in np.flatnonzero(np.diff(t) > threshold_s).tolist():
        a, b = float(t[i]), float(t[i + 1])
        if not _crosses(a, b, exclude):
            out.append(Episode(a, b, "RR"))
    return out


def rate_spans(
    times: np.ndarray,
    below: float | None = None,
    above: float | None = None,
    n: int = 8,
    exclude: Sequence[Episode] = (),
) -> list[Episode]:
    """Spans of consecutive beats whose heart rate (60 / median of the last ``n`` RR, as the stream
    computes it) is below ``below`` or above ``above`` bpm; RR intervals spanning ``exclude`` are dropped."""
    t = np.asarray(times, dtype=float)
    if t.size < 2:
        return []
    rr = np.diff(t)
    keep = np.array([not _crosses(t[i], t[i + 1], exclude) for i in range(rr.size)], dtype=bool)
    hit = np.zeros(t.size, dtype=bool)
    for k in range(1, t.size):
        lo = max(0, k - n)
        window = rr[lo:k][keep[lo:k]]
        if window.size == 0:
            continue
        hr = 60.0 / float(np.median(window))
        hit[k] = (below is not None and hr < below) or (above is not None and hr > above)
    out = []
    k = 0
    while k < t.size:
        if not hit[k]:
            k += 1
            continue
        j = k
        while j + 1 < t.size and hit[j + 1]:
            j += 1
        out.append(Episode(float(t[max(k - 1, 0)]), float(t[j]), "HR"))
        k = j + 1
    return out


def pvc_rate_spans(v_times: np.ndarray, per_min: float, window_s: float = 60.0) -> list[Episode]:
    """Spans where the reference V count in the trailing ``window_s`` exceeds ``per_min`` per minute: from
    the V beat at which it first exceeds it to the last V beat at which it still does."""
    t = np.sort(np.asarray(v_times, dtype=float))
    limit = per_min * window_s / 60.0
    hits = []
    for k in range(t.size):
        count = k - int(np.searchsorted(t, t[k] - window_s, side="right")) + 1
        if count > limit:
            hits.append(float(t[k]))
    out: list[Episode] = []
    for h in hits:
        if out and h - out[-1].end <= window_s:
            out[-1] = Episode(out[-1].start, h, "PVC")
        else:
            out.append(Episode(h, h, "PVC"))
    return out


def vt_reference(ref: RecordReference, cfg: ReferenceConfig) -> list[Episode]:
    """VT/VF reference events: "(VT"/"(VFL" rhythm episodes, ``[``...``]`` spans and fast V runs, merged."""
    runs = v_runs(ref.beat_times, ref.beat_classes, cfg.vt_min_beats, cfg.vt_min_bpm)
    return merge([*ref.rhythm(VT_RHYTHMS), *ref.vf_spans, *runs], "VT")


def reference_events(ref: RecordReference, kind: str, cfg: ReferenceConfig) -> list[Episode] | None:
    """The reference events an alarm of ``kind`` is judged against; None for kinds without a reference."""
    t, c = ref.beat_times, ref.beat_classes
    vf = list(ref.vf_spans)
    if kind == "atrial_fibrillation":
        return merge(ref.rhythm(AF_RHYTHMS), "AF")
    if kind in VT_KINDS:
        return vt_reference(ref, cfg)
    if kind == "ventricular_run":
        return v_runs(t, c, cfg.run_min_beats)
    if kind == "pvc_couplet":
        return v_runs(t, c, cfg.couplet_beats)
    if kind == "ventricular_bigeminy":
        return merge([*ref.rhythm(["B"]), *ectopic_pattern(t, c, 2, cfg.pattern_min_v)], "B")
    if kind == "ventricular_trigeminy":
        return merge([*ref.rhythm(["T"]), *ectopic_pattern(t, c, 3, cfg.pattern_min_v)], "T")
    if kind == "frequent_pvcs":
        return pvc_rate_spans(t[c == "V"], cfg.frequent_pvcs_per_min)
    if kind == "pause":
        return long_rr(t, cfg.pause_s, vf)
    if kind == "asystole":
        return long_rr(t, cfg.asystole_s, vf)
    if kind == "bradycardia":
        return rate_spans(t, below=cfg.brady_bpm, n=cfg.hr_beats, exclude=vf)
    if (
        kind == "tachycardia"
    ):  # a VT/VF episode is a fast rhythm too (flutter waves carry no beat label)
        fast = rate_spans(t, above=cfg.tachy_bpm, n=cfg.hr_beats, exclude=vf)
        return merge([*fast, *vt_reference(ref, cfg)], "HR")
    return None


# ------------------------------------------------------------------------------------------ beat classes
def match_nearest(
    ref: np.ndarray, test: np.ndarray, tol_s: float = BEAT_TOLERANCE_S
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs (reference index, test index) of times within ``tol_s`` (inclusive), closest pairs
    first; each beat is used once."""
    ref = np.asarray(ref, dtype=float)
    test = np.asarray(test, dtype=float)
    eps = 1e-9
    ri_l, ti_l = [], []
    if ref.size and test.size:
        order = np.argsort(test, kind="stable")
        ts = test[order]
        lo = np.searchsorted(ts, ref - tol_s - eps, side="left")
        hi = np.searchsorted(ts, ref + tol_s + eps, side="right")
        cand = [
            (abs(ts[j] - ref[i]), i, int(order[j]))
            for i in range(ref.size)
            for j in range(lo[i], hi[i])
            if abs(ts[j] - ref[i]) <= tol_s + eps
        ]
        cand.sort()
        used_r = np.zeros(ref.size, dtype=bool)
        used_t = np.zeros(test.size, dtype=bool)
        for _, i, j in cand:
            if not used_r[i] and not used_t[j]:
                used_r[i] = used_t[j] = True
                ri_l.append(i)
                ti_l.append(j)
    return np.asarray(ri_l, dtype=np.int64), np.asarray(ti_l, dtype=np.int64)


def _inside(times: np.ndarray, spans: Sequence[Episode]) -> np.ndarray:
    out = np.zeros(np.asarray(times).size, dtype=bool)
    for s in spans:
        out |= (times >= s.start) & (times <= s.end)
    return out


def ec57_confusion(
    ref_times: np.ndarray,
    ref_classes: np.ndarray,
    test_times: np.ndarray,
    test_classes: np.ndarray,
    tol_s: float = BEAT_TOLERANCE_S,
    exclude: Sequence[Episode] = (),
    start_s: float = 0.0,
) -> dict[str, int]:
    """EC57 confusion counts: keys ``Rt`` with R the reference class (N S V F Q, ``O`` = no reference beat)
    and t the classified label (n s v f q, ``o`` = not classified). Beats inside ``exclude`` (reference VF)
    or before ``start_s`` (a learning period) are not counted."""
    rt = np.asarray(ref_times, dtype=float)
    rc = np.asarray(ref_classes)
    tt = np.asarray(test_times, dtype=float)
    tc = np.asarray(test_classes)
    keep_r = ~_inside(rt, exclude) & (rt >= start_s)
    keep_t = ~_inside(tt, exclude) & (tt >= start_s)
    rt, rc, tt, tc = rt[keep_r], rc[keep_r], tt[keep_t], tc[keep_t]
    counts = {f"{r}{t}": 0 for r in "NSVFQ" for t in "nsvfqo"}
    counts.update({f"O{t}": 0 for t in "nsvfq"})
    ri, ti = match_nearest(rt, tt, tol_s)
    for i, j in zip(ri.tolist(), ti.tolist(), strict=True):
        counts[f"{rc[i]}{str(tc[j]).lower()}"] += 1
    for i in np.setdiff1d(np.arange(rt.size), ri).tolist():
        counts[f"{rc[i]}o"] += 1
    for j in np.setdiff1d(np.arange(tt.size), ti).tolist():
        counts[f"O{str(tc[j]).lower()}"] += 1
    return counts


def _pct(a: float, b: float) -> float | None:
    return round(100.0 * a / b, 2) if b > 0 else None


def ec57_stats(c: dict[str, int]) -> dict[str, dict[str, Any]]:
    """VEB and SVEB sensitivity and positive predictivity (percent) of EC57 confusion counts (bxb's
    definitions: F and Q beats classified V, and Q beats classified S, are not false positives)."""
    vtp = c["Vv"]
    vfn = c["Vn"] + c["Vs"] + c["Vf"] + c["Vq"] + c["Vo"]
    vfp = c["Nv"] + c["Sv"] + c["Ov"]
    stp = c["Ss"]
    sfn = c["Sn"] + c["Sv"] + c["Sf"] + c["Sq"] + c["So"]
    sfp = c["Ns"] + c["Vs"] + c["Fs"] + c["Os"]
    return {
        "veb": {
            "se": _pct(vtp, vtp + vfn),
            "ppv": _pct(vtp, vtp + vfp),
            "tp": vtp,
            "fn": vfn,
            "fp": vfp,
        },
        "sveb": {
            "se": _pct(stp, stp + sfn),
            "ppv": _pct(stp, stp + sfp),
            "tp": stp,
            "fn": sfn,
            "fp": sfp,
        },
    }


def add_counts(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    for k, v in more.items():
        total[k] = total.get(k, 0) + v
    return total


# ------------------------------------------------------------------------------------------ episodes
def overlaps(a: Episode, b: Episode, tol_s: float = 0.0) -> bool:
    """Closed spans ``a`` and ``b`` overlap once ``a`` is widened by ``tol_s`` on both sides."""
    return a.start - tol_s <= b.end and b.start <= a.end + tol_s


def _covered(spans: Sequence[Episode], by: Sequence[Episode]) -> float:
    """Seconds of ``spans`` (disjoint) covered by the union of ``by``."""
    u = merge(by)
    return sum(max(0.0, min(s.end, b.end) - max(s.start, b.start)) for s in merge(spans) for b in u)


def episode_counts(
    reference: Sequence[Episode], alarms: Sequence[Episode], tol_s: float = 0.0
) -> dict[str, float]:
    """EC38 counts: reference episodes detected (overlapped by an alarm), alarms true (overlapping a
    reference episode), reference seconds and their seconds covered by alarms, alarm seconds and their
    seconds inside reference episodes."""
    return {
        "ref_episodes": len(reference),
        "ref_detected": sum(any(overlaps(r, a, tol_s) for a in alarms) for r in reference),
        "alarm_episodes": len(alarms),
        "alarm_true": sum(any(overlaps(a, r, tol_s) for r in reference) for a in alarms),
        "ref_s": sum(e.duration for e in merge(reference)),
        "ref_covered_s": _covered(reference, alarms),
        "alarm_s": sum(e.duration for e in merge(alarms)),
        "alarm_in_ref_s": _covered(alarms, reference),
    }


def episode_stats(c: dict[str, float]) -> dict[str, Any]:
    """Episode and duration sensitivity / positive predictivity (percent) of summed :func:`episode_counts`."""
    return {
        "episode_se": _pct(c["ref_detected"], c["ref_episodes"]),
        "episode_ppv": _pct(c["alarm_true"], c["alarm_episodes"]),
        "duration_se": _pct(c["ref_covered_s"], c["ref_s"]),
        "duration_ppv": _pct(c["alarm_in_ref_s"], c["alarm_s"]),
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in c.items()},
    }


@dataclass(frozen=True)
class AlarmEpisode:
    """One alert episode of the stream: kind, highest severity, onset/end (s from the record start) and
    ``at``, when it was raised (stream time, s from the record start)."""

    id: str
    kind: str
    severity: str
    start: float
    end: float
    at: float

    @property
    def span(self) -> Episode:
        return Episode(self.start, self.end, self.kind)


def alarm_episodes(messages: Iterable[Any], t0: float, end_s: float) -> list[AlarmEpisode]:
    """Alert episodes from alerts-topic messages (:class:`stream.schemas.AlertMessage`), times relative to
    ``t0``; an episode never resolved ends at ``end_s``. A re-raised id keeps its highest severity."""
    eps: dict[str, dict[str, Any]] = {}
    for m in messages:
        e = eps.setdefault(
            m.id,
            {
                "kind": m.kind,
                "severity": m.severity,
                "start": m.start_ts - t0,
                "end": None,
                "at": None,
            },
        )
        if SEVERITY_RANK.get(m.severity, 0) > SEVERITY_RANK.get(e["severity"], 0):
            e["severity"] = m.severity
        if m.status == "raised":
            at = (m.at_ts if m.at_ts is not None else m.start_ts) - t0
            e["at"] = at if e["at"] is None else min(e["at"], at)
        elif m.end_ts is not None:
            e["end"] = m.end_ts - t0
    out = []
    for ident, e in eps.items():
        if e["at"] is None:  # a resolution without its raise (not possible from one replay)
            continue
        out.append(
            AlarmEpisode(
                ident,
                e["kind"],
                e["severity"],
                e["start"],
                e["end"] if e["end"] is not None else end_s,
                e["at"],
            )
        )
    return sorted(out, key=lambda a: (a.start, a.kind))


def false_alarm_counts(
    alarms: Sequence[AlarmEpisode],
    ref: RecordReference,
    cfg: ReferenceConfig,
    tol_s: float = ALARM_TOLERANCE_S,
) -> dict[str, Any]:
    """Per kind: raised, false (no reference event of its kind within ``tol_s``), false critical, and the
    detection delays (s) of the reference events detected (``at`` of the first alarm raised for the event
    minus its onset; events an alarm raised earlier already covered have no delay)."""
    out: dict[str, Any] = {}
    refs: dict[str, list[Episode] | None] = {}
    for a in alarms:
        if a.kind not in refs:
            refs[a.kind] = reference_events(ref, a.kind, cfg)
        events = refs[a.kind]
        k = out.setdefault(a.kind, {"raised": 0, "false": 0, "false_critical": 0, "delays": []})
        k["raised"] += 1
        if events is None or a.kind in UNSCORED_KINDS:
            k["unscored"] = True
            continue
        if not any(overlaps(a.span, e, tol_s) for e in events):
            k["false"] += 1
            k["false_critical"] += int(a.severity == "critical")
    for kind, k in out.items():
        events = refs.get(kind)
        if not events or k.get("unscored"):
            continue
        mine = [a for a in alarms if a.kind == kind]
        for e in events:
            cand = [a.at for a in mine if overlaps(a.span, e, tol_s) and a.at >= e.start - tol_s]
            if cand:
                k["delays"].append(round(min(cand) - e.start, 3))
    return out


# ------------------------------------------------------------------------------------------ the replay
@dataclass
class StreamOutput:
    """What the pipeline published for one record (times in s from the record start)."""

    record: str
    duration_s: float
    beats: int = 0
    classes: list[tuple[float, str]] = field(default_factory=list)
    alarms: list[AlarmEpisode] = field(default_factory=list)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def make_scorer(models: Sequence[str], models_dir: str | Path | None = None) -> Any:
    """The stream's :class:`~stream.stages.scoring.WindowScorer` (with the beat classifier where the
    pipeline adds it)."""
    from stream.stages.scoring import WindowScorer

    return WindowScorer(models=tuple(models), models_dir=models_dir) if models else None


def replay_through_pipeline(
    rec: Any, stream_id: str, record: str, scorer: Any, settings: Any = None
) -> tuple[list[Any], list[Any], list[Any], dict[str, int]]:
    """Replay a :class:`~stream.records.Record` through a fresh :class:`~stream.pipeline.FramePipeline`
    (causal, 1 s frames encoded as the replay sends them, a fake clock at stream time) and flush it; the
    parsed beats, alerts and scores messages, and the dead letters counted by reason."""
    from simulators.replay import _sent_range  # the adc_range_mv the replay declares
    from stream.pipeline import FramePipeline
    from stream.schemas import (
        AlertMessage,
        BeatBatchMessage,
        DeadLetterMessage,
        ScoresMessage,
        encode_frame,
    )
    from stream.settings import Settings
    from stream.testing import T0, FakeClock, frames_from_array

    settings = settings or Settings()
    clock = FakeClock(T0)
    pipe = FramePipeline(settings, scorer=scorer, clock=clock)
    adc = _sent_range(rec, "i16le")

    def messages() -> Iterable[tuple[bytes, bytes]]:
        for f in frames_from_array(rec.signal, rec.fs, rec.leads, stream_id, 1.0, T0):
            clock.set(f.end_time)
            value = encode_frame(
                stream_id=f.stream_id,
                seq=f.seq,
                fs=f.fs,
                leads=f.leads,
                start_time=f.start_time,
                samples=f.samples,
                record=record,
                units=rec.units,
                sent_at=f.end_time,
                adc_range_mv=adc,
            )
            yield stream_id.encode(), value

    # the worker scores its pending windows every 0.25 s (stream.app.SCORE_FLUSH_INTERVAL_S), at
    # least once per 1 s frame of a real-time stream: flush after every frame, as it does
    outs = []
    for offset, (key, value) in enumerate(messages()):
        outs += pipe.handle(key, value, "telemetry", 0, offset)
        outs += pipe.flush_scores()
    outs += pipe.flush_all()
    forget = getattr(scorer, "forget", None)
    if callable(forget):
        forget(stream_id)
    topics = settings.topics
    beats = [BeatBatchMessage.from_bytes(o.value) for o in outs if o.topic == topics.beats]
    alerts = [AlertMessage.from_bytes(o.value) for o in outs if o.topic == topics.alerts]
    scores = [ScoresMessage.from_bytes(o.value) for o in outs if o.topic == topics.scores]
    dead: dict[str, int] = {}
    for o in outs:
        if o.topic == topics.dead_letter:
            reason = DeadLetterMessage.from_bytes(o.value).reason
            dead[reason] = dead.get(reason, 0) + 1
    return beats, alerts, scores, dead


def replay_record(
    data_dir: str | Path,
    name: str,
    scorer: Any = None,
    seconds: float | None = None,
) -> StreamOutput:
    """Replay MIT-BIH record ``name`` (its first ``seconds`` when given) through the pipeline."""
    from stream.testing import T0, load_record

    t = time.perf_counter()
    rec = load_record(Path(data_dir) / "mitdb" / name, seconds=seconds)
    sid = f"mitdb-{name}"
    beats, alerts, scores, dead = replay_through_pipeline(rec, sid, f"mitdb/{name}", scorer)
    out = StreamOutput(record=name, duration_s=rec.duration_s, dead_letters=dead)
    for b in beats:
        out.beats += len(b.beats)
        out.classes += [(c.time - T0, c.label) for c in b.classes]
    out.alarms = alarm_episodes(alerts, T0, rec.duration_s)
    for msg in scores:
        for s in msg.scores:
            d = out.scores.setdefault(s.model, {"windows": 0, "anomalous": 0})
            d["windows"] += 1
            d["anomalous"] += int(s.anomalous)
    out.seconds = round(time.perf_counter() - t, 2)
    return out


_WORKER: dict[str, Any] = {}


def _init_worker(models: tuple[str, ...], models_dir: str | None) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER["scorer"] = make_scorer(models, models_dir)


def _replay_job(args: tuple[str, str, float | None]) -> StreamOutput:
    data_dir, name, seconds = args
    return replay_record(data_dir, name, _WORKER.get("scorer"), seconds)


def _pool_map(
    fn: Any,
    jobs: list[Any],
    init: Any,
    init_args: tuple[Any, ...],
    processes: int,
    progress: bool,
    desc: str,
) -> list[Any]:
    """``fn`` over ``jobs`` in a pool of ``processes`` (spawned, each loading the models once), in order;
    in this process when ``processes <= 1``; a progress bar per job on stderr."""
    import sys

    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="rec", file=sys.stderr, disable=not progress)
    try:
        if processes <= 1 or len(jobs) <= 1:
            init(*init_args)
            out = []
            for j in jobs:
                out.append(fn(j))
                bar.update()
            return out
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(processes, initializer=init, initargs=init_args) as pool:
            out = []
            for r in pool.imap(fn, jobs):
                out.append(r)
                bar.update()
            return out
    finally:
        bar.close()


# ------------------------------------------------------------------------------------------ scoring
def score_beats(
    refs: dict[str, RecordReference],
    outs: dict[str, StreamOutput],
    records: Sequence[str],
    start_s: float = 0.0,
) -> dict[str, Any]:
    """Gross EC57 VEB/SVEB figures over ``records`` and per record (only the records replayed)."""
    total: dict[str, int] = {}
    per: dict[str, Any] = {}
    for name in records:
        if name not in outs:
            continue
        ref, out = refs[name], outs[name]
        tt = np.array([c[0] for c in out.classes], dtype=float)
        tc = np.array([c[1] for c in out.classes], dtype="<U1")
        c = ec57_confusion(
            ref.beat_times, ref.beat_classes, tt, tc, exclude=ref.vf_spans, start_s=start_s
        )
        add_counts(total, c)
        st = ec57_stats(c)
        per[name] = {
            "veb": {k: st["veb"][k] for k in ("se", "ppv")},
            "sveb": {k: st["sveb"][k] for k in ("se", "ppv")},
            "ref_V": sum(v for k, v in c.items() if k[0] == "V"),
            "ref_S": sum(v for k, v in c.items() if k[0] == "S"),
            "classified": int(tt.size),
            "unmatched_ref": sum(v for k, v in c.items() if k[1] == "o"),
        }
    if not total:
        total = ec57_confusion(np.array([]), np.array([]), np.array([]), np.array([]))
    st = ec57_stats(total)
    return {
        **st,
        "confusion": total,
        "per_record": per,
        "records": [r for r in records if r in outs],
    }


def score_alarms(
    refs: dict[str, RecordReference],
    outs: dict[str, StreamOutput],
    records: Sequence[str],
    cfg: ReferenceConfig,
    tol_s: float = ALARM_TOLERANCE_S,
) -> dict[str, Any]:
    """AF and VT episode figures, false alarms per monitored hour and detection delays over ``records``."""
    from stream.stages.events import ALERT_KINDS

    af_c: dict[str, float] = {}
    vt_c: dict[str, float] = {}
    run_c: dict[str, float] = {}
    by_kind: dict[str, dict[str, Any]] = {}
    per_record: dict[str, Any] = {}
    hours = 0.0
    names = [r for r in records if r in outs]
    for name in names:
        ref, out = refs[name], outs[name]
        hours += out.duration_s / 3600.0
        af = [a.span for a in out.alarms if a.kind == "atrial_fibrillation"]
        vt = [a.span for a in out.alarms if a.kind in VT_KINDS]
        c_af = episode_counts(merge(ref.rhythm(AF_RHYTHMS)), af)
        c_vt = episode_counts(vt_reference(ref, cfg), vt)
        # the same reference, a ventricular_run alarm (a 3-4 beat run, below the VT alarm's length)
        # counted as detecting it too
        runs = [a.span for a in out.alarms if a.kind in (*VT_KINDS, "ventricular_run")]
        add_counts(run_c, episode_counts(vt_reference(ref, cfg), runs))  # type: ignore[arg-type]
        add_counts(af_c, c_af)  # type: ignore[arg-type]
        add_counts(vt_c, c_vt)  # type: ignore[arg-type]
        fa = false_alarm_counts(out.alarms, ref, cfg, tol_s)
        for kind, k in fa.items():
            d = by_kind.setdefault(
                kind, {"raised": 0, "false": 0, "false_critical": 0, "delays": []}
            )
            for key in ("raised", "false", "false_critical"):
                d[key] += k[key]
            d["delays"] += k["delays"]
            d["unscored"] = d.get("unscored", False) or bool(k.get("unscored"))
        per_record[name] = {
            "alarms_raised": {kind: k["raised"] for kind, k in fa.items()},
            "false_alarms": false_alarm_list(out.alarms, ref, cfg, tol_s)[:20],
            "af": {
                k: c_af[k] for k in ("ref_episodes", "ref_detected", "alarm_episodes", "alarm_true")
            },
            "vt": {
                k: c_vt[k] for k in ("ref_episodes", "ref_detected", "alarm_episodes", "alarm_true")
            },
        }
    scored = {k: d for k, d in by_kind.items() if not d.get("unscored")}
    per_hour: dict[str, float | None] = {
        kind: round(scored[kind]["false"] / hours, 3) if hours and kind in scored else 0.0
        for kind in ALERT_KINDS
        if kind not in UNSCORED_KINDS
    }
    n_false = sum(d["false"] for d in scored.values())
    n_crit = sum(d["false_critical"] for d in scored.values())
    per_hour["overall"] = round(n_false / hours, 3) if hours else None
    zero = episode_counts([], [])
    return {
        "af": episode_stats(af_c or zero),
        "vt": episode_stats(vt_c or zero),
        "vt_or_run": episode_stats(run_c or zero),
        "false_alarms_per_hour": per_hour,
        "false_critical_per_hour": round(n_crit / hours, 3) if hours else None,
        "detection_delay_s": {
            kind: round(float(np.median(d["delays"])), 3)
            for kind, d in sorted(scored.items())
            if d["delays"]
        },
        "alarms_by_kind": {
            kind: {
                "raised": d["raised"],
                "false": None if d.get("unscored") else d["false"],
                "false_critical": None if d.get("unscored") else d["false_critical"],
                "raised_per_hour": round(d["raised"] / hours, 3) if hours else None,
                "events_detected_with_delay": len(d["delays"]),
            }
            for kind, d in sorted(by_kind.items())
        },
        "monitored_hours": round(hours, 3),
        "records": names,
        "per_record": per_record,
    }


def false_alarm_list(
    alarms: Sequence[AlarmEpisode], ref: RecordReference, cfg: ReferenceConfig, tol_s: float
) -> list[dict[str, Any]]:
    """The false alarms of a record (kind, severity, onset, end, raised at; seconds from its start)."""
    out = []
    refs: dict[str, list[Episode] | None] = {}
    for a in alarms:
        if a.kind in UNSCORED_KINDS:
            continue
        events = refs.setdefault(a.kind, reference_events(ref, a.kind, cfg))
        if events is not None and not any(overlaps(a.span, e, tol_s) for e in events):
            out.append(
                {
                    "kind": a.kind,
                    "severity": a.severity,
                    "start": round(a.start, 2),
                    "end": round(a.end, 2),
                    "at": round(a.at, 2),
                }
            )
    return out


def goals(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every goal figure beside its goal, met or not (a missing figure is not met)."""
    out = {}
    for key, (op, bound) in GOALS.items():
        v: Any = result
        for part in key.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        met = v is not None and (v >= bound if op == ">=" else v <= bound)
        out[key] = {"value": v, "goal": f"{op} {bound:g}", "met": bool(met)}
    return out


# ------------------------------------------------------------------------------------------ PTB-XL
_PTBXL: dict[str, Any] = {}


def _init_ptbxl_worker(model: str, models_dir: str | None) -> None:
    _PTBXL["scorer"] = make_scorer((model,), models_dir)
    _PTBXL["model"] = model


def _ptbxl_job(args: tuple[str, int, str]) -> tuple[int, float | None, bool, int]:
    """One PTB-XL record through the pipeline: (ecg_id, highest window score or None, flagged, windows)."""
    from stream.testing import load_record

    root, ecg_id, rel = args
    rec = load_record(Path(root) / rel)
    _, _, scores, _ = replay_through_pipeline(
        rec, f"ptbxl-{ecg_id}", f"ptbxl/{rel}", _PTBXL["scorer"]
    )
    mine = [s for m in scores for s in m.scores if s.model == _PTBXL["model"]]
    if not mine:
        return ecg_id, None, False, 0
    return ecg_id, max(s.score for s in mine), any(s.anomalous for s in mine), len(mine)


def ptbxl_stream_vs_offline(
    data_dir: str | Path,
    model: str = PTBXL_MODEL,
    limit: int | None = None,
    processes: int = 2,
    progress: bool = False,
) -> dict[str, Any]:
    """PTB-XL fold 10 replayed through the pipeline with ``model``: record-level sensitivity/specificity
    (a record is flagged when a window of it is anomalous) beside ``python -m training evaluate <model>``'s
    figures computed in the same run (``limit``: the first records only, for tests; the offline figures
    are then computed on the same records through the same runtime wrapper)."""
    from stream.settings import Settings
    from training.datasets.ptbxl import TEST_FOLDS, load_metadata, load_ptbxl
    from training.registry import TaskContext, get_spec
    from training.tasks._ptbxl_anomaly import metrics

    t = time.perf_counter()
    settings = Settings()
    data_dir = Path(data_dir)
    models_dir = Path(settings.models_dir).resolve()
    cache_dir = Path(settings.cache_dir).resolve()
    test = load_ptbxl(data_dir, cache_dir, progress=False).folds(TEST_FOLDS)
    if limit is not None:
        test = test.subset(np.arange(min(limit, len(test))))
    if limit is None:
        ctx = TaskContext(
            model=model,
            config={},
            data_dir=data_dir.resolve(),
            cache_dir=cache_dir,
            runs_dir=Path(os.environ.get("ECG_RUNS_DIR", "runs")).resolve(),
            artifacts_dir=models_dir,
            progress=False,
            as_json=True,
            command=f"python -m training evaluate {model}",
            extra={"source": "onnx"},
        )
        offline = get_spec(model).evaluate(ctx)
        from models.runtime.anomaly12 import Anomaly12Model

        runtime = Anomaly12Model.load(model, models_dir)
        off_score = np.asarray(runtime.predict(test.x).score, dtype=float)
        threshold = float(runtime.threshold_value)
    else:
        from models.runtime.anomaly12 import Anomaly12Model

        runtime = Anomaly12Model.load(model, models_dir)
        off_score = np.asarray(runtime.predict(test.x).score, dtype=float)
        threshold = float(runtime.threshold_value)
        offline = metrics(test, off_score, threshold)
    meta = load_metadata(data_dir)
    root = str(data_dir / "ptbxl")
    jobs = [(root, int(i), str(meta.loc[int(i), "filename_lr"])) for i in test.ecg_id.tolist()]
    res = _pool_map(
        _ptbxl_job,
        jobs,
        _init_ptbxl_worker,
        (model, str(models_dir)),
        processes,
        progress,
        "PTB-XL fold 10",
    )
    by_id = {r[0]: r for r in res}
    stream_score = np.array(
        [by_id[int(i)][1] if by_id[int(i)][1] is not None else -1e9 for i in test.ecg_id.tolist()]
    )
    flags = np.array([by_id[int(i)][2] for i in test.ecg_id.tolist()], dtype=bool)
    no_window = int(sum(by_id[int(i)][3] == 0 for i in test.ecg_id.tolist()))
    keep = test.has_label
    y = ~test.normal[keep]
    f = flags[keep]
    sens = float((f & y).sum() / max(int(y.sum()), 1))
    spec = float((~f & ~y).sum() / max(int((~y).sum()), 1))
    finite = stream_score > -1e9
    stream_m = {
        "sensitivity": round(sens, 4),
        "specificity": round(spec, 4),
        "n_records": int(keep.sum()),
        "records_without_window": no_window,
    }
    off = {
        k: offline.get(k) for k in ("sensitivity", "specificity", "auroc", "n_records", "threshold")
    }
    diff = {
        k: round(abs(stream_m[k] - float(off[k])), 4) if off.get(k) is not None else None
        for k in ("sensitivity", "specificity")
    }
    return {
        "model": model,
        "stream": stream_m,
        "offline": off,
        "offline_source": f"python -m training evaluate {model} (onnx)"
        if limit is None
        else "runtime wrapper",
        "abs_diff": diff,
        "goal": "<= 0.01",
        "met": all(v is not None and v <= 0.01 for v in diff.values()),
        "records_flag_disagree": int((flags != (off_score > threshold)).sum()),
        "records_score_differs": int((np.abs(stream_score - off_score) > 1e-3).sum()),
        "max_abs_score_diff": round(
            float(np.max(np.abs(stream_score[finite] - off_score[finite]))), 6
        )
        if finite.any()
        else None,
        "seconds": round(time.perf_counter() - t, 1),
    }


# ------------------------------------------------------------------------------------------ driver
def evaluate_alarms(
    data_dir: str | Path,
    records: Sequence[str] | None = None,
    seconds: float | None = None,
    models: Sequence[str] = MITDB_MODELS,
    processes: int = 2,
    progress: bool = False,
    ptbxl: bool = True,
    ptbxl_limit: int | None = None,
    tol_s: float = ALARM_TOLERANCE_S,
) -> dict[str, Any]:
    """Replay MIT-BIH ``records`` (default all 48; the first ``seconds`` of each when given) through the
    stream's pipeline with ``models`` in a pool of ``processes``, and score beat classes and alarms against
    the annotations (see the module docstring); ``ptbxl``: add ``ptbxl_stream_vs_offline``."""
    from stream.records import mitdb_records

    t = time.perf_counter()
    data_dir = Path(data_dir)
    names = list(records) if records else mitdb_records(data_dir)
    from stream.settings import Settings

    models_dir = str(Path(Settings().models_dir).resolve())
    jobs = [(str(data_dir), n, seconds) for n in names]
    outs_l = _pool_map(
        _replay_job,
        jobs,
        _init_worker,
        (tuple(models), models_dir),
        processes,
        progress,
        "MIT-BIH records",
    )
    outs = {o.record: o for o in outs_l}
    refs = {n: read_reference(data_dir / "mitdb" / n, seconds) for n in names}
    cfg = ReferenceConfig.from_stream()
    unpaced = [n for n in names if n not in MITDB_PACED]
    paced = [n for n in names if n in MITDB_PACED]
    ds2 = score_beats(refs, outs, MITDB_DS2)
    ds1 = score_beats(refs, outs, MITDB_DS1)
    ds2_late = score_beats(refs, outs, MITDB_DS2, start_s=LEARNING_S)
    alarms = score_alarms(refs, outs, unpaced, cfg, tol_s)
    result: dict[str, Any] = {
        "units": "percent (se, ppv), alarms per monitored hour, seconds (delays)",
        "veb": ds2["veb"],
        "sveb": ds2["sveb"],
        "af": alarms["af"],
        "vt": alarms["vt"],
        "vt_or_run": alarms["vt_or_run"],
        "false_alarms_per_hour": alarms["false_alarms_per_hour"],
        "false_critical_per_hour": alarms["false_critical_per_hour"],
        "detection_delay_s": alarms["detection_delay_s"],
        "beat_classes": {
            "ds2_test": ds2,
            "ds1_training_data": {
                k: ds1[k] for k in ("veb", "sveb", "confusion", "per_record", "records")
            },
            "ds2_after_5min": {k: ds2_late[k] for k in ("veb", "sveb")},
            "classified_beats": sum(len(o.classes) for o in outs.values()),
            "detected_beats": sum(o.beats for o in outs.values()),
        },
        "alarms": {
            k: alarms[k] for k in ("alarms_by_kind", "monitored_hours", "records", "per_record")
        },
        "paced_records": score_alarms(refs, outs, paced, cfg, tol_s) if paced else None,
        "scores": _score_totals(outs.values()),
        "reference_config": asdict(cfg),
        "records": len(names),
        "seconds_per_record": seconds,
        "models": list(models),
        "replay_seconds": {n: o.seconds for n, o in outs.items()},
        "dead_letters": {n: o.dead_letters for n, o in outs.items() if o.dead_letters},
        "protocol": (__doc__ or "").split("\n\n", 1)[1].split("\n\nCommand line")[0].strip(),
    }
    if ptbxl:
        result["ptbxl_stream_vs_offline"] = ptbxl_stream_vs_offline(
            data_dir, limit=ptbxl_limit, processes=processes, progress=progress
        )
    result["goals"] = goals(result)
    result["wall_seconds"] = round(time.perf_counter() - t, 1)
    return result


def _score_totals(outs: Iterable[StreamOutput]) -> dict[str, dict[str, float]]:
    total: dict[str, dict[str, float]] = {}
    for o in outs:
        for model, d in o.scores.items():
            add_counts(total.setdefault(model, {}), d)  # type: ignore[arg-type]
    return total


# ------------------------------------------------------------------------------ noise stress test records
def _nst_job(
    args: tuple[str, str, str | None, float | None, float | None, int],
) -> tuple[
    str,
    str | None,
    float | None,
    float,
    list[AlarmEpisode],
    list[tuple[float, float]],
    dict[str, int],
]:
    """Replay one NST record (:func:`simulators.nst.nst_record`) through the pipeline."""
    from simulators.nst import nst_record
    from stream.testing import T0

    data_dir, name, kind, snr, seconds, seed = args
    nst = nst_record(data_dir, name, kind, snr, seed=seed, seconds=seconds)
    rec = nst.record()
    sid = f"nst-{nst.name}"
    _, alerts, _, dead = replay_through_pipeline(rec, sid, f"nst/{nst.name}", _WORKER.get("scorer"))
    alarms = alarm_episodes(alerts, T0, rec.duration_s)
    return name, kind, snr, rec.duration_s, alarms, list(nst.noise_spans), dead


def evaluate_alarms_noise(
    data_dir: str | Path,
    records: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    snrs: Sequence[float] | None = None,
    seconds: float | None = None,
    seed: int = 0,
    models: Sequence[str] = MITDB_MODELS,
    processes: int = 2,
    progress: bool = False,
    tol_s: float = ALARM_TOLERANCE_S,
) -> dict[str, Any]:
    """Alarms of the stream's pipeline on the project's noise stress test records.

    Each MIT-BIH record of ``records`` (default :data:`training.eval_detectors.NST_EVAL_RECORDS`; whole, or
    the first ``seconds``) is made into NST records (:func:`simulators.nst.nst_record`: NSTDB ``bw`` and ``ma``
    noise, ``em`` where present, at 24 ... -6 dB, 2-minute noisy segments after 5 clean minutes, seed
    ``seed``) and replayed, like the clean record, through the worker's per-message logic
    (:func:`replay_through_pipeline`: processor, scorer with ``models``, alarm engine; i16le frames declaring
    the header's ADC range). A raised alarm is false when no reference event of its kind lies within
    ``tol_s`` (as in :func:`evaluate_alarms`); kinds without a MIT-BIH reference are counted apart. Goal:
    no false asystole and no false pause alarm at any SNR. ``in_noise``: alarm episodes overlapping a noisy
    segment.
    """
    from simulators.nst import NST_SNRS_DB, available_noise_kinds
    from stream.settings import Settings
    from training.eval_detectors import NST_EVAL_RECORDS

    t = time.perf_counter()
    data_dir = Path(data_dir)
    names = list(records or NST_EVAL_RECORDS)
    present = available_noise_kinds(data_dir)
    use = [k for k in (kinds or ["bw", "ma", "em"]) if k in present]
    snr_list = [float(s) for s in (snrs if snrs is not None else NST_SNRS_DB)]
    configs: list[tuple[str | None, float | None]] = [(None, None)] + [
        (k, s) for k in use for s in snr_list
    ]
    jobs = [(str(data_dir), n, k, s, seconds, seed) for k, s in configs for n in names]
    models_dir = str(Path(Settings().models_dir).resolve())
    outs = _pool_map(
        _nst_job,
        jobs,
        _init_worker,
        (tuple(models), models_dir),
        processes,
        progress,
        "NST records",
    )
    cfg = ReferenceConfig.from_stream()
    refs = {n: read_reference(data_dir / "mitdb" / n, seconds) for n in names}
    cells: dict[str, dict[str, Any]] = {}
    for name, kind, snr, duration_s, alarms, spans, dead in outs:
        key = "clean" if kind is None else f"{kind}/{snr:g}"
        c = cells.setdefault(
            key,
            {"noise": kind, "snr_db": snr, "hours": 0.0, "by_kind": {}, "in_noise": 0, "dead": {}},
        )
        c["hours"] += duration_s / 3600.0
        for k, v in false_alarm_counts(alarms, refs[name], cfg, tol_s).items():
            d = c["by_kind"].setdefault(k, {"raised": 0, "false": 0, "false_critical": 0})
            for f in ("raised", "false", "false_critical"):
                d[f] += v[f]
            if v.get("unscored"):
                d["unscored"] = True
        c["in_noise"] += sum(1 for a in alarms if any(a.start < b and a.end > s for s, b in spans))
        add_counts(c["dead"], dead)
    table: dict[str, Any] = {}
    false_no_beat = 0
    for key, c in cells.items():
        scored = {k: v for k, v in c["by_kind"].items() if not v.get("unscored")}
        false = sum(v["false"] for v in scored.values())
        fa = {k: c["by_kind"].get(k, {}).get("false", 0) for k in ("asystole", "pause")}
        if c["noise"] is not None:
            false_no_beat += fa["asystole"] + fa["pause"]
        table[key] = {
            "noise": c["noise"],
            "snr_db": c["snr_db"],
            "hours": round(c["hours"], 3),
            "false_asystole": fa["asystole"],
            "false_pause": fa["pause"],
            "false_alarms": false,
            "false_alarms_per_hour": round(false / c["hours"], 3) if c["hours"] else None,
            "false_critical": sum(v["false_critical"] for v in scored.values()),
            "alarms_in_noisy_segments": c["in_noise"],
            "by_kind": c["by_kind"],
            "dead_letters": c["dead"],
        }
    return {
        "units": "alarm counts, per monitored hour",
        "records": names,
        "noise_kinds": use,
        "snrs_db": snr_list,
        "seconds_per_record": seconds,
        "seed": seed,
        "models": list(models),
        "false_asystole_pause_alarms": false_no_beat,
        "goal_met": {"no_false_asystole_pause": false_no_beat == 0},
        "by_noise_snr": table,
        "protocol": (evaluate_alarms_noise.__doc__ or "").split("\n\n", 1)[1].strip(),
        "wall_seconds": round(time.perf_counter() - t, 1),
    }
