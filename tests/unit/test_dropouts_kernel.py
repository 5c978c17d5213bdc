"""The numba kernels of the dropout detector: chunk invariance on real faulted records, and the
kernels' own pieces (numpy-exact block sums, the flatline minimum lookup)."""

from __future__ import annotations

import numpy as np
import pytest

from simulators.faults import FaultSpec, inject
from stream.records import read_record
from stream.stages.dropouts import DropoutDetector, _flat_min_nb


def _feed(x, fs, leads, step, adc=None):
    """Segments, and (settled, open runs) after every chunk, of ``x`` fed in chunks of ``step``."""
    det = DropoutDetector("k", fs, leads, t0=100.0)
    if adc is not None:
        det.set_adc_range(adc)
    segs, states = [], []
    for s in range(0, x.shape[0], step):
        segs += det.process(x[s : s + step], s)
        states.append((s + min(step, x.shape[0] - s), det.settled(), det.open_runs()))
    segs += det.flush()  # emitted lead by lead within a chunk: order across leads is the chunks'
    return sorted(segs, key=lambda g: (g.lead, g.start)), states


def _mitdb(data_dir):
    rec = read_record(data_dir / "mitdb" / "119", sampto=360 * 120)
    faults = [
        FaultSpec("flatline", "MLII", 10.0, 0.3),
        FaultSpec("zero", "V1", 20.0, 2.0),
        FaultSpec("nan", "MLII", 30.0, 0.4),
        FaultSpec("lead_off", "V1", 40.0, 0.5),
        FaultSpec("saturation", "MLII", 50.0, 0.3),
        FaultSpec("lead_off", "MLII", 60.0, 5.0),
        FaultSpec("nan", None, 70.3, 1.2),
        FaultSpec("saturation", "V1", 80.0, 1.0),
        FaultSpec("flatline", None, 95.5, 1.4),
    ]
    x = inject(rec.signal, rec.fs, rec.leads, faults, rng=np.random.default_rng(1))
    x[360 * 85 :, 1] += 6.0  # a baseline step carrying ECG
    return rec, x


def _ludb(data_dir):
    rec = read_record(data_dir / "ludb" / "data" / "128")
    faults = [
        FaultSpec("zero", "V2", 3.0, 1.6),
        FaultSpec("nan", "I", 4.0, 0.5),
        FaultSpec("lead_off", "V5", 5.0, 1.0),
        FaultSpec("saturation", "III", 6.5, 0.6),
        FaultSpec("flatline", "V6", 7.0, 2.5),
    ]
    x = inject(rec.signal, rec.fs, rec.leads, faults, rng=np.random.default_rng(2))
    x[:, 0] -= 10.0  # a DC offset
    return rec, x


@pytest.mark.parametrize("which", ["mitdb", "ludb"])
@pytest.mark.parametrize("declared", [False, True])
def test_segments_do_not_depend_on_chunking(data_dir, which, declared):
    rec, x = _mitdb(data_dir) if which == "mitdb" else _ludb(data_dir)
    adc = rec.adc_range_mv if declared else None
    one = int(rec.fs)
    ref, ref_states = _feed(x, rec.fs, rec.leads, one, adc)
    assert {s.kind for s in ref} >= {"nan", "lead_off", "flatline"}
    for step in (round(0.37 * rec.fs), x.shape[0]):
        got, states = _feed(x, rec.fs, rec.leads, step, adc)
        assert got == ref, step
        # the open runs at a shared chunk end agree too
        at = {s[0]: s[2] for s in ref_states}
        for end, _, runs in states:
            if end in at:
                assert runs == at[end]


def test_flat_minimum_lookup():
    floor, cap, warm, fblk, factor = 54, 360, 720, 1000, 4.0
    nat = np.zeros((3, 8), dtype=np.int64)

    def thr(first, runs):
        for j, (end, length) in enumerate(runs):
            nat[:, j] = end, length, end // fblk
        return _flat_min_nb(first, nat, len(runs), floor, cap, warm, fblk, factor)

    assert thr(100, []) == cap  # warm-up
    assert thr(5000, []) == floor
    assert thr(5000, [(4990, 20)]) == 80  # 4 x 20
    assert thr(5000, [(4990, 20), (4995, 120)]) == cap  # capped
    assert thr(5000, [(4990, 20), (5001, 30)]) == 80  # a run ended after the start: not yet
    assert thr(5000, [(4100, 16), (4990, 20)]) == 80  # the longest of the previous block (its last)
    assert thr(5000, [(3990, 25), (4100, 16)]) == 64  # block 3 is too old; block 4 counts
    assert thr(5500, [(4900, 30), (5100, 20)]) == 120  # the previous block's run is longer
    assert thr(5000, [(4990, 10)]) == floor  # shorter than the floor / factor
