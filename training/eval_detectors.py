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
) -> Any:
    """Feed ``signal`` to ``processor`` in frames of ``frame_s`` (skipping the seqs in ``drop``), flush,
    and return one :class:`ProcessorOutput` with everything it produced."""
    from stream.stages.frame import Frame
    from stream.stages.processor import ProcessorOutput

    n = round(frame_s * fs)
    total = ProcessorOutput()
    drop = drop or set()
    for seq, s in enumerate(range(0, signal.shape[0], n)):
        if seq in drop:
            continue
        total.extend(
            processor.process(Frame(stream_id, seq, fs, leads, t0 + s / fs, signal[s : s + n]))
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
    return {
        "units": "percent (recall), count per hour (false_per_hour)",
        "recall": _pct(n_hit, n_events),
        "recall_by_kind": {k: _pct(events_hit[k], events_total[k]) for k in DROPOUT_FAULT_KINDS},
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
