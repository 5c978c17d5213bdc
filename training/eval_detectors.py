"""Evaluations of the stream's signal detectors on real PhysioNet records.

- :func:`evaluate_qrs`: R-peak detection of :func:`stream.stages.qrs.detect_qrs` (causal, 1 s chunks, exactly
  what the stream runs) on every record of a database with ``.atr`` beat annotations, against WFDB's XQRS and
  GQRS and NeuroKit2's detectors timed in the same run.
- :func:`evaluate_dropouts`: MIT-BIH records replayed frame by frame through :class:`StreamProcessor` with
  injected faults (:mod:`simulators.faults`), plus every clean MIT-BIH record for false detections.

Plain functions; the command line is :mod:`training.cli`: ``python -m training evaluate qrs|dropouts``
and ``python -m training bench-processor`` (:func:`bench_processor`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from models.card import BEAT_400, BEAT_720, LEADS_10S
from stream.records import list_records, mitdb_records, read_annotations, read_record
from training.errors import DataError

QRS_TOLERANCE_S = 0.150
QRS_TOLERANCE_TIGHT_S = 0.050
FRAME_S = 1.0
T0 = 1_700_000_000.0

# ------------------------------------------------------------------------------------------------ QRS


def match_beats(ref: np.ndarray, test: np.ndarray, tol: int) -> tuple[int, int, int]:
    """One-to-one matching of test detections to reference beats within ``tol`` samples.

    Pairs are accepted closest first (each reference and each detection used once). Returns
    ``(tp, fn, fp)``.
    """
    ref = np.sort(np.asarray(ref, dtype=np.int64))
    test = np.sort(np.asarray(test, dtype=np.int64))
    if ref.size == 0 or test.size == 0:
        return 0, int(ref.size), int(test.size)
    lo = np.searchsorted(test, ref - tol, side="left")
    hi = np.searchsorted(test, ref + tol, side="right")
    counts = hi - lo
    ri = np.repeat(np.arange(ref.size), counts)
    if ri.size == 0:
        return 0, int(ref.size), int(test.size)
    ti = np.concatenate(
        [np.arange(a, b) for a, b in zip(lo[counts > 0], hi[counts > 0], strict=True)]
    )
    dist = np.abs(test[ti] - ref[ri])
    order = np.argsort(dist, kind="stable")
    used_r = np.zeros(ref.size, dtype=bool)
    used_t = np.zeros(test.size, dtype=bool)
    tp = 0
    for k in order.tolist():
        r, t = ri[k], ti[k]
        if not used_r[r] and not used_t[t]:
            used_r[r] = used_t[t] = True
            tp += 1
    return tp, int(ref.size - tp), int(test.size - tp)


def vfl_mask(samples: np.ndarray, ann_sample: np.ndarray, ann_symbol: np.ndarray) -> np.ndarray:
    """True for ``samples`` inside a ventricular flutter/fibrillation episode (``[`` ... ``]``)."""
    inside = np.zeros(samples.size, dtype=bool)
    start = None
    for s, sym in zip(ann_sample.tolist(), ann_symbol.tolist(), strict=True):
        if sym == "[":
            start = s
        elif sym == "]" and start is not None:
            inside |= (samples >= start) & (samples <= s)
            start = None
    return inside


def _qrs_lead(rec_leads: tuple[str, ...]) -> int:
    return rec_leads.index("MLII") if "MLII" in rec_leads else 0


def _peer_detectors() -> dict[str, Callable[[np.ndarray, float], np.ndarray] | str]:
    """Reference detectors (callable) or the reason one is unavailable (str)."""
    from wfdb import processing as wp

    peers: dict[str, Callable[[np.ndarray, float], np.ndarray] | str] = {
        "xqrs": lambda x, fs: np.asarray(wp.xqrs_detect(x, fs=fs, verbose=False)),
        "gqrs": lambda x, fs: np.asarray(wp.gqrs_detect(x, fs=fs)),
    }
    try:
        import neurokit2 as nk
    except Exception as exc:  # the eval extra is optional
        peers["neurokit2"] = peers["neurokit2_pantompkins"] = f"neurokit2 not importable: {exc}"
    else:

        def _nk(method: str) -> Callable[[np.ndarray, float], np.ndarray]:
            def run(x: np.ndarray, fs: float) -> np.ndarray:
                _, info = nk.ecg_peaks(x, sampling_rate=int(fs), method=method)
                return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)

            return run

        peers["neurokit2"] = _nk("neurokit")
        peers["neurokit2_pantompkins"] = _nk("pantompkins1985")
    return peers


class _Tally:
    def __init__(self) -> None:
        self.tp = self.fn = self.fp = 0
        self.tp50 = self.fn50 = self.fp50 = 0
        self.vtp = self.vfn = self.vfp = 0
        self.seconds = 0.0
        self.samples = 0
        self.per_record: dict[str, dict[str, float | int | None]] = {}

    def add(
        self,
        name: str,
        ref: np.ndarray,
        det: np.ndarray,
        fs: float,
        secs: float,
        n: int,
        vfl: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        tp, fn, fp = match_beats(ref, det, round(QRS_TOLERANCE_S * fs))
        tp50, fn50, fp50 = match_beats(ref, det, round(QRS_TOLERANCE_TIGHT_S * fs))
        vtp, vfn, vfp = match_beats(ref[~vfl(ref)], det[~vfl(det)], round(QRS_TOLERANCE_S * fs))
        self.tp += tp
        self.fn += fn
        self.fp += fp
        self.tp50 += tp50
        self.fn50 += fn50
        self.fp50 += fp50
        self.vtp += vtp
        self.vfn += vfn
        self.vfp += vfp
        self.seconds += secs
        self.samples += n
        self.per_record[name] = {
            "se": _pct(tp, tp + fn),
            "ppv": _pct(tp, tp + fp),
            "tp": tp,
            "fn": fn,
            "fp": fp,
        }

    def summary(self, per_record: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "units": "percent",
            "sensitivity": _pct(self.tp, self.tp + self.fn),
            "ppv": _pct(self.tp, self.tp + self.fp),
            "tp": self.tp,
            "fn": self.fn,
            "fp": self.fp,
            "sensitivity_50ms": _pct(self.tp50, self.tp50 + self.fn50),
            "ppv_50ms": _pct(self.tp50, self.tp50 + self.fp50),
            "vfl_excluded": {
                "sensitivity": _pct(self.vtp, self.vtp + self.vfn),
                "ppv": _pct(self.vtp, self.vtp + self.vfp),
                "tp": self.vtp,
                "fn": self.vfn,
                "fp": self.vfp,
            },
            "samples_per_s": round(self.samples / self.seconds, 1) if self.seconds > 0 else None,
            "seconds": round(self.seconds, 3),
            "samples": self.samples,
        }
        if per_record:
            out["per_record"] = self.per_record
        return out


def _pct(a: int, b: int) -> float | None:
    return round(100.0 * a / b, 3) if b else None


def evaluate_qrs(
    data_dir: Path,
    db: str = "mitdb",
    records: list[str] | None = None,
    peers: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Gross beat-by-beat Se/PPV (percent) of the stream's R-peak detector and of the peer detectors.

    Protocol: every annotated beat (``Annotations.beats()``, MIT-BIH beat symbols) of every record over
    the whole record (no start/end exclusion), lead MLII (channel 0 where a record has no MLII: 102, 104);
    a detection matches a beat within 150 ms (also reported at 50 ms), one-to-one, closest pairs first.
    ``vfl_excluded`` repeats the count without the ventricular flutter episodes ([ ... ], record 207), as
    ANSI/AAMI EC57 does. Speed = samples / detector seconds (signal already in memory), same records for
    every detector. Our detector runs causally in 1 s chunks (``detect_qrs``), as in the stream; it is
    also timed fed each record as one chunk (``samples_per_s_one_chunk``; peaks checked identical).
    """
    from stream.stages.qrs import detect_qrs

    data_dir = Path(data_dir)
    db_dir = data_dir / db
    names = (
        list(records)
        if records
        else (mitdb_records(data_dir) if db == "mitdb" else list_records(db_dir))
    )
    if not names:
        raise DataError(f"no records in {db_dir}")
    detectors: dict[str, Callable[[np.ndarray, float], np.ndarray] | str] = {
        "ecg_monitor": lambda x, fs: detect_qrs(x, fs, chunk=round(fs * FRAME_S))
    }
    if peers:
        detectors.update(_peer_detectors())
    tallies = {name: _Tally() for name, fn in detectors.items() if callable(fn)}
    one_chunk = [0.0, 0]  # seconds, samples of the whole-record (single chunk) run
    one_chunk_same = True
    for rec_name in _progress(names, progress, "QRS records"):
        path = db_dir / rec_name
        if not path.with_suffix(".atr").is_file():
            raise DataError(f"{path}.atr not found: evaluate_qrs needs beat annotations")
        rec = read_record(path)
        ann_all = read_annotations(path)
        ref = ann_all.beats().sample
        x = np.ascontiguousarray(rec.signal[:, _qrs_lead(rec.leads)], dtype=np.float64)
        x = np.nan_to_num(x)

        def vfl(s: np.ndarray, _a: Any = ann_all) -> np.ndarray:
            return vfl_mask(s, _a.sample, _a.symbol)

        for name, fn in detectors.items():
            if not callable(fn):
                continue
            t = time.perf_counter()
            det = np.asarray(fn(x, rec.fs), dtype=np.int64)
            secs = time.perf_counter() - t
            tallies[name].add(rec_name, ref, det, rec.fs, secs, x.size, vfl)
            if (
                name == "ecg_monitor"
            ):  # the same detector fed the record as one chunk: identical peaks
                t = time.perf_counter()
                whole = detect_qrs(x, rec.fs, chunk=x.size)
                one_chunk[0] += time.perf_counter() - t
                one_chunk[1] += x.size
                one_chunk_same = one_chunk_same and np.array_equal(whole, det)
    result: dict[str, Any] = tallies["ecg_monitor"].summary(per_record=True)
    result["samples_per_s_one_chunk"] = (
        round(one_chunk[1] / one_chunk[0], 1) if one_chunk[0] > 0 else None
    )
    result["one_chunk_identical"] = one_chunk_same
    result.update(
        {
            "db": db,
            "records": len(names),
            "detector": "stream.stages.qrs.QrsDetector (causal, 1 s chunks)",
            "protocol": (
                "all annotated beats (MIT-BIH beat symbols) over whole records, lead MLII (channel 0 for 102/104), "
                "one-to-one matching within 150 ms (50 ms variant), no record or time excluded; vfl_excluded drops "
                "ventricular flutter episodes as EC57 does; speed = samples / detector seconds, same run"
            ),
        }
    )
    for name in ("xqrs", "gqrs", "neurokit2", "neurokit2_pantompkins"):
        if not peers:
            continue
        peer = detectors.get(name)
        result[name] = (
            tallies[name].summary(per_record=False)
            if callable(peer)
            else {"sensitivity": None, "ppv": None, "reason": peer}
        )
    return result


def _progress(items: Iterable[Any], enabled: bool, desc: str) -> Iterable[Any]:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(list(items), desc=desc, unit="rec", file=__import__("sys").stderr)


# ------------------------------------------------------------------------------------------- dropouts

SHORT_EVENT_S = 0.5
DROPOUT_RECORDS: tuple[str, ...] = (
    "100",
    "103",
    "105",
    "108",
    "119",
    "201",
    "208",
    "213",
    "219",
    "223",
    "228",
    "232",
)


def replay(
    processor: Any,
    signal: np.ndarray,
    fs: float,
    leads: tuple[str, ...],
    stream_id: str,
    t0: float = T0,
    drop: set[int] | None = None,
    frame_s: float = FRAME_S,
    adc_range_mv: Any = None,
) -> Any:
    """Feed ``signal`` to ``processor`` in frames of ``frame_s`` (skipping the seqs in ``drop``), flush,
    and return one :class:`ProcessorOutput` with everything it produced. ``adc_range_mv`` (``[[lo, hi],
    ...]`` per lead) is declared by every frame, as the replay's frames declare their header's range."""
    from stream.stages.frame import Frame
    from stream.stages.processor import ProcessorOutput

    n = round(frame_s * fs)
    total = ProcessorOutput()
    drop = drop or set()
    adc = None if adc_range_mv is None else tuple((float(a), float(b)) for a, b in adc_range_mv)
    for seq, s in enumerate(range(0, signal.shape[0], n)):
        if seq in drop:
            continue
        total.extend(
            processor.process(
                Frame(
                    stream_id,
                    seq,
                    fs,
                    leads,
                    t0 + s / fs,
                    signal[s : s + n],
                    adc_range_mv=adc,
                )
            )
        )
    total.extend(processor.flush())
    return total


def _rail_verified(seg: Any, rec: Any, t0: float) -> bool:
    """True when a saturation segment on a clean record sits on samples at the record's ADC limits."""
    if seg.kind != "saturation":
        return False
    li = rec.leads.index(seg.lead)
    a, b = round((seg.start - t0) * rec.fs), round((seg.end - t0) * rec.fs)
    x = rec.signal[a:b, li]
    return bool(x.size and np.mean(np.abs(x) >= 5.1) > 0.5)


def evaluate_dropouts(
    data_dir: Path,
    records: list[str] | None = None,
    seed: int = 0,
    minutes: float = 6.0,
    rate_per_min: float = 4.0,
    clean_records: list[str] | None = None,
    clean_minutes: float | None = None,
    progress: bool = False,
    offsets: bool = False,
    nst: bool = False,
    offset_records: list[str] | None = None,
    offset_minutes: float | None = None,
    noise_records: list[str] | None = None,
    noise_seconds: float | None = None,
) -> dict[str, Any]:
    """Recall of injected dropouts and false detections per hour, through the stream's processor.

    Injected: ``records`` (default 12 MIT-BIH records), first ``minutes`` each, faults of every kind
    (flatline, zero, nan, lead_off, saturation, lost_frames, plus NSTDB bw/ma noise at 0-12 dB SNR, which
    must not be reported as dropouts), durations log-uniform 200 ms - 10 s, >= 3 s clean between faults,
    deterministic ``seed``. An injected dropout is recalled when a detected segment of the expected kind
    (:data:`simulators.faults.EXPECTED_DROPOUT`) on the same lead (any lead for lost frames) overlaps it.
    A detected segment overlapping no injected dropout is a false detection (per hour of signal outside
    the dropouts). Clean: every MIT-BIH record (``clean_minutes`` each, default whole records) replayed
    without faults; every segment is a false detection; saturation segments that sit on the original
    recording's ADC limits are also counted apart (``rail_verified``).

    ``offsets``: adds ``offsets`` (:func:`evaluate_dropouts_offsets`: records with DC offsets up to +-10 mV
    and baseline steps; ``offset_records``, ``offset_minutes``); ``nst``: adds ``noise``
    (:func:`evaluate_dropouts_noise`: the NST records; ``noise_records``, ``noise_seconds``). ``goals``: recall
    >= 99 % for every kind, and 0 false dropouts per hour with offsets and with noise at >= 6 dB, 0 false
    asystole and pause alerts on the NST records.
    """
    from simulators.faults import (
        DROPOUT_FAULT_KINDS,
        EXPECTED_DROPOUT,
        FAULT_KINDS,
        frames_to_drop,
        ground_truth,
        inject,
        load_nstdb_noise,
        random_faults,
    )
    from stream.stages.processor import StageConfig, StreamProcessor

    # detection only: no model windows are cut (they would only cost time and memory here)
    detect_only = StageConfig(windows=())

    data_dir = Path(data_dir)
    rng = np.random.default_rng(seed)
    noise = load_nstdb_noise(data_dir)
    names = list(records or DROPOUT_RECORDS)
    events_total: dict[str, int] = dict.fromkeys(DROPOUT_FAULT_KINDS, 0)
    events_hit: dict[str, int] = dict.fromkeys(DROPOUT_FAULT_KINDS, 0)
    missed: list[dict[str, Any]] = []
    short = [0, 0]  # events of <= SHORT_EVENT_S: total, recalled
    alerts_inj: dict[str, int] = {}
    qrs_counts = [0, 0, 0]  # tp, fn, fp of beats away from faults in the injected run
    alerts_clean: dict[str, int] = {}
    false_inj: list[dict[str, Any]] = []
    mislabelled: list[dict[str, Any]] = []
    clean_s_inj = 0.0
    noise_events = 0
    t_start = time.perf_counter()
    for name in _progress(names, progress, "injected records"):
        rec = read_record(data_dir / "mitdb" / name, sampto=int(minutes * 60 * 360))
        n = rec.signal.shape[0]
        faults = random_faults(rec.duration_s, rec.leads, rate_per_min, FAULT_KINDS, rng)
        x = inject(rec.signal, rec.fs, rec.leads, faults, noise=noise, rng=rng)
        frame_n = round(FRAME_S * rec.fs)
        drop = frames_to_drop(faults, n, rec.fs, frame_n)
        sid = f"mitdb-{name}"
        truth = ground_truth(sid, faults, T0, rec.fs, frame_n, n)
        out = replay(
            StreamProcessor(sid, rec.fs, rec.leads, detect_only),
            x,
            rec.fs,
            rec.leads,
            sid,
            drop=drop,
        )
        segs = out.dropouts
        dropout_truth = [ev for ev in truth if ev.kind in EXPECTED_DROPOUT]
        noise_events += sum(1 for ev in truth if ev.kind.startswith("noise_"))
        for ev in dropout_truth:
            events_total[ev.kind] += 1
            want = EXPECTED_DROPOUT[ev.kind]
            hit = any(
                s.kind == want
                and (ev.lead is None or s.lead == ev.lead)
                and s.start < ev.end
                and s.end > ev.start
                for s in segs
            )
            events_hit[ev.kind] += int(hit)
            if ev.end - ev.start <= SHORT_EVENT_S:
                short[0] += 1
                short[1] += int(hit)
            if not hit:
                missed.append({**ev.to_dict(), "duration_s": round(ev.end - ev.start, 3)})
        for s in segs:
            over = [
                ev
                for ev in dropout_truth
                if (ev.lead is None or ev.lead == s.lead) and s.start < ev.end and s.end > ev.start
            ]
            if not over:
                false_inj.append({**s.to_dict(), "record": name})
            elif not any(EXPECTED_DROPOUT[ev.kind] == s.kind for ev in over):
                mislabelled.append(
                    {**s.to_dict(), "record": name, "truth": [ev.kind for ev in over]}
                )
        for a in out.alerts:
            if a.status == "raised":
                alerts_inj[a.kind] = alerts_inj.get(a.kind, 0) + 1
        # beats on the QRS lead away from faults on it (and 2 s after each), against the annotations
        qrs_lead = rec.leads[_qrs_lead(rec.leads)]
        ann = read_annotations(data_dir / "mitdb" / name).beats().sample
        ann = ann[ann < n - round(0.5 * rec.fs)]
        peaks = np.array([b.sample for b in out.beats], dtype=np.int64)
        keep_a = np.ones(ann.size, dtype=bool)
        keep_p = np.ones(peaks.size, dtype=bool)
        for ev in truth:
            if ev.lead in (None, qrs_lead):
                lo, hi = (ev.start - T0 - 0.1) * rec.fs, (ev.end - T0 + 2.0) * rec.fs
                keep_a &= ~((ann >= lo) & (ann < hi))
                keep_p &= ~((peaks >= lo) & (peaks < hi))
        tp, fn, fp = match_beats(ann[keep_a], peaks[keep_p], round(QRS_TOLERANCE_S * rec.fs))
        qrs_counts[0] += tp
        qrs_counts[1] += fn
        qrs_counts[2] += fp
        covered = sum(ev.end - ev.start for ev in dropout_truth)
        clean_s_inj += rec.duration_s - covered
    inj_seconds = time.perf_counter() - t_start

    clean_names = list(clean_records) if clean_records is not None else mitdb_records(data_dir)
    false_clean: list[dict[str, Any]] = []
    clean_hours = 0.0
    rail = 0
    for name in _progress(clean_names, progress, "clean records"):
        sampto = int(clean_minutes * 60 * 360) if clean_minutes else None
        rec = read_record(data_dir / "mitdb" / name, sampto=sampto)
        sid = f"mitdb-{name}"
        out = replay(
            StreamProcessor(sid, rec.fs, rec.leads, detect_only), rec.signal, rec.fs, rec.leads, sid
        )
        clean_hours += rec.duration_s / 3600.0
        for a in out.alerts:
            if a.status == "raised":
                alerts_clean[a.kind] = alerts_clean.get(a.kind, 0) + 1
        for s in out.dropouts:
            verified = _rail_verified(s, rec, T0)
            rail += int(verified)
            false_clean.append(
                {
                    **s.to_dict(),
                    "record": name,
                    "start_s": round(s.start - T0, 3),
                    "rail_verified": verified,
                }
            )
    n_events = sum(events_total.values())
    n_hit = sum(events_hit.values())
    by_kind_false: dict[str, int] = {}
    for f in false_clean:
        by_kind_false[f["kind"]] = by_kind_false.get(f["kind"], 0) + 1
    recall_by_kind = {k: _pct(events_hit[k], events_total[k]) for k in DROPOUT_FAULT_KINDS}
    extra: dict[str, Any] = {}
    goals: dict[str, Any] = {
        "recall_ge_99_every_kind": all(v is None or v >= 99.0 for v in recall_by_kind.values())
    }
    if offsets:
        extra["offsets"] = evaluate_dropouts_offsets(
            data_dir, records=offset_records, minutes=offset_minutes, progress=progress
        )
        goals["offsets_no_false_dropouts"] = extra["offsets"]["goal_met"]
        if extra["offsets"]["steps_goal_met"] is not None:
            goals["offset_steps_no_false_dropouts"] = extra["offsets"]["steps_goal_met"]
    if nst:
        extra["noise"] = evaluate_dropouts_noise(
            data_dir, records=noise_records, seconds=noise_seconds, seed=seed, progress=progress
        )
        goals["noise_no_false_dropouts_snr_ge_6db"] = extra["noise"]["goal_met"][
            "no_false_dropouts_snr_ge_6db"
        ]
        goals["noise_no_false_asystole_pause"] = extra["noise"]["goal_met"][
            "no_false_asystole_pause"
        ]
    goals["all"] = all(bool(v) for v in goals.values())
    return {
        "units": "percent (recall), count per hour (false_per_hour)",
        "recall": _pct(n_hit, n_events),
        "recall_by_kind": recall_by_kind,
        "events_by_kind": events_total,
        "recalled_by_kind": events_hit,
        "events": n_events,
        "recall_events_up_to_500ms": _pct(short[1], short[0]),
        "events_up_to_500ms": short[0],
        "recalled": n_hit,
        "missed": missed,
        "false_per_hour": round(len(false_clean) / clean_hours, 3) if clean_hours else None,
        "false_per_hour_excluding_rail_verified": round((len(false_clean) - rail) / clean_hours, 3)
        if clean_hours
        else None,
        "false_clean": len(false_clean),
        "false_clean_by_kind": by_kind_false,
        "false_clean_segments": false_clean,
        "clean_hours": round(clean_hours, 3),
        "clean_records": len(clean_names),
        "false_injected_run": len(false_inj),
        "false_per_hour_injected_run": round(len(false_inj) / (clean_s_inj / 3600.0), 3)
        if clean_s_inj
        else None,
        "false_injected_segments": false_inj[:50],
        "mislabelled_segments": len(mislabelled),
        "mislabelled_examples": mislabelled[:20],
        "noise_events": noise_events,
        "alerts_raised_injected_run": alerts_inj,
        "alerts_raised_clean_run": alerts_clean,
        "qrs_away_from_faults": {
            "sensitivity": _pct(qrs_counts[0], qrs_counts[0] + qrs_counts[1]),
            "ppv": _pct(qrs_counts[0], qrs_counts[0] + qrs_counts[2]),
            "tp": qrs_counts[0],
            "fn": qrs_counts[1],
            "fp": qrs_counts[2],
            "note": "beats on the QRS lead outside [fault start - 0.1 s, fault end + 2 s] of every injected fault (noise too) on that lead or on all leads",
        },
        "injected_records": names,
        "injected_minutes": minutes,
        "seed": seed,
        "seconds_injected_run": round(inj_seconds, 2),
        "protocol": evaluate_dropouts.__doc__.split("\n\n", 1)[1].strip()
        if evaluate_dropouts.__doc__
        else "",
        **extra,
        "goals": goals,
    }


# ----------------------------------------------------------------------------- noise stress test (NST)

#: MIT-BIH records of the project's noise stress test: EC57's 118 and 119, plus two records of clean,
#: ordinary rhythm (chosen before any run; nothing is tuned on them)
NST_EVAL_RECORDS: tuple[str, ...] = ("118", "119", "100", "103")
NST_SEED = 0


def _in_spans(s: np.ndarray, spans: list[tuple[int, int]], pad: int = 0) -> np.ndarray:
    """True for samples ``s`` inside one of ``spans`` ``[a, b)`` widened by ``pad`` each side."""
    out = np.zeros(s.size, dtype=bool)
    for a, b in spans:
        out |= (s >= a - pad) & (s < b + pad)
    return out


def span_counts(
    ref: np.ndarray, det: np.ndarray, spans: list[tuple[int, int]], tol: int
) -> tuple[int, int, int]:
    """``(tp, fn, fp)`` within ``spans`` (sample ranges): reference beats inside a span against detections
    inside it or within ``tol`` of it (tp, fn); detections inside a span against reference beats inside it
    or within ``tol`` of it (fp), so a beat at an edge is neither lost nor counted twice."""
    ref = np.asarray(ref, dtype=np.int64)
    det = np.asarray(det, dtype=np.int64)
    tp, fn, _ = match_beats(ref[_in_spans(ref, spans)], det[_in_spans(det, spans, tol)], tol)
    _, _, fp = match_beats(ref[_in_spans(ref, spans, tol)], det[_in_spans(det, spans)], tol)
    return tp, fn, fp


def _counts(tp: int, fn: int, fp: int) -> dict[str, Any]:
    return {
        "se": _pct(tp, tp + fn),
        "ppv": _pct(tp, tp + fp),
        "f1": _pct(2 * tp, 2 * tp + fn + fp),
        "tp": tp,
        "fn": fn,
        "fp": fp,
    }


def sent_signal(rec: Any) -> tuple[np.ndarray, list[list[float]] | None]:
    """What a replay of ``rec`` (a :class:`stream.records.Record`) delivers: the samples clipped to the
    range its i16le frames carry, and the ``adc_range_mv`` those frames declare (the header's range)."""
    from simulators.replay import _sent_range  # the adc_range_mv the replay declares

    adc = _sent_range(rec, "i16le")
    x = np.asarray(rec.signal, dtype=np.float32)
    if adc is not None:
        lo = np.asarray([a for a, _ in adc], dtype=np.float32)
        hi = np.asarray([b for _, b in adc], dtype=np.float32)
        x = np.clip(x, lo, hi)
    return x, adc


def stream_beats(rec: Any, stream_id: str) -> tuple[np.ndarray, Any]:
    """Beat samples of :class:`StreamProcessor` (detection only, 1 s frames declaring the header's ADC
    range, as the replay sends them) on ``rec``, and the whole :class:`ProcessorOutput`."""
    from stream.stages.processor import StageConfig, StreamProcessor

    x, adc = sent_signal(rec)
    out = replay(
        StreamProcessor(stream_id, rec.fs, rec.leads, StageConfig(windows=())),
        x,
        rec.fs,
        rec.leads,
        stream_id,
        adc_range_mv=adc,
    )
    return np.array([b.sample for b in out.beats], dtype=np.int64), out


def evaluate_qrs_noise(
    data_dir: Path,
    records: list[str] | None = None,
    kinds: list[str] | None = None,
    snrs: tuple[float, ...] | list[float] | None = None,
    seconds: float | None = None,
    peers: bool = True,
    seed: int = NST_SEED,
    progress: bool = False,
) -> dict[str, Any]:
    """Se/PPV (percent) of the stream's beats and of XQRS, GQRS and NeuroKit2 on the project's NST records.

    Protocol: for each MIT-BIH record of ``records`` (default :data:`NST_EVAL_RECORDS`, whole records or
    their first ``seconds``), each NSTDB noise kind present (``bw``, ``ma``; ``em`` where its record exists)
    and each SNR (24, 18, 12, 6, 0, -6 dB), the NST record of :func:`simulators.nst.nst_record` (5 min clean,
    then 2-minute noisy/clean segments, noise on both leads, NST SNR convention, seed ``seed``) is clipped to
    the range its i16le frames carry (as the replay sends it) and run through (1) the stream's
    :class:`StreamProcessor` (``StageConfig(windows=())``, 1 s frames declaring the header's ADC range; its
    beats, whatever leads it uses) and (2) each peer on lead MLII. Every annotated beat is a reference beat;
    one-to-one matching within 150 ms, closest pairs first. ``noisy``: the noisy segments only (ramps
    included); ``whole``: the whole record. Counts are pooled over the records. ``clean``: the same records
    without noise. Nothing is tuned on these records.

    Goals (noisy segments): at every (noise, SNR) our F1 (2TP / (2TP + FN + FP)) >= the best peer's F1
    (``ge_best_peer``; the stricter per-figure flags ``se_ge_best_peer_se`` and ``ppv_ge_best_peer_ppv`` compare
    with the best Se and the best PPV of any peer); at 0 dB ``ma``: Se >= 95 % and PPV >= 90 %.
    """
    from simulators.nst import NST_SNRS_DB, available_noise_kinds, load_noise, nst_record

    t_start = time.perf_counter()
    data_dir = Path(data_dir)
    names = list(records or NST_EVAL_RECORDS)
    present = available_noise_kinds(data_dir)
    wanted = list(kinds) if kinds else ["bw", "ma", "em"]
    use = [k for k in wanted if k in present]
    unavailable = {k: f"nstdb/{k}.hea not under ECG_DATA_DIR" for k in wanted if k not in present}
    if not use:
        raise DataError(f"no NSTDB noise record of {wanted} under {data_dir / 'nstdb'}")
    snr_list = [float(s) for s in (snrs if snrs is not None else NST_SNRS_DB)]
    noise = {k: load_noise(data_dir, k) for k in use}
    detectors: dict[str, Callable[[np.ndarray, float], np.ndarray] | str] = {}
    if peers:
        detectors.update(_peer_detectors())
    peer_names = [k for k, v in detectors.items() if callable(v)]
    all_names = ["ecg_monitor", *peer_names]
    configs: list[tuple[str | None, float | None]] = [(None, None)] + [
        (k, s) for k in use for s in snr_list
    ]
    zero = {"noisy": [0, 0, 0], "whole": [0, 0, 0]}
    tally: dict[str, dict[str, dict[str, dict[str, list[int]]]]] = {}
    per_record: dict[str, dict[str, Any]] = {}
    errors: list[dict[str, str]] = []
    clipped: dict[str, float] = {}
    det_seconds: dict[str, float] = dict.fromkeys(all_names, 0.0)
    jobs = [(r, k, s) for r in names for k, s in configs]
    for rec_name, kind, snr in _progress(jobs, progress, "NST records"):
        nst = nst_record(
            data_dir, rec_name, kind, snr, seed=seed, seconds=seconds, noise_records=noise
        )
        rec = nst.record()
        fs = rec.fs
        tol = round(QRS_TOLERANCE_S * fs)
        ref = read_annotations(data_dir / "mitdb" / rec_name).beats().sample
        ref = ref[ref < rec.signal.shape[0]]
        spans = [(round(a * fs), round(b * fs)) for a, b in nst.noise_spans]
        x_sent, _ = sent_signal(rec)
        key_k = kind or "clean"
        key_s = "clean" if snr is None else f"{snr:g}"
        if kind is not None:
            clipped[f"{key_k}/{key_s}/{rec_name}"] = round(float(np.mean(x_sent != rec.signal)), 6)
        dets: dict[str, np.ndarray] = {}
        t = time.perf_counter()
        dets["ecg_monitor"], _ = stream_beats(rec, f"nst-{nst.name}")
        det_seconds["ecg_monitor"] += time.perf_counter() - t
        lead = np.ascontiguousarray(x_sent[:, _qrs_lead(rec.leads)], dtype=np.float64)
        for name in peer_names:
            fn = detectors[name]
            assert callable(fn)
            t = time.perf_counter()
            try:
                dets[name] = np.asarray(fn(lead, fs), dtype=np.int64)
            except Exception as exc:  # a peer failing on a noisy record scores no detection there
                dets[name] = np.zeros(0, dtype=np.int64)
                errors.append({"detector": name, "record": nst.name, "error": str(exc)[:200]})
            det_seconds[name] += time.perf_counter() - t
        cell = tally.setdefault(key_k, {}).setdefault(key_s, {})
        for name, det in dets.items():
            c = cell.setdefault(name, {k: list(v) for k, v in zero.items()})
            whole = match_beats(ref, det, tol)
            noisy = span_counts(ref, det, spans, tol) if spans else (0, 0, 0)
            for i in range(3):
                c["whole"][i] += whole[i]
                c["noisy"][i] += noisy[i]
            if name == "ecg_monitor":
                per_record.setdefault(key_k, {}).setdefault(key_s, {})[rec_name] = _counts(
                    *noisy if kind is not None else whole
                )
    results: dict[str, Any] = {}
    goals: dict[str, Any] = {}
    table: list[dict[str, Any]] = []
    for key_k, by_snr in tally.items():
        for key_s, cell in by_snr.items():
            res = {
                name: {part: _counts(*c[part]) for part in ("noisy", "whole")}
                for name, c in cell.items()
            }
            if key_k == "clean":
                res = {name: {"whole": r["whole"]} for name, r in res.items()}
            results.setdefault(key_k, {})[key_s] = res
            part = "whole" if key_k == "clean" else "noisy"
            row: dict[str, Any] = {"noise": key_k, "snr_db": key_s, "segments": part}
            for name in all_names:
                row[f"{name}_se"] = res[name][part]["se"]
                row[f"{name}_ppv"] = res[name][part]["ppv"]
            table.append(row)
            if key_k == "clean" or not peer_names:
                continue
            ours = res["ecg_monitor"]["noisy"]
            best = max(peer_names, key=lambda n: res[n]["noisy"]["f1"] or 0.0)
            best_se = max(res[n]["noisy"]["se"] or 0.0 for n in peer_names)
            best_ppv = max(res[n]["noisy"]["ppv"] or 0.0 for n in peer_names)
            goals.setdefault(key_k, {})[key_s] = {
                "best_peer": best,
                "best_peer_f1": res[best]["noisy"]["f1"],
                "f1": ours["f1"],
                "ge_best_peer": (ours["f1"] or 0.0) >= (res[best]["noisy"]["f1"] or 0.0),
                "se_ge_best_peer_se": (ours["se"] or 0.0) >= best_se,
                "ppv_ge_best_peer_ppv": (ours["ppv"] or 0.0) >= best_ppv,
            }
    ma0 = results.get("ma", {}).get("0", {}).get("ecg_monitor", {}).get("noisy")
    ma0_goal = (
        {
            "se": ma0["se"],
            "ppv": ma0["ppv"],
            "met": (ma0["se"] or 0.0) >= 95.0 and (ma0["ppv"] or 0.0) >= 90.0,
        }
        if ma0
        else None
    )
    all_flags = [g["ge_best_peer"] for by in goals.values() for g in by.values()]
    return {
        "units": "percent",
        "records": names,
        "seconds_per_record": seconds,
        "noise_kinds": use,
        "noise_kinds_unavailable": unavailable,
        "snrs_db": snr_list,
        "seed": seed,
        "detectors": all_names,
        "table": table,
        "results": results,
        "ecg_monitor_per_record": per_record,
        "goal_met": {
            "ge_best_peer_every_snr": bool(all_flags) and all(all_flags),
            "ma_0db_se95_ppv90": ma0_goal["met"] if ma0_goal else None,
            "all": bool(all_flags) and all(all_flags) and bool(ma0_goal and ma0_goal["met"]),
        },
        "goals_by_snr": goals,
        "ma_0db": ma0_goal,
        "clipped_fraction": {k: v for k, v in clipped.items() if v > 0},
        "detector_seconds": {k: round(v, 2) for k, v in det_seconds.items()},
        "peer_errors": errors,
        "detector": "stream.stages.processor.StreamProcessor beats (detection only, 1 s frames)",
        "protocol": (evaluate_qrs_noise.__doc__ or "").split("\n\n", 1)[1].strip(),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    }


# ------------------------------------------------------------------- dropouts: DC offsets and NST noise

#: Offset cases of the dropout evaluation: name -> (constant offset per lead (mV), baseline steps as
#: ``(start_s, delta_mv, lead, ramp_s)``). ``none`` is the reference (same frames, no offset).
OFFSET_CASES: dict[str, tuple[tuple[float, float], tuple[tuple[float, float, str | None, float], ...]]] = {
    "none": ((0.0, 0.0), ()),
    "-10mV": ((-10.0, -10.0), ()),
    "-5mV": ((-5.0, -5.0), ()),
    "+5mV": ((5.0, 5.0), ()),
    "+10mV": ((10.0, 10.0), ()),
    "+10/-10mV": ((10.0, -10.0), ()),
    "+5mV_steps_2s": ((5.0, 5.0), ((300.0, -10.0, None, 2.0), (900.0, 12.0, None, 2.0), (1500.0, -7.0, None, 2.0))),
    "+5mV_steps_10s": ((5.0, 5.0), ((300.0, -10.0, None, 10.0), (900.0, 12.0, None, 10.0), (1500.0, -7.0, None, 10.0))),
}  # fmt: skip
ALARM_KINDS_NO_BEAT: tuple[str, ...] = ("asystole", "pause")


def _alarms_vs_reference(
    out: Any, data_dir: Path, record: str, duration_s: float, tol_s: float = 5.0
) -> dict[str, dict[str, int]]:
    """Raised alerts of a :class:`ProcessorOutput` by kind: ``raised``; for asystole and pause also ``false``
    (no reference RR interval above the rule's threshold within ``tol_s``, as ``evaluate alarms`` judges)."""
    from training.eval_alarms import (
        Episode,
        ReferenceConfig,
        overlaps,
        read_reference,
        reference_events,
    )

    ref = read_reference(data_dir / "mitdb" / record, duration_s)
    cfg = ReferenceConfig.from_stream()
    out_counts: dict[str, dict[str, int]] = {}
    for a in out.alerts:
        if a.status != "raised":
            continue
        c = out_counts.setdefault(a.kind, {"raised": 0})
        c["raised"] += 1
        if a.kind in ALARM_KINDS_NO_BEAT:
            events = reference_events(ref, a.kind, cfg) or []
            end = (a.end if a.end is not None else T0 + duration_s) - T0
            span = Episode(a.start - T0, end, a.kind)
            c["false"] = c.get("false", 0) + int(not any(overlaps(span, e, tol_s) for e in events))
    return out_counts


def _add_alarm_counts(total: dict[str, dict[str, int]], more: dict[str, dict[str, int]]) -> None:
    for kind, c in more.items():
        t = total.setdefault(kind, {})
        for k, v in c.items():
            t[k] = t.get(k, 0) + v


def _on_source_rails(seg: Any, source: Any) -> bool:
    """True when most samples of dropout ``seg`` sit at the ADC rails of the ``source`` recording (its
    header's range, within 0.02 mV): the recording itself clipped there."""
    if source.adc_range_mv is None or seg.lead not in source.leads:
        return False
    li = source.leads.index(seg.lead)
    lo, hi = source.adc_range_mv[li]
    a, b = round((seg.start - T0) * source.fs), round((seg.end - T0) * source.fs)
    x = source.signal[a:b, li]
    return bool(x.size and np.mean((x <= lo + 0.02) | (x >= hi - 0.02)) > 0.5)


def evaluate_dropouts_offsets(
    data_dir: Path,
    records: list[str] | None = None,
    minutes: float | None = None,
    cases: dict[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """False dropouts of MIT-BIH records carrying DC offsets (:data:`OFFSET_CASES`: -10, -5, +5, +10 mV on
    both leads, +10 / -10 mV, and +5 mV with slow baseline steps), made by :func:`simulators.nst.nst_record`
    (no noise), replayed through :class:`StreamProcessor` in 1 s frames declaring the range of the record's
    header, as the replay sends them. Every dropout segment is false; goal 0 per hour in every case but
    ``none`` (the same records without offset, for reference): ``goal_met`` over the constant offsets,
    ``steps_goal_met`` over the cases with baseline steps (raised-cosine ramps of 2 s and 10 s). A segment
    over samples that sit at the source recording's own ADC rails (MIT-BIH clipped there: record 223) is
    counted apart (``source_rail_verified``): re-encoded in the wider range, such a plateau is no longer at
    a rail, and it is there with or without an offset; the goals exclude those."""
    from simulators.nst import OffsetStep, nst_record

    data_dir = Path(data_dir)
    names = list(records or DROPOUT_RECORDS)
    use = dict(cases or OFFSET_CASES)
    seconds = minutes * 60.0 if minutes else None
    by_case: dict[str, Any] = {}
    jobs = [(c, r) for c in use for r in names]
    for case, rec_name in _progress(jobs, progress, "offset records"):
        const, steps = use[case]
        nst = nst_record(
            data_dir,
            rec_name,
            None,
            None,
            seconds=seconds,
            offset_mv=const,
            offset_steps=[OffsetStep(*s) for s in steps],
        )
        rec = nst.record()
        _, out = stream_beats(rec, f"offset-{rec_name}")
        c = by_case.setdefault(
            case,
            {
                "hours": 0.0,
                "false": 0,
                "rail": 0,
                "segments": [],
                "alerts_raised": {},
                "offset_range_mv": None,
            },
        )
        c["hours"] += rec.duration_s / 3600.0
        c["false"] += len(out.dropouts)
        source = read_record(data_dir / "mitdb" / rec_name, sampto=rec.signal.shape[0])
        for s in out.dropouts:
            rail = _on_source_rails(s, source)
            c["rail"] += int(rail)
            c["segments"].append(
                {
                    **s.to_dict(),
                    "record": rec_name,
                    "start_s": round(s.start - T0, 3),
                    "source_rail_verified": rail,
                }
            )
        for a in out.alerts:
            if a.status == "raised":
                c["alerts_raised"][a.kind] = c["alerts_raised"].get(a.kind, 0) + 1
        c["offset_range_mv"] = nst.metadata()["offset_range_mv"]
    result: dict[str, Any] = {}
    for case, c in by_case.items():
        result[case] = {
            "false_dropouts": c["false"],
            "false_per_hour": round(c["false"] / c["hours"], 3) if c["hours"] else None,
            "source_rail_verified": c["rail"],
            "false_per_hour_excluding_source_rail_verified": round(
                (c["false"] - c["rail"]) / c["hours"], 3
            )
            if c["hours"]
            else None,
            "hours": round(c["hours"], 3),
            "offset_range_mv": c["offset_range_mv"],
            "steps": [list(s) for s in use[case][1]],
            "alerts_raised": c["alerts_raised"],
            "false_segments": c["segments"][:20],
        }
    offset_cases = [k for k in result if k != "none" and not use[k][1]]
    step_cases = [k for k in result if use[k][1]]
    return {
        "records": names,
        "minutes_per_record": minutes,
        "adc_range_mv_declared": "the header's range (+-163.8 mV) narrowed to the i16le frames' +-32.767 mV",
        "cases": result,
        "false_per_hour": max((result[k]["false_per_hour"] or 0.0) for k in offset_cases)
        if offset_cases
        else None,
        "false_per_hour_excluding_source_rail_verified": max(
            (result[k]["false_per_hour_excluding_source_rail_verified"] or 0.0)
            for k in offset_cases
        )
        if offset_cases
        else None,
        "goal_met": all(
            result[k]["false_dropouts"] == result[k]["source_rail_verified"] for k in offset_cases
        ),
        "steps_goal_met": all(
            result[k]["false_dropouts"] == result[k]["source_rail_verified"] for k in step_cases
        )
        if step_cases
        else None,
        "protocol": (evaluate_dropouts_offsets.__doc__ or "").strip(),
    }


def evaluate_dropouts_noise(
    data_dir: Path,
    records: list[str] | None = None,
    kinds: list[str] | None = None,
    snrs: tuple[float, ...] | list[float] | None = None,
    seconds: float | None = None,
    seed: int = NST_SEED,
    offsets: tuple[tuple[float, float], ...] = ((0.0, 0.0), (10.0, -10.0)),
    progress: bool = False,
) -> dict[str, Any]:
    """False dropouts and false asystole/pause alerts of the stream's processor on the project's NST records
    (:func:`simulators.nst.nst_record`: ``records``, default :data:`NST_EVAL_RECORDS`; bw and ma noise, em
    where present; 24 ... -6 dB; each record also with ``offsets`` (mV per lead) on top), sent as the replay
    sends them (clipped to the i16le frames' range, which they declare). No dropout is injected: every
    dropout segment is false. Goals: 0 false dropouts per hour at SNR >= 6 dB; 0 false asystole and pause
    alerts (raised alerts with no reference RR interval above the rule's threshold within 5 s) at every SNR.
    Dropouts below 6 dB are reported (bw at -6 dB reaches the i16le range: saturation there is real)."""
    from simulators.nst import NST_SNRS_DB, available_noise_kinds, load_noise, nst_record

    data_dir = Path(data_dir)
    names = list(records or NST_EVAL_RECORDS)
    present = available_noise_kinds(data_dir)
    use = [k for k in (kinds or ["bw", "ma", "em"]) if k in present]
    snr_list = [float(s) for s in (snrs if snrs is not None else NST_SNRS_DB)]
    noise = {k: load_noise(data_dir, k) for k in use}
    cells: dict[str, dict[str, Any]] = {}
    jobs = [(k, s, r, o) for k in use for s in snr_list for r in names for o in offsets]
    for kind, snr, rec_name, off in _progress(jobs, progress, "NST dropout records"):
        nst = nst_record(
            data_dir,
            rec_name,
            kind,
            snr,
            seed=seed,
            seconds=seconds,
            offset_mv=off,
            noise_records=noise,
        )
        rec = nst.record()
        _, out = stream_beats(rec, f"nst-{nst.name}")
        c = cells.setdefault(
            f"{kind}/{snr:g}",
            {"noise": kind, "snr_db": snr, "hours": 0.0, "dropouts": {}, "alerts": {}, "segs": []},
        )
        c["hours"] += rec.duration_s / 3600.0
        for s in out.dropouts:
            c["dropouts"][s.kind] = c["dropouts"].get(s.kind, 0) + 1
            c["segs"].append(
                {
                    **s.to_dict(),
                    "record": nst.name,
                    "start_s": round(s.start - T0, 3),
                    "offset_mv": list(off),
                }
            )
        _add_alarm_counts(
            c["alerts"], _alarms_vs_reference(out, data_dir, rec_name, rec.duration_s)
        )
    by_snr: dict[str, Any] = {}
    false_drop_hi = 0
    hours_hi = 0.0
    false_alarms = 0
    for key, c in cells.items():
        n_drop = sum(c["dropouts"].values())
        fa = {k: c["alerts"].get(k, {}).get("false", 0) for k in ALARM_KINDS_NO_BEAT}
        by_snr[key] = {
            "noise": c["noise"],
            "snr_db": c["snr_db"],
            "hours": round(c["hours"], 3),
            "false_dropouts": n_drop,
            "false_dropouts_per_hour": round(n_drop / c["hours"], 3) if c["hours"] else None,
            "false_dropouts_by_kind": c["dropouts"],
            "false_asystole": fa["asystole"],
            "false_pause": fa["pause"],
            "alerts_raised": c["alerts"],
            "false_dropout_segments": c["segs"][:10],
        }
        false_alarms += fa["asystole"] + fa["pause"]
        if c["snr_db"] >= 6.0:
            false_drop_hi += n_drop
            hours_hi += c["hours"]
    return {
        "records": names,
        "noise_kinds": use,
        "snrs_db": snr_list,
        "offsets_mv": [list(o) for o in offsets],
        "seconds_per_record": seconds,
        "seed": seed,
        "false_dropouts_per_hour_snr_ge_6db": round(false_drop_hi / hours_hi, 3)
        if hours_hi
        else None,
        "hours_snr_ge_6db": round(hours_hi, 3),
        "false_asystole_pause_alerts": false_alarms,
        "goal_met": {
            "no_false_dropouts_snr_ge_6db": false_drop_hi == 0,
            "no_false_asystole_pause": false_alarms == 0,
        },
        "by_noise_snr": by_snr,
        "protocol": (evaluate_dropouts_noise.__doc__ or "").strip(),
    }


# -------------------------------------------------------------------------------------------- bench


def bench_processor(
    data_dir: Path, record: str = "100", seconds: int = 300, runs: int = 5, windows: bool = True
) -> dict[str, Any]:
    """Median per-frame time of :meth:`StreamProcessor.process` (1 s, 2-lead, 360 Hz frames of a real
    record), per stage and in total, over ``runs`` runs; ``windows=False`` is the worker's configuration
    without model windows."""
    from stream.stages.frame import Frame
    from stream.stages.processor import StageConfig, StreamProcessor

    config = StageConfig(windows=(BEAT_720, LEADS_10S, BEAT_400) if windows else ())

    rec = read_record(Path(data_dir) / "mitdb" / record, sampto=int(seconds * 360))
    n = int(rec.fs)
    frames = [
        Frame("bench", i, rec.fs, rec.leads, T0 + i, rec.signal[s : s + n])
        for i, s in enumerate(range(0, rec.signal.shape[0], n))
    ]
    medians: list[float] = []
    stage_acc: dict[str, list[float]] = {}
    for _ in range(runs):
        sp = StreamProcessor("bench", rec.fs, rec.leads, config)
        times = []
        for f in frames:
            t = time.perf_counter()
            out = sp.process(f)
            times.append(time.perf_counter() - t)
            for k, v in out.stage_seconds.items():
                stage_acc.setdefault(k, []).append(v)
        medians.append(float(np.median(times)))
    med = float(np.median(medians))
    return {
        "record": record,
        "model_windows": windows,
        "frames_per_run": len(frames),
        "runs": runs,
        "median_frame_ms": round(med * 1e3, 4),
        "per_run_median_ms": [round(m * 1e3, 4) for m in medians],
        "p99_frame_ms_last_run": round(float(np.percentile(times, 99)) * 1e3, 4),
        "stage_median_ms": {k: round(float(np.median(v)) * 1e3, 4) for k, v in stage_acc.items()},
        "streams_per_core_realtime": round(1.0 / med, 1) if med > 0 else None,
    }
