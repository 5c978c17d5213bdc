"""Recovery models: calibrated uncertainty (``calibrate_recovery``) and the fault-replay evaluation
(``evaluate_recovery``) of ``lead_recon`` and the ``lstm_ae`` gap filler, plus the two-lead (MIT-BIH)
rebuild evaluation (``evaluate_two_lead``).

Interval protocol (split conformal with normalised residuals; Vovk et al., Papadopoulos et al.): a
per-sample difficulty ``scale`` computable at run time without truth (the rebuilt signal's local
amplitude envelope plus a floor; for the gap filler also the distance to the nearest observed sample,
see :mod:`models.runtime.lead_recon` and :mod:`models.runtime.lstm_ae`) and the 90 % quantile ``q`` of
``|true - rebuilt| / scale`` on validation data only; the half width of the stated 90 % interval is
``q * scale``. The validation set is split record-wise in two halves: the scale's free parameters
(floor, distance weight) are picked on half A as the narrowest mean interval, ``q`` is the quantile on
half A, and half B (unseen by both) reports the validation coverage written to the card.

No test data is used for calibration: PTB-XL strat_fold 9 for lead_recon, the LSTM-AE's own validation
records (its card's split, MIT-BIH DS1) for lstm_ae; the two-lead verdict the card carries (usable or
not per direction) is decided on MIT-BIH DS1 (no lead_recon training data), the reported two-lead figures
are on DS2.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.card import DEFAULT_ARTIFACTS_DIR, card_path, load_card, parse_card
from models.preprocessing.filtering import filter_signal
from models.preprocessing.leads import TWELVE_LEADS
from models.runtime.lead_recon import (
    BUCKETS,
    IntervalCalibration,
    LeadReconModel,
    lead_scale,
    present_bucket,
)
from models.runtime.lstm_ae import GapFiller, gap_scale
from models.runtime.protocol import MODEL, Recovered, Window
from stream.records import read_annotations, read_record
from training.datasets.mitdb_split import MITDB_DS1, MITDB_DS2, MITDB_PACED

COVERAGE = 0.9
#: envelope half width (s) of both recoverers' scales
ENVELOPE_HALF_S = 0.1
LEAD_FLOORS_MV: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
GAP_FLOORS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
GAP_DISTANCE_WEIGHTS: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)
GAP_DISTANCE_CAP_S = 0.3
#: a two-lead direction whose median Pearson r is below this, or whose stated 90 % interval covers
#: less than MIN_TWO_LEAD_COVERAGE of the true samples, is not published (``usable: false``)
MIN_TWO_LEAD_PEARSON = 0.5
MIN_TWO_LEAD_COVERAGE = 0.8
FAULT_KINDS: tuple[str, ...] = ("lead_off", "flatline", "saturation", "nan", "lost_frames")
STREAM_12_LEAD_MODEL = (
    "vae_bilstm"  # the 12-lead model of the stream's abnormal_12lead alarm (AlarmConfig)
)


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[recovery] {msg}", file=sys.stderr, flush=True)


def _conformal_q(norm: np.ndarray, coverage: float = COVERAGE) -> float:
    """Split-conformal quantile: the ceil((n + 1) * coverage)-th smallest normalised residual."""
    n = norm.size
    k = min(n - 1, math.ceil((n + 1) * coverage) - 1)
    return float(np.partition(norm, k)[k])


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.std() < 1e-9 or b.std() < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _median(xs: Sequence[float]) -> float | None:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return round(float(np.median(v)), 4) if v else None


# ------------------------------------------------------------------------------------- PTB-XL data
def ptbxl_records(data_dir: str | Path, folds: Sequence[int]) -> pd.DataFrame:
    """PTB-XL records of ``folds``: ``filename_lr``, ``strat_fold``, ``norm`` (NORM-only) from
    ``ptbxl_database.csv`` and, for fold 9, ``ptbxl_extra_records.csv`` too (fold 9 complete)."""
    from training.datasets.ptbxl import load_metadata

    root = Path(data_dir) / "ptbxl"
    df = load_metadata(data_dir)
    rows = pd.DataFrame(
        {
            "ecg_id": df.index.to_numpy(),
            "filename_lr": df["filename_lr"].to_numpy(),
            "strat_fold": df["strat_fold"].to_numpy(),
            "norm": [s == ("NORM",) for s in df["superclasses"]],
        }
    )
    extra_path = root / "ptbxl_extra_records.csv"
    if extra_path.is_file():
        ex = pd.read_csv(extra_path)
        ex = ex[ex["split"] == "val"]
        sup = [c for c in ("MI", "STTC", "CD", "HYP") if c in ex]
        norm = (ex["NORM"] == 1) & (ex[sup].sum(axis=1) == 0) if "NORM" in ex else False
        rows = pd.concat(
            [
                rows,
                pd.DataFrame(
                    {
                        "ecg_id": ex["ecg_id"].to_numpy(),
                        "filename_lr": ex["filename_lr"].to_numpy(),
                        "strat_fold": 9,
                        "norm": np.asarray(norm, dtype=bool),
                    }
                ),
            ]
        )
    rows = rows[rows["strat_fold"].isin(list(folds))].drop_duplicates("ecg_id")
    return rows.sort_values("ecg_id").reset_index(drop=True)


def _ptbxl_window(data_dir: Path, rel: str) -> np.ndarray:
    """One PTB-XL record as the stream's leads_10s window [1000, 12] (causal band-pass, 100 Hz)."""
    from training.datasets.ptbxl import preprocess_record

    rec = read_record(data_dir / "ptbxl" / rel)
    sig = rec.signal[:, [rec.leads.index(lead) for lead in TWELVE_LEADS]]
    return preprocess_record(np.nan_to_num(sig, nan=0.0), rec.fs)


# ------------------------------------------------------------------------------ lead_recon calibration
def _calibration_masks(rng: np.random.Generator) -> list[np.ndarray]:
    """Presence masks of one validation window: two single V leads missing (one lead faulty, the
    stream's common case), a random subset, one lead alone (not II), II alone (the dedicated model) and
    {I, II, V4}."""
    out = []
    for j in rng.choice(np.arange(6, 12), size=2, replace=False):
        m = np.ones(12, dtype=bool)
        m[j] = False
        out.append(m)
    m = rng.random(12) < rng.uniform(0.2, 0.9)
    if m.all() or not m.any():
        m[:] = False
        m[rng.choice(12, size=int(rng.integers(1, 12)), replace=False)] = True
    out.append(m)
    m = np.zeros(12, dtype=bool)
    m[int(rng.choice([0, *range(2, 12)]))] = True
    out.append(m)
    m = np.zeros(12, dtype=bool)
    m[1] = True
    out.append(m)
    m = np.zeros(12, dtype=bool)
    m[[0, 1, 9]] = True
    out.append(m)
    return out


@dataclass
class _Cells:
    """|error| and envelope samples per calibration cell (model, bucket, lead), for halves A and B."""

    err: dict[tuple[str, str, str, int], list[np.ndarray]] = field(default_factory=dict)
    env: dict[tuple[str, str, str, int], list[np.ndarray]] = field(default_factory=dict)

    def add(self, key: tuple[str, str, str, int], err: np.ndarray, env: np.ndarray) -> None:
        self.err.setdefault(key, []).append(err)
        self.env.setdefault(key, []).append(env)

    def arrays(self, model: str, half: int, bucket: str | None = None, lead: str | None = None):
        e, v = [], []
        for k, xs in self.err.items():
            if (
                k[0] == model
                and k[3] == half
                and (bucket is None or k[1] == bucket)
                and (lead is None or k[2] == lead)
            ):
                e += xs
                v += self.env[k]
        if not e:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        return np.concatenate(e), np.concatenate(v)


def calibrate_lead_recon(
    model: LeadReconModel,
    data_dir: str | Path,
    n_records: int = 400,
    seed: int = 0,
    progress: bool = False,
    step: int = 4,
) -> dict[str, dict[str, Any]]:
    """``{card name: uncertainty section}`` for lead_recon and its dedicated models, from PTB-XL fold 9
    (``n_records`` drawn at random, seeded; every ``step``-th sample of a learned lead kept)."""
    data_dir = Path(data_dir)
    rows = ptbxl_records(data_dir, (9,))
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(rows), size=min(n_records, len(rows)), replace=False))
    rows = rows.iloc[pick].reset_index(drop=True)
    cells = _Cells()
    t0 = time.perf_counter()
    xs, masks, halves = [], [], []
    for r, rel in enumerate(rows["filename_lr"]):
        try:
            x = _ptbxl_window(data_dir, rel)
        except Exception as exc:  # an unreadable record is left out, and said
            _say(progress, f"left out {rel}: {exc}")
            continue
        for m in _calibration_masks(rng):
            xs.append(x)
            masks.append(m)
            halves.append(r % 2)
    _say(
        progress, f"lead_recon: {len(xs)} masked fold-9 windows ({time.perf_counter() - t0:.0f} s)"
    )
    truth = np.stack(xs)
    mk = np.stack(masks)
    inp = np.where(mk[:, None, :], truth, 0.0).astype(np.float32)
    pred = model.predict(inp, mk)
    names: dict[int, str] = {id(model): model.name}
    for _, ded in model.dedicated:
        names[id(ded)] = ded.name
    env = lead_scale(pred.leads, 0.0, ENVELOPE_HALF_S)  # floor 0: the envelope alone
    for b in range(len(xs)):
        owner = names[id(model.model_for(mk[b]))]
        bucket = present_bucket(int(mk[b].sum()))
        for j in np.flatnonzero(pred.learned[b]):
            e = np.abs(truth[b, ::step, j] - pred.leads[b, ::step, j])
            cells.add((owner, bucket, TWELVE_LEADS[j], halves[b]), e, env[b, ::step, j])
    out: dict[str, dict[str, Any]] = {}
    for owner in sorted({k[0] for k in cells.err}):
        # the floor: the narrowest mean interval over all cells of this model, on half A
        widths = {}
        for floor in LEAD_FLOORS_MV:
            tot, n = 0.0, 0
            for bucket in {k[1] for k in cells.err if k[0] == owner}:
                e, v = cells.arrays(owner, 0, bucket)
                if e.size:
                    q = _conformal_q(e / (floor + v))
                    tot += float(q * (floor + v).sum())
                    n += e.size
            widths[floor] = tot / max(n, 1)
        floor = min(widths, key=lambda f: widths[f])
        quant: dict[str, dict[str, float]] = {}
        check: dict[str, Any] = {}
        cov_b, n_b = 0.0, 0
        for bucket, _, _ in BUCKETS:
            e, v = cells.arrays(owner, 0, bucket)
            if e.size < 1000:
                continue
            table = {"all": round(_conformal_q(e / (floor + v)), 5)}
            for lead in TWELVE_LEADS:
                el, vl = cells.arrays(owner, 0, bucket, lead)
                if el.size >= 2000:  # at least ~8 windows of that lead in half A
                    table[lead] = round(_conformal_q(el / (floor + vl)), 5)
            quant[bucket] = table
            covered, widths_b = [], []
            for lead in TWELVE_LEADS:
                eb, vb = cells.arrays(owner, 1, bucket, lead)
                if eb.size:
                    hwb = table.get(lead, table["all"]) * (floor + vb)
                    covered.append(eb <= hwb)
                    widths_b.append(hwb)
            if covered:
                cb, wb = np.concatenate(covered), np.concatenate(widths_b)
                check[bucket] = {
                    "coverage": round(float(cb.mean()), 4),
                    "samples": int(cb.size),
                    "mean_half_width_mv": round(float(wb.mean()), 4),
                }
                cov_b += float(cb.sum())
                n_b += cb.size
        out[owner] = {
            "method": "split conformal, normalised residuals: half width = q * scale, q the "
            f"{COVERAGE:.0%} quantile of |true - rebuilt| / scale on validation windows",
            "coverage": COVERAGE,
            "scale": {
                "formula": "floor_mv + envelope; envelope = moving max over +-envelope_half_s of "
                "|rebuilt - median(rebuilt)| of the rebuilt lead (models.runtime.protocol."
                "amplitude_envelope)",
                "floor_mv": floor,
                "envelope_half_s": ENVELOPE_HALF_S,
                "floor_chosen_from": list(LEAD_FLOORS_MV),
                "mean_half_width_mv_by_floor_half_a": {
                    str(f): round(w, 4) for f, w in widths.items()
                },
            },
            "buckets": "number of complete leads in the window: "
            + ", ".join(b for b, _, _ in BUCKETS),
            "quantile": quant,
            "validation": {
                "set": "PTB-XL strat_fold 9 (ptbxl_database.csv and ptbxl_extra_records.csv), "
                f"{len(rows)} random records (seed {seed}), windows cut as the stream does "
                "(causal band-pass, 100 Hz, 10 s); per window 6 presence masks: 2 x one V lead "
                "missing, a random subset, one lead alone, II alone, {I, II, V4}; limb leads "
                "derivable exactly are not learned and not calibrated",
                "split": "records alternate into half A (scale floor and quantiles) and half B "
                "(coverage check)",
                "coverage_half_b": round(cov_b / max(n_b, 1), 4),
                "per_bucket_half_b": check,
            },
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": "python -m training calibrate recovery",
        }
    return out


# -------------------------------------------------------------------------------- lstm_ae calibration
def _gap_segments(
    data_dir: Path, records: Sequence[str], per_record: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2 s MLII windows at 360 Hz centred on annotated beats of ``records`` (causal band-pass, as the
    stream cuts beat_720), one random contiguous gap each (0.05-0.8 s, anywhere, edges included),
    and the record index of each."""
    segs, gaps, rec_idx = [], [], []
    for r, name in enumerate(records):
        rec = read_record(data_dir / "mitdb" / name)
        lead = "MLII" if "MLII" in rec.leads else rec.leads[0]
        x = filter_signal(np.nan_to_num(rec.lead(lead)), rec.fs)
        beats = read_annotations(data_dir / "mitdb" / name).beats().sample
        beats = beats[(beats >= 360) & (beats < x.size - 360)]
        for p in rng.choice(beats, size=min(per_record, beats.size), replace=False):
            segs.append(x[p - 360 : p + 360])
            length = int(rng.integers(18, 289))
            start = int(rng.integers(-length // 2, 720 - length // 2))
            m = np.zeros(720, dtype=bool)
            m[max(start, 0) : min(start + length, 720)] = True
            gaps.append(m)
            rec_idx.append(r)
    return np.stack(segs).astype(np.float32), np.stack(gaps), np.asarray(rec_idx)


def calibrate_lstm_ae(
    filler: GapFiller,
    data_dir: str | Path,
    records: Sequence[str],
    per_record: int = 300,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """The gap filler's ``uncertainty`` section from its validation ``records`` (see the module)."""
    rng = np.random.default_rng(seed)
    x, m, rec_idx = _gap_segments(Path(data_dir), records, per_record, rng)
    _say(progress, f"lstm_ae: {len(x)} gapped beat windows from {list(records)}")
    rec = filler.predict(np.where(m, np.nan, x).astype(np.float32), m)
    assert rec.mean is not None and rec.scale is not None
    half = np.isin(rec_idx, np.arange(len(records))[1::2]).astype(int)  # record-wise halves
    err = np.abs(x - rec.signal)

    def scales(floor: float, w: float) -> np.ndarray:
        assert rec.mean is not None and rec.scale is not None
        return gap_scale(
            rec.signal,
            m,
            rec.mean,
            rec.scale,
            filler.fs,
            floor,
            w,
            GAP_DISTANCE_CAP_S,
            ENVELOPE_HALF_S,
        )

    a, b = (half == 0)[:, None] & m, (half == 1)[:, None] & m
    grid = {}
    for floor in GAP_FLOORS:
        for w in GAP_DISTANCE_WEIGHTS:
            sc = scales(floor, w)
            q = _conformal_q(err[a] / sc[a])
            grid[(floor, w)] = (q, float((q * sc[a]).mean()))
    floor, w = min(grid, key=lambda k: grid[k][1])
    q = grid[(floor, w)][0]
    sc = scales(floor, w)
    cov_b = float((err[b] <= q * sc[b]).mean())
    return {
        "method": "split conformal, normalised residuals: half width = q * scale, q the "
        f"{COVERAGE:.0%} quantile of |true - filled| / scale over the filled samples of validation "
        "windows",
        "coverage": COVERAGE,
        "scale": {
            "formula": "(std_observed + eps) * (floor + envelope + distance_weight * "
            "min(d, distance_cap_s) / distance_cap_s); envelope = moving max over "
            "+-envelope_half_s of |z - median(z)| of the normalised filled window, d = seconds "
            "to the nearest observed sample (models.runtime.lstm_ae.gap_scale)",
            "floor": floor,
            "distance_weight": w,
            "distance_cap_s": GAP_DISTANCE_CAP_S,
            "envelope_half_s": ENVELOPE_HALF_S,
            "chosen_from": {
                "floor": list(GAP_FLOORS),
                "distance_weight": list(GAP_DISTANCE_WEIGHTS),
            },
        },
        "quantile": {"all": round(q, 5)},
        "validation": {
            "set": f"MIT-BIH validation records of the model's split {list(records)} (MLII, causal "
            f"band-pass, 360 Hz), {per_record} beat-centred 2 s windows per record (seed {seed}), one "
            "contiguous gap of 0.05-0.8 s each at a random position (edge gaps included)",
            "split": "records alternate into half A (scale parameters and quantile) and half B "
            "(coverage check)",
            "coverage_half_b": round(cov_b, 4),
            "samples_half_b": int(b.sum()),
            "mean_half_width_mv_half_b": round(float((q * sc[b]).mean()), 4),
        },
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m training calibrate recovery",
    }


# ------------------------------------------------------------------------------- two-lead (MIT-BIH)
def evaluate_two_lead(
    data_dir: str | Path,
    model: LeadReconModel,
    records: Sequence[str] = MITDB_DS2,
    windows_per_record: int = 30,
    window_s: float = 10.0,
) -> dict[str, Any]:
    """Rebuild each lead of MIT-BIH 2-lead records from the other (:meth:`LeadReconModel.
    rebuild_leads`, ``allow_unusable``) over ``windows_per_record`` consecutive 10 s windows of the
    causally band-passed record (from its start): per direction (12-lead names, e.g. ``II->V1``) the
    median Pearson r and RMSE (mV) against the recorded lead, the 90 % interval coverage of the rebuilt
    samples, and ``usable`` (median r >= :data:`MIN_TWO_LEAD_PEARSON` and coverage >=
    :data:`MIN_TWO_LEAD_COVERAGE`, so a published rebuild is neither poor nor falsely precise) with
    the reason."""
    from models.runtime.lead_recon import LEAD_EQUIVALENT

    data_dir = Path(data_dir)
    per: dict[str, dict[str, list[Any]]] = {}
    for name in records:
        rec = read_record(data_dir / "mitdb" / name)
        x = filter_signal(np.nan_to_num(rec.signal), rec.fs)
        n = round(window_s * rec.fs)
        for k in range(min(windows_per_record, x.shape[0] // n)):
            seg = x[k * n : (k + 1) * n]
            for t in range(len(rec.leads)):
                src = [LEAD_EQUIVALENT.get(rec.leads[i]) for i in range(len(rec.leads)) if i != t]
                key = (
                    f"{'+'.join(sorted(str(s) for s in src))}->{LEAD_EQUIVALENT.get(rec.leads[t])}"
                )
                d = per.setdefault(key, {"r": [], "rmse": [], "cov": [], "records": []})
                if name not in d["records"]:
                    d["records"].append(name)
                inp = seg.copy()
                inp[:, t] = np.nan
                res = model.rebuild_leads(inp, rec.fs, rec.leads, allow_unusable=True)
                if res.recovered is None:
                    d.setdefault("reasons", []).append(res.reason)
                    continue
                y = res.recovered.window.data[:, t]
                d["r"].append(_pearson(y, seg[:, t]))
                d["rmse"].append(float(np.sqrt(np.mean((y - seg[:, t]) ** 2))))
                hw = res.recovered.half_width_90
                if hw is not None:
                    d["cov"].append(float(np.mean(np.abs(y - seg[:, t]) <= hw[:, t])))
    out: dict[str, Any] = {}
    for key, d in sorted(per.items()):
        r = _median(d["r"])
        cov = round(float(np.mean(d["cov"])), 4) if d["cov"] else None
        why = []
        if r is None or r < MIN_TWO_LEAD_PEARSON:
            why.append(f"median Pearson r {r} < {MIN_TWO_LEAD_PEARSON}")
        if cov is not None and cov < MIN_TWO_LEAD_COVERAGE:
            why.append(f"the stated 90 % interval covers only {cov:.0%} of true samples")
        out[key] = {
            "windows": len(d["r"]),
            "records": d["records"],
            "pearson_median": r,
            "rmse_median_mv": _median(d["rmse"]),
            "coverage_90": cov,
            "usable": not why,
            "reason": None
            if not why
            else f"{' and '.join(why)} rebuilding {key} on {len(d['r'])} MIT-BIH windows of "
            f"{len(d['records'])} records: the PTB-XL-trained lead_recon does not transfer to "
            "MIT-BIH's modified leads",
        }
        if d.get("reasons"):
            out[key]["not_rebuilt"] = sorted(set(d["reasons"]))
    return out


# --------------------------------------------------------------------------------------- calibrate
def _write_uncertainty(path: Path, section: dict[str, Any]) -> None:
    """Set the card's ``uncertainty`` key through the card code (the rest of the card byte-identical)."""
    raw = load_card(path).raw
    raw["uncertainty"] = section
    parse_card(raw, str(path)).write(path)


def calibrate_recovery(
    data_dir: str | Path,
    models_dir: str | Path | None = None,
    *,
    n_ptbxl: int = 600,
    gap_per_record: int = 300,
    two_lead_windows: int = 12,
    seed: int = 0,
    write: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Calibrate the 90 % intervals of the recovery models and write them into their cards
    (``uncertainty``: method, scale parameters, quantiles, validation set and coverage, date).

    Protocol (split conformal, validation data only; see the module docstring):

    - ``lead_recon`` (+ its dedicated ``lead_recon_ii``): ``n_ptbxl`` random PTB-XL fold-9 records cut as
      the stream cuts leads_10s windows (a faulty lead is all NaN in its window, so masking a lead of the
      clean window is what the stream feeds the model), 6 presence masks each; quantiles of
      ``|error| / (floor + envelope)`` per (present-lead bucket, target lead); half A fits, half B checks.
      The card also gets ``two_lead``: per MIT-BIH direction (MLII -> V1 ...) the median r, RMSE and
      coverage on DS1 records (no lead_recon training data) and whether the rebuild is usable.
    - ``lstm_ae``: its validation records (the card's split), beat-centred 2 s windows with one random
      gap each; scale parameters and quantile on half A, coverage on half B.

    Returns the sections written (or that would be, ``write=False``) per card name.
    """
    models_dir = Path(models_dir or DEFAULT_ARTIFACTS_DIR)
    data_dir = Path(data_dir)
    model = LeadReconModel.load("lead_recon", models_dir)
    sections = calibrate_lead_recon(model, data_dir, n_ptbxl, seed, progress)
    # the new calibration in memory for the two-lead verdict
    model.calibration = IntervalCalibration.from_card(
        parse_card(
            {
                **load_card(card_path(models_dir, model.name)).raw,
                "uncertainty": sections[model.name],
            }
        )
    )
    model._calibrations[id(model)] = model.calibration
    for _, ded in model.dedicated:
        if ded.name in sections:
            model._calibrations[id(ded)] = IntervalCalibration.from_card(
                parse_card({**ded.card.raw, "uncertainty": sections[ded.name]})
            )
    _say(progress, "two-lead verdict on MIT-BIH DS1")
    ds1 = [r for r in MITDB_DS1 if r not in MITDB_PACED]
    verdict = evaluate_two_lead(data_dir, model, ds1, two_lead_windows)
    sections[model.name]["two_lead"] = {
        k: {**v, "set": f"MIT-BIH DS1 records, first {two_lead_windows} 10 s windows each"}
        for k, v in verdict.items()
    }
    filler = GapFiller.load("lstm_ae", models_dir)
    split = (filler.card.data.details or {}).get("split", {}).get("records", {})
    val = list(split.get("val") or ("114", "115", "119", "124", "207"))
    sections[filler.name] = calibrate_lstm_ae(filler, data_dir, val, gap_per_record, seed, progress)
    if write:
        for name, section in sections.items():
            _write_uncertainty(card_path(models_dir, name), section)
        _say(progress, f"wrote uncertainty into {sorted(sections)}")
    return sections


# ---------------------------------------------------------------------------------------- evaluate
class _Capture:
    """Wraps the scorer's recoverer: records what it returns (the stream's own recovery call)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.card = inner.card
        self.got: list[Recovered] = []

    @property
    def name(self) -> str:
        return str(self.inner.name)

    @property
    def window(self) -> Any:
        return self.inner.window

    def recover(
        self, windows: Sequence[Window]
    ) -> tuple[list[Recovered], list[tuple[Window, str]]]:
        ok, lost = self.inner.recover(windows)
        self.got += ok
        return ok, lost


@dataclass(frozen=True)
class _Case:
    source: str  # ptbxl / ludb
    name: str
    path: Path
    norm: bool


def _cases(
    data_dir: Path, records_ptbxl: int | Sequence[str], records_ludb: int | Sequence[str], seed: int
) -> list[_Case]:
    rng = np.random.default_rng(seed)
    out: list[_Case] = []
    if isinstance(records_ptbxl, int):
        rows = ptbxl_records(data_dir, (10,))
        norm = rows[rows["norm"]]
        other = rows[~rows["norm"]]
        n_norm = min(len(norm), (2 * records_ptbxl) // 3)
        pick = pd.concat(
            [
                norm.iloc[np.sort(rng.choice(len(norm), n_norm, replace=False))],
                other.iloc[
                    np.sort(
                        rng.choice(
                            len(other), min(len(other), records_ptbxl - n_norm), replace=False
                        )
                    )
                ],
            ]
        )
        out += [
            _Case("ptbxl", Path(r).name, data_dir / "ptbxl" / r, bool(nm))
            for r, nm in zip(pick["filename_lr"], pick["norm"], strict=True)
        ]
    else:
        rows = ptbxl_records(data_dir, (10,)).set_index("filename_lr")
        out += [
            _Case("ptbxl", Path(r).name, data_dir / "ptbxl" / r, bool(rows["norm"].get(r, False)))
            for r in records_ptbxl
        ]
    ludb = (
        [str(i) for i in np.sort(rng.choice(np.arange(1, 201), records_ludb, replace=False))]
        if isinstance(records_ludb, int)
        else list(records_ludb)
    )
    out += [_Case("ludb", n, data_dir / "ludb" / "data" / n, False) for n in ludb]
    return out


FAULT_START_S, FAULT_END_S, COPIES = 11.0, 17.5, 2


def evaluate_recovery(
    data_dir: str | Path,
    models_dir: str | Path | None = None,
    records_ptbxl: int | Sequence[str] = 120,
    records_ludb: int | Sequence[str] = 40,
    seed: int = 0,
    progress: bool = False,
    model: str = STREAM_12_LEAD_MODEL,
) -> dict[str, Any]:
    """Replay 12-lead records through the stream's own path with one fault at a time and measure the
    recovery (``python -m training evaluate recovery --json``).

    Records: PTB-XL strat_fold 10 (``records_ptbxl`` random records, two thirds NORM-only for the
    false-positive rate, or the given ``filename_lr`` paths) and LUDB (``records_ludb`` random records,
    500 Hz, or the given ids). Each record is looped to 20 s (two copies; the second copy's window
    10-20 s is the one measured) and replayed in 1 s frames through
    :class:`~stream.stages.processor.StreamProcessor` and :class:`~stream.stages.scoring.WindowScorer`
    (``model``, recover=True): once clean, and once per fault kind (lead_off, flatline, saturation, nan,
    lost_frames; :func:`simulators.faults.inject` / :func:`~simulators.faults.frames_to_drop`) from 11
    to 17.5 s on one lead, the lead cycling over the 12 across records and kinds.

    Per fault kind and overall: ``affected`` windows (the clean run's window 10-20 s), ``rebuilt_share``
    (scored with ``recovered_by`` set, the faulty lead rebuilt), ``pearson`` / ``rmse`` (median over
    rebuilt lead-windows of the model-rebuilt leads against the clean run's window; limb leads derived
    exactly are reported apart as ``derived_max_abs_mv``; a lead the clean run masked as well has no
    truth and is only counted, ``rebuilt_lead_windows_without_truth``), ``coverage_90`` (share of model-rebuilt
    samples within the stated 90 % interval), ``fpr_with_faults`` / ``fpr_clean`` (share of NORM PTB-XL
    windows above the card threshold, faulty run against the clean run, same windows; a window not
    scored is not counted in the faulty rate: ``fpr_not_scored``), and ``not_rebuilt`` with reasons.
    Lost frames remove every lead's samples of the window, so it is never cut: unrecoverable, counted.
    """
    from simulators.faults import FaultSpec, frames_to_drop, inject
    from stream.stages.processor import StageConfig, StreamProcessor
    from stream.stages.scoring import WindowScorer
    from training.eval_detectors import replay

    data_dir = Path(data_dir)
    t_start = time.perf_counter()
    scorer = WindowScorer((model,), models_dir, recover=True, classify=False)
    kind = scorer.window_specs[0].name
    capture = _Capture(scorer.recoverers[kind])
    scorer.recoverers[kind] = capture
    threshold = scorer.scorers[0].card.threshold_value
    cfg = StageConfig(windows=scorer.window_specs)
    cases = _cases(data_dir, records_ptbxl, records_ludb, seed)
    acc: dict[str, dict[str, list[Any]]] = {
        k: {
            "affected": [],
            "rebuilt": [],
            "r": [],
            "rmse": [],
            "in": [],
            "derived": [],
            "fp": [],
            "fp_clean": [],
            "not_scored_norm": [],
            "why": [],
            "no_truth": [],
        }
        for k in FAULT_KINDS
    }
    counter = 0

    def run(
        sig: np.ndarray, fs: float, leads: tuple[str, ...], drop: set[int] | None
    ) -> tuple[Any, dict[int, Any], dict[int, Recovered], list[tuple[Window, str]]]:
        proc = StreamProcessor("eval", fs, leads, cfg)
        out = replay(proc, sig, fs, leads, "eval", drop=drop)
        capture.got = []
        res = scorer.score(out.windows)
        t0 = proc.t0 or 0.0
        wins = {round(w.start - t0): w for w in out.windows if w.kind == kind}
        rec = {round(r.window.start - t0): r for r in capture.got}
        scores = {round(s.time - t0): s for s in res.scores}
        return wins, scores, rec, res.skipped

    for ci, case in enumerate(cases):
        try:
            r0 = read_record(case.path)
        except Exception as exc:
            _say(progress, f"left out {case.path}: {exc}")
            continue
        if not set(TWELVE_LEADS) <= set(r0.leads):
            continue
        n1 = round(10.0 * r0.fs)
        sig = np.tile(np.nan_to_num(r0.signal[:n1]), (COPIES, 1))
        leads = r0.leads
        clean_w, clean_s, _, _ = run(sig, r0.fs, leads, None)
        cw, cs = clean_w.get(10), clean_s.get(10)
        if cw is None or cs is None:
            _say(progress, f"{case.name}: no clean 10-20 s window scored; left out")
            continue
        for kind_i, fk in enumerate(FAULT_KINDS):
            lead = TWELVE_LEADS[(ci + kind_i) % 12] if fk != "lost_frames" else None
            counter += 1
            spec = FaultSpec(fk, lead, FAULT_START_S, FAULT_END_S - FAULT_START_S)
            x = inject(
                sig,
                r0.fs,
                leads,
                [spec],
                rng=np.random.default_rng([seed, ci, kind_i]),
                adc_range_mv=r0.adc_range_mv,
            )
            drop = frames_to_drop([spec], x.shape[0], r0.fs, round(r0.fs)) or None
            wins, scores, recs, skipped = run(x, r0.fs, leads, drop)
            a = acc[fk]
            a["affected"].append(1)
            s = scores.get(10)
            if case.norm and case.source == "ptbxl":
                a["fp_clean"].append(bool(cs.anomalous))
                if s is None:
                    a["not_scored_norm"].append(1)
                else:
                    a["fp"].append(bool(s.anomalous))
            rec = recs.get(10)
            li = None if lead is None else TWELVE_LEADS.index(lead)
            if s is None or rec is None or s.recovered_by is None:
                if fk == "lost_frames" and 10 not in wins:
                    why = "lost frames: every lead of the window missing, no window cut"
                elif s is not None and s.recovered_by is None:
                    why = "not masked: the fault was not detected as a dropout, scored raw"
                else:
                    why = "not recovered: " + ", ".join(
                        sorted({r for _, r in skipped}) or ["no window cut"]
                    )
                a["rebuilt"].append(0)
                a["why"].append(f"{case.source}/{case.name} {lead}: {why}")
                continue
            prov = rec.provenance
            hw = rec.half_width_90
            assert prov is not None
            model_cols = [j for j in range(12) if (prov[:, j] == MODEL).all()]
            derived_cols = [j for j in range(12) if (prov[:, j] == 2).all()]
            a["rebuilt"].append(int(li is None or li in model_cols or li in derived_cols))
            for j in model_cols:
                y, t = rec.window.data[:, j], cw.data[:, j]
                if not np.isfinite(t).all():  # the clean run masked this lead too: no truth
                    a["no_truth"].append(1)
                    continue
                a["r"].append(_pearson(y, t))
                a["rmse"].append(float(np.sqrt(np.mean((y - t) ** 2))))
                if hw is not None:
                    a["in"].append(np.abs(y - t) <= hw[:, j])
            for j in derived_cols:
                if not np.isfinite(cw.data[:, j]).all():
                    continue
                a["derived"].append(float(np.max(np.abs(rec.window.data[:, j] - cw.data[:, j]))))
        if progress and (ci + 1) % 10 == 0:
            _say(progress, f"{ci + 1}/{len(cases)} records, {time.perf_counter() - t_start:.0f} s")

    def summary(keys: Sequence[str]) -> dict[str, Any]:
        g = {k: [x for f in keys for x in acc[f][k]] for k in acc[keys[0]]}
        n = len(g["affected"])
        ins = np.concatenate(g["in"]) if g["in"] else np.zeros(0, bool)
        fp_n, fpc_n = len(g["fp"]), len(g["fp_clean"])
        return {
            "affected": n,
            "rebuilt": int(sum(g["rebuilt"])),
            "rebuilt_share": round(sum(g["rebuilt"]) / n, 4) if n else None,
            "pearson": _median(g["r"]),
            "rmse": _median(g["rmse"]),
            "rebuilt_lead_windows": len(g["r"]),
            "rebuilt_lead_windows_without_truth": len(g["no_truth"]),
            "coverage_90": round(float(ins.mean()), 4) if ins.size else None,
            "derived_lead_windows": len(g["derived"]),
            "derived_max_abs_mv": round(max(g["derived"]), 6) if g["derived"] else None,
            "derived_median_max_abs_mv": _median(g["derived"]),
            "fpr_with_faults": round(sum(g["fp"]) / fp_n, 4) if fp_n else None,
            "fpr_clean": round(sum(g["fp_clean"]) / fpc_n, 4) if fpc_n else None,
            "norm_windows": fpc_n,
            "fpr_not_scored": len(g["not_scored_norm"]),
            "not_rebuilt": _reasons(g["why"]),
        }

    out: dict[str, Any] = {k: summary([k]) for k in FAULT_KINDS}
    out["overall"] = summary(list(FAULT_KINDS))
    out["overall_without_lost_frames"] = summary([k for k in FAULT_KINDS if k != "lost_frames"])
    n_ptb = sum(c.source == "ptbxl" for c in cases)
    out["setup"] = {
        "records": {
            "ptbxl": n_ptb,
            "ptbxl_norm": sum(c.norm for c in cases),
            "ludb": len(cases) - n_ptb,
        },
        "ptbxl": "strat_fold 10, random (seed), two thirds NORM-only (FPR), 100 Hz",
        "ludb": "random LUDB records (seed), 500 Hz; not in the FPR (no PTB-XL NORM label)",
        "replay": f"each record looped to {10 * COPIES} s, 1 s frames, StreamProcessor (windows of "
        f"{model}) + WindowScorer(({model!r},), recover=True); one fault {FAULT_START_S:g}-"
        f"{FAULT_END_S:g} s per run on one lead (cycling), measured window 10-20 s",
        "model": model,
        "threshold": threshold,
        "runs": counter,
        "seconds": round(time.perf_counter() - t_start, 1),
        "lost_frames": "every lead of the window is missing: the processor cuts no window, "
        "nothing to rebuild from (unrecoverable, counted in rebuilt_share)",
    }
    return out


def _reasons(items: list[str], keep: int = 8) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for it in items:
        why = it.split(": ", 1)[1] if ": " in it else it
        counts[why] = counts.get(why, 0) + 1
    return {"count": len(items), "by_reason": counts, "examples": items[:keep]}


# ------------------------------------------------------------------ two-lead, patient-specific transfer
def evaluate_lead_transfer(
    data_dir: str | Path,
    records: Sequence[str] = MITDB_DS2,
    minutes: float = 10.0,
    seed: int = 0,
    config: Any = None,
    tuning_records: Sequence[str] | None = MITDB_DS1,
    first_s: float = 120.0,
    every_s: float = 60.0,
    window_s: float = 10.0,
    progress: bool = False,
) -> dict[str, Any]:
    """Replay the first ``minutes`` of each MIT-BIH record band-passed as the stream does
    (:class:`~models.preprocessing.filtering.CausalFilter`, 1 s frames) into a
    :class:`~stream.stages.leadtransfer.LeadTransfer` (``config``, default
    :class:`~stream.stages.leadtransfer.TransferConfig`); every ``every_s`` from ``first_s`` mask a random
    2-10 s span (seed) of a ``window_s`` window in the second lead, then in MLII, rebuild each from the
    other and compare with the recorded samples. The window's frames are learned after the rebuild with
    the span masked in both leads (causal, nothing of the span is learned). Per direction
    (``MLII->second``, ``second->MLII``): median Pearson r and RMSE (mV) over the rebuilt spans, pooled
    coverage of the stated 90 % interval, share of windows rebuilt; per record the coverage (the
    interval is calibrated per stream). ``tuning`` holds the same figures on ``tuning_records`` (MIT-BIH
    DS1, where the configuration was chosen); ``lead_recon_12lead`` the withheld PTB-XL network's DS2
    figures for comparison."""
    from models.preprocessing.filtering import CausalFilter
    from models.runtime.protocol import MODEL as MODEL_CODE
    from stream.stages.leadtransfer import LeadTransfer, TransferConfig

    cfg = config or TransferConfig()
    root = Path(data_dir)

    def split(names: Sequence[str]) -> dict[str, Any]:
        keys = ("MLII->second", "second->MLII")
        per: dict[str, dict[str, list[Any]]] = {
            k: {"r": [], "rmse": [], "hw": [], "cov_n": [], "n": [], "rebuilt": [], "why": []}
            for k in keys
        }
        per_record: dict[str, Any] = {}
        for name in names:
            rec = read_record(root / "mitdb" / name, sampto=round(minutes * 60 * 360))
            fs, leads = rec.fs, rec.leads
            if "MLII" not in leads or len(leads) != 2:
                per_record[name] = {"skipped": f"leads {leads}: not MLII + one other lead"}
                continue
            ml = leads.index("MLII")
            other = 1 - ml
            filt = CausalFilter(fs, 2)
            fr = round(fs)
            x = np.concatenate(
                [filt.process(rec.signal[i : i + fr]) for i in range(0, rec.signal.shape[0], fr)]
            ).astype(np.float64)
            lt = LeadTransfer(fs, leads, cfg)
            rng = np.random.default_rng([seed, int(name)])
            nwin = round(window_s * fs)
            pos = 0
            rec_cov: dict[str, list[int]] = {k: [0, 0] for k in keys}
            start = first_s
            while round((start + window_s) * fs) <= x.shape[0]:
                a = round(start * fs)
                while pos + fr <= a:
                    lt.learn(x[pos : pos + fr])
                    pos += fr
                if pos < a:
                    lt.learn(x[pos:a])
                    pos = a
                seg = x[a : a + nwin]
                span = round(rng.uniform(2.0, window_s) * fs)
                off = int(rng.integers(0, nwin - span + 1))
                mask = np.zeros(nwin, bool)
                mask[off : off + span] = True
                for key, t in (("MLII->second", other), ("second->MLII", ml)):
                    inp = seg.copy()
                    inp[mask, t] = np.nan
                    res = lt.rebuild(inp)
                    d = per[key]
                    done = bool((res.provenance[mask, t] == MODEL_CODE).all())
                    d["rebuilt"].append(done)
                    if not done:
                        d["why"].append(f"{name}@{start:g}s: {res.reason}")
                        continue
                    y, truth, hw = res.filled[mask, t], seg[mask, t], res.half_width_90[mask, t]
                    err = np.abs(y - truth)
                    d["r"].append(_pearson(y, truth))
                    d["rmse"].append(float(np.sqrt(np.mean(err**2))))
                    d["hw"].append(float(np.mean(hw)))
                    d["cov_n"].append(int((err <= hw).sum()))
                    d["n"].append(int(mask.sum()))
                    rec_cov[key][0] += int((err <= hw).sum())
                    rec_cov[key][1] += int(mask.sum())
                masked = x[a : a + nwin].copy()
                masked[mask] = np.nan
                for i in range(0, nwin, fr):
                    lt.learn(masked[i : i + fr])
                pos = a + nwin
                start += every_s
            per_record[name] = {
                "leads": list(leads),
                **{
                    f"coverage_90 {k}": round(c / n, 4) if n else None
                    for k, (c, n) in rec_cov.items()
                },
            }
            _say(progress, f"lead transfer {name} {per_record[name]}")
        out: dict[str, Any] = {}
        for key, d in per.items():
            cov = [
                v[f"coverage_90 {key}"] for v in per_record.values() if v.get(f"coverage_90 {key}")
            ]
            out[key] = {
                "windows": len(d["rebuilt"]),
                "rebuilt_share": round(float(np.mean(d["rebuilt"])), 4) if d["rebuilt"] else None,
                "pearson_median": _median(d["r"]),
                "rmse_median_mv": _median(d["rmse"]),
                "coverage_90": round(sum(d["cov_n"]) / sum(d["n"]), 4) if d["n"] else None,
                "coverage_90_records_min_max": [min(cov), max(cov)] if cov else None,
                "half_width_mean_mv": round(float(np.mean(d["hw"])), 4) if d["hw"] else None,
                "not_rebuilt": d["why"][:8],
            }
        return {"records": list(names), "directions": out, "per_record": per_record}

    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "evaluated_on": "MIT-BIH DS2 (test)" if tuple(records) == MITDB_DS2 else "custom records",
        **split(records),
        "setup": f"first {minutes:g} min per record, 1 s frames, one {window_s:g} s window every "
        f"{every_s:g} s from {first_s:g} s with a random 2-{window_s:g} s span masked (seed {seed})",
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "lead_recon_12lead": {
            "note": "withheld PTB-XL 12-lead network on DS2 (evaluate_two_lead)",
            "II->V1": {"pearson_median": 0.58, "coverage_90": "0.54-0.72"},
            "V1->II": {"pearson_median": 0.43, "coverage_90": "0.54-0.72"},
        },
    }
    if tuning_records:
        result["tuning"] = {
            "note": "MIT-BIH DS1: the configuration was chosen on these records (not a test)",
            **split(tuning_records),
        }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result
