"""LUDB single-lead cardiac cycles for the beat VAE.

Every one of the 200 LUDB records (500 Hz, 10 s, 12 leads; one patient per record) is filtered with
the stream's causal band-pass (:func:`models.preprocessing.filtering.filter_signal`, 0.5-40 Hz). For each lead,
the QRS peaks are the ``N`` annotations of that lead's own annotation file (``<id>.i``, ``<id>.ii``, ...,
``<id>.v6``; ``(``/``)`` mark wave on/offsets, ``p``/``t`` the other waves), and
:func:`models.preprocessing.segmentation.beat_cycles` cuts ``before_s`` before to ``after_s`` after each peak,
resampled to 400 samples. Beats are returned in mV; per-beat normalisation is the model's business
(:func:`zscore_beats`).

Split by patient: record ids are shuffled with a fixed seed and cut 70/15/15 (train/validation/test).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.preprocessing.filtering import filter_signal
from models.preprocessing.segmentation import BEAT_LENGTH, beat_cycles
from stream.records import TWELVE_LEADS, read_annotations, read_record
from training.errors import DataError

#: LUDB annotation file extension of each canonical lead
LEAD_EXT: dict[str, str] = {lead: lead.lower() for lead in TWELVE_LEADS}
BEFORE_S = 0.25
AFTER_S = 0.45
SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)


@dataclass(frozen=True)
class LudbBeats:
    """``beats`` float32 [n, 400] mV; ``record`` (LUDB id = patient) and ``lead`` (index in TWELVE_LEADS)."""

    beats: np.ndarray
    record: np.ndarray
    lead: np.ndarray

    def __len__(self) -> int:
        return int(self.beats.shape[0])

    def subset(self, mask: np.ndarray) -> LudbBeats:
        return LudbBeats(self.beats[mask], self.record[mask], self.lead[mask])

    def records(self, ids: Sequence[int]) -> LudbBeats:
        """Beats of the given record ids."""
        return self.subset(np.isin(self.record, list(ids)))


def ludb_dir(data_dir: str | Path) -> Path:
    root = Path(data_dir) / "ludb" / "data"
    if not (root / "1.hea").is_file():
        raise DataError(f"LUDB not found under {root} (1.hea); set ECG_DATA_DIR")
    return root


def record_ids(data_dir: str | Path) -> list[int]:
    """Integer ids of the LUDB records present."""
    return sorted(int(p.stem) for p in ludb_dir(data_dir).glob("*.hea"))


def patient_split(ids: Sequence[int], seed: int = SPLIT_SEED) -> dict[str, list[int]]:
    """Deterministic 70/15/15 split of record (= patient) ids."""
    ids = sorted(ids)
    perm = np.random.default_rng(seed).permutation(len(ids))
    n_tr = round(SPLIT_FRACTIONS[0] * len(ids))
    n_va = round(SPLIT_FRACTIONS[1] * len(ids))
    pick = [ids[i] for i in perm]
    return {
        "train": sorted(pick[:n_tr]),
        "validation": sorted(pick[n_tr : n_tr + n_va]),
        "test": sorted(pick[n_tr + n_va :]),
    }


def record_beats(
    data_dir: str | Path,
    rec_id: int,
    leads: Sequence[str] = TWELVE_LEADS,
    before_s: float = BEFORE_S,
    after_s: float = AFTER_S,
    length: int = BEAT_LENGTH,
) -> tuple[np.ndarray, np.ndarray]:
    """Cycles of one record: ``(beats [k, length] mV, lead index [k])``."""
    path = ludb_dir(data_dir) / str(rec_id)
    rec = read_record(path)
    sig = filter_signal(np.nan_to_num(rec.signal), rec.fs)
    out, lead_idx = [], []
    for lead in leads:
        ann = read_annotations(path, LEAD_EXT[lead])
        peaks = ann.sample[ann.symbol == "N"]
        cycles, _ = beat_cycles(
            sig[:, rec.leads.index(lead)], peaks, rec.fs, length, before_s, after_s
        )
        out.append(cycles)
        lead_idx.append(np.full(len(cycles), TWELVE_LEADS.index(lead), dtype=np.int64))
    return np.concatenate(out), np.concatenate(lead_idx)


def load_ludb_beats(
    data_dir: str | Path,
    ids: Sequence[int] | None = None,
    leads: Sequence[str] = TWELVE_LEADS,
    before_s: float = BEFORE_S,
    after_s: float = AFTER_S,
) -> LudbBeats:
    """Cycles of the given records (default: all 200), every lead in ``leads``."""
    ids = list(ids) if ids is not None else record_ids(data_dir)
    beats, rec, lead = [], [], []
    for i in ids:
        b, li = record_beats(data_dir, i, leads, before_s, after_s)
        beats.append(b)
        lead.append(li)
        rec.append(np.full(len(b), i, dtype=np.int64))
    if not beats:
        raise DataError("no LUDB records selected")
    return LudbBeats(
        np.concatenate(beats).astype(np.float32), np.concatenate(rec), np.concatenate(lead)
    )


def zscore_beats(beats: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """Per-beat z-score: each beat minus its mean, divided by its standard deviation (+ ``eps`` mV)."""
    b = np.asarray(beats, dtype=np.float32)
    return ((b - b.mean(axis=-1, keepdims=True)) / (b.std(axis=-1, keepdims=True) + eps)).astype(
        np.float32
    )
