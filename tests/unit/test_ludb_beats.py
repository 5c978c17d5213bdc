"""LUDB beat extraction for the beat VAE: per-lead QRS annotations, beat_cycles, patient split."""

from __future__ import annotations

import numpy as np

from stream.records import read_annotations
from training.datasets.ludb import (
    load_ludb_beats,
    patient_split,
    record_beats,
    record_ids,
    zscore_beats,
)


def test_beats_follow_each_leads_own_annotations(data_dir):
    beats, lead = record_beats(data_dir, 1)
    assert beats.shape[1] == 400 and beats.dtype == np.float32
    n_ii = int((read_annotations(data_dir / "ludb" / "data" / "1", "ii").symbol == "N").sum())
    assert 0 < (lead == 1).sum() <= n_ii
    assert set(np.unique(lead)) == set(range(12))
    # the R peak sits at 0.25 / 0.70 of the cycle: the largest |deviation| of an average beat is near there
    mean_ii = beats[lead == 1].mean(axis=0)
    assert abs(int(np.argmax(np.abs(mean_ii))) - round(400 * 0.25 / 0.70)) < 40


def test_patient_split_is_disjoint_and_complete(data_dir):
    ids = record_ids(data_dir)
    assert len(ids) == 200
    sp = patient_split(ids)
    sets = [set(v) for v in sp.values()]
    assert sum(len(s) for s in sets) == 200 and set.union(*sets) == set(ids)
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert patient_split(ids) == sp  # deterministic


def test_zscore_and_subset(data_dir):
    d = load_ludb_beats(data_dir, [1, 2])
    assert set(np.unique(d.record)) == {1, 2}
    z = zscore_beats(d.beats)
    np.testing.assert_allclose(z.mean(axis=1), 0.0, atol=1e-4)
    assert np.all(np.abs(z.std(axis=1) - 1.0) < 0.05)
    assert len(d.records([2])) == int((d.record == 2).sum())
