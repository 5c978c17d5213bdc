"""Patient-wise splits. MIT-BIH has one record per subject except records 201 and 202 (same man).

- :func:`mitdb_inter_patient`: de Chazal DS1 -> train/validation by record, DS2 -> test, paced records
  excluded; record 201 (DS1) is dropped because its subject is also record 202 (DS2).
- :func:`group_split`: a seeded split of any groups (patients) into train/val/test fractions.
- :func:`assert_disjoint`: raise when one patient appears in two splits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from training.datasets.mitdb_split import MITDB_DS1, MITDB_DS2, MITDB_PACED
from training.errors import DataError

#: MIT-BIH records that come from the same subject (MIT-BIH directory: 201 and 202).
MITDB_SAME_SUBJECT: dict[str, str] = {"202": "201"}


def mitdb_patient(record: str) -> str:
    """Patient (subject) id of a MIT-BIH record."""
    return MITDB_SAME_SUBJECT.get(record, record)


def group_split(
    groups: Sequence[str],
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> dict[str, list[str]]:
    """Split distinct ``groups`` (patient ids) into train/val/test with a seeded shuffle."""
    uniq = sorted(set(groups))
    if len(uniq) < 3:
        raise DataError(f"need at least 3 patients to split, got {len(uniq)}")
    rng = np.random.default_rng(seed)
    order = [uniq[i] for i in rng.permutation(len(uniq))]
    n = len(order)
    n_test = max(1, round(fractions[2] * n))
    n_val = max(1, round(fractions[1] * n))
    return {
        "test": sorted(order[:n_test]),
        "val": sorted(order[n_test : n_test + n_val]),
        "train": sorted(order[n_test + n_val :]),
    }


def mitdb_inter_patient(
    n_val: int = 5, seed: int = 0, available: Iterable[str] | None = None
) -> dict[str, list[str]]:
    """de Chazal inter-patient split: DS1 minus paced/shared-subject records -> train + ``n_val`` val records; DS2 -> test."""
    avail = set(available) if available is not None else None
    ds1 = [r for r in MITDB_DS1 if r not in MITDB_PACED and r not in MITDB_SAME_SUBJECT.values()]
    ds2 = [r for r in MITDB_DS2 if r not in MITDB_PACED]
    if avail is not None:
        ds1 = [r for r in ds1 if r in avail]
        ds2 = [r for r in ds2 if r in avail]
    if len(ds1) <= n_val:
        raise DataError(
            f"DS1 has {len(ds1)} records available, cannot hold out {n_val} for validation"
        )
    rng = np.random.default_rng(seed)
    val = sorted(ds1[i] for i in rng.choice(len(ds1), size=n_val, replace=False))
    split = {"train": sorted(set(ds1) - set(val)), "val": val, "test": sorted(ds2)}
    assert_disjoint(split, mitdb_patient)
    return split


def assert_disjoint(split: Mapping[str, Iterable[str]], patient_of: object = None) -> None:
    """Raise :class:`DataError` if a record, or its patient (``patient_of(record)``), is in two splits."""
    seen: dict[str, str] = {}
    for name, records in split.items():
        for r in records:
            pid = patient_of(r) if callable(patient_of) else r
            other = seen.get(pid)
            if other is not None and other != name:
                raise DataError(f"patient {pid} (record {r}) is in both {other!r} and {name!r}")
            seen[pid] = name
