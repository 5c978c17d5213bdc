"""PTB-XL extra records (``ptbxl/ptbxl_extra_records.csv``): complete fold 9 and extra NORM training records.

Reads the real CSV files (skips when the data directory has no extra-records file): the shipped fold 10
stays the only test data and never reaches training or selection, folds stay disjoint by record and by
patient, fold 9 is complete, the extra NORM records are training records, labels come from the flags where
``scp_codes`` is empty. Plus the calibration figures that ``evaluate`` reports beside the test figures.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.datasets.ptbxl import (
    EXTRA_CSV,
    SUPERCLASSES,
    TEST_FOLDS,
    TRAIN_FOLDS,
    TRAIN_ONLY_FOLD,
    TRAIN_SPLIT,
    UNKNOWN_PATIENT,
    VAL_FOLDS,
    load_extra_metadata,
    load_metadata,
    load_ptbxl,
)
from training.metrics import calibration_report, expected_calibration_error, platt_apply, platt_fit


@pytest.fixture(scope="module")
def extra_csv(data_dir: Path) -> pd.DataFrame:
    path = data_dir / "ptbxl" / EXTRA_CSV
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return pd.read_csv(path, index_col="ecg_id", dtype={"scp_codes": str})


@pytest.fixture(scope="module")
def meta(data_dir: Path, extra_csv: pd.DataFrame) -> pd.DataFrame:
    return load_metadata(data_dir, extra=True)


def _ids(meta: pd.DataFrame, folds: tuple[int, ...]) -> set[int]:
    return set(meta.index[meta["strat_fold"].isin(folds)])


def test_no_shipped_test_record_reaches_training_or_selection(data_dir, meta, extra_csv):
    official = pd.read_csv(data_dir / "ptbxl" / "ptbxl_database.csv", index_col="ecg_id")
    test_ids = set(official.index[official["strat_fold"].isin(TEST_FOLDS)])
    assert 10 not in TRAIN_SPLIT and 10 not in VAL_FOLDS
    assert _ids(meta, TEST_FOLDS) == test_ids  # fold 10 is exactly the shipped one: nothing added
    assert not test_ids & _ids(meta, TRAIN_SPLIT)
    assert not test_ids & _ids(meta, VAL_FOLDS)
    assert set(extra_csv["split"]) <= {"train", "val"}
    assert not set(extra_csv.index) & set(official.index)


def test_folds_disjoint_by_record_and_by_patient(meta):
    train, val, test = (_ids(meta, f) for f in (TRAIN_SPLIT, VAL_FOLDS, TEST_FOLDS))
    assert not meta.index.has_duplicates
    assert not (train & val or train & test or val & test)
    assert len(train) + len(val) + len(test) == len(meta)
    # patient-wise: every known patient id lies in one split (PTB-XL keeps a patient's records in one
    # fold); extra records without patient_id rely on that design (their fold is the dataset's own)
    known = meta[meta["patient_id"] != UNKNOWN_PATIENT]
    split = np.select(
        [known["strat_fold"].isin(TRAIN_SPLIT), known["strat_fold"].isin(VAL_FOLDS)],
        ["train", "val"],
        "test",
    )
    per_patient = (
        pd.Series(split, index=known.index).groupby(known["patient_id"].to_numpy()).nunique()
    )
    assert (per_patient == 1).all(), per_patient[per_patient > 1].index.tolist()[:10]
    # and per exact fold, where the fold is known
    exact = known[known["strat_fold"] != TRAIN_ONLY_FOLD]
    assert (exact.groupby("patient_id")["strat_fold"].nunique() == 1).all()


def test_fold9_complete_and_extra_norm_records_in_training(data_dir, meta, extra_csv):
    official = pd.read_csv(data_dir / "ptbxl" / "ptbxl_database.csv", index_col="ecg_id")
    csv_fold9 = set(official.index[official["strat_fold"] == 9]) | set(
        extra_csv.index[extra_csv["split"] == "val"]
    )
    assert _ids(meta, VAL_FOLDS) == csv_fold9
    if len(extra_csv) == 3712:  # the shipped file: README's figures
        assert len(csv_fold9) == 2183
        assert (extra_csv["split"] == "train").sum() == 2157
    train_extra = extra_csv.index[extra_csv["split"] == "train"]
    rows = meta.loc[train_extra]
    assert rows["strat_fold"].isin(TRAIN_SPLIT).all()
    assert (rows["strat_fold"] == TRAIN_ONLY_FOLD).sum() == extra_csv.loc[
        train_extra, "strat_fold"
    ].isna().sum()
    assert (rows["superclasses"] == ("NORM",)).all()  # NORM-only: they are training records


def test_labels_from_flags_where_scp_codes_empty(data_dir, extra_csv):
    ex = load_extra_metadata(data_dir)
    flags = extra_csv[list(SUPERCLASSES)].astype(bool)
    from_flags = ex["label_source"] == "flags"
    assert from_flags.sum() == extra_csv["scp_codes"].isna().sum()
    for i in ex.index[from_flags]:
        assert ex.at[i, "superclasses"] == tuple(c for c in sorted(SUPERCLASSES) if flags.at[i, c])
    # where scp_codes are given, the scp_statements mapping is used; it agrees with the flags nearly always
    coded = ex.index[~from_flags]
    disagree = sum(
        set(ex.at[i, "superclasses"]) != {c for c in SUPERCLASSES if flags.at[i, c]} for i in coded
    )
    assert disagree <= 2


def test_loaded_arrays_carry_extra_records(data_dir, tmp_path):
    d = load_ptbxl(data_dir, tmp_path, limit=2, progress=False, extra=True)
    base = load_ptbxl(data_dir, tmp_path, limit=2, progress=False)
    n_base = len(base)
    assert not d.extra[:n_base].any() and d.extra[n_base:].all()
    np.testing.assert_array_equal(d.x[:n_base], base.x)
    assert set(d.train().fold) == {TRAIN_ONLY_FOLD, *TRAIN_FOLDS}
    assert set(d.validation().fold) == {9} and d.validation().extra.any()
    assert not d.test().extra.any() and set(d.test().fold) == {10}
    assert d.x.shape[1:] == (1000, 12) and np.isfinite(d.x).all()
    ex = d.subset(d.extra)
    assert (
        ex.has_label.all() and (ex.patient_id[ex.fold == TRAIN_ONLY_FOLD] == UNKNOWN_PATIENT).any()
    )


def test_without_extra_file_nothing_is_added(data_dir, tmp_path):
    root = tmp_path / "ptbxl"
    root.mkdir()
    for name in ("ptbxl_database.csv", "scp_statements.csv"):
        shutil.copy(data_dir / "ptbxl" / name, root / name)
    assert load_extra_metadata(tmp_path).empty
    assert len(load_metadata(tmp_path, extra=True)) == len(load_metadata(tmp_path))


def test_calibration_figures():
    rng = np.random.default_rng(0)
    s = rng.normal(size=4000)
    p_true = 1 / (1 + np.exp(-(2.0 * s - 0.5)))
    y = (rng.random(s.size) < p_true).astype(int)
    a, b = platt_fit(y, s)
    assert abs(a - 2.0) < 0.3 and abs(b + 0.5) < 0.2
    assert expected_calibration_error(y, platt_apply((a, b), s)) < 0.03
    assert expected_calibration_error(y, np.full(s.size, 0.99)) > 0.4
    rep = calibration_report(y, s, 0.25, held_out={"test": (y[:500], s[:500])})
    assert rep["validation"]["ece_cross_fitted_5fold"] < 0.05
    assert 0.0 <= rep["probability_at_threshold"] <= 1.0 and "ece" in rep["test"]


def test_evaluate_figures_keep_validation_and_shipped_test_apart(data_dir, tmp_path):
    from training.tasks._ptbxl_anomaly import split_figures

    d = load_ptbxl(data_dir, tmp_path, limit=10, progress=False, extra=True)
    val, test = d.validation(), d.test()
    rng = np.random.default_rng(0)
    sv = (~val.normal).astype(float) + rng.normal(0, 0.7, len(val))
    st = (~test.normal).astype(float) + rng.normal(0, 0.7, len(test))
    f = split_figures(val, sv, test, st, 0.5)
    assert set(f) == {"validation", "validation_shipped_fold9", "test_shipped_fold10", "ece"}
    n = {k: f[k]["n_records"] + f[k]["n_unlabelled_excluded"] for k in f if k != "ece"}
    assert n == {
        "validation": len(val),
        "validation_shipped_fold9": int((~val.extra).sum()),
        "test_shipped_fold10": len(test),
    }
    assert "complete" in f["validation"]["split"] and "fold 10" in f["test_shipped_fold10"]["split"]
    assert {"validation", "test_shipped_fold10", "probability_at_threshold"} <= set(f["ece"])
