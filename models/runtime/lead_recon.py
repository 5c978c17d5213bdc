"""ONNX Runtime wrapper of ``lead_recon`` (no torch): missing leads from the present ones.

``LeadReconModel.predict(x, mask)`` returns all 12 leads in mV: present leads copied through, limb
leads computed exactly when two limb leads are present (Einthoven III = II - I; Goldberger
aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2; any two of the six give I and II), the other
missing leads from the network.

Calibrated uncertainty (the card's ``uncertainty``, written by ``training.recovery.calibrate_recovery``):
every learned sample gets the half width of a 90 % interval, ``q[bucket][lead] * (floor_mv + envelope)``,
where ``envelope`` is the local amplitude envelope of the rebuilt lead
(:func:`~models.runtime.protocol.amplitude_envelope`), ``bucket`` the number of present leads
(:func:`present_bucket`) and ``q`` the 90 % quantile of ``|true - rebuilt| / scale`` on PTB-XL fold 9
(split conformal); measured and derived samples get 0. A window served by a dedicated model uses that
model's card's calibration.

Any lead set (2-lead MIT-BIH streams): :meth:`LeadReconModel.rebuild_leads` maps the stream's leads to
the 12 (``MLII`` -> II, ...), resamples to 100 Hz, rebuilds and resamples back; it says why a lead
cannot be rebuilt, and withholds a rebuild the card marks unusable (``uncertainty.two_lead``).

Present-set routing: next to ``lead_recon.onnx`` (any subset of leads) the wrapper loads the dedicated
models whose card says ``role: component`` and ``member_of: lead_recon`` and lists ``present_leads``; a window whose present leads
are exactly that set goes to the dedicated model (today ``lead_recon_ii.onnx``: lead II alone), every
other window to the general model. Without the dedicated artifact the general model serves all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

import numpy as np

from models.card import ModelCard, list_cards
from models.errors import ModelError
from models.preprocessing.leads import TWELVE_LEADS
from models.preprocessing.segmentation import resample
from models.runtime.base import OnnxModel
from models.runtime.protocol import (
    DERIVED,
    MEASURED,
    MODEL,
    UNRECOVERABLE,
    Recovered,
    Window,
    amplitude_envelope,
    stack_data,
)
from models.runtime.registry import register

LIMB_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF")
#: each limb lead as a * I + b * II
LIMB_COEFFS = np.array(
    [[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0], [-0.5, -0.5], [1.0, -0.5], [-0.5, 1.0]],
    dtype=np.float64,
)
#: the model's rate and window (leads_10s)
FS = 100.0
SAMPLES = 1000
#: stream lead names -> the 12-lead name they stand for (MIT-BIH's modified limb leads MLI/MLII/MLIII)
LEAD_EQUIVALENT: dict[str, str] = {
    **{lead: lead for lead in TWELVE_LEADS},
    "MLI": "I",
    "MLII": "II",
    "MLIII": "III",
}
#: buckets of the number of present leads the calibration keys its quantiles by
BUCKETS: tuple[tuple[str, int, int], ...] = (
    ("11", 11, 11),
    ("8-10", 8, 10),
    ("4-7", 4, 7),
    ("2-3", 2, 3),
    ("1", 1, 1),
)


def present_bucket(n_present: int) -> str:
    """The calibration bucket of a window with ``n_present`` complete leads (1-11)."""
    for name, lo, hi in BUCKETS:
        if lo <= n_present <= hi:
            return name
    raise ModelError(f"no calibration bucket for {n_present} present leads")


@dataclass(frozen=True)
class IntervalCalibration:
    """A card's ``uncertainty`` section: the 90 % half width of a learned sample of lead ``lead`` in a
    window of bucket ``b`` is ``quantile[b][lead] * (floor_mv + envelope)`` (``quantile[b]["all"]`` when
    the lead has no own value; the nearest calibrated bucket when ``b`` has none)."""

    floor_mv: float
    envelope_half_s: float
    quantile: Mapping[str, Mapping[str, float]]
    coverage: float = 0.9
    two_lead: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_card(cls, card: ModelCard) -> IntervalCalibration | None:
        """The card's calibration, None when it has none (uncalibrated models give no intervals)."""
        raw = card.get("uncertainty")
        if not isinstance(raw, dict) or not raw.get("quantile"):
            return None
        scale = raw.get("scale") or {}
        try:
            return cls(
                floor_mv=float(scale["floor_mv"]),
                envelope_half_s=float(scale["envelope_half_s"]),
                quantile={
                    str(b): {str(k): float(v) for k, v in q.items()}
                    for b, q in raw["quantile"].items()
                },
                coverage=float(raw.get("coverage", 0.9)),
                two_lead=dict(raw.get("two_lead") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"{card.name}: malformed uncertainty section: {exc!r}") from exc

    def q(self, bucket: str, lead: str) -> float:
        order = [b for b, _, _ in BUCKETS]
        if bucket in self.quantile:
            cands = [bucket]
        else:  # nearest calibrated bucket by position
            i = order.index(bucket) if bucket in order else 0
            cands = sorted(
                (b for b in self.quantile if b in order), key=lambda b: abs(order.index(b) - i)
            ) or list(self.quantile)
        table = self.quantile[cands[0]]
        return float(table.get(lead, table.get("all", max(table.values()))))

    def scale(self, leads: np.ndarray) -> np.ndarray:
        """The difficulty scale ``floor_mv + envelope`` of rebuilt leads [..., T, L] at 100 Hz."""
        return lead_scale(leads, self.floor_mv, self.envelope_half_s)


def lead_scale(leads: np.ndarray, floor_mv: float, envelope_half_s: float) -> np.ndarray:
    """``floor_mv + envelope`` of ``leads`` [..., T, L] (100 Hz), time on axis -2."""
    env = amplitude_envelope(leads, FS, envelope_half_s, axis=-2)
    return (floor_mv + env).astype(np.float32)


@dataclass(frozen=True)
class LeadRebuild:
    """:meth:`LeadReconModel.rebuild_leads`'s answer.

    ``recovered``: the input with its missing samples filled (stream leads and rate; ``provenance`` and
    ``half_width_90`` set), None when nothing could or should be rebuilt; ``reason``: why a lead is left
    missing or the rebuild withheld (None when every missing lead was rebuilt); ``usable``: False when the
    card's two-lead evaluation found this direction too poor to publish (the rebuild is then withheld
    unless asked for); ``rebuilt`` / ``unrecoverable``: stream lead names."""

    recovered: Recovered | None
    reason: str | None
    usable: bool = True
    rebuilt: tuple[str, ...] = ()
    unrecoverable: tuple[str, ...] = ()


#: input leads of the evaluated configurations
CONFIGURATIONS: dict[str, tuple[str, ...]] = {
    "I_II_V4": ("I", "II", "V4"),
    "II_only": ("II",),
    "leave_one_out": (),
}


def derive_limb_leads(leads: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill missing limb leads exactly from present ones.

    ``leads`` [B, T, 12] (present leads hold recorded values), ``mask`` [B, 12] (1 = present).
    Where at least two limb leads are present, I and II are solved (least squares) from them and every
    missing limb lead is computed. Returns ``(leads, derived [B, 12] bool)``.
    """
    out = np.array(leads, dtype=np.float32, copy=True)
    present = np.asarray(mask) > 0
    derived = np.zeros(present.shape, dtype=bool)
    for b in range(out.shape[0]):
        have = np.flatnonzero(present[b, :6])
        if have.size < 2:
            continue
        a = LIMB_COEFFS[have]  # [k, 2]; any two distinct limb leads are independent
        sol, *_ = np.linalg.lstsq(a, out[b][:, have].T.astype(np.float64), rcond=None)  # [2, T]
        miss = np.flatnonzero(~present[b, :6])
        if miss.size:
            out[b][:, miss] = (LIMB_COEFFS[miss] @ sol).T.astype(np.float32)
            derived[b, miss] = True
    return out, derived


def blend_single(dedicated: np.ndarray, general: np.ndarray, weight: float) -> np.ndarray:
    """Blend of the lead-II model with the general model on {II} windows ([B, T, 12] mV each):
    ``weight * dedicated + (1 - weight) * general`` for every lead but II (kept from ``dedicated``,
    i.e. recorded), then III, aVR, aVL, aVF recomputed from the blended I and the recorded II."""
    if weight >= 1.0:
        return dedicated
    out = weight * dedicated + (1.0 - weight) * general
    out[:, :, 1] = dedicated[:, :, 1]
    m = np.zeros((out.shape[0], 12), dtype=np.float32)
    m[:, :2] = 1.0
    return derive_limb_leads(out, m)[0]


@dataclass(frozen=True)
class LeadReconPrediction:
    """``leads`` [B, 1000, 12] mV; ``derived`` [B, 12] limb leads computed exactly; ``learned`` [B, 12]
    leads produced by the network."""

    leads: np.ndarray
    derived: np.ndarray
    learned: np.ndarray
    #: [B, 1000, 12] mV: 90 % interval half width (0 on present and derived leads); None uncalibrated
    half_width_90: np.ndarray | None = None


def _lead_recon_from_path(path: Path) -> LeadReconModel:
    return LeadReconModel.load(path.stem, path.parent)


@register("lead_recon", _lead_recon_from_path)
class LeadReconModel(OnnxModel):
    """``lead_recon.onnx`` + card."""

    default_name = "lead_recon"

    def __init__(
        self, onnx_path: str | Path, card_path: str | Path | None = None, threads: int = 1
    ) -> None:
        super().__init__(onnx_path, card_path, threads)
        self.dedicated: list[tuple[np.ndarray, OnnxModel]] = []
        self.calibration = IntervalCalibration.from_card(self.card)
        self._calibrations: dict[int, IntervalCalibration | None] = {id(self): self.calibration}

    @classmethod
    def load(cls, name: str | None = None, models_dir: str | Path | None = None) -> Self:
        """The general model plus its dedicated members: the cards beside it with ``member_of`` = its name."""
        model = super().load(name, models_dir)
        for card in list_cards(model.onnx_path.parent):
            if card.role == "component" and card.member_of == model.name:
                model.add_dedicated(OnnxModel(model.onnx_path.with_name(card.onnx_file)))
        return model

    def recover(
        self, windows: Sequence[Window]
    ) -> tuple[list[Recovered], list[tuple[Window, str]]]:
        """Rebuild the incomplete leads of 12-lead windows from their complete ones; a window with no
        complete lead is a dropout."""
        present = [np.isfinite(w.data).all(axis=0) for w in windows]  # [12] per window
        pairs = [(w, p) for w, p in zip(windows, present, strict=True) if p.any()]
        lost: list[tuple[Window, str]] = [
            (w, "dropout") for w, p in zip(windows, present, strict=True) if not p.any()
        ]
        if not pairs:
            return [], lost
        try:
            pred = self.predict(stack_data([w for w, _ in pairs]), np.stack([p for _, p in pairs]))
        except ModelError as exc:
            return [], lost + [(w, f"model_error: {exc}") for w, _ in pairs]
        prov = np.full(pred.leads.shape, MEASURED, dtype=np.uint8)
        prov[np.broadcast_to(pred.derived[:, None, :], prov.shape)] = DERIVED
        prov[np.broadcast_to(pred.learned[:, None, :], prov.shape)] = MODEL
        hw = pred.half_width_90
        out = [
            Recovered(
                replace(w, data=x),
                self.name,
                float(1.0 - p.mean()),
                provenance=prov[i],
                half_width_90=None if hw is None else hw[i],
            )
            for i, ((w, p), x) in enumerate(zip(pairs, pred.leads, strict=True))
        ]
        return out, lost

    def add_dedicated(self, model: OnnxModel) -> None:
        """Route windows whose present leads are exactly ``model.card['present_leads']`` to ``model``."""
        leads = model.card.get("present_leads")
        unknown = set(leads or ()) - set(TWELVE_LEADS)
        if not leads or unknown:
            raise ModelError(
                f"{model.onnx_path.name}: card needs present_leads from {TWELVE_LEADS}, got {leads!r}"
            )
        key = np.zeros(12, dtype=bool)
        key[[TWELVE_LEADS.index(lead) for lead in leads]] = True
        self.dedicated.append((key, model))
        self._calibrations[id(model)] = IntervalCalibration.from_card(model.card)

    def calibration_for(self, model: OnnxModel) -> IntervalCalibration | None:
        """The interval calibration of windows served by ``model`` (its own card's, else the general
        model's)."""
        return self._calibrations.get(id(model)) or self.calibration

    def model_for(self, mask: np.ndarray) -> OnnxModel:
        """The model serving one window's presence ``mask`` [12]: a dedicated one or the general one."""
        present = np.asarray(mask) > 0
        for key, model in self.dedicated:
            if np.array_equal(key, present):
                return model
        return self

    def predict(self, x: np.ndarray, mask: np.ndarray, batch: int = 64) -> LeadReconPrediction:
        """``x`` [1000, 12] or [B, 1000, 12] filtered mV (missing leads: any finite value, e.g. 0);
        ``mask`` [12] or [B, 12] (truthy = present)."""
        arr = np.asarray(x, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        m = np.asarray(mask, dtype=np.float32)
        if m.ndim == 1:
            m = np.broadcast_to(m, (arr.shape[0], m.shape[0]))
        if m.shape != (arr.shape[0], 12):
            raise ModelError(
                f"mask must be [12] or [B, 12] matching x, got {m.shape} for x {arr.shape}"
            )
        if not (m > 0).any(axis=1).all():
            raise ModelError("every window needs at least one present lead")
        m = (m > 0).astype(np.float32)
        arr = np.where(m[:, None, :] > 0, np.nan_to_num(arr), 0.0).astype(np.float32)
        route = [self.model_for(row) for row in m]
        recon = np.empty_like(arr)
        for model in {id(r): r for r in route}.values():
            rows = np.flatnonzero([r is model for r in route])
            weight = (
                float((model.card.get("blend") or {}).get("weight", 1.0))
                if model is not self
                else 1.0
            )
            for s in range(0, rows.size, batch):
                b = rows[s : s + batch]
                recon[b] = model.run({"ecg": arr[b], "mask": m[b]})["recon"]
                if weight < 1.0:  # card: blend with the general model (weight chosen on validation)
                    general = self.run({"ecg": arr[b], "mask": m[b]})["recon"]
                    recon[b] = blend_single(
                        np.where(m[b][:, None, :] > 0, arr[b], recon[b]), general, weight
                    )
        merged = np.where(m[:, None, :] > 0, arr, recon)
        leads, derived = derive_limb_leads(merged, m)
        learned = (m == 0) & ~derived
        return LeadReconPrediction(
            leads=leads,
            derived=derived,
            learned=learned,
            half_width_90=self._half_width(leads, m, learned, route),
        )

    def _half_width(
        self, leads: np.ndarray, m: np.ndarray, learned: np.ndarray, route: list[OnnxModel]
    ) -> np.ndarray | None:
        """90 % half widths [B, T, 12] of the learned samples (0 elsewhere); None uncalibrated."""
        cals = [self.calibration_for(r) for r in route]
        if any(c is None for c in cals):
            return None
        hw = np.zeros(leads.shape, dtype=np.float32)
        for b, cal in enumerate(cals):
            assert cal is not None
            cols = np.flatnonzero(learned[b])
            if not cols.size:
                continue
            bucket = present_bucket(int((m[b] > 0).sum()))
            q = np.array([cal.q(bucket, TWELVE_LEADS[j]) for j in cols], dtype=np.float32)
            hw[b][:, cols] = q[None, :] * cal.scale(leads[b][:, cols])
        return hw

    def rebuild_leads(
        self,
        data: np.ndarray,
        fs: float,
        leads: Sequence[str],
        *,
        stream_id: str = "",
        start: float = 0.0,
        allow_unusable: bool = False,
    ) -> LeadRebuild:
        """Rebuild the missing samples of a window of ANY lead set: ``data`` [T, k] band-passed mV at
        ``fs`` (NaN = missing), ``leads`` the stream's names (``MLII`` stands for II, ``MLI`` for I, ``MLIII``
        for III; other names outside the 12 leads have no equivalent).

        Complete leads (no NaN) with a 12-lead equivalent are the present set; the window is resampled
        to 100 Hz, cut into 10 s pieces (the last padded), rebuilt by :meth:`predict` and the missing
        samples filled from the result resampled back to ``fs`` (measured samples kept). A lead with no
        12-lead equivalent, or any lead when no present lead has one, stays NaN (provenance
        ``unrecoverable``) and ``reason`` says why. When the card's two-lead evaluation
        (``uncertainty.two_lead``, keyed ``"<present>-><target>"`` in 12-lead names) marks the direction
        unusable, the rebuild is withheld (``recovered`` None, ``usable`` False, ``reason`` quoting the
        evaluation) unless ``allow_unusable``."""
        x = np.asarray(data, dtype=np.float32)
        if x.ndim == 1:
            x = x[:, None]
        names = tuple(leads)
        if x.ndim != 2 or x.shape[1] != len(names) or x.shape[0] == 0:
            raise ModelError(f"data must be [T, {len(names)}] for leads {names}, got {x.shape}")
        if fs <= 0:
            raise ModelError(f"fs must be positive, got {fs}")
        if len(set(names)) != len(names):
            raise ModelError(f"duplicate lead names in {names}")
        complete: np.ndarray = np.asarray(np.isfinite(x).all(axis=0), dtype=bool)
        twelve = [LEAD_EQUIVALENT.get(n) for n in names]
        missing = [i for i in range(len(names)) if not complete[i]]
        window = Window(stream_id, "leads_rebuild", None, start, fs, x)
        if not missing:
            prov = np.full(x.shape, MEASURED, dtype=np.uint8)
            return LeadRebuild(
                Recovered(window, self.name, 0.0, prov, np.zeros(x.shape, np.float32)), None
            )
        first: dict[str, int] = {}  # one present column per 12-lead equivalent
        for i in range(len(names)):
            eq = twelve[i]
            if complete[i] and eq is not None:
                first.setdefault(eq, i)
        present = list(first.values())
        if not present:
            why = (
                "unrecoverable: no complete lead with a 12-lead equivalent "
                f"(complete: {[names[i] for i in range(len(names)) if complete[i]]})"
            )
            return LeadRebuild(None, why, True, (), tuple(names[i] for i in missing))
        reasons = [
            f"unrecoverable: lead {names[i]!r} has no 12-lead equivalent"
            for i in missing
            if twelve[i] is None
        ]
        lost = [names[i] for i in missing if twelve[i] is None]
        targets = [i for i in missing if twelve[i] is not None]
        if not targets:
            return LeadRebuild(None, "; ".join(reasons), True, (), tuple(lost))
        src = "+".join(sorted(str(twelve[i]) for i in present))
        bad = []
        for i in targets:
            verdict = (self.calibration.two_lead if self.calibration else {}).get(
                f"{src}->{twelve[i]}"
            )
            if verdict is not None and not verdict.get("usable", True):
                bad.append(
                    f"unusable: {src}->{twelve[i]} rebuild ({names[i]}): "
                    f"{verdict.get('reason', 'poor on the two-lead evaluation')}"
                )
        usable = not bad
        if bad and not allow_unusable:
            return LeadRebuild(
                None, "; ".join(reasons + bad), False, (), tuple(lost + [names[i] for i in targets])
            )
        filled, hw100 = self._rebuild_100hz(x, fs, present, list(first))
        n = x.shape[0]
        t_out = np.arange(n) / fs
        t_100 = np.arange(filled.shape[0]) / FS
        out = x.copy()
        prov = np.where(np.isfinite(x), MEASURED, UNRECOVERABLE).astype(np.uint8)
        hw = np.where(np.isfinite(x), 0.0, np.nan).astype(np.float32)
        derived = self._derived_set(list(first))
        for i in targets:
            j = TWELVE_LEADS.index(str(twelve[i]))
            y = _fit_len(resample(filled[:, j], FS, fs), n)
            gap = ~np.isfinite(x[:, i])
            out[gap, i] = y[gap]
            prov[gap, i] = DERIVED if j in derived else MODEL
            if hw100 is None:
                hw[gap, i] = np.nan
            else:
                hw[gap, i] = 0.0 if j in derived else np.interp(t_out, t_100, hw100[:, j])[gap]
        frac = float(np.mean(prov != MEASURED))
        rec = Recovered(
            replace(window, data=out),
            self.name,
            frac,
            provenance=prov,
            half_width_90=None if hw100 is None else hw,
        )
        return LeadRebuild(
            rec,
            "; ".join(reasons + bad) or None,
            usable,
            tuple(names[i] for i in targets),
            tuple(lost),
        )

    @staticmethod
    def _derived_set(present12: Sequence[str]) -> set[int]:
        """12-lead indices exact from the present leads: the present ones themselves (a stream lead
        standing for a present one, e.g. II beside MLII) and every limb lead when two limb leads are
        present."""
        out = {TWELVE_LEADS.index(p) for p in present12}
        if sum(p in LIMB_LEADS for p in present12) >= 2:
            out |= set(range(6))
        return out

    def _rebuild_100hz(
        self, x: np.ndarray, fs: float, present: list[int], present12: list[str]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The 12 leads at 100 Hz [N, 12] rebuilt from the ``present`` columns of ``x``, and their 90 %
        half widths (None uncalibrated), over ceil(N / 1000) windows of 10 s."""
        cols = _fit_len(resample(x[:, present], fs, FS, axis=0), round(x.shape[0] * FS / fs))
        n100 = cols.shape[0]
        pieces = max(1, -(-n100 // SAMPLES))
        buf = np.zeros((pieces * SAMPLES, 12), dtype=np.float32)
        idx = [TWELVE_LEADS.index(p) for p in present12]
        buf[:n100, idx] = cols
        if pieces * SAMPLES > n100:  # pad the last piece with its last values
            buf[n100:, idx] = cols[-1]
        mask = np.zeros(12, dtype=np.float32)
        mask[idx] = 1.0
        pred = self.predict(buf.reshape(pieces, SAMPLES, 12), mask)
        leads = pred.leads.reshape(-1, 12)[:n100]
        hw = None if pred.half_width_90 is None else pred.half_width_90.reshape(-1, 12)[:n100]
        return leads, hw


def _fit_len(x: np.ndarray, n: int) -> np.ndarray:
    """Crop or edge-pad axis 0 of ``x`` to ``n`` samples (polyphase resampling may be off by one)."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[0] >= n:
        return x[:n]
    return np.pad(x, [(0, n - x.shape[0])] + [(0, 0)] * (x.ndim - 1), mode="edge")
