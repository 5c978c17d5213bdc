"""Arrhythmia and model alarms: real MIT-BIH records with the reference beat classes as an oracle
classifier, and hand-made edge cases."""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
import pytest
import wfdb

from models.runtime.protocol import ModelScore
from stream.records import read_record
from stream.schemas import ALERT_EVIDENCE
from stream.stages.alarms import ALARM_DEFINITIONS, AlarmConfig, AlarmEngine, rr_irregularity
from stream.stages.events import ALARM_KINDS, AlertEvent, ClassifiedBeat, DropoutSegment
from stream.stages.sqi import LeadQuality
from stream.stages.vf import VfDecision, VfDetector
from training.datasets.mitdb_split import AAMI_CLASSES

# ------------------------------------------------------------------------------------------ helpers


@functools.cache
def _oracle(
    path: str,
) -> tuple[tuple[ClassifiedBeat, ...], tuple[tuple[str, float, float], ...], float]:
    """Beats of a MIT-BIH record classified by its reference annotations (AAMI classes), its rhythm
    episodes ``(aux, start_s, end_s)`` and its duration."""
    ann = wfdb.rdann(path, "atr")
    hdr = wfdb.rdheader(path)
    fs = float(hdr.fs)
    beats, prev = [], None
    for s, sym in zip(ann.sample, ann.symbol, strict=True):
        if sym in AAMI_CLASSES:
            t = float(s) / fs
            beats.append(
                ClassifiedBeat("r", t, AAMI_CLASSES[sym], 1.0, None if prev is None else t - prev)
            )
            prev = t
    marks = [
        (float(s) / fs, a.strip("\x00")) for s, a in zip(ann.sample, ann.aux_note, strict=True)
    ]
    marks = [(t, a) for t, a in marks if a.startswith("(")]
    dur = hdr.sig_len / fs
    eps = tuple(
        (a, t, marks[i + 1][0] if i + 1 < len(marks) else dur) for i, (t, a) in enumerate(marks)
    )
    return tuple(beats), eps, dur


def _run(data_dir, rec: str, vf: bool = False, config: AlarmConfig | None = None):
    beats, eps, dur = _oracle(str(data_dir / "mitdb" / rec))
    eng = AlarmEngine("r", config)
    out: list[AlertEvent] = []
    if vf:
        r = read_record(data_dir / "mitdb" / rec)
        x, fs = r.lead("MLII"), r.fs
        det, step, i_beat = VfDetector(fs), int(fs), 0
        for i in range(0, x.size, step):
            end = (i + step) / fs
            j = i_beat
            while j < len(beats) and beats[j].time < end:
                j += 1
            out += eng.on_beats(beats[i_beat:j])
            i_beat = j
            out += eng.on_vf(det.process(x[i : i + step], i / fs))
        out += eng.on_beats(beats[i_beat:])
    else:
        out += eng.on_beats(beats)
    out += eng.flush(dur)
    return out, eps, eng


def _episodes(out: Iterable[AlertEvent], kind: str) -> list[tuple[float, float, AlertEvent]]:
    """(start, end, raised event) of each episode of ``kind``."""
    ends = {a.id: a.end for a in out if a.status == "resolved"}
    return [(a.start, ends[a.id], a) for a in out if a.kind == kind and a.status == "raised"]


def _overlaps(a: float, b: float, spans: Iterable[tuple[float, float]], tol: float = 0.0) -> bool:
    return any(a < e + tol and b > s - tol for s, e in spans)


def _spans(eps, *labels: str) -> list[tuple[float, float]]:
    return [(s, e) for a, s, e in eps if a in labels]


def _beats(labels: str, rr: float = 0.8, t0: float = 0.0, sqi: float | None = None, rrs=None):
    """Beats with the given class letters, every ``rr`` s (or at the intervals ``rrs``)."""
    out, t = [], t0
    for i, lab in enumerate(labels):
        d = rr if rrs is None else rrs[i]
        t += d
        out.append(ClassifiedBeat("s", round(t, 6), lab, 1.0, d, sqi=sqi))
    return out


def _kinds(out: Iterable[AlertEvent]) -> list[tuple[str, str]]:
    return [(a.kind, a.status) for a in out]


def _check_protocol(out: list[AlertEvent]) -> None:
    """One raised then one resolved per id, evidence valid against the kind's schema model."""
    seen: dict[str, str] = {}
    for a in out:
        if a.status == "raised":
            assert a.id not in seen
        else:
            assert seen.get(a.id) == "raised"
            assert a.end is not None and a.end >= a.start
            assert "duration_s" in a.evidence
        seen[a.id] = a.status
        ALERT_EVIDENCE[a.kind].model_validate(a.evidence)
    assert all(v == "resolved" for v in seen.values())


# --------------------------------------------------------------------------------- real records


def test_definitions_cover_every_kind():
    assert set(ALARM_DEFINITIONS) == set(ALARM_KINDS)
    assert all(d.definition and d.raises and d.resolves for d in ALARM_DEFINITIONS.values())
    assert set(ALARM_DEFINITIONS["ventricular_fibrillation"].covers) >= {"ventricular_tachycardia"}


def test_record_100_normal_raises_nothing(data_dir):
    out, _, eng = _run(data_dir, "100", vf=True)
    assert out == []
    assert eng.drain_suppressed() == {}


def test_record_119_bigeminy_and_trigeminy(data_dir):
    out, eps, _ = _run(data_dir, "119")
    _check_protocol(out)
    big = _episodes(out, "ventricular_bigeminy")
    trig = _episodes(out, "ventricular_trigeminy")
    assert len(big) >= 5 and len(trig) >= 5
    b_spans, t_spans = _spans(eps, "(B"), _spans(eps, "(T")
    assert all(_overlaps(s, e, b_spans) for s, e, _ in big)
    assert all(_overlaps(s, e, t_spans) for s, e, _ in trig)
    # nothing ventricular beyond the patterns: no runs in 119
    assert not {a.kind for a in out} & {
        "ventricular_tachycardia",
        "ventricular_run",
        "atrial_fibrillation",
    }


def test_record_207_vfl_from_the_raw_signal_and_its_vt_run(data_dir):
    out, eps, _ = _run(data_dir, "207", vf=True)
    _check_protocol(out)
    vfl = _spans(eps, "(VFL")
    vf = _episodes(out, "ventricular_fibrillation")
    assert vf and all(_overlaps(s, e, vfl) for s, e, _ in vf)  # no VF alarm outside VFL
    found = sum(_overlaps(s, e, [(a, b) for a, b, _ in vf]) for s, e in vfl)
    assert found >= 5  # of 6 annotated VFL episodes (the missed one lasts 5 s)
    first = vf[0][2]
    assert first.at - 41.0 < 10.0  # raised within 10 s of the first VFL onset (41 s)
    assert first.evidence["dominant_hz"] >= 2.5
    runs = _episodes(out, "ventricular_run") + _episodes(out, "ventricular_tachycardia")
    assert _overlaps(39.0, 41.0, [(s, e) for s, e, _ in runs], tol=1.0)  # the VT run at 39-40 s


@pytest.mark.parametrize("rec", ["201", "203"])
def test_records_201_203_af_inside_af_only(data_dir, rec):
    out, eps, _ = _run(data_dir, rec)
    _check_protocol(out)
    af = _episodes(out, "atrial_fibrillation")
    af_spans = _spans(eps, "(AFIB")
    allowed = _spans(eps, "(AFIB", "(AFL")
    assert af
    for s, _, a in af:  # raised only while AF (or flutter) is annotated
        assert any(lo - 5 <= a.at <= hi + 30 for lo, hi in allowed), (s, a.at)
    # every AF episode longer than 2 minutes is covered by an alarm
    long_af = [(s, e) for s, e in af_spans if e - s > 120]
    assert all(_overlaps(s, e, [(a, b) for a, b, _ in af]) for s, e in long_af)
    ev = af[0][2].evidence
    assert ev["nrmssd"] > ev["nrmssd_threshold"] and ev["shannon_entropy"] > ev["shannon_threshold"]


def test_record_208_couplets_and_frequent_pvcs(data_dir):
    out, _, _ = _run(data_dir, "208")
    _check_protocol(out)
    kinds = {a.kind for a in out}
    assert {"pvc_couplet", "frequent_pvcs", "ventricular_trigeminy"} <= kinds
    assert not kinds & {
        "ventricular_tachycardia",
        "ventricular_fibrillation",
        "atrial_fibrillation",
    }
    fp = _episodes(out, "frequent_pvcs")
    assert fp[0][2].evidence["pvcs_per_min"] > 10
    # couplets are grouped into episodes, not one alert per couplet (208 has ~97 couplets)
    assert len(_episodes(out, "pvc_couplet")) < 60


# -------------------------------------------------------------------------------- hand-made


def test_run_of_exactly_three_v_is_a_run_not_vt_nor_couplet():
    eng = AlarmEngine("s")
    out = eng.on_beats(_beats("N" * 20 + "VVV" + "N" * 30, rr=0.5))  # 120 bpm
    assert _kinds(out) == [("ventricular_run", "raised"), ("ventricular_run", "resolved")]
    ev = out[0].evidence
    assert ev["beats"] == 3 and ev["reason"] == "shorter_than_vt" and len(ev["beat_times"]) == 3
    _check_protocol(out)


@pytest.mark.parametrize(
    ("rr", "kind"), [(60 / 98, "ventricular_run"), (60 / 102, "ventricular_tachycardia")]
)
def test_vt_just_below_and_above_the_rate(rr, kind):
    eng = AlarmEngine("s")
    out = eng.on_beats(_beats("N" * 20 + "V" * 6 + "N" * 30, rr=rr))
    raised = [a for a in out if a.status == "raised"]
    assert [a.kind for a in raised] == [kind]
    assert (raised[0].evidence["rate_bpm"] >= 100) == (kind == "ventricular_tachycardia")
    if kind == "ventricular_run":
        assert raised[0].evidence["reason"] == "rate_below_vt"
    else:  # raised in real time, at the 5th V beat
        assert raised[0].at == pytest.approx(raised[0].start + 4 * rr)
    _check_protocol(out)


def test_vt_covers_lower_alarms_and_counts_them():
    eng = AlarmEngine("s")
    out = eng.on_beats(_beats("NV" * 10, rr=0.5))  # bigeminy raised
    assert _kinds(out) == [("ventricular_bigeminy", "raised")]
    out = eng.on_beats(_beats("V" * 8 + "NVVN", rr=0.5, t0=10.0))  # VT, then a couplet during VT
    assert _kinds(out)[:2] == [
        ("ventricular_tachycardia", "raised"),
        ("ventricular_bigeminy", "resolved"),
    ]
    closed = out[1]
    assert (
        closed.evidence["closed_by"] == "covered"
        and closed.evidence["covered_by"] == "ventricular_tachycardia"
    )
    assert eng.drain_suppressed() == {("pvc_couplet", "covered"): 1}
    assert eng.drain_suppressed() == {}  # drained
    out += eng.flush(100.0)
    assert ("ventricular_tachycardia", "resolved") in _kinds(out)


def test_vf_covers_vt():
    eng = AlarmEngine("s")
    out = eng.on_beats(_beats("N" * 5 + "V" * 6, rr=0.4))
    assert _kinds(out) == [("ventricular_tachycardia", "raised")]
    t = out[0].at
    dec = [VfDecision(t + k, True, 0.6, 4.0) for k in range(1, 4)]
    out = eng.on_vf(dec)
    assert _kinds(out) == [
        ("ventricular_fibrillation", "raised"),
        ("ventricular_tachycardia", "resolved"),
    ]
    assert out[1].evidence["closed_by"] == "covered"
    out = eng.on_beats(_beats("V" * 6, rr=0.4, t0=t + 3))  # VT during VF: covered
    assert out == [] and eng.drain_suppressed() == {("ventricular_tachycardia", "covered"): 1}


def test_dropout_and_noise_suppress():
    eng = AlarmEngine("s")
    eng.on_dropouts(
        [
            DropoutSegment("s", "MLII", 10.0, 12.0, "flatline"),
            DropoutSegment("s", "V1", 20, 30, "nan"),
        ],
        "MLII",
    )
    out = eng.on_beats(_beats("N" * 10 + "VVV" + "N" * 5, rr=0.8))  # run at 8.8-10.4 s: overlaps
    assert out == [] and eng.drain_suppressed() == {("ventricular_run", "dropout"): 1}
    out = eng.on_beats(
        _beats("N" * 10 + "VVV" + "N" * 5, rr=0.8, t0=20.0)
    )  # V1 dropout: not the QRS lead
    assert _kinds(out) == [("ventricular_run", "raised")]
    eng = AlarmEngine("s")
    out = eng.on_beats(_beats("N" * 10 + "VVV" + "N" * 5, rr=0.8, sqi=0.2))
    assert out == [] and eng.drain_suppressed() == {("ventricular_run", "noise"): 1}


def test_q_beats_are_not_v():
    eng = AlarmEngine("s")
    out = eng.on_beats(_beats("N" * 10 + "QQQQQQ" + "NQ" * 10 + "N" * 10, rr=0.5))
    assert out == []


def test_hysteresis_does_not_chatter():
    # bigeminy that breaks for 3 beats every 6 cycles: one episode
    eng = AlarmEngine("s")
    out = eng.on_beats(_beats(("NV" * 6 + "NNN") * 20, rr=0.7))
    big = [k for k in _kinds(out) if k[0] == "ventricular_bigeminy"]
    assert big == [("ventricular_bigeminy", "raised")]  # (frequent_pvcs too: 26 PVCs/min)
    # PVC count hovering at the threshold (10 / 11 per minute): one frequent_pvcs episode
    eng = AlarmEngine("s")
    labels = []
    for minute in range(10):
        n_v = 11 if minute % 2 else 10
        lab = ["N"] * 75
        for k in range(n_v):
            lab[3 + 6 * k] = "V"
        labels += lab
    out = eng.on_beats(_beats("".join(labels), rr=0.8))
    assert [k for k in _kinds(out) if k[0] == "frequent_pvcs"] == [("frequent_pvcs", "raised")]


def test_ids_are_deterministic_and_flush_resolves_everything():
    seq = _beats("N" * 80 + "NV" * 10 + "N" * 5 + "VV" + "N" * 5 + "V" * 6, rr=0.6)
    runs = []
    for _ in range(2):
        eng = AlarmEngine("s")
        out = eng.on_beats(seq)
        out += eng.flush(200.0)
        runs.append([(a.id, a.kind, a.status, a.start, a.end, a.at) for a in out])
        assert eng.active() == ()
        _check_protocol(out)
        flushed = [a for a in out if a.evidence.get("closed_by") == "end_of_stream"]
        assert flushed and all(a.end == 200.0 and a.at == 200.0 for a in flushed)
    assert runs[0] == runs[1]


def _af_rr(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.45, 1.1, n)


def test_af_from_irregular_rr_raises_after_sustain_and_resolves():
    rr = np.concatenate(
        [
            np.full(100, 0.8) + np.random.default_rng(1).normal(0, 0.01, 100),
            _af_rr(200),
            np.full(150, 0.8),
        ]
    )
    eng = AlarmEngine("s")
    out = eng.on_beats(_beats("N" * rr.size, rrs=rr))
    assert _kinds(out) == [("atrial_fibrillation", "raised"), ("atrial_fibrillation", "resolved")]
    onset = float(rr[:100].sum())
    raised = out[0]
    assert onset < raised.start < raised.at and raised.at - onset < 80
    assert raised.evidence["sustained_s"] >= 30
    _check_protocol(out)
    # intervals next to V beats are excluded: sinus rhythm with a PVC every 4th beat is not AF
    rrs = np.tile([0.8, 0.8, 0.45, 1.15], 100)
    out = AlarmEngine("s").on_beats(_beats("NNVN" * 100, rrs=rrs))
    assert "atrial_fibrillation" not in {a.kind for a in out}


def test_rr_statistics():
    reg = rr_irregularity(np.full(64, 0.8) + np.random.default_rng(0).normal(0, 0.005, 64))
    irr = rr_irregularity(_af_rr(64))
    assert reg["nrmssd"] < 0.05 < 0.15 < irr["nrmssd"]
    assert irr["shannon"] > 0.7 and 0.54 <= irr["tpr"] <= 0.77 and irr["cosen"] > -1.4


def _score(t: float, anomalous: bool, model: str = "vae_bilstm_mha", **kw) -> ModelScore:
    leads = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    return ModelScore(
        stream_id="s",
        model=model,
        window="leads_10s",
        time=t,
        score=2.0 if anomalous else 0.5,
        threshold=1.0,
        anomalous=anomalous,
        lead_scores={ld: float(i) for i, ld in enumerate(leads)},
        **kw,
    )


def test_abnormal_12lead_after_n_windows_with_lead_evidence():
    eng = AlarmEngine("s", AlarmConfig(twelve_lead_model="lstm_ae_12"))
    attn = {"I": 0.1, "V2": 0.5, "V3": 0.3, "II": 0.05}
    seq = [
        _score(0, False, "lstm_ae_12"),
        _score(10, True, "lstm_ae_12"),
        _score(20, True, "lstm_ae_12"),
    ]
    assert eng.on_scores(seq) == []
    out = eng.on_scores(
        [_score(30, True, "lstm_ae_12"), _score(30, True, lead_attention=attn, attention_peak=34.2)]
    )
    assert _kinds(out) == [("abnormal_12lead", "raised")]
    ev = out[0].evidence
    assert out[0].start == 10 and out[0].severity == "advisory" and ev["windows"] == 3
    assert [x[0] for x in ev["top_lead_scores"]] == ["V6", "V5", "V4"]
    assert [x[0] for x in ev["top_lead_attention"]] == ["V2", "V3", "I"] and ev[
        "attention_peak"
    ] == 34.2
    out = eng.on_scores([_score(40 + 10 * k, False, "lstm_ae_12") for k in range(3)])
    assert _kinds(out) == [("abnormal_12lead", "resolved")]


def test_morphology_change_raises_once_per_patient_baseline():
    rng = np.random.default_rng(0)
    eng = AlarmEngine("s")
    base = np.array([5.0, -3.0, 0.0, 2.0])  # this patient's own latent position
    scale = np.array([0.5, 2.0, 1.0, 0.3])
    out = []
    for i in range(1500):  # beats every 0.8 s; the morphology shifts at 600 s
        t = 0.8 * i
        e = base + scale * rng.normal(size=4) + (np.array([0, 0, 0, 1.0]) if t >= 600 else 0.0)
        out += eng.on_scores(
            [
                ModelScore(
                    stream_id="s",
                    model="beat_vae",
                    window="beat",
                    time=t,
                    score=0.1,
                    anomalous=False,
                    embedding=e.tolist(),
                )
            ]
        )
    out += eng.flush(1200.0)
    assert _kinds(out) == [("morphology_change", "raised"), ("morphology_change", "resolved")]
    ev = out[0].evidence
    assert 600 <= out[0].start < out[0].at < 700 and ev["distance"] > ev["threshold"]
    assert ev["top_dims"][0][0] == 3  # the shifted dimension
    _check_protocol(out)


def test_engine_is_fast():
    import time

    beats = _beats(("N" * 7 + "V") * 500, rr=0.8)
    eng = AlarmEngine("s")
    t = time.perf_counter()
    eng.on_beats(beats)
    per_beat = (time.perf_counter() - t) / len(beats)
    assert per_beat < 200e-6  # measured ~30 us per beat


def _no_beat(kind: str, status: str, start: float) -> AlertEvent:
    from stream.stages.events import alert_id

    end = None if status == "raised" else start + 5
    return AlertEvent(alert_id("s", kind, start), "s", kind, "critical", status, start, end, {})


def test_gate_drops_no_beat_alarms_over_noise_and_keeps_them_over_clean_ecg():
    clean = AlarmEngine("s")
    clean.on_beats(_beats("N" * 10, sqi=0.9))
    events = [_no_beat("pause", "raised", 8.0), _no_beat("asystole", "raised", 8.0)]
    assert clean.gate(events) == events  # a gap after clean beats: a true pause and asystole
    assert clean.gate([_no_beat("asystole", "resolved", 8.0)]) == [
        _no_beat("asystole", "resolved", 8.0)
    ]
    noisy = AlarmEngine("s")
    noisy.on_beats(_beats("NQ" * 5, sqi=0.1))  # "beats" a detector found in noise
    assert noisy.drain_suppressed() == {}
    assert noisy.gate(events) == []
    assert noisy.gate([_no_beat("asystole", "resolved", 8.0)]) == []  # its resolution too
    assert noisy.drain_suppressed() == {("pause", "noise"): 1, ("asystole", "noise"): 1}
    other = [_no_beat("asystole", "raised", 30.0)]
    assert AlarmEngine("s").gate(other) == other  # no classified beat yet: nothing says noise


def _q(lead: str, start: float, usable: bool, reason: str | None = None) -> LeadQuality:
    return LeadQuality("s", lead, start, 1.0, 0.5, 3.0, 0.2, 0.9, 0.0, 0.0, usable, reason)


def test_signal_quality_suppresses_alarms_and_marks_12_lead_evidence():
    eng = AlarmEngine("s")
    # 8-12 s: both beat leads noisy; 20-25 s: only V1 noisy (MLII carries the beats)
    eng.on_quality(
        [_q(ld, t, False, "noise") for t in range(8, 12) for ld in ("MLII", "V1")]
        + [_q("V1", t, False, "noise") for t in range(20, 25)]
        + [_q("MLII", t, True) for t in range(20, 25)],
        ("MLII", "V1"),
    )
    out = eng.on_beats(_beats("N" * 10 + "VVV" + "N" * 5, rr=0.8))  # run at 8.8-10.4 s
    assert out == [] and eng.drain_suppressed() == {("ventricular_run", "signal_quality"): 1}
    out = eng.on_beats(_beats("N" * 10 + "VVV" + "N" * 5, rr=0.8, t0=20.0))
    assert _kinds(out) == [("ventricular_run", "raised")]
    # the no-beat rules: an asystole raised over the noisy seconds is dropped with its resolution
    raised = AlertEvent("a1", "s", "asystole", "critical", "raised", 9.0, None, {}, 13.0)
    resolved = AlertEvent("a1", "s", "asystole", "critical", "resolved", 9.0, 14.0, {}, 14.0)
    assert eng.gate([raised, resolved]) == []
    assert eng.drain_suppressed() == {("asystole", "signal_quality"): 1}
    assert eng._poor_leads(20.0, 40.0) is None  # V1 noisy 5 of 20 s: under half the window
    assert eng._poor_leads(20.0, 25.0) == [["V1", "noise"]]
