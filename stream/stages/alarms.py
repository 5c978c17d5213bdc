"""Arrhythmia and model alarms of one patient stream (pure logic: classified beats, model scores and
VF-detector decisions in, :class:`~stream.stages.events.AlertEvent` out).

Kinds (names and severities from :data:`stream.stages.events.ALERT_LEVELS`; the written definitions are
in :data:`ALARM_DEFINITIONS`; the evidence of each kind is documented field by field by its model in
:mod:`stream.schemas`):

- ``ventricular_fibrillation`` (critical): the VF/flutter detector (:mod:`stream.stages.vf`) calls at least
  ``vf_raise_k`` of the last ``vf_raise_n`` one-second decisions VF. Evidence: ``vf_decisions`` /
  ``decisions`` in the raising window, ``index`` (spectral concentration) and ``dominant_hz`` of the last
  VF decision, ``index_threshold`` not here (the detector's); ``sustained_s``.
- ``ventricular_tachycardia`` (critical): ``vt_min_beats`` consecutive V beats at a rate (60 / median RR
  inside the run) >= ``vt_rate_bpm``. Evidence: ``beats``, ``rate_bpm``, thresholds, ``beat_times``.
- ``ventricular_run`` (warning): 3+ consecutive V beats that are not VT (slower, or shorter than
  ``vt_min_beats``). Evidence as VT plus ``reason`` (``"rate_below_vt"`` / ``"shorter_than_vt"``).
- ``ventricular_bigeminy`` / ``ventricular_trigeminy`` (warning): ``bigeminy_min_cycles`` consecutive
  (non-V, V) cycles / ``trigeminy_min_cycles`` consecutive (non-V, non-V, V) cycles. Evidence: ``cycles``,
  ``min_cycles``, ``v_times`` (the last V beats of the pattern).
- ``pvc_couplet`` (warning): exactly two consecutive V beats. Evidence: ``beat_times``, ``rate_bpm``
  (coupling rate), ``couplets`` (couplets in the episode, on resolution).
- ``frequent_pvcs`` (warning): more than ``pvc_per_min`` V beats in the trailing 60 s. Evidence:
  ``pvcs_per_min``, ``threshold_per_min``.
- ``atrial_fibrillation`` (warning): the RR intervals of the last ``af_window_rr`` beats (intervals next to
  a V, F or Q beat excluded) are irregular by three established statistics at once -- normalised RMSSD,
  Shannon entropy of the RR histogram and turning-point ratio (Dash et al. 2009) -- and by the coefficient
  of sample entropy (COSEn, Lake & Moorman 2011) for ``af_sustain_s``. Evidence: each statistic and its
  threshold, ``n_rr``, ``hr_bpm``, ``sustained_s``.
- ``abnormal_12lead`` (advisory): ``twelve_lead_windows`` consecutive windows of the configured 12-lead
  model flagged anomalous. Evidence: ``model``, ``score``, ``threshold``, ``windows``, ``top_lead_scores``
  and ``top_lead_attention`` (the 3 largest, ``[[lead, value], ...]``), ``attention_peak``.
- ``morphology_change`` (advisory): the rolling mean of the last ``morph_rolling_beats`` beat-VAE
  embeddings sits more than ``morph_threshold`` baseline standard deviations (root mean square over the
  latent dimensions, a diagonal Mahalanobis distance) away from the patient's own baseline (mean and
  variance of the embeddings of the first ``morph_baseline_s``) for ``morph_sustain_s``. Evidence:
  ``distance``, ``threshold``, ``baseline_beats``, ``rolling_beats``, ``top_dims``.

Hygiene, the same for every kind:

- one ``raised`` and one ``resolved`` per episode; an episode resolves once its condition has been absent
  for the kind's resolve time (hysteresis; frequent PVCs and AF also need the statistic back below a
  lower threshold); ``end`` is the last time the condition held; ids are deterministic
  (:func:`~stream.stages.events.alert_id` of stream, kind and episode start);
- coverage: VF > VT > ventricular_run > {bigeminy, trigeminy, couplet, frequent_pvcs}. While a higher
  kind is open a lower one is not raised (counted as ``(kind, "covered")`` by :meth:`drain_suppressed`);
  a lower one already open is resolved at once with ``closed_by="covered"`` and ``covered_by=<kind>``;
- an alarm whose evidence span overlaps a dropout of the QRS lead is not raised (``"dropout"``); one whose
  evidence beats have a median ``sqi`` below ``min_sqi`` is not raised (``"noise"``); a suppressed
  would-be episode is counted once, not at every beat;
- the processor's no-beat rules (``asystole``, ``pause``) pass through :meth:`AlarmEngine.gate`: while
  the median ``sqi`` of the stream's last ``quality_beats`` classified beats is below ``min_sqi`` the
  detector is following noise, not ECG, so a gap between its "beats" is no asystole: the raise and its
  resolution are dropped and counted as ``(kind, "noise")``; so are those raised over a second in which
  no beat-detection lead had usable signal quality (``(kind, "signal_quality")``);
- signal quality (:meth:`AlarmEngine.on_quality`, :mod:`stream.stages.sqi`): an alarm whose evidence span
  overlaps a second in which neither beat-detection lead (the processor's fusion candidates) was usable
  is not raised (``"signal_quality"``); an ``abnormal_12lead`` alert names the leads of poor quality
  over its window (``poor_quality_leads``) and the model that rebuilt masked leads (``recovered_by``);
- ``Q`` beats are never V beats (they end runs and patterns; their intervals are excluded from AF);
- :meth:`AlarmEngine.flush` resolves every open episode with ``closed_by="end_of_stream"``.

Defaults are tuned on MIT-BIH DS1 only (the de Chazal training half), with the reference beat annotations
as an oracle classifier; see :class:`AlarmConfig` and the figures in the engineering report.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.runtime.protocol import ModelScore
from stream.stages.events import (
    ALARM_KINDS,
    ALERT_LEVELS,
    AlertEvent,
    ClassifiedBeat,
    DropoutSegment,
    alert_id,
)
from stream.stages.sqi import LeadQuality
from stream.stages.vf import VfDecision

# ------------------------------------------------------------------------------------------ settings


class AlarmConfig(BaseModel):
    """Thresholds of the arrhythmia and model alarms (rates, counts, durations, hysteresis).

    Defaults chosen on MIT-BIH DS1 with the annotated beat classes (oracle classifier):

    - ventricular settings follow the bedside-monitor conventions (VT >= 5 beats at >= 100 bpm, run 3+,
      couplet 2) and were checked on DS1: they raise VT on 203/205/207/223 where ``(VT`` is annotated and
      never on records without annotated VT runs;
    - bigeminy/trigeminy need 4 cycles: on DS1 every annotated ``(B``/``(T`` episode of 119 and 106 is found
      and the pattern hold of 10 s keeps 119's alternating B/T/N episodes from chattering;
    - AF thresholds: the Dash et al. (2009) values (nRMSSD 0.1, ShE 0.7, TPR 0.54-0.77 -- scaled to a 64-RR
      window) and COSEn > -1.4 (Lake & Moorman 2011), confirmed on DS1 (201 and 203 AF found; no AF alarm on
      the 20 other DS1 records);
    - VF: 3 of 5 one-second detector decisions (the detector flags 68 % of the seconds inside 207's VFL and
      1 s of ~11 h outside VF/VFL/VT on DS1).
    """

    model_config = ConfigDict(frozen=True)

    # ventricular ectopy
    vt_rate_bpm: float = Field(
        100.0,
        gt=0,
        description="A V run at or above this rate (60/median RR in the run) is VT, bpm.",
    )
    vt_min_beats: int = Field(
        5, ge=3, description="Consecutive V beats needed for VT (fewer: ventricular_run), beats."
    )
    run_min_beats: int = Field(
        3, ge=3, description="Consecutive V beats that make a ventricular run, beats."
    )
    ventricular_resolve_s: float = Field(
        10.0,
        gt=0,
        description="VT / run / couplet episodes resolve after this long without a new qualifying run, s.",
    )
    bigeminy_min_cycles: int = Field(
        4, ge=2, description="Consecutive (non-V, V) cycles that make bigeminy, cycles."
    )
    trigeminy_min_cycles: int = Field(
        4, ge=2, description="Consecutive (non-V, non-V, V) cycles that make trigeminy, cycles."
    )
    pattern_resolve_s: float = Field(
        10.0,
        gt=0,
        description="Bigeminy / trigeminy resolve after this long with the pattern broken, s.",
    )
    pvc_per_min: float = Field(
        10.0,
        gt=0,
        description="frequent_pvcs: more than this many V beats in the trailing 60 s raises, PVCs/min.",
    )
    pvc_hysteresis_per_min: float = Field(
        3.0,
        ge=0,
        description="frequent_pvcs resolves only at or below pvc_per_min minus this, PVCs/min.",
    )
    pvc_resolve_s: float = Field(
        30.0, gt=0, description="frequent_pvcs: seconds at or below the lower limit to resolve, s."
    )
    # atrial fibrillation
    af_exclude_classes: tuple[str, ...] = Field(
        ("V", "F", "Q", "S"),
        description="Beat classes whose intervals (into and out of the beat) the AF window excludes "
        "(S too: on DS1 the only false AF, record 201 at ~1100-1370 s, came from frequent APCs).",
    )
    af_window_rr: int = Field(
        64, ge=16, description="RR intervals in the sliding AF analysis window, intervals."
    )
    af_step_beats: int = Field(
        8, ge=1, description="The AF statistics are evaluated every this many beats, beats."
    )
    af_nrmssd: float = Field(
        0.1,
        gt=0,
        description="AF-like needs normalised RMSSD (RMSSD / mean RR) above this, unitless.",
    )
    af_shannon: float = Field(
        0.7,
        gt=0,
        description="AF-like needs the Shannon entropy of the 16-bin RR histogram (normalised by "
        "log 16) above this, unitless.",
    )
    af_tpr_lo: float = Field(
        0.54, ge=0, description="AF-like needs the turning-point ratio at least this, unitless."
    )
    af_tpr_hi: float = Field(
        0.77, le=1, description="AF-like needs the turning-point ratio at most this, unitless."
    )
    af_cosen: float = Field(
        -1.4,
        description="AF-like needs the coefficient of sample entropy (m=1, r=af_cosen_r_s) above this, "
        "unitless (Lake & Moorman 2011).",
    )
    af_cosen_r_s: float = Field(0.03, gt=0, description="COSEn tolerance r, seconds.")
    af_resolve_factor: float = Field(
        0.8,
        gt=0,
        le=1,
        description="An open AF episode holds while nRMSSD stays above af_nrmssd x this (hysteresis), "
        "unitless.",
    )
    af_sustain_s: float = Field(
        30.0, ge=0, description="AF-like continuously for this long raises, s."
    )
    af_resolve_s: float = Field(
        30.0, gt=0, description="An AF episode resolves after this long not AF-like, s."
    )
    # VF (decisions of stream.stages.vf)
    vf_raise_k: int = Field(3, ge=1, description="VF decisions among the last vf_raise_n to raise.")
    vf_raise_n: int = Field(5, ge=1, description="Decisions in the VF raising window, decisions.")
    vf_resolve_s: float = Field(
        10.0, gt=0, description="VF resolves after this long without a VF decision, s."
    )
    vf_max_gap_s: float = Field(
        2.5,
        gt=0,
        description="A gap between VF decisions longer than this restarts the raising window, s.",
    )
    vf_window_s: float = Field(
        4.0, gt=0, description="The VF detector's analysis window (for the dropout check), s."
    )
    # signal quality
    min_sqi: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Beat alarms are not raised when the median sqi of their evidence beats is below "
        "this, unitless (0..1).",
    )
    # 12-lead model
    twelve_lead_model: str = Field(
        "vae_bilstm",
        description="The 12-lead model whose windows raise abnormal_12lead: the best of the three on "
        "the complete PTB-XL fold 9 (vae_bilstm, AUROC 0.846); the attention model's (vae_bilstm_mha) "
        "lead and temporal attention for the same window are its evidence.",
    )
    twelve_lead_windows: int = Field(
        3, ge=1, description="Consecutive anomalous windows that raise abnormal_12lead, windows."
    )
    twelve_lead_resolve_windows: int = Field(
        3, ge=1, description="Consecutive normal windows that resolve abnormal_12lead, windows."
    )
    # morphology (beat_vae embeddings)
    morph_baseline_s: float = Field(
        300.0,
        gt=0,
        description="Per-patient baseline: embeddings of the first this many seconds, s.",
    )
    morph_min_baseline_beats: int = Field(
        100, ge=2, description="Baseline beats needed before morphology_change can raise, beats."
    )
    morph_rolling_beats: int = Field(
        60, ge=2, description="Beats in the rolling mean compared with the baseline, beats."
    )
    morph_threshold: float = Field(
        1.0,
        gt=0,
        description="Raise when the rolling mean is this many baseline SDs (RMS over latent dims) "
        "away, SD.",
    )
    morph_resolve_factor: float = Field(
        0.7,
        gt=0,
        le=1,
        description="An open morphology_change holds while the distance stays above threshold x "
        "this, unitless.",
    )
    morph_sustain_s: float = Field(30.0, ge=0, description="Shift sustained this long raises, s.")
    morph_resolve_s: float = Field(60.0, gt=0, description="Shift absent this long resolves, s.")
    # bookkeeping
    history_beats: int = Field(
        32, ge=4, description="Beat times kept as evidence of a run or pattern, beats."
    )
    quality_beats: int = Field(
        8,
        ge=1,
        description="Classified beats whose median sqi gates the asystole and pause rules, beats.",
    )


# --------------------------------------------------------------------------------------- definitions


@dataclass(frozen=True)
class AlarmDefinition:
    """What one alarm kind means (for the documentation and the dashboard)."""

    kind: str
    severity: str
    definition: str
    raises: str
    resolves: str
    covers: tuple[str, ...] = ()


#: Priority among the ventricular alarms: a higher one covers the lower ones it explains.
_RANK: dict[str, int] = {
    "ventricular_fibrillation": 4,
    "ventricular_tachycardia": 3,
    "ventricular_run": 2,
    "ventricular_bigeminy": 1,
    "ventricular_trigeminy": 1,
    "pvc_couplet": 1,
    "frequent_pvcs": 1,
}


def _covers(kind: str) -> tuple[str, ...]:
    r = _RANK.get(kind, 0)
    return tuple(k for k, v in _RANK.items() if 0 < v < r)


ALARM_DEFINITIONS: dict[str, AlarmDefinition] = {
    d.kind: d
    for d in (
        AlarmDefinition(
            "ventricular_fibrillation",
            "critical",
            "Ventricular fibrillation or flutter: a chaotic or sinusoidal ventricular oscillation at "
            "150-450 /min without organised QRS complexes.",
            "vf_raise_k of the last vf_raise_n one-second VF-detector decisions are VF.",
            "no VF decision for vf_resolve_s.",
            _covers("ventricular_fibrillation"),
        ),
        AlarmDefinition(
            "ventricular_tachycardia",
            "critical",
            "Ventricular tachycardia: a run of vt_min_beats or more consecutive ventricular beats at a "
            "rate of vt_rate_bpm or more.",
            "the vt_min_beats-th consecutive V beat with the run's rate >= vt_rate_bpm.",
            "no VT run for ventricular_resolve_s.",
            _covers("ventricular_tachycardia"),
        ),
        AlarmDefinition(
            "ventricular_run",
            "warning",
            "Ventricular run: run_min_beats or more consecutive ventricular beats that are not VT "
            "(slower than vt_rate_bpm or shorter than vt_min_beats).",
            "the end of such a run, or its vt_min_beats-th beat when it is slower than vt_rate_bpm.",
            "no such run for ventricular_resolve_s.",
            _covers("ventricular_run"),
        ),
        AlarmDefinition(
            "ventricular_bigeminy",
            "warning",
            "Ventricular bigeminy: every other beat is ventricular, for bigeminy_min_cycles cycles.",
            "bigeminy_min_cycles consecutive (non-V, V) cycles.",
            "the pattern broken for pattern_resolve_s.",
        ),
        AlarmDefinition(
            "ventricular_trigeminy",
            "warning",
            "Ventricular trigeminy: every third beat is ventricular, for trigeminy_min_cycles cycles.",
            "trigeminy_min_cycles consecutive (non-V, non-V, V) cycles.",
            "the pattern broken for pattern_resolve_s.",
        ),
        AlarmDefinition(
            "pvc_couplet",
            "warning",
            "PVC couplet: exactly two consecutive ventricular beats.",
            "a run of V beats that ends after exactly two.",
            "no new couplet for ventricular_resolve_s.",
        ),
        AlarmDefinition(
            "frequent_pvcs",
            "warning",
            "Frequent PVCs: more than pvc_per_min ventricular beats in the last minute.",
            "the count of V beats in the trailing 60 s above pvc_per_min.",
            "the count at or below pvc_per_min - pvc_hysteresis_per_min for pvc_resolve_s.",
        ),
        AlarmDefinition(
            "atrial_fibrillation",
            "warning",
            "Atrial fibrillation: an irregularly irregular ventricular response -- RR intervals "
            "(ectopic ones excluded) with high beat-to-beat variability, entropy and no pattern.",
            "the af_window_rr-interval window AF-like (nRMSSD, Shannon entropy, turning-point ratio "
            "and COSEn all past their thresholds) for af_sustain_s.",
            "not AF-like (nRMSSD below af_nrmssd x af_resolve_factor or COSEn low) for af_resolve_s.",
        ),
        AlarmDefinition(
            "abnormal_12lead",
            "advisory",
            "Abnormal 12-lead ECG: the configured 12-lead anomaly model finds the ECG unlike the "
            "normal 12-lead ECGs it was trained on, window after window.",
            "twelve_lead_windows consecutive anomalous windows of twelve_lead_model.",
            "twelve_lead_resolve_windows consecutive normal windows.",
        ),
        AlarmDefinition(
            "morphology_change",
            "advisory",
            "Beat morphology change: the patient's beats no longer look like their own beats at the "
            "start of monitoring (beat-VAE embeddings shifted from the per-patient baseline).",
            "the rolling-mean embedding > morph_threshold baseline SDs away for morph_sustain_s.",
            "the distance below morph_threshold x morph_resolve_factor for morph_resolve_s.",
        ),
    )
}
assert set(ALARM_DEFINITIONS) == set(ALARM_KINDS)
assert all(ALARM_DEFINITIONS[k].severity == ALERT_LEVELS[k][0] for k in ALARM_KINDS)


# ------------------------------------------------------------------------------------- RR statistics


def rr_irregularity(rr: np.ndarray, cosen_r_s: float = 0.03) -> dict[str, float]:
    """AF statistics of one window of RR intervals (seconds).

    ``nrmssd``: RMSSD / mean RR; ``shannon``: entropy of the 16-bin histogram of RR normalised by log 16;
    ``tpr``: turning-point ratio -- the three after dropping the window's largest and smallest 1/16 of
    intervals (Dash et al. 2009); ``cosen``: coefficient of sample entropy, SampEn(m=1, r) + ln(2r) -
    ln(mean RR) (Lake & Moorman 2011), on the intervals as they are.
    """
    rr = np.asarray(rr, dtype=np.float64)
    n = rr.size
    trim = max(1, n // 16)
    keep = np.sort(np.argsort(rr)[trim : n - trim])  # outliers out, time order kept
    x = rr[keep]
    mean = float(x.mean())
    d = np.diff(x)
    nrmssd = float(np.sqrt(np.mean(d * d))) / mean if mean > 0 else 0.0
    lo, hi = float(x.min()), float(x.max())
    if hi > lo:
        counts = np.bincount(
            np.minimum(((x - lo) / (hi - lo) * 16).astype(np.int64), 15), minlength=16
        )
        p = counts[counts > 0] / x.size
        shannon = float(-(p * np.log(p)).sum() / math.log(16))
    else:
        shannon = 0.0
    mid = x[1:-1]
    turning = ((mid > x[:-2]) & (mid > x[2:])) | ((mid < x[:-2]) & (mid < x[2:]))
    tpr = float(turning.mean()) if mid.size else 0.0
    # COSEn (m = 1): template matches of length 1 (B) and 2 (A) within r
    a = rr[:-1]
    close = np.abs(a[:, None] - a[None, :]) <= cosen_r_s
    nxt = np.abs(rr[1:, None] - rr[None, 1:]) <= cosen_r_s
    iu = np.triu_indices(a.size, 1)
    b_cnt = int(close[iu].sum())
    a_cnt = int((close & nxt)[iu].sum())
    mu = float(rr.mean())
    if b_cnt == 0 or mu <= 0:
        cosen = float("inf")  # no match at all: maximally irregular
    else:
        sampen = -math.log(max(a_cnt, 0.5) / b_cnt)  # half a match when none (bounded estimate)
        cosen = sampen + math.log(2 * cosen_r_s) - math.log(mu)
    return {"nrmssd": nrmssd, "shannon": shannon, "tpr": tpr, "cosen": cosen, "mean_rr_s": mu}


# ------------------------------------------------------------------------------------------- engine


@dataclass
class _Kind:
    """State of one alarm kind: the open episode (if any) and the suppressed would-be episode."""

    open: bool = False
    start: float = 0.0
    last_true: float = 0.0
    evidence: dict[str, Any] = field(default_factory=dict)
    count: int = 0  # occurrences inside the open episode (runs, couplets)
    blocked: str | None = None  # reason the current would-be episode is suppressed
    blocked_last: float = -math.inf
    since: float | None = None  # condition true continuously since (sustain)


class AlarmEngine:
    """Arrhythmia and model alarms of one patient stream (feed each input in time order)."""

    def __init__(self, stream_id: str, config: AlarmConfig | None = None) -> None:
        self.stream_id = stream_id
        self.config = c = config or AlarmConfig()
        self._k: dict[str, _Kind] = {k: _Kind() for k in ALARM_KINDS}
        self._suppressed: dict[tuple[str, str], int] = {}
        self._resolve_s: dict[str, float] = {
            "ventricular_fibrillation": c.vf_resolve_s,
            "ventricular_tachycardia": c.ventricular_resolve_s,
            "ventricular_run": c.ventricular_resolve_s,
            "pvc_couplet": c.ventricular_resolve_s,
            "ventricular_bigeminy": c.pattern_resolve_s,
            "ventricular_trigeminy": c.pattern_resolve_s,
            "frequent_pvcs": c.pvc_resolve_s,
            "atrial_fibrillation": c.af_resolve_s,
            "morphology_change": c.morph_resolve_s,
            "abnormal_12lead": math.inf,  # resolved by counted normal windows
        }
        self._now: float | None = None
        self._dropouts: deque[tuple[float, float]] = deque(maxlen=256)
        # seconds when no beat-detection lead was usable (signal quality), and each lead's unusable
        # seconds with their reason (12-lead evidence)
        self._poor: deque[tuple[float, float]] = deque(maxlen=256)
        self._lead_poor: deque[tuple[str, float, float, str]] = deque(maxlen=1024)
        # beats
        h = c.history_beats
        self._first_beat: float | None = None
        self._recent_q: deque[float] = deque(maxlen=c.quality_beats)  # sqi of the last beats
        self._gated: set[str] = set()  # ids of no-beat episodes dropped as noise
        self._prev: tuple[float, str] | None = None  # (time, label) of the previous beat
        self._run_t: deque[float] = deque(maxlen=h)  # current run of V beats: times
        self._run_rr: deque[float] = deque(maxlen=h)  # RR into each V after the first
        self._run_q: deque[float] = deque(maxlen=h)  # sqi of the run's beats
        self._run_n = 0
        self._run_vt = False  # the current run was VT
        self._run_slow_raised = False  # the current run raised ventricular_run while going on
        self._since_v = 1 << 30  # non-V beats since the last V (huge: no V yet)
        self._big = 0
        self._trig = 0
        self._pat_v: deque[tuple[float, float]] = deque(maxlen=h)  # (time, sqi) of recent V beats
        self._pvc_t: deque[float] = deque()  # V times in the trailing 60 s
        self._pvc_q: deque[float] = deque()
        # AF: RR window (time of the beat ending the interval, RR, sqi)
        self._af_t: deque[float] = deque(maxlen=c.af_window_rr)
        self._af_rr: deque[float] = deque(maxlen=c.af_window_rr)
        self._af_q: deque[float] = deque(maxlen=c.af_window_rr)
        self._af_beats = 0
        self._af_like_since: float | None = None
        # VF
        self._vf: deque[VfDecision] = deque(maxlen=max(c.vf_raise_n, 1))
        # 12-lead
        self._tl_bad = 0
        self._tl_good = 0
        self._tl_first_bad: float | None = None
        self._attn: deque[ModelScore] = deque(maxlen=16)
        # morphology
        self._m_n = 0
        self._m_sum: np.ndarray | None = None
        self._m_sq: np.ndarray | None = None
        self._m_mu: np.ndarray | None = None
        self._m_inv_sd: np.ndarray | None = None
        self._m_ring: np.ndarray | None = None
        self._m_ring_i = 0
        self._m_ring_n = 0
        self._m_roll_sum: np.ndarray | None = None
        self._m_first: float | None = None

    # ------------------------------------------------------------------------------ bookkeeping
    def active(self) -> tuple[str, ...]:
        """Kinds currently raised."""
        return tuple(k for k, s in self._k.items() if s.open)

    def drain_suppressed(self) -> dict[tuple[str, str], int]:
        """``(kind, reason) -> count`` of would-be episodes not raised since the last drain (reasons:
        ``covered``, ``dropout``, ``noise``)."""
        out, self._suppressed = self._suppressed, {}
        return out

    def gate(self, events: Sequence[AlertEvent]) -> list[AlertEvent]:
        """The processor's rule alerts less the ``asystole`` and ``pause`` episodes raised while the QRS
        lead carries noise (median sqi of the last classified beats below ``min_sqi``), raise and
        resolution alike; each dropped episode is counted once as ``(kind, "noise")``."""
        out: list[AlertEvent] = []
        for ev in events:
            if ev.kind in ("asystole", "pause"):
                reason = None
                if ev.status == "raised":
                    if self._recent_q and float(np.median(self._recent_q)) < self.config.min_sqi:
                        reason = "noise"
                    elif self._poor and self._in_poor(
                        ev.start, max(ev.at or ev.start, ev.start + 1.0)
                    ):
                        reason = "signal_quality"
                if reason is not None:
                    self._gated.add(ev.id)
                    key = (ev.kind, reason)
                    self._suppressed[key] = self._suppressed.get(key, 0) + 1
                    continue
                if ev.status == "resolved" and ev.id in self._gated:
                    self._gated.discard(ev.id)
                    continue
            out.append(ev)
        return out

    def on_dropouts(self, segments: Sequence[DropoutSegment], qrs_lead: str) -> None:
        """Record unusable spans of the QRS lead (other leads' segments are ignored)."""
        for s in segments:
            if s.lead == qrs_lead:
                self._dropouts.append((s.start, s.end))

    def _in_dropout(self, a: float, b: float) -> bool:
        return any(s < b and e > a for s, e in self._dropouts)

    def on_quality(self, quality: Sequence[LeadQuality], beat_leads: Sequence[str]) -> None:
        """Per-lead signal quality of completed seconds (:mod:`stream.stages.sqi`): a second in which no
        beat-detection lead (``beat_leads``, the processor's fusion candidates) is usable is a
        poor-quality span (alarms whose evidence overlaps it are suppressed, reason ``signal_quality``);
        each lead's unusable seconds other than dropouts (those are masked and recovered) are kept to mark
        12-lead alarms (``poor_quality_leads``)."""
        by_second: dict[float, list[LeadQuality]] = {}
        for q in quality:
            by_second.setdefault(q.start, []).append(q)
            if not q.usable and q.reason != "dropout":
                self._lead_poor.append((q.lead, q.start, q.start + q.seconds, q.reason or "noise"))
        for start, qs in sorted(by_second.items()):
            cands = [q for q in qs if q.lead in beat_leads]
            if cands and not any(q.usable for q in cands):
                end = start + cands[0].seconds
                if self._poor and abs(self._poor[-1][1] - start) < 1e-6:
                    self._poor[-1] = (self._poor[-1][0], end)  # extend the current span
                else:
                    self._poor.append((start, end))

    def _in_poor(self, a: float, b: float) -> bool:
        return any(s < b and e > a for s, e in self._poor)

    def _poor_leads(self, a: float, b: float) -> list[list[Any]] | None:
        """``[[lead, reason], ...]`` of the leads unusable for at least half of ``[a, b)``; None if none."""
        span = max(b - a, 1e-9)
        seconds: dict[tuple[str, str], float] = {}
        for lead, s, e, reason in self._lead_poor:
            if s < b and e > a:
                key = (lead, reason)
                seconds[key] = seconds.get(key, 0.0) + min(e, b) - max(s, a)
        poor = sorted([lead, r] for (lead, r), sec in seconds.items() if sec >= 0.5 * span)
        return poor or None

    def _event(self, kind: str, status: str, st: _Kind, end: float | None, ev: dict[str, Any]):
        return AlertEvent(
            alert_id(self.stream_id, kind, st.start),
            self.stream_id,
            kind,
            ALERT_LEVELS[kind][0],
            status,
            st.start,
            end,
            ev,
            self._now,
        )

    def _assert(
        self,
        kind: str,
        t: float,
        start: float,
        evidence: Callable[[], dict[str, Any]],
        span: tuple[float, float] | None = None,
        sqis: Sequence[float] = (),
    ) -> list[AlertEvent]:
        """The kind's raising condition holds at ``t``: raise an episode starting at ``start`` unless one is
        open (then it is extended) or the raise is suppressed."""
        st = self._k[kind]
        if st.open:
            st.last_true = t
            st.count += 1
            return []
        reason = None
        if any(self._k[h].open for h in _RANK if _RANK[h] > _RANK.get(kind, 0) > 0):
            reason = "covered"
        elif span is not None and self._dropouts and self._in_dropout(*span):
            reason = "dropout"
        elif span is not None and self._poor and self._in_poor(*span):
            reason = "signal_quality"
        elif sqis and float(np.median(sqis)) < self.config.min_sqi:
            reason = "noise"
        if reason is not None:
            if st.blocked != reason or t - st.blocked_last >= self._resolve_s[kind]:
                key = (kind, reason)
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
            st.blocked, st.blocked_last = reason, t
            return []
        st.blocked = None
        st.open, st.start, st.last_true, st.count = True, start, t, 1
        st.evidence = evidence()
        out = [self._event(kind, "raised", st, None, st.evidence)]
        for low in _covers(kind):
            if self._k[low].open:
                out.append(self._close(low, t, {"closed_by": "covered", "covered_by": kind}))
        return out

    def _hold(self, kind: str, t: float) -> None:
        """The kind's (weaker) holding condition is still true at ``t``: keep an open episode open."""
        st = self._k[kind]
        if st.open:
            st.last_true = t

    def _close(self, kind: str, end: float, extra: dict[str, Any]) -> AlertEvent:
        st = self._k[kind]
        st.open = False
        end = max(end, st.start)
        ev = {**st.evidence, **extra, "duration_s": round(end - st.start, 3)}
        if kind in ("ventricular_run", "pvc_couplet", "ventricular_tachycardia"):
            ev.setdefault("occurrences", st.count)
        return self._event(kind, "resolved", st, end, ev)

    def _expire(self, kinds: Sequence[str], t: float) -> list[AlertEvent]:
        out = []
        for kind in kinds:
            st = self._k[kind]
            if st.open and t - st.last_true >= self._resolve_s[kind]:
                out.append(self._close(kind, st.last_true, {}))
        return out

    def flush(self, now: float) -> list[AlertEvent]:
        """End of stream: resolve every open episode at ``now`` (``closed_by="end_of_stream"``)."""
        self._now = now
        return [
            self._close(k, now, {"closed_by": "end_of_stream"})
            for k, s in self._k.items()
            if s.open
        ]

    # ----------------------------------------------------------------------------------- beats
    _BEAT_KINDS: tuple[str, ...] = (
        "ventricular_tachycardia",
        "ventricular_run",
        "pvc_couplet",
        "ventricular_bigeminy",
        "ventricular_trigeminy",
        "frequent_pvcs",
        "atrial_fibrillation",
    )

    def on_beats(self, beats: Sequence[ClassifiedBeat]) -> list[AlertEvent]:
        """Classified beats of this stream, in time order."""
        out: list[AlertEvent] = []
        for b in beats:
            out += self._beat(b)
        return out

    def _beat(self, b: ClassifiedBeat) -> list[AlertEvent]:
        c = self.config
        t = b.time
        self._now = t
        out: list[AlertEvent] = []
        if self._first_beat is None:
            self._first_beat = t
        prev = self._prev
        rr = b.rr_s if b.rr_s is not None else (t - prev[0] if prev is not None else None)
        q = 1.0 if b.sqi is None else float(b.sqi)
        self._recent_q.append(q)
        is_v = b.label == "V"
        # ---- runs of V beats
        if is_v:
            if self._run_n and rr is not None:
                self._run_rr.append(rr)
            self._run_t.append(t)
            self._run_q.append(q)
            self._run_n += 1
            n = self._run_n
            if n >= c.vt_min_beats and self._run_rr:
                rate = 60.0 / float(np.median(self._run_rr))
                if rate >= c.vt_rate_bpm:
                    self._run_vt = True
                    out += self._assert(
                        "ventricular_tachycardia",
                        t,
                        self._run_t[0],
                        lambda: self._run_evidence(rate, None),
                        self._run_span(),
                        self._run_q,
                    )
                elif n == c.vt_min_beats and not self._run_vt:
                    self._run_slow_raised = True
                    out += self._assert(
                        "ventricular_run",
                        t,
                        self._run_t[0],
                        lambda: self._run_evidence(rate, "rate_below_vt"),
                        self._run_span(),
                        self._run_q,
                    )
                elif self._k["ventricular_run"].open and not self._run_vt:
                    self._hold("ventricular_run", t)
        else:
            out += self._end_run()
        # ---- bigeminy / trigeminy
        if is_v:
            s = self._since_v
            self._big = self._big + 1 if s == 1 else (1 if s > 1 else 0)
            self._trig = self._trig + 1 if s == 2 else (1 if s > 2 else 0)
            self._since_v = 0
            self._pat_v.append((t, q))
            if self._big >= c.bigeminy_min_cycles:
                out += self._pattern("ventricular_bigeminy", self._big, t)
            if self._trig >= c.trigeminy_min_cycles:
                out += self._pattern("ventricular_trigeminy", self._trig, t)
        else:
            self._since_v += 1
            if self._since_v > 1:
                self._big = 0
            if self._since_v > 2:
                self._trig = 0
            # the non-V beats inside an ongoing pattern keep it open
            if self._since_v == 1 and self._big >= c.bigeminy_min_cycles:
                self._hold("ventricular_bigeminy", t)
            if self._since_v <= 2 and self._trig >= c.trigeminy_min_cycles:
                self._hold("ventricular_trigeminy", t)
        # ---- frequent PVCs (trailing 60 s)
        pt, pq = self._pvc_t, self._pvc_q
        if is_v:
            pt.append(t)
            pq.append(q)
        while pt and pt[0] <= t - 60.0:
            pt.popleft()
            pq.popleft()
        if t - self._first_beat >= 60.0:
            n_pvc = len(pt)
            if n_pvc > c.pvc_per_min:
                out += self._assert(
                    "frequent_pvcs",
                    t,
                    pt[0],
                    lambda: {
                        "pvcs_per_min": n_pvc,
                        "threshold_per_min": c.pvc_per_min,
                        "first_pvc_time": pt[0],
                        "last_pvc_time": pt[-1],
                    },
                    (pt[0], pt[-1]),
                    pq,
                )
            elif n_pvc > c.pvc_per_min - c.pvc_hysteresis_per_min:
                self._hold("frequent_pvcs", t)
        # ---- AF
        ex = c.af_exclude_classes
        if rr is not None and prev is not None and b.label not in ex and prev[1] not in ex:
            self._af_t.append(t)
            self._af_rr.append(rr)
            self._af_q.append(q)
        self._af_beats += 1
        if self._af_beats % c.af_step_beats == 0 and len(self._af_rr) == c.af_window_rr:
            out += self._af(t)
        self._prev = (t, b.label)
        out += self._expire(self._BEAT_KINDS, t)
        return out

    def _run_span(self) -> tuple[float, float]:
        first_rr = self._run_rr[0] if self._run_rr else 0.0
        return (self._run_t[0] - first_rr, self._run_t[-1])

    def _run_evidence(self, rate: float, reason: str | None) -> dict[str, Any]:
        c = self.config
        ev: dict[str, Any] = {
            "beats": self._run_n,
            "rate_bpm": round(rate, 1),
            "vt_rate_bpm": c.vt_rate_bpm,
            "vt_min_beats": c.vt_min_beats,
            "beat_times": [round(x, 3) for x in self._run_t],
            "median_sqi": round(float(np.median(self._run_q)), 3),
        }
        if reason is not None:
            ev["reason"] = reason
        return ev

    def _end_run(self) -> list[AlertEvent]:
        """A non-V beat ended the current run of V beats (if any): decide couplet / run."""
        c = self.config
        n = self._run_n
        out: list[AlertEvent] = []
        if n >= 2:
            rate = 60.0 / float(np.median(self._run_rr)) if self._run_rr else 0.0
            t = self._run_t[-1]
            if n == 2:
                out += self._assert(
                    "pvc_couplet",
                    t,
                    self._run_t[0],
                    lambda: {
                        "beat_times": [round(x, 3) for x in self._run_t],
                        "rate_bpm": round(rate, 1),
                        "median_sqi": round(float(np.median(self._run_q)), 3),
                    },
                    self._run_span(),
                    self._run_q,
                )
            elif n >= c.run_min_beats and not self._run_vt and not self._run_slow_raised:
                out += self._assert(
                    "ventricular_run",
                    t,
                    self._run_t[0],
                    lambda: self._run_evidence(
                        rate, "shorter_than_vt" if rate >= c.vt_rate_bpm else "rate_below_vt"
                    ),
                    self._run_span(),
                    self._run_q,
                )
        self._run_t.clear()
        self._run_rr.clear()
        self._run_q.clear()
        self._run_n = 0
        self._run_vt = self._run_slow_raised = False
        return out

    def _pattern(self, kind: str, cycles: int, t: float) -> list[AlertEvent]:
        c = self.config
        need = c.bigeminy_min_cycles if kind == "ventricular_bigeminy" else c.trigeminy_min_cycles
        vs = list(self._pat_v)[-min(cycles, len(self._pat_v)) :]
        start = vs[-min(need, len(vs))][0]
        return self._assert(
            kind,
            t,
            start,
            lambda: {
                "cycles": cycles,
                "min_cycles": need,
                "v_times": [round(x, 3) for x, _ in vs[-need:]],
            },
            (start, t),
            [x for _, x in vs[-need:]],
        )

    def _af(self, t: float) -> list[AlertEvent]:
        c = self.config
        stats = rr_irregularity(np.fromiter(self._af_rr, float, len(self._af_rr)), c.af_cosen_r_s)
        like = (
            stats["nrmssd"] > c.af_nrmssd
            and stats["shannon"] > c.af_shannon
            and c.af_tpr_lo <= stats["tpr"] <= c.af_tpr_hi
            and stats["cosen"] > c.af_cosen
        )
        out: list[AlertEvent] = []
        if like:
            if self._af_like_since is None:
                self._af_like_since = t
            since = self._af_like_since
            if t - since >= c.af_sustain_s or self._k["atrial_fibrillation"].open:
                out += self._assert(
                    "atrial_fibrillation",
                    t,
                    since,
                    lambda: self._af_evidence(stats, t - since),
                    (self._af_t[0] - self._af_rr[0], t),
                    self._af_q,
                )
        else:
            self._af_like_since = None
            if stats["nrmssd"] > c.af_nrmssd * c.af_resolve_factor and stats["cosen"] > c.af_cosen:
                self._hold("atrial_fibrillation", t)
        return out

    def _af_evidence(self, s: dict[str, float], sustained: float) -> dict[str, Any]:
        c = self.config
        return {
            "nrmssd": round(s["nrmssd"], 4),
            "nrmssd_threshold": c.af_nrmssd,
            "shannon_entropy": round(s["shannon"], 4),
            "shannon_threshold": c.af_shannon,
            "tpr": round(s["tpr"], 4),
            "tpr_range": [c.af_tpr_lo, c.af_tpr_hi],
            "cosen": None if math.isinf(s["cosen"]) else round(s["cosen"], 4),
            "cosen_threshold": c.af_cosen,
            "n_rr": len(self._af_rr),
            "hr_bpm": round(60.0 / s["mean_rr_s"], 1),
            "sustained_s": round(float(sustained), 3),
        }

    # -------------------------------------------------------------------------------------- VF
    def on_vf(self, decisions: Sequence[VfDecision]) -> list[AlertEvent]:
        """Decisions of this stream's :class:`~stream.stages.vf.VfDetector`, in time order."""
        c = self.config
        out: list[AlertEvent] = []
        for d in decisions:
            self._now = d.time
            if self._vf and d.time - self._vf[-1].time > c.vf_max_gap_s:
                self._vf.clear()
            self._vf.append(d)
            n_vf = sum(1 for x in self._vf if x.vf)
            if d.vf:
                if n_vf >= c.vf_raise_k:
                    first = next(x for x in self._vf if x.vf)
                    win = list(self._vf)
                    ev = {
                        "vf_decisions": n_vf,
                        "decisions": len(win),
                        "raise_k": c.vf_raise_k,
                        "index": d.index,
                        "dominant_hz": d.dominant_hz,
                        "sustained_s": round(d.time - first.time + c.vf_window_s, 3),
                    }
                    out += self._assert(
                        "ventricular_fibrillation",
                        d.time,
                        first.time - c.vf_window_s,
                        ev.copy,
                        (first.time - c.vf_window_s, d.time),
                    )
                else:
                    self._hold("ventricular_fibrillation", d.time)
            out += self._expire(("ventricular_fibrillation",), d.time)
        return out

    # ---------------------------------------------------------------------------------- scores
    def on_scores(self, scores: Sequence[ModelScore]) -> list[AlertEvent]:
        """Model scores of this stream: 12-lead windows and beat-VAE embeddings (time order)."""
        out: list[AlertEvent] = []
        for s in scores:
            if s.model == "vae_bilstm_mha" and s.lead_attention:
                self._attn.append(s)
        for s in scores:
            if s.model == self.config.twelve_lead_model and s.lead is None:
                out += self._twelve_lead(s)
            elif s.embedding is not None:
                out += self._morph(s)
        return out

    def _twelve_lead(self, s: ModelScore) -> list[AlertEvent]:
        c = self.config
        self._now = s.time
        kind = "abnormal_12lead"
        st = self._k[kind]
        if s.anomalous:
            self._tl_good = 0
            if self._tl_bad == 0:
                self._tl_first_bad = s.time
            self._tl_bad += 1
            if self._tl_bad >= c.twelve_lead_windows:
                attn = s.lead_attention
                peak = s.attention_peak
                if not attn:
                    other = next((a for a in self._attn if abs(a.time - s.time) < 1e-3), None)
                    if other is not None:
                        attn, peak = other.lead_attention, other.attention_peak
                n_bad = self._tl_bad
                return self._assert(
                    kind,
                    s.time,
                    self._tl_first_bad or s.time,
                    lambda: {
                        "model": s.model,
                        "score": round(s.score, 5),
                        "threshold": s.threshold,
                        "windows": n_bad,
                        "top_lead_scores": _top3(s.lead_scores),
                        "top_lead_attention": _top3(attn),
                        "attention_peak": peak,
                        "window_time": s.time,
                        "recovered_by": s.recovered_by,
                        "poor_quality_leads": self._poor_leads(s.time, s.time + 10.0),
                    },
                )
            return []
        self._tl_bad = 0
        if st.open:
            self._tl_good += 1
            if self._tl_good >= c.twelve_lead_resolve_windows:
                self._tl_good = 0
                return [self._close(kind, st.last_true, {"score_at_resolution": round(s.score, 5)})]
        return []

    def _morph(self, s: ModelScore) -> list[AlertEvent]:
        c = self.config
        self._now = t = s.time
        if s.recovered_fraction > 0:
            return []  # a recovered window's embedding says more about the recoverer than the beat
        e = np.asarray(s.embedding, dtype=np.float64)
        if self._m_first is None:
            self._m_first = t
        if self._m_mu is None:
            if t - self._m_first < c.morph_baseline_s or self._m_n < c.morph_min_baseline_beats:
                if self._m_sum is None:
                    self._m_sum = np.zeros_like(e)
                    self._m_sq = np.zeros_like(e)
                self._m_sum += e
                self._m_sq += e * e  # type: ignore[operator]
                self._m_n += 1
                return []
            mu = self._m_sum / self._m_n  # type: ignore[operator]
            var = np.maximum(self._m_sq / self._m_n - mu * mu, 1e-12)  # type: ignore[operator]
            self._m_mu, self._m_inv_sd = mu, np.asarray(1.0 / np.sqrt(var))  # type: ignore[assignment]
            self._m_ring = np.zeros((c.morph_rolling_beats, e.size))
            self._m_roll_sum = np.zeros_like(e)
        ring, roll = self._m_ring, self._m_roll_sum
        assert ring is not None and roll is not None and self._m_inv_sd is not None
        i = self._m_ring_i
        roll += e - ring[i]
        ring[i] = e
        self._m_ring_i = (i + 1) % ring.shape[0]
        self._m_ring_n = min(self._m_ring_n + 1, ring.shape[0])
        if self._m_ring_n < ring.shape[0]:
            return []
        z = (roll / ring.shape[0] - self._m_mu) * self._m_inv_sd
        dist = float(np.sqrt(np.mean(z * z)))
        kind = "morphology_change"
        out: list[AlertEvent] = []
        if dist > c.morph_threshold:
            st = self._k[kind]
            if st.since is None:
                st.since = t
            since = st.since
            if t - since >= c.morph_sustain_s or st.open:
                top = np.argsort(-np.abs(z))[:3]
                out += self._assert(
                    kind,
                    t,
                    since,
                    lambda: {
                        "distance": round(dist, 4),
                        "threshold": c.morph_threshold,
                        "baseline_beats": self._m_n,
                        "rolling_beats": ring.shape[0],
                        "top_dims": [[int(k), round(float(z[k]), 3)] for k in top],
                        "sustained_s": round(t - since, 3),
                    },
                )
        else:
            self._k[kind].since = None
            if dist > c.morph_threshold * c.morph_resolve_factor:
                self._hold(kind, t)
        return out + self._expire((kind,), t)


def _top3(values: dict[str, float] | None) -> list[list[Any]] | None:
    """The 3 largest ``{lead: value}`` entries as ``[[lead, value], ...]``; None when absent."""
    if not values:
        return None
    return [[k, round(float(v), 5)] for k, v in sorted(values.items(), key=lambda kv: -kv[1])[:3]]


#: The rate and signal rules of the processor (:mod:`stream.stages.rules`), defined the same way.
RULE_DEFINITIONS: dict[str, AlarmDefinition] = {
    d.kind: d
    for d in (
        AlarmDefinition(
            "asystole",
            "critical",
            "Asystole: no QRS complex on usable signal of the QRS lead (time in a dropout does not count).",
            "no beat for asystole_s (4 s) of usable signal.",
            "the next beat.",
            ("pause",),
        ),
        AlarmDefinition(
            "pause",
            "critical",
            "Pause: no beat for pause_warning_s (2.5 s) or more; warning below pause_critical_s (3 s), "
            "critical from it.",
            "critical in real time when the gap reaches 3 s; a 2.5-3 s gap raises a warning at the beat "
            "that ends it.",
            "the next beat, or asystole (which covers it).",
        ),
        AlarmDefinition(
            "bradycardia",
            "warning",
            "Bradycardia: heart rate (median of the last 8 RR) below brady_bpm (40 /min).",
            "the rate below the limit at every beat for sustain_s (10 s).",
            "the rate at or above the limit + hysteresis_bpm (5) for resolve_s (5 s).",
        ),
        AlarmDefinition(
            "tachycardia",
            "warning",
            "Tachycardia: heart rate (median of the last 8 RR) above tachy_bpm (150 /min).",
            "the rate above the limit at every beat for sustain_s (10 s).",
            "the rate at or below the limit - hysteresis_bpm (5) for resolve_s (5 s).",
        ),
        AlarmDefinition(
            "signal_loss",
            "warning",
            "Signal loss (a technical alarm, never a cardiac finding): every lead in a dropout "
            "(flatline, lead-off, saturation, NaN, lost frames).",
            "every lead in a dropout for signal_loss_s (5 s).",
            "a lead carrying signal again for signal_resolve_s (2 s).",
        ),
    )
}


def alarms_table() -> str:
    """The README's alarm table (markdown): every kind the stream raises, with its severity, written
    definition, what raises it, what resolves it and what it covers."""
    lines = [
        "| kind | severity | definition | raised when | resolved when | covers |",
        "|---|---|---|---|---|---|",
    ]
    for d in (*RULE_DEFINITIONS.values(), *ALARM_DEFINITIONS.values()):
        cells = [f"`{d.kind}`", d.severity, d.definition, d.raises, d.resolves]
        cells.append(", ".join(f"`{k}`" for k in d.covers) or "-")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
