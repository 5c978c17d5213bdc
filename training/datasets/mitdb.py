"""MIT-BIH Arrhythmia beat windows, built with the stream's own reading, filtering and segmentation.

Per record: ``read_record`` -> lead MLII (first lead where a record has none: 102, 104) ->
``filter_signal`` (the stream's causal band-pass) -> ``beat_windows`` centred on every annotated beat
(AAMI classes via ``AAMI_CLASSES``). Cached on disk by content hash (see :mod:`training.datasets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from models.preprocessing.filtering import filter_signal
from models.preprocessing.segmentation import beat_windows, resample
from stream.records import mitdb_records, read_annotations, read_record
from training.datasets import cached_arrays, wfdb_files
from training.datasets.mitdb_split import AAMI_CLASSES
from training.errors import DataError

PREFERRED_LEAD = "MLII"


@dataclass(frozen=True)
class BeatSet:
    """Beat-centred windows with labels: ``windows`` [k, width] float32 (filtered, mV)."""

    windows: np.ndarray
    aami: np.ndarray  # AAMI class letter per window: N S V F Q
    symbol: np.ndarray  # MIT-BIH annotation symbol
    record: np.ndarray  # record name per window
    sample: np.ndarray  # R-peak sample index at the record's own rate

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    def subset(self, idx: np.ndarray) -> BeatSet:
        return BeatSet(
            self.windows[idx], self.aami[idx], self.symbol[idx], self.record[idx], self.sample[idx]
        )

    def of_records(self, records: Sequence[str]) -> BeatSet:
        return self.subset(np.flatnonzero(np.isin(self.record, list(records))))

    @property
    def abnormal(self) -> np.ndarray:
        """1 for non-N (AAMI S, V, F, Q) windows, 0 for N."""
        return (self.aami != "N").astype(np.int64)


def record_lead(data_dir: Path, record: str) -> tuple[np.ndarray, float, str]:
    """The filtered MLII (or first) lead of one MIT-BIH record, its rate and lead name."""
    rec = read_record(Path(data_dir) / "mitdb" / record)
    lead = PREFERRED_LEAD if PREFERRED_LEAD in rec.leads else rec.leads[0]
    x = rec.lead(lead)
    x = np.nan_to_num(x, nan=0.0)
    return filter_signal(x, rec.fs), rec.fs, lead


def _build(
    data_dir: Path, records: Sequence[str], target_fs: float, width: int, progress: bool
) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("windows", "aami", "symbol", "record", "sample")
    }
    for r in tqdm(records, desc="mitdb beat windows", disable=not progress, unit="record"):
        x, fs, _ = record_lead(data_dir, r)
        ann = read_annotations(Path(data_dir) / "mitdb" / r).beats()
        w, kept = beat_windows(x, ann.sample, fs, target_fs=target_fs, width=width)
        sym = ann.symbol[kept].astype("U2")
        parts["windows"].append(w.astype(np.float32))
        parts["symbol"].append(sym)
        parts["aami"].append(np.array([AAMI_CLASSES[s] for s in sym], dtype="U1"))
        parts["record"].append(np.full(len(kept), r, dtype="U8"))
        parts["sample"].append(ann.sample[kept].astype(np.int64))
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}


def load_beats(
    data_dir: str | Path,
    cache_dir: str | Path,
    records: Sequence[str] | None = None,
    target_fs: float = 360.0,
    width: int = 720,
    progress: bool = True,
) -> BeatSet:
    """Beat windows of ``records`` (default: all 48), from the cache when inputs and params are unchanged."""
    data_dir = Path(data_dir)
    available = mitdb_records(data_dir)
    records = list(records) if records is not None else available
    missing = sorted(set(records) - set(available))
    if missing:
        raise DataError(f"MIT-BIH records missing under {data_dir / 'mitdb'}: {missing}")
    params = {
        "kind": "mitdb_beats",
        "records": sorted(records),
        "target_fs": target_fs,
        "width": width,
        "lead": PREFERRED_LEAD,
        "filter": "stream.causal_bandpass_0.5_40",
    }
    arrays = cached_arrays(
        "mitdb-beats",
        wfdb_files(data_dir / "mitdb", records),
        params,
        lambda: _build(data_dir, sorted(records), target_fs, width, progress),
        cache_dir,
    )
    return BeatSet(
        arrays["windows"].astype(np.float32),
        arrays["aami"],
        arrays["symbol"],
        arrays["record"],
        arrays["sample"],
    )


def load_resampled_lead(
    data_dir: str | Path, record: str, target_fs: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Filtered lead of ``record`` resampled to ``target_fs`` with its beat samples and AAMI classes at that rate."""
    x, fs, _ = record_lead(Path(data_dir), record)
    ann = read_annotations(Path(data_dir) / "mitdb" / record).beats()
    y = resample(x, fs, target_fs)
    peaks = np.round(ann.sample * (target_fs / fs)).astype(np.int64)
    aami = np.array([AAMI_CLASSES[s] for s in ann.symbol], dtype="U1")
    return y, peaks, aami


def _seed_beats_build(
    data_dir: Path, records: Sequence[str], fs: float, length: int, progress: bool
) -> dict[str, np.ndarray]:
    segs, recs, classes = [], [], []
    win = round(10.0 * fs)
    half = length // 2
    for r in tqdm(records, desc="mitdb 125 Hz beats", disable=not progress, unit="record"):
        y, peaks, aami = load_resampled_lead(data_dir, r, fs)
        for w0 in range(0, y.shape[0] - win + 1, win):
            sel = np.flatnonzero((peaks >= w0) & (peaks < w0 + win))
            if sel.size < 2:
                continue
            seg = y[w0 : w0 + win]
            lo, hi = float(seg.min()), float(seg.max())
            seg = (seg - lo) / max(
                hi - lo, 1e-6
            )  # Kaggle: amplitude normalised to [0, 1] per 10 s window
            period = float(np.median(np.diff(peaks[sel])))  # nominal heartbeat period T
            # beat_windows centres windows on its peaks: shifting by half starts each segment at the R peak
            w, kept = beat_windows(seg, peaks[sel] - w0 + half, fs, target_fs=fs, width=length)
            keep_len = min(length, round(1.2 * period))
            w[:, keep_len:] = 0.0  # Kaggle: signal up to 1.2 T from the R peak, zero-padded to 187
            segs.append(w.astype(np.float32))
            recs.append(np.full(len(kept), r, dtype="U8"))
            classes.append(aami[sel][kept])
    return {
        "segments": np.concatenate(segs),
        "record": np.concatenate(recs),
        "aami": np.concatenate(classes),
    }


def load_seed_beats(
    data_dir: str | Path,
    cache_dir: str | Path,
    records: Sequence[str],
    fs: float = 125.0,
    length: int = 187,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Beats built like the Kaggle heartbeat set (Kachuee et al. 2018) from the stream's filtered lead.

    The lead is resampled to 125 Hz and cut into 10 s windows, each min-max normalised to [0, 1]; T is
    the window's median RR; each annotated beat gives the signal from its R peak for 1.2 T, zero-padded to
    187 samples (beats whose 187 samples overrun the window are dropped).
    """
    data_dir = Path(data_dir)
    params = {
        "kind": "mitdb_seed_beats_kaggle",
        "records": sorted(records),
        "fs": fs,
        "length": length,
        "filter": "stream.causal_bandpass_0.5_40",
    }
    return cached_arrays(
        "mitdb-seedbeats",
        wfdb_files(data_dir / "mitdb", records),
        params,
        lambda: _seed_beats_build(data_dir, sorted(records), fs, length, progress),
        cache_dir,
    )


def _segments_build(
    data_dir: Path,
    records: Sequence[str],
    fs: float,
    width: int,
    per_record: int,
    seed: int,
    progress: bool,
) -> dict[str, np.ndarray]:
    segs, recs = [], []
    for r in tqdm(records, desc="mitdb 2 s segments", disable=not progress, unit="record"):
        x, src_fs, _ = record_lead(data_dir, r)
        n = round(x.shape[0] * fs / src_fs)
        rng = np.random.default_rng([seed, int(r)])
        centres = np.sort(rng.integers(width, n - width, size=per_record))
        centres_src = np.round(centres * src_fs / fs).astype(np.int64)
        w, kept = beat_windows(x, centres_src, src_fs, target_fs=fs, width=width)
        segs.append(w.astype(np.float32))
        recs.append(np.full(len(kept), r, dtype="U8"))
    return {"segments": np.concatenate(segs), "record": np.concatenate(recs)}


def load_segments(
    data_dir: str | Path,
    cache_dir: str | Path,
    records: Sequence[str],
    fs: float = 360.0,
    width: int = 720,
    per_record: int = 600,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Filtered single-lead segments (mV) of ``width`` samples at ``fs`` at seeded random positions of each record."""
    data_dir = Path(data_dir)
    params = {
        "kind": "mitdb_segments",
        "records": sorted(records),
        "fs": fs,
        "width": width,
        "per_record": per_record,
        "seed": seed,
        "filter": "stream.causal_bandpass_0.5_40",
    }
    return cached_arrays(
        "mitdb-segments",
        wfdb_files(data_dir / "mitdb", records),
        params,
        lambda: _segments_build(data_dir, sorted(records), fs, width, per_record, seed, progress),
        cache_dir,
    )
