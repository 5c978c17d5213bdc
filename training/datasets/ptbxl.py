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

Extra records (``load_ptbxl(..., extra=True)``): ``ptbxl_extra_records.csv`` lists 3,712 records without an
official ``ptbxl_database.csv`` row: the rest of fold 9 (which makes fold 9 complete, with PTB-XL's true
class mix) and 2,157 NORM-only records of folds 1-8. Their fold is ``strat_fold`` where it is known, else
:data:`TRAIN_ONLY_FOLD` (0: "train", one of folds 1-8); their superclasses come from ``scp_codes`` (same rule as
above) where it is given, else from the ``NORM``/``MI``/``STTC``/``CD``/``HYP`` flags; their ``patient_id`` is
:data:`UNKNOWN_PATIENT` (-1) where it is not given. No fold-10 record is added, so the shipped fold 10 (biased
towards clear abnormal cases, see ``ECG_DATA_DIR/README.md``) stays the only test data. The shipped records keep
their cache; the extra records have their own (``ptbxl100-extra-<hash>.npz``). Use :data:`TRAIN_SPLIT` (folds
0-8) instead of :data:`TRAIN_FOLDS` to include the extra training records.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
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
#: fold of an extra training record whose exact ``strat_fold`` (1-8) is unknown
TRAIN_ONLY_FOLD = 0
#: every training record: folds 1-8 and the extra records known only as "train"
TRAIN_SPLIT: tuple[int, ...] = (TRAIN_ONLY_FOLD, *TRAIN_FOLDS)
#: ``patient_id`` of an extra record whose patient is not given
UNKNOWN_PATIENT = -1
EXTRA_CSV = "ptbxl_extra_records.csv"
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
    #: bool [n]: the record comes from ``ptbxl_extra_records.csv`` (all False when not given)
    extra: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __post_init__(self) -> None:
        if self.extra.shape[0] != self.x.shape[0]:
            object.__setattr__(self, "extra", np.zeros(self.x.shape[0], dtype=bool))

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
            extra=self.extra[mask],
        )

    def folds(self, folds: Sequence[int]) -> PtbxlData:
        """Rows of the given ``strat_fold`` values (:data:`TRAIN_ONLY_FOLD` = 0 for extra "train" rows)."""
        return self.subset(np.isin(self.fold, list(folds)))

    def train(self) -> PtbxlData:
        """Every training record: folds 1-8 and the extra records known only as "train" (:data:`TRAIN_SPLIT`)."""
        return self.folds(TRAIN_SPLIT)

    def validation(self) -> PtbxlData:
        """Fold 9 (complete when loaded with ``extra=True``)."""
        return self.folds(VAL_FOLDS)

    def test(self) -> PtbxlData:
        """Fold 10: the shipped test records (never extended)."""
        return self.folds(TEST_FOLDS)

    def concat(self, other: PtbxlData) -> PtbxlData:
        """These rows followed by ``other``'s."""
        return PtbxlData(
            x=np.concatenate([self.x, other.x]),
            ecg_id=np.concatenate([self.ecg_id, other.ecg_id]),
            patient_id=np.concatenate([self.patient_id, other.patient_id]),
            fold=np.concatenate([self.fold, other.fold]),
            labels=np.concatenate([self.labels, other.labels]),
            has_label=np.concatenate([self.has_label, other.has_label]),
            extra=np.concatenate([self.extra, other.extra]),
        )


def ptbxl_dir(data_dir: str | Path) -> Path:
    """``<data_dir>/ptbxl``, checked."""
    root = Path(data_dir) / "ptbxl"
    if not (root / "ptbxl_database.csv").is_file():
        raise DataError(f"PTB-XL not found under {root} (ptbxl_database.csv); set ECG_DATA_DIR")
    return root


def _diagnostic_classes(root: Path) -> dict[str, str]:
    stm = pd.read_csv(root / "scp_statements.csv", index_col=0)
    return dict(stm[stm["diagnostic"] == 1]["diagnostic_class"].dropna().to_dict())


def _superclasses(codes: dict[str, float], diag: dict[str, str]) -> tuple[str, ...]:
    return tuple(sorted({diag[k] for k in codes if k in diag}))


def load_metadata(data_dir: str | Path, extra: bool = False) -> pd.DataFrame:
    """``ptbxl_database.csv`` with parsed ``scp_codes`` and a ``superclasses`` column (sorted tuple).

    With ``extra`` the rows of :func:`load_extra_metadata` follow (column ``extra`` tells them apart).
    """
    root = ptbxl_dir(data_dir)
    df = pd.read_csv(root / "ptbxl_database.csv", index_col="ecg_id")
    diag = _diagnostic_classes(root)
    codes = df["scp_codes"].apply(ast.literal_eval)
    df = df.assign(
        scp_codes=codes,
        superclasses=codes.apply(lambda c: _superclasses(c, diag)),
    )
    if extra:
        df = pd.concat([df.assign(extra=False), load_extra_metadata(data_dir)])
    return df


def load_extra_metadata(data_dir: str | Path) -> pd.DataFrame:
    """``ptbxl_extra_records.csv`` in the columns of :func:`load_metadata` (plus ``split``, ``label_source``
    and ``extra = True``): ``strat_fold`` filled with :data:`TRAIN_ONLY_FOLD` where only "train" is known,
    ``patient_id`` with :data:`UNKNOWN_PATIENT` where not given, ``superclasses`` from ``scp_codes`` where
    given (``label_source = "scp_codes"``), else from the superclass flags (``"flags"``).

    Without the file (a complete PTB-XL download, where every record has its official row) the frame is empty.
    Raises :class:`~training.errors.DataError` when the file contradicts the split design (a fold-10 or an
    unknown split, a fold outside its split, an id listed twice or with an official row).
    """
    root = ptbxl_dir(data_dir)
    path = root / EXTRA_CSV
    if not path.is_file():  # a complete PTB-XL download: every record has its official row
        return pd.DataFrame(
            {
                "filename_lr": pd.Series(dtype=str),
                "patient_id": pd.Series(dtype=np.int64),
                "strat_fold": pd.Series(dtype=np.int64),
                "scp_codes": pd.Series(dtype=object),
                "superclasses": pd.Series(dtype=object),
                "split": pd.Series(dtype=str),
                "label_source": pd.Series(dtype=str),
                "extra": pd.Series(dtype=bool),
            },
            index=pd.Index([], dtype=np.int64, name="ecg_id"),
        )
    e = pd.read_csv(path, index_col="ecg_id", dtype={"scp_codes": str})
    bad = ~e["split"].isin(["train", "val"])
    if bad.any():
        raise DataError(
            f"{EXTRA_CSV}: split must be 'train' or 'val', got {sorted(set(e['split'][bad]))}"
        )
    fold = e["strat_fold"]
    known = fold.notna()
    wrong = known & (
        ((e["split"] == "val") & (fold != VAL_FOLDS[0]))
        | ((e["split"] == "train") & ~fold.isin(TRAIN_FOLDS))
    )
    if wrong.any() or ((e["split"] == "val") & ~known).any():
        raise DataError(
            f"{EXTRA_CSV}: strat_fold contradicts split for ecg_id {list(e.index[wrong])[:5]}"
        )
    official = pd.read_csv(root / "ptbxl_database.csv", usecols=["ecg_id"])["ecg_id"]
    dup = e.index.intersection(pd.Index(official))
    if len(dup) or e.index.has_duplicates:
        raise DataError(
            f"{EXTRA_CSV}: ecg_id listed twice or with an official row: {list(dup)[:5]}"
        )
    diag = _diagnostic_classes(root)
    has_codes = e["scp_codes"].notna() & (e["scp_codes"].str.strip() != "")
    codes = [
        ast.literal_eval(c) if h else {} for c, h in zip(e["scp_codes"], has_codes, strict=True)
    ]
    flags = e[list(SUPERCLASSES)].to_numpy(dtype=bool)
    superclasses = [
        _superclasses(c, diag)
        if h
        else tuple(sorted(s for s, f in zip(SUPERCLASSES, row, strict=True) if f))
        for c, h, row in zip(codes, has_codes, flags, strict=True)
    ]
    return pd.DataFrame(
        {
            "filename_lr": e["filename_lr"],
            "patient_id": e["patient_id"].fillna(UNKNOWN_PATIENT).astype(np.int64),
            "strat_fold": fold.fillna(TRAIN_ONLY_FOLD).astype(np.int64),
            "scp_codes": codes,
            "superclasses": superclasses,
            "split": e["split"],
            "label_source": np.where(has_codes, "scp_codes", "flags"),
            "extra": True,
        },
        index=e.index,
    )


def _content_hash(
    root: Path,
    df: pd.DataFrame,
    csv_names: Sequence[str] = ("ptbxl_database.csv", "scp_statements.csv"),
) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(PREP_PARAMS, sort_keys=True).encode())
    for name in csv_names:
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


def extra_cache_path(
    data_dir: str | Path, cache_dir: str | Path, df: pd.DataFrame | None = None
) -> Path:
    """Where the prepared arrays of the extra records (:func:`load_extra_metadata`) live."""
    root = ptbxl_dir(data_dir)
    df = load_extra_metadata(data_dir) if df is None else df
    key = _content_hash(root, df, (EXTRA_CSV, "scp_statements.csv"))[:16]
    return Path(cache_dir) / "ptbxl" / f"ptbxl100-extra-{key}.npz"


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
        patient_id=df["patient_id"].fillna(UNKNOWN_PATIENT).to_numpy(dtype=np.int64),
        fold=df["strat_fold"].to_numpy(dtype=np.int64),
        labels=labels,
        has_label=np.asarray(labels.any(axis=1)),
        extra=df["extra"].to_numpy(dtype=bool) if "extra" in df else np.zeros(len(df), dtype=bool),
    )


def _cached_rows(root: Path, df: pd.DataFrame, path: Path, progress: bool) -> np.ndarray:
    if path.is_file():
        with np.load(path) as z:
            if np.array_equal(z["ecg_id"], df.index.to_numpy(dtype=np.int64)):
                return np.asarray(z["x"])
    x = _read_rows(root, df, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, ecg_id=df.index.to_numpy(dtype=np.int64))
    tmp.replace(path)
    return x


def load_ptbxl(
    data_dir: str | Path,
    cache_dir: str | Path,
    limit: int | None = None,
    progress: bool = True,
    extra: bool = False,
) -> PtbxlData:
    """Prepared PTB-XL, from the cache when its content hash matches, else built and cached.

    ``limit`` keeps the first ``limit`` records of each fold (small real subsets for tests); limited
    loads are never cached. ``extra`` appends the records of ``ptbxl_extra_records.csv`` (complete fold 9,
    NORM training records; see the module docstring); without it the result is the shipped records only.
    """
    root = ptbxl_dir(data_dir)
    df = load_metadata(data_dir)
    ex = load_extra_metadata(data_dir) if extra else None
    if limit is not None:
        df = df.groupby("strat_fold", group_keys=False).head(limit)
        data = _to_data(df, _read_rows(root, df, progress))
        if ex is not None:
            ex = ex.groupby("strat_fold", group_keys=False).head(limit)
            data = data.concat(_to_data(ex, _read_rows(root, ex, progress)))
        return data
    data = _to_data(df, _cached_rows(root, df, cache_path(data_dir, cache_dir, df), progress))
    if ex is None or ex.empty:
        return data
    x_extra = _cached_rows(root, ex, extra_cache_path(data_dir, cache_dir, ex), progress)
    return data.concat(_to_data(ex, x_extra))
