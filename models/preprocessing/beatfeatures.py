"""Per-beat features for the AAMI beat classifier (``beat_class``) and a beat-level signal quality index.

Pure numpy, no torch, no stream imports: the training task and the stream stage call the same code.

What generalises across patients (inter-patient literature: de Chazal et al. 2004, Llamedo & Martinez
2011, Mondejar-Guerra et al. 2019, patient-adaptive normalisation) is each beat **relative to its own
patient**: RR intervals divided by the patient's running average RR, and the QRS shape compared with the
patient's own dominant beat. A :class:`BeatFeaturizer` holds that per-stream state (causal: only earlier
beats of the stream):

- RR: ``pre/avg``, ``post/avg``, ``post/pre``, ``pre/local``, ``local/avg``, where ``avg`` is an exponential
  average of the stream's RR with a 5 min time constant (warm-up: plain mean) and ``local`` the mean of
  the last 10 RR intervals; ``avg`` in seconds too (heart rate); ``pre`` over the previous interval and
  the coefficient of variation of the last 10 intervals (irregular rhythm, e.g. atrial fibrillation,
  makes prematurity less telling). No pre RR: ratios 1 and ``rr_missing`` 1.
- Morphology on the ``beat_720`` window (360 Hz, band-passed, R at the centre; the R is re-aligned to
  the largest absolute deflection within 40 ms): R amplitude, QRS peak-to-peak, QRS width (span where
  the absolute slope exceeds 25 % of its maximum within 150 ms of R), QRS energy, signed and absolute
  area, steepest up/down slopes, T-wave amplitude, pre-QRS (P) energy.
- Against the stream's running template (exponential average of recent beats that look dominant:
  correlation > 0.85 with the template and not premature, pre/local > 0.85; the template restarts on a
  non-premature beat when fewer than 4 of the last 16 beats matched): correlation of the whole beat
  (-250..+444 ms), of the QRS (+-100 ms), of the P segment (-250..-83 ms) and of the T segment
  (+111..+444 ms); QRS amplitude and energy ratios (log) and width difference.
- Model scores: the CAE decision score, log of the beat VAE's reconstruction MSE, each also minus the
  stream's running average over its dominant beats; the VAE's 25-dim latent mean and its difference from
  the stream's dominant-beat average. No VAE window: zeros and ``vae_missing`` 1.
- ``sqi`` (below) and ``recovered`` (the window had samples filled by the recoverer).

Every feature is finite for every input (flat or NaN-holding windows included).

**Beat SQI** (:func:`sqi`): in [0, 1], 1 = clean. The mean of two scores of the 2 s window:

- spectral: ``r = P(5-15 Hz) / P(5-40 Hz)`` (QRS energy sits in 5-15 Hz; muscle noise and electrode
  motion spread over the band), mapped linearly from 0.30 (0) to 0.60 (1);
- kurtosis: a clean ECG window is spiky (kurtosis ~ 6-20), noise is near-Gaussian (3); mapped linearly
  from 3.5 (0) to 7 (1).

A flat window (no power) has SQI 0. It is published with each beat so later stages can suppress alarms
raised on noisy beats.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from models.preprocessing.rhythm import RRContext

FS = 360.0
WIDTH = 720
CENTER = WIDTH // 2
LATENT = 25
#: samples at 360 Hz
_ALIGN = 14  # 40 ms
_QRS = 36  # 100 ms
_WID = 54  # 150 ms: the QRS width search span
_P0, _P1 = -90, -30  # -250..-83 ms
_T0, _T1 = 40, 160  # +111..+444 ms
_B0, _B1 = -90, 160  # the template segment
_TAU_S = 300.0
_LOCAL = 10
_MATCH_CORR = 0.85
_NOT_PREMATURE = 0.85
_TPL_ALPHA = 0.1
_RR_MIN, _RR_MAX = 0.2, 3.0

RR_NAMES = (
    "pre_over_avg",
    "post_over_avg",
    "post_over_pre",
    "pre_over_local",
    "local_over_avg",
    "avg_rr_s",
    "rr_missing",
    "pre_over_prev",
    "local_rr_cv",
)
MORPH_NAMES = (
    "r_amp",
    "qrs_pp",
    "qrs_width_s",
    "qrs_energy",
    "qrs_area",
    "qrs_area_abs",
    "slope_up",
    "slope_down",
    "t_amp",
    "p_energy",
)
TEMPLATE_NAMES = (
    "corr_beat",
    "corr_qrs",
    "corr_p",
    "corr_t",
    "log_pp_ratio",
    "log_energy_ratio",
    "width_diff_s",
    "template_matches",
)
SCORE_NAMES = ("cae", "cae_rel", "vae_log_mse", "vae_rel", "vae_missing", "sqi", "recovered")
EMB_NAMES = tuple(f"vae_mu{i}" for i in range(LATENT))
EMB_REL_NAMES = tuple(f"vae_dmu{i}" for i in range(LATENT))
#: The feature vector, in order (the classifier's card lists them).
FEATURE_NAMES: tuple[str, ...] = (
    *RR_NAMES,
    *MORPH_NAMES,
    *TEMPLATE_NAMES,
    *SCORE_NAMES,
    *EMB_NAMES,
    *EMB_REL_NAMES,
)
N_FEATURES = len(FEATURE_NAMES)
_IDX = {n: i for i, n in enumerate(FEATURE_NAMES)}
_I_LOG_PP = _IDX["log_pp_ratio"]
_I_LOG_ENERGY = _IDX["log_energy_ratio"]
_I_WIDTH_DIFF = _IDX["width_diff_s"]
_I_MATCHES = _IDX["template_matches"]
_I_CAE = _IDX["cae"]
_I_CAE_REL = _IDX["cae_rel"]


def _windows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[k, 720]`` float64 with NaN as 0, and per-beat "had NaN" flags."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != WIDTH:
        raise ValueError(f"beat windows must be [k, {WIDTH}] at {FS:g} Hz, got {a.shape}")
    bad = ~np.isfinite(a)
    had = np.asarray(bad.any(axis=1))
    if had.any():
        a = np.where(bad, 0.0, a)
    return a, had


_FREQS = np.fft.rfftfreq(WIDTH, 1.0 / FS)
#: rfft bins of 5-15 Hz and 5-40 Hz (contiguous: slices)
_WIDE_LO = int(np.flatnonzero(_FREQS >= 5.0)[0])
_QRS_HI = int(np.flatnonzero(_FREQS <= 15.0)[-1]) + 1
_WIDE_HI = int(np.flatnonzero(_FREQS <= 40.0)[-1]) + 1


def sqi(window_720: np.ndarray) -> float | np.ndarray:
    """Beat-level signal quality in [0, 1] (1 clean) of one ``[720]`` window (a float) or ``[k, 720]``
    windows (an array); see the module docstring."""
    x, _ = _windows(window_720)
    out = _sqi(x)
    return float(out[0]) if np.ndim(window_720) == 1 else out


def _sqi(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=1, keepdims=True)
    f = np.fft.rfft(xc, axis=1)
    p = f.real**2 + f.imag**2
    wide = p[:, _WIDE_LO:_WIDE_HI].sum(axis=1)
    qrs = p[:, _WIDE_LO:_QRS_HI].sum(axis=1)
    ratio = np.divide(qrs, wide, out=np.zeros_like(qrs), where=wide > 1e-12)
    x2 = xc * xc
    var = x2.mean(axis=1)
    kurt = np.divide((x2 * x2).mean(axis=1), var**2, out=np.zeros_like(var), where=var > 1e-12)
    s_band = np.clip((ratio - 0.30) / 0.30, 0.0, 1.0)
    s_kurt = np.clip((kurt - 3.5) / 3.5, 0.0, 1.0)
    out = 0.5 * (s_band + s_kurt)
    out[var <= 1e-12] = 0.0
    return out


def _znorm(a: np.ndarray) -> np.ndarray:
    """Rows zero-mean and unit-norm (a flat row stays 0)."""
    c = a - a.mean(axis=-1, keepdims=True)
    n = np.sqrt((c**2).sum(axis=-1, keepdims=True))
    return np.divide(c, n, out=np.zeros_like(c), where=n > 1e-9)


def morphology(windows: np.ndarray) -> dict[str, np.ndarray]:
    """Vectorised per-beat measurements of ``[k, 720]`` windows: the :data:`MORPH_NAMES` arrays, ``sqi``,
    ``nan`` flags and the aligned template segment ``seg`` ``[k, 250]``."""
    x, had_nan = _windows(windows)
    k = x.shape[0]
    rows = np.arange(k)[:, None]
    near = x[:, CENTER - _ALIGN : CENTER + _ALIGN + 1]
    r = CENTER - _ALIGN + np.abs(near).argmax(axis=1)
    r_amp = x[np.arange(k), r]
    qrs = x[rows, r[:, None] + np.arange(-_QRS, _QRS + 1)]
    wid = x[rows, r[:, None] + np.arange(-_WID, _WID + 1)]
    d = np.abs(np.diff(wid, axis=1))
    dmax = d.max(axis=1, keepdims=True)
    above = d > 0.25 * np.maximum(dmax, 1e-9)
    first = above.argmax(axis=1)
    last = above.shape[1] - 1 - above[:, ::-1].argmax(axis=1)
    width = np.where(dmax[:, 0] > 1e-9, (last - first + 1) / FS, 0.0)
    dq = np.diff(qrs, axis=1) * FS
    seg = x[rows, r[:, None] + np.arange(_B0, _B1)]
    t = x[rows, r[:, None] + np.arange(_T0, _T1)]
    p = x[rows, r[:, None] + np.arange(_P0, _P1)]
    t_amp = t[np.arange(k), np.abs(t).argmax(axis=1)]
    return {
        "r_amp": r_amp,
        "qrs_pp": qrs.max(axis=1) - qrs.min(axis=1),
        "qrs_width_s": width,
        "qrs_energy": (qrs**2).sum(axis=1) / FS,
        "qrs_area": qrs.sum(axis=1) / FS,
        "qrs_area_abs": np.abs(qrs).sum(axis=1) / FS,
        "slope_up": dq.max(axis=1),
        "slope_down": dq.min(axis=1),
        "t_amp": t_amp,
        "p_energy": (p**2).sum(axis=1) / FS,
        "sqi": _sqi(x),
        "nan": had_nan,
        "seg": seg,
    }


class BeatFeaturizer:
    """One stream's feature state: its RR averages and its dominant-beat template (see module docstring)."""

    def __init__(self) -> None:
        self.n_rr = 0
        self.avg_rr: float | None = None
        self.local: deque[float] = deque(maxlen=_LOCAL)
        self.template: np.ndarray | None = None  # [250] aligned segment (mV)
        self.template_z: np.ndarray | None = None
        self.tpl_pp = 0.0
        self.tpl_energy = 0.0
        self.tpl_width = 0.0
        self.n_matched = 0
        self.matches: deque[bool] = deque(maxlen=16)
        self.cae_ref: float | None = None
        self.vae_ref: float | None = None
        self.emb_ref: np.ndarray | None = None

    def features(
        self,
        window_720: np.ndarray,
        rr: RRContext | None,
        cae_score: float | None,
        vae_score: float | None,
        vae_embedding: Sequence[float] | None,
        recovered: bool = False,
    ) -> np.ndarray:
        """The feature vector (float32, ``len(FEATURE_NAMES)``) of one beat; updates the stream state."""
        return featurize(
            [self],
            np.asarray(window_720)[None],
            [rr],
            [cae_score],
            [vae_score],
            [vae_embedding],
            [recovered],
        )[0][0]

    # ------------------------------------------------------------------ state update of one beat
    def _step(
        self,
        out: np.ndarray,
        seg_z: np.ndarray,
        seg: np.ndarray,
        m: tuple[float, float, float],
        rr: RRContext | None,
        cae: float | None,
        vae: float | None,
        emb: np.ndarray | None,
    ) -> np.ndarray:
        """Write the RR and state-dependent features of one beat into ``out``; returns the template the
        beat is compared with (before this beat updates it)."""
        pp, energy, width = m
        avg = self.avg_rr
        pre = None if rr is None or rr.pre_s is None else min(max(rr.pre_s, _RR_MIN), _RR_MAX)
        post = None if rr is None or rr.post_s is None else min(max(rr.post_s, _RR_MIN), _RR_MAX)
        local = sum(self.local) / len(self.local) if self.local else None
        if pre is None:
            out[0:5] = 1.0
            out[6] = 1.0
        else:
            ref = avg if avg is not None else pre
            loc = local if local is not None else ref
            po = post if post is not None else pre
            out[0] = pre / ref
            out[1] = po / ref
            out[2] = po / pre
            out[3] = pre / loc
            out[4] = loc / ref
            out[6] = 0.0
        out[5] = avg if avg is not None else (pre if pre is not None else 0.8)
        prev = self.local[-1] if self.local else None
        out[7] = pre / prev if pre is not None and prev is not None else 1.0
        if len(self.local) >= 3 and local is not None:
            var = sum([(v - local) ** 2 for v in self.local]) / len(self.local)
            out[8] = math.sqrt(var) / local
        else:
            out[8] = 0.0
        premature = pre is not None and local is not None and pre / local < _NOT_PREMATURE
        if pre is not None:
            self.n_rr += 1
            a = max(pre / _TAU_S, 1.0 / self.n_rr)
            self.avg_rr = pre if avg is None else (1 - a) * avg + a * pre
            self.local.append(pre)
        # template
        tpl = self.template
        if tpl is None or self.template_z is None:
            corr = 1.0
            tpl_used = seg
            out[_I_LOG_PP] = 0.0
            out[_I_LOG_ENERGY] = 0.0
            out[_I_WIDTH_DIFF] = 0.0
        else:
            corr = float(seg_z @ self.template_z)
            tpl_used = tpl
            out[_I_LOG_PP] = math.log((pp + 1e-3) / (self.tpl_pp + 1e-3))
            out[_I_LOG_ENERGY] = math.log((energy + 1e-5) / (self.tpl_energy + 1e-5))
            out[_I_WIDTH_DIFF] = width - self.tpl_width
        n_matches = sum(self.matches)
        out[_I_MATCHES] = n_matches / 16.0
        match = corr > _MATCH_CORR and not premature
        restart = tpl is not None and not premature and len(self.matches) >= 16 and n_matches < 4
        if tpl is None or restart:
            self.template = seg.copy()
            self.tpl_pp, self.tpl_energy, self.tpl_width = pp, energy, width
            self.n_matched = 1
            self.matches.clear()
            self.cae_ref = cae
            self.vae_ref = vae
            self.emb_ref = None if emb is None else emb.copy()
        elif match:
            self.n_matched += 1
            a = max(_TPL_ALPHA, 1.0 / self.n_matched)
            self.template = (1 - a) * tpl + a * seg
            self.tpl_pp = (1 - a) * self.tpl_pp + a * pp
            self.tpl_energy = (1 - a) * self.tpl_energy + a * energy
            self.tpl_width = (1 - a) * self.tpl_width + a * width
            if cae is not None:
                self.cae_ref = cae if self.cae_ref is None else (1 - a) * self.cae_ref + a * cae
            if vae is not None:
                self.vae_ref = vae if self.vae_ref is None else (1 - a) * self.vae_ref + a * vae
            if emb is not None:
                self.emb_ref = (
                    emb.copy() if self.emb_ref is None else (1 - a) * self.emb_ref + a * emb
                )
        if self.template is not tpl and self.template is not None:
            # np.add.reduce / size: the same number as .mean(), without its Python wrapper
            c = self.template - np.add.reduce(self.template) / self.template.size
            n = math.sqrt(float(c @ c))
            self.template_z = c / n if n > 1e-9 else c * 0.0
        self.matches.append(bool(match))
        # score references (before this beat's update when it had one)
        out[_I_CAE] = cae if cae is not None else 0.0
        out[_I_CAE_REL] = 0.0
        return tpl_used


_VAE_MSE_FLOOR = 1e-3


def _embeddings(emb: Sequence[Sequence[float] | None]) -> list[np.ndarray | None]:
    """Each beat's VAE latent mean as float64 ``[LATENT]`` (None when missing, of another length or not
    finite); one array conversion for the whole batch when every beat has one."""
    if emb and all(e is not None and len(e) == LATENT for e in emb):
        arr = np.array(emb, dtype=np.float64)
        if arr.shape == (len(emb), LATENT):
            ok = np.asarray(np.isfinite(arr).all(axis=1)).tolist()
            return [row if good else None for row, good in zip(arr, ok, strict=True)]
    out: list[np.ndarray | None] = []
    for e in emb:
        a = None if e is None else np.asarray(e, dtype=np.float64)
        out.append(a if a is not None and a.shape == (LATENT,) and np.isfinite(a).all() else None)
    return out


def featurize(
    featurizers: Sequence[BeatFeaturizer],
    windows: np.ndarray,
    rrs: Sequence[RRContext | None],
    cae: Sequence[float | None],
    vae: Sequence[float | None],
    emb: Sequence[Sequence[float] | None],
    recovered: Sequence[bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``[k, F]`` (float32) and SQI ``[k]`` of ``k`` beats in stream order, beat ``i`` of the
    stream whose state is ``featurizers[i]`` (the same object for beats of one stream; their state is
    updated beat by beat, so the result does not depend on how beats are batched). Morphology and SQI are
    vectorised across all beats; only the state update loops."""
    k = len(featurizers)
    out = np.zeros((k, N_FEATURES), dtype=np.float64)
    if k == 0:
        return out.astype(np.float32), np.zeros(0, dtype=np.float32)
    m = morphology(windows)
    for name in MORPH_NAMES:
        out[:, _IDX[name]] = m[name]
    seg = m["seg"]
    seg_z = _znorm(seg)
    cae_v = [None if c is None or not math.isfinite(c) else float(c) for c in cae]
    vae_v = [
        None if v is None or not math.isfinite(v) else math.log(max(float(v), 0.0) + _VAE_MSE_FLOOR)
        for v in vae
    ]
    emb_v = _embeddings(emb)
    tpls = np.empty_like(seg)
    refs = np.zeros((k, 2))
    emb_ref = np.zeros((k, LATENT))
    pp, en, wd = m["qrs_pp"], m["qrs_energy"], m["qrs_width_s"]
    for i, f in enumerate(featurizers):
        cae_ref, vae_ref, e_ref = f.cae_ref, f.vae_ref, f.emb_ref
        tpls[i] = f._step(
            out[i],
            seg_z[i],
            seg[i],
            (float(pp[i]), float(en[i]), float(wd[i])),
            rrs[i],
            cae_v[i],
            vae_v[i],
            emb_v[i],
        )
        refs[i, 0] = cae_ref if cae_ref is not None and cae_v[i] is not None else np.nan
        refs[i, 1] = vae_ref if vae_ref is not None and vae_v[i] is not None else np.nan
        if e_ref is not None and emb_v[i] is not None:
            emb_ref[i] = e_ref
        elif emb_v[i] is not None:
            emb_ref[i] = emb_v[i]
    # correlations with the template each beat was compared with
    tz = _znorm(tpls)
    out[:, _IDX["corr_beat"]] = (seg_z * tz).sum(axis=1)
    for name, lo, hi in (
        ("corr_qrs", -_QRS - _B0, _QRS + 1 - _B0),
        ("corr_p", _P0 - _B0, _P1 - _B0),
        ("corr_t", _T0 - _B0, _T1 - _B0),
    ):
        out[:, _IDX[name]] = (_znorm(seg[:, lo:hi]) * _znorm(tpls[:, lo:hi])).sum(axis=1)
    cae_arr = out[:, _IDX["cae"]]
    out[:, _IDX["cae_rel"]] = np.where(
        np.isfinite(refs[:, 0]), cae_arr - np.nan_to_num(refs[:, 0]), 0.0
    )
    vae_missing = np.array([v is None for v in vae_v])
    vae_arr = np.array([0.0 if v is None else v for v in vae_v])
    out[:, _IDX["vae_log_mse"]] = np.where(vae_missing, 0.0, vae_arr)
    out[:, _IDX["vae_rel"]] = np.where(
        np.isfinite(refs[:, 1]), vae_arr - np.nan_to_num(refs[:, 1]), 0.0
    )
    out[:, _IDX["vae_missing"]] = np.array([e is None for e in emb_v]) | vae_missing
    e0 = _IDX[EMB_NAMES[0]]
    d0 = _IDX[EMB_REL_NAMES[0]]
    have = [i for i, ev in enumerate(emb_v) if ev is not None]
    if have:
        ev_rows = np.stack([emb_v[i] for i in have])  # type: ignore[misc]
        out[have, e0 : e0 + LATENT] = ev_rows
        out[have, d0 : d0 + LATENT] = ev_rows - emb_ref[have]
    out[:, _IDX["sqi"]] = m["sqi"]
    rec = np.zeros(k, dtype=bool) if recovered is None else np.asarray(recovered, dtype=bool)
    out[:, _IDX["recovered"]] = rec | m["nan"]
    np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out.astype(np.float32), m["sqi"].astype(np.float32)
