"""Dashboard analysis: an uploaded ECG -> 10 s 12-lead windows -> what a 12-lead anomaly model says.

Pure numpy on top of the ONNX Runtime wrappers (no torch, no web framework): :func:`load_upload` turns
the uploaded files into a :class:`Upload` (or raises :class:`UploadError` with a reason code), and
:func:`analyse` runs one of ``cae12``, ``vae_bilstm``, ``vae_bilstm_mha`` on its windows and returns the
JSON the dashboard draws: per lead the filtered original, the reconstruction, the point-wise squared
error and the lead's relative error; per window the anomaly score, the threshold and the verdict; for the
attention model the lead-wise and temporal attention weights.

Accepted uploads:

- one ``.npy`` array ``[n_samples, n_leads]`` (or ``[n_leads, n_samples]``) in mV, with the sampling rate
  given (``fs``) and, unless it has the 12 standard leads in order (I, II, III, aVR, aVL, aVF, V1-V6),
  its lead names;
- one WFDB record: its ``.hea`` header and the signal files it names (``.dat``...). Signal names are read
  from the header (MIT-BIH's modified limb leads MLI/MLII/MLIII count as I/II/III).

Leads absent from the upload are rebuilt from the present ones by ``lead_recon`` before scoring (and
flagged as rebuilt); at least one of the 12 leads must be there. NaN or infinite samples, wrong shapes,
rates outside the configured range, recordings shorter than 10 s, unknown lead names and unreadable or
corrupt files are refused with their reason. What an upload may decode is bounded before it is decoded
(:mod:`stream.dashboard.uploads`): file names, the ``.npy`` header and the WFDB header are checked first,
against ``max_samples`` (``ECG_DASHBOARD_MAX_SAMPLES``) among others.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.preprocessing.segmentation import TWELVE_LEAD_FS, TWELVE_LEAD_WINDOW
from stream.dashboard.uploads import (
    DEFAULT_MAX_SAMPLES,
    MAX_HEADER_BYTES,
    UploadError,
    check_filename,
    inspect_wfdb,
    npy_array,
)
from stream.errors import DataError
from stream.records import TWELVE_LEADS, canonical_lead, read_record

if TYPE_CHECKING:
    from models.runtime.anomaly12 import Anomaly12Model
    from models.runtime.lead_recon import LeadReconModel


def dashboard_models(models_dir: str | Path) -> tuple[str, ...]:
    """The models the dashboard offers: every scoring card in ``models_dir`` served by the 12-lead
    reconstruction runtime (``anomaly12``), by name."""
    from models.runtime.registry import available

    return tuple(c.name for c in available(models_dir, role="scorer") if c.runtime == "anomaly12")


#: Modified limb leads (MIT-BIH) read as the standard ones.
_MODIFIED_LIMB = {"MLI": "I", "MLII": "II", "MLIII": "III"}


@dataclass(frozen=True)
class Upload:
    """An uploaded recording: ``signal`` [n_samples, 12] mV in TWELVE_LEADS order (zeros where a lead is
    absent), ``present`` [12] bool, ``fs`` Hz, ``name`` for display."""

    name: str
    fs: float
    signal: np.ndarray
    present: np.ndarray

    @property
    def duration_s(self) -> float:
        return self.signal.shape[0] / self.fs


def _lead_index(names: list[str]) -> list[int]:
    """Upload lead names -> TWELVE_LEADS indices; unknown or repeated leads are refused."""
    out: list[int] = []
    for raw in names:
        try:
            lead = canonical_lead(raw)
        except DataError as exc:
            raise UploadError("unknown_lead", str(exc)) from exc
        lead = _MODIFIED_LIMB.get(lead, lead)
        if lead not in TWELVE_LEADS:
            raise UploadError(
                "unknown_lead",
                f"lead {raw!r} is not one of the 12 standard leads {list(TWELVE_LEADS)}",
            )
        if TWELVE_LEADS.index(lead) in out:
            raise UploadError("unknown_lead", f"lead {lead} appears twice in the upload")
        out.append(TWELVE_LEADS.index(lead))
    return out


def _assemble(
    name: str, x: np.ndarray, fs: float, leads: list[str], min_fs: float, max_fs: float
) -> Upload:
    if not (np.isfinite(fs) and min_fs <= fs <= max_fs):
        raise UploadError("rate", f"sampling rate {fs} Hz is outside [{min_fs:g}, {max_fs:g}] Hz")
    if x.shape[1] != len(leads):
        raise UploadError(
            "shape", f"the signal has {x.shape[1]} leads but {len(leads)} lead names were given"
        )
    idx = _lead_index(leads)
    bad = ~np.isfinite(x)
    if bad.any():
        worst = leads[int(np.argmax(bad.sum(axis=0)))]
        raise UploadError(
            "nan",
            f"{int(bad.sum())} NaN or infinite samples (lead {worst} first); send complete leads "
            "and leave a lead out entirely when it is missing",
        )
    if x.shape[0] / fs < TWELVE_LEAD_WINDOW / TWELVE_LEAD_FS:
        raise UploadError(
            "too_short", f"{x.shape[0] / fs:.1f} s recorded; the 12-lead models read 10 s windows"
        )
    signal = np.zeros((x.shape[0], 12), dtype=np.float32)
    signal[:, idx] = x
    present = np.zeros(12, dtype=bool)
    present[idx] = True
    return Upload(name, float(fs), signal, present)


def load_npy(
    name: str,
    data: bytes,
    fs: float | None,
    leads: list[str] | None,
    min_fs: float = 50.0,
    max_fs: float = 2000.0,
    max_samples: int = DEFAULT_MAX_SAMPLES,
) -> Upload:
    """An uploaded ``.npy`` array (mV) -> :class:`Upload`; its header is checked before it is read
    (:func:`stream.dashboard.uploads.npy_array`)."""
    arr = npy_array(name, data, max_samples)
    names = list(leads) if leads else list(TWELVE_LEADS)
    if arr.shape[1] != len(names) and arr.shape[0] == len(names):
        arr = arr.T  # [n_leads, n_samples]
    if fs is None:
        raise UploadError("rate", f"{name}: give the sampling rate (fs) of a .npy upload")
    return _assemble(name, np.asarray(arr, dtype=np.float32), float(fs), names, min_fs, max_fs)


def load_wfdb(
    files: Mapping[str, bytes],
    min_fs: float = 50.0,
    max_fs: float = 2000.0,
    max_samples: int = DEFAULT_MAX_SAMPLES,
) -> Upload:
    """An uploaded WFDB record (one ``.hea`` and its signal files) -> :class:`Upload`. The header is
    checked first (:func:`stream.dashboard.uploads.inspect_wfdb`: names, declared size against
    ``max_samples``, signal file sizes) and the signals are read only up to its declared length."""
    headers = [n for n in files if n.lower().endswith(".hea")]
    if len(headers) != 1:
        raise UploadError(
            "format", f"a WFDB upload needs exactly one .hea header, got {len(headers)}"
        )
    for n in files:
        check_filename(n, wfdb=True)
    hea = headers[0]
    if not hea.endswith(".hea"):
        raise UploadError("bad_filename", f"name the header {hea[:-4]}.hea (lower-case extension)")
    if len(files[hea]) > MAX_HEADER_BYTES:
        raise UploadError(
            "corrupt_wfdb",
            f"{hea} is {len(files[hea])} bytes; a WFDB header is at most {MAX_HEADER_BYTES}",
        )
    with tempfile.TemporaryDirectory(prefix="ecg-dashboard-") as tmp:
        (Path(tmp) / hea).write_bytes(files[hea])
        layout = inspect_wfdb(Path(tmp) / hea, files, max_samples, min_fs, max_fs)
        for n in layout.files:
            (Path(tmp) / n).write_bytes(files[n])
        try:
            rec = read_record(Path(tmp) / layout.record, sampto=layout.sampto)
        except DataError as exc:
            raise UploadError("corrupt_wfdb", str(exc).replace(tmp + "/", "")) from exc
    if rec.signal.size > max_samples:  # never: the header was checked; a last guard
        raise UploadError("too_many_samples", f"{rec.name}: {rec.signal.size} samples decoded")
    return _assemble(rec.name, rec.signal, rec.fs, list(rec.leads), min_fs, max_fs)


def load_upload(
    files: Mapping[str, bytes],
    fs: float | None = None,
    leads: list[str] | None = None,
    min_fs: float = 50.0,
    max_fs: float = 2000.0,
    max_samples: int = DEFAULT_MAX_SAMPLES,
) -> Upload:
    """Uploaded files (name -> bytes) -> :class:`Upload`: one ``.npy``, or one WFDB record. Nothing is
    decoded past ``max_samples`` samples: headers are checked first."""
    if not files:
        raise UploadError("format", "no file uploaded")
    for n in files:
        check_filename(n)
    npy = [n for n in files if n.lower().endswith(".npy")]
    if npy:
        if len(files) != 1:
            raise UploadError(
                "format", "upload one .npy file alone, or one WFDB record (.hea + .dat)"
            )
        return load_npy(npy[0], files[npy[0]], fs, leads, min_fs, max_fs, max_samples)
    return load_wfdb(files, min_fs, max_fs, max_samples)


def _rounded(a: np.ndarray, digits: int = 4) -> list[Any]:
    out: list[Any] = np.round(np.asarray(a, dtype=np.float64), digits).tolist()
    return out


@dataclass
class Analysis:
    """One analysed upload, as arrays: ``windows``/``recon`` [k, 1000, 12] mV (filtered, 100 Hz), per window
    ``score`` [k], ``anomalous`` [k], ``lead_relative_error`` [k, 12], attention (or None)."""

    upload: Upload
    model: str
    threshold: float | None
    threshold_rule: str | None
    rebuilt: list[str]
    windows: np.ndarray
    recon: np.ndarray
    score: np.ndarray
    anomalous: np.ndarray
    lead_relative_error: np.ndarray
    lead_attention: np.ndarray | None
    time_attention: np.ndarray | None
    meaning: dict[str, Any]


def score_meaning(card: Any) -> dict[str, Any]:
    """What a score of this model means, from its card: the threshold rule, the validation sensitivity and
    specificity at it, and the normal validation records' score quantiles when the card has them
    (``metrics.validation.normal_score_quantiles``: scores at 0, 1, ..., 100 %)."""
    val = (card.metrics or {}).get("validation") or {}
    q = val.get("normal_score_quantiles")
    return {
        "sensitivity": val.get("sensitivity"),
        "specificity": val.get("specificity"),
        "auroc": val.get("auroc"),
        "n_normal": val.get("n_normal"),
        "n_records": val.get("n_records"),
        "normal_quantiles": [float(v) for v in q] if isinstance(q, list) and len(q) > 1 else None,
    }


def percentile_among_normals(score: float, quantiles: list[float] | None) -> float | None:
    """Percentile (0-100) of ``score`` among normal validation records, from their score quantiles (evenly
    spaced from 0 to 100 %); None without them."""
    if not quantiles:
        return None
    qs = np.asarray(quantiles, dtype=np.float64)
    levels = np.linspace(0.0, 100.0, len(qs))
    return float(np.interp(score, qs, levels, left=0.0, right=100.0))


def analyse_arrays(
    upload: Upload,
    model: Anomaly12Model,
    lead_recon: LeadReconModel | None = None,
    max_windows: int = 360,
) -> Analysis:
    """Score the upload's 10 s windows (at most ``max_windows``, from the start) with ``model``."""
    windows = model.preprocess(upload.signal, upload.fs)[:max_windows]  # [k, 1000, 12], 100 Hz
    rebuilt = [lead for lead, p in zip(TWELVE_LEADS, upload.present, strict=True) if not p]
    if rebuilt:
        if lead_recon is None:
            raise UploadError(
                "shape",
                f"leads {rebuilt} are missing and no lead_recon model is loaded to rebuild them",
            )
        windows = lead_recon.predict(
            windows, np.broadcast_to(upload.present.astype(np.float32), (len(windows), 12))
        ).leads
    pred = model.predict(windows)
    return Analysis(
        upload=upload,
        model=model.name,
        threshold=model.threshold_value,
        threshold_rule=model.card.threshold.rule if model.card.threshold else None,
        rebuilt=rebuilt,
        windows=np.asarray(windows, dtype=np.float32),
        recon=np.asarray(pred.recon, dtype=np.float32),
        score=np.asarray(pred.score, dtype=np.float64),
        anomalous=np.asarray(pred.is_anomaly, dtype=bool),
        lead_relative_error=np.asarray(pred.lead_relative_error),
        lead_attention=None if pred.lead_attention is None else np.asarray(pred.lead_attention),
        time_attention=None if pred.time_attention is None else np.asarray(pred.time_attention),
        meaning=score_meaning(model.card),
    )


def window_json(a: Analysis, i: int, signals: bool = True) -> dict[str, Any]:
    """Window ``i`` of an analysis: score, verdict, lead scores, attention and (``signals``) the filtered
    original, the reconstruction and the point-wise squared error of each lead."""
    w: dict[str, Any] = {
        "index": i,
        "start_s": i * TWELVE_LEAD_WINDOW / TWELVE_LEAD_FS,
        "score": float(a.score[i]),
        "anomalous": bool(a.anomalous[i]),
        "percentile_normal": percentile_among_normals(
            float(a.score[i]), a.meaning["normal_quantiles"]
        ),
        "lead_scores": dict(zip(TWELVE_LEADS, _rounded(a.lead_relative_error[i]), strict=True)),
        "lead_attention": None
        if a.lead_attention is None
        else dict(zip(TWELVE_LEADS, _rounded(a.lead_attention[i], 5), strict=True)),
        "time_attention": None if a.time_attention is None else _rounded(a.time_attention[i], 6),
        "signals": signals,
    }
    if signals:
        w["original"] = _rounded(a.windows[i].T)
        w["recon"] = _rounded(a.recon[i].T)
        w["error"] = _rounded(((a.windows[i] - a.recon[i]) ** 2).T, 5)
    return w


def analysis_json(a: Analysis, inline: int | None = None) -> dict[str, Any]:
    """The dashboard's JSON of an analysis: every window's summary, with the signals of the first
    ``inline`` windows (all when None; the others are fetched one by one)."""
    k = len(a.score)
    return {
        "name": a.upload.name,
        "model": a.model,
        "threshold": a.threshold,
        "threshold_rule": a.threshold_rule,
        "meaning": {kk: v for kk, v in a.meaning.items() if kk != "normal_quantiles"}
        | {"has_normal_quantiles": a.meaning["normal_quantiles"] is not None},
        "fs": TWELVE_LEAD_FS,
        "leads": list(TWELVE_LEADS),
        "rebuilt_leads": a.rebuilt,
        "duration_s": a.upload.duration_s,
        "windows_total": int(a.upload.duration_s * TWELVE_LEAD_FS // TWELVE_LEAD_WINDOW),
        "windows_analysed": k,
        "windows": [window_json(a, i, inline is None or i < inline) for i in range(k)],
    }


def analyse(
    upload: Upload,
    model: Anomaly12Model,
    lead_recon: LeadReconModel | None = None,
    max_windows: int = 360,
) -> dict[str, Any]:
    """Score the upload's 10 s windows (at most ``max_windows``) with ``model``; the dashboard's JSON with
    every window's signals."""
    return analysis_json(analyse_arrays(upload, model, lead_recon, max_windows))
