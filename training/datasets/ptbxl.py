"""PTB-XL (100 Hz, 10 s, 12 leads) prepared once and cached: signals, folds, diagnostic superclasses.

Preparation reads every record listed in ``ptbxl_database.csv`` under ``<data_dir>/ptbxl``, filters it
with the stream's causal band-pass (:func:`models.preprocessing.filtering.filter_signal`, 0.5-40 Hz, 100 Hz)
and cuts the one 10 s window with :func:`models.preprocessing.segmentation.lead_windows`, so training sees
exactly what the stream would compute. Signals stay in mV; normalisation belongs to each model.

The result is cached as ``<cache_dir>/ptbxl/ptbxl100-<hash>.npz``; the hash covers the two CSV files,
every record's header/data file names and sizes, and the preprocessing parameters, so any change in
the data or in the recipe rebuilds the cache.

Labels follow the PTB-XL reference (Wagner et al., 2020): a record's diagnostic superclasses are the
``diagnostic_class`` of its ``scp_codes`` that have ``diagnostic == 1`` in ``scp_statements.csv``
(likelihoods ignored, as in the dataset's example code). ``normal`` means superclasses == {NORM};
records with no diagnostic statement at all are kept but marked ``has_label = False``.
Folds: ``strat_fold`` 1-8 train, 9 validation, 10 test (all records of one patient share a fold).
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from models.preprocessing.filtering import filter_signal
from models.preprocessing.segmentation import TWELVE_LEAD_FS, TWELVE_LEAD_WINDOW, lead_windows
from stream.records import TWELVE_LEADS, read_record
from training.errors import DataError

SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")
TRAIN_FOLDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
VAL_FOLDS: tuple[int, ...] = (9,)
TEST_FOLDS: tuple[int, ...] = (10,)
PREP_VERSION = 1
PREP_PARAMS = {
    "version": PREP_VERSION,
    "fs": TWELVE_LEAD_FS,
    "width": TWELVE_LEAD_WINDOW,
    "filter": "stream.stages.filtering.filter_signal 0.5-40 Hz causal",
    "leads": list(TWELVE_LEADS),
}


@dataclass(frozen=True)
class PtbxlData:
    """Prepared PTB-XL: ``x`` float32 [n, 1000, 12] in mV (filtered), and aligned metadata arrays."""

    x: np.ndarray
    ecg_id: np.ndarray
    patient_id: np.ndarray
    fold: np.ndarray
    labels: np.ndarray  # bool [n, 5] in SUPERCLASSES order
    has_label: np.ndarray  # bool [n]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def normal(self) -> np.ndarray:
        """Records whose only diagnostic superclass is NORM."""
        return self.labels[:, 0] & ~self.labels[:, 1:].any(axis=1)

    def subset(self, mask: np.ndarray) -> PtbxlData:
        """Rows selected by a boolean mask or index array."""
        return PtbxlData(
            x=self.x[mask],
            ecg_id=self.ecg_id[mask],
            patient_id=self.patient_id[mask],
            fold=self.fold[mask],
            labels=self.labels[mask],
            has_label=self.has_label[mask],
        )

    def folds(self, folds: Sequence[int]) -> PtbxlData:
        """Rows of the given ``strat_fold`` values."""
        return self.subset(np.isin(self.fold, list(folds)))


def ptbxl_dir(data_dir: str | Path) -> Path:
    """``<data_dir>/ptbxl``, checked."""
    root = Path(data_dir) / "ptbxl"
    if not (root / "ptbxl_database.csv").is_file():
        raise DataError(f"PTB-XL not found under {root} (ptbxl_database.csv); set ECG_DATA_DIR")
    return root


def load_metadata(data_dir: str | Path) -> pd.DataFrame:
    """``ptbxl_database.csv`` with parsed ``scp_codes`` and a ``superclasses`` column (sorted tuple)."""
    root = ptbxl_dir(data_dir)
    df = pd.read_csv(root / "ptbxl_database.csv", index_col="ecg_id")
    stm = pd.read_csv(root / "scp_statements.csv", index_col=0)
    diag = stm[stm["diagnostic"] == 1]["diagnostic_class"].dropna().to_dict()
    codes = df["scp_codes"].apply(ast.literal_eval)
    df = df.assign(
        scp_codes=codes,
        superclasses=codes.apply(lambda c: tuple(sorted({diag[k] for k in c if k in diag}))),
    )
    return df


def _content_hash(root: Path, df: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(PREP_PARAMS, sort_keys=True).encode())
    for name in ("ptbxl_database.csv", "scp_statements.csv"):
        h.update((root / name).read_bytes())
    for rel in df["filename_lr"]:
        for f in sorted((root / rel).parent.glob(Path(rel).name + "*")):
            h.update(f"{f.name}:{f.stat().st_size};".encode())
    return h.hexdigest()


def cache_path(data_dir: str | Path, cache_dir: str | Path, df: pd.DataFrame | None = None) -> Path:
    """Where the prepared arrays for the current content of ``data_dir/ptbxl`` live."""
    root = ptbxl_dir(data_dir)
    df = load_metadata(data_dir) if df is None else df
    return Path(cache_dir) / "ptbxl" / f"ptbxl100-{_content_hash(root, df)[:16]}.npz"


def preprocess_record(signal: np.ndarray, fs: float) -> np.ndarray:
    """One record [n, 12] mV -> filtered window [1000, 12] at 100 Hz (first 10 s)."""
    y = filter_signal(signal, fs)
    w = lead_windows(y, fs, TWELVE_LEAD_FS, TWELVE_LEAD_WINDOW)
    if w.shape[0] == 0:
        raise DataError(f"record shorter than {TWELVE_LEAD_WINDOW / TWELVE_LEAD_FS:.0f} s")
    return w[0]


def _read_rows(root: Path, df: pd.DataFrame, progress: bool) -> np.ndarray:
    out = np.zeros((len(df), TWELVE_LEAD_WINDOW, len(TWELVE_LEADS)), dtype=np.float32)
    for i, rel in enumerate(tqdm(df["filename_lr"], desc="PTB-XL records", disable=not progress)):
        rec = read_record(root / rel)
        if rec.leads != TWELVE_LEADS:
            idx = [rec.leads.index(lead) for lead in TWELVE_LEADS]
            sig = rec.signal[:, idx]
        else:
            sig = rec.signal
        sig = np.nan_to_num(sig, nan=0.0)
        out[i] = preprocess_record(sig, rec.fs)
    return out


def _to_data(df: pd.DataFrame, x: np.ndarray) -> PtbxlData:
    labels = np.array([[c in s for c in SUPERCLASSES] for s in df["superclasses"]], dtype=bool)
    labels = labels.reshape(len(df), len(SUPERCLASSES))
    return PtbxlData(
        x=x,
        ecg_id=df.index.to_numpy(dtype=np.int64),
        patient_id=df["patient_id"].to_numpy(dtype=np.int64),
        fold=df["strat_fold"].to_numpy(dtype=np.int64),
        labels=labels,
        has_label=np.asarray(labels.any(axis=1)),
    )


def load_ptbxl(
    data_dir: str | Path,
    cache_dir: str | Path,
    limit: int | None = None,
    progress: bool = True,
) -> PtbxlData:
    """Prepared PTB-XL, from the cache when its content hash matches, else built and cached.

    ``limit`` keeps the first ``limit`` records of each fold (small real subsets for tests); limited
    loads are never cached.
    """
    root = ptbxl_dir(data_dir)
    df = load_metadata(data_dir)
    if limit is not None:
        df = df.groupby("strat_fold", group_keys=False).head(limit)
        return _to_data(df, _read_rows(root, df, progress))
    path = cache_path(data_dir, cache_dir, df)
    if path.is_file():
        with np.load(path) as z:
            ids = z["ecg_id"]
            if np.array_equal(ids, df.index.to_numpy(dtype=np.int64)):
                return _to_data(df, z["x"])
    x = _read_rows(root, df, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, ecg_id=df.index.to_numpy(dtype=np.int64))
    tmp.replace(path)
    return _to_data(df, x)
