"""ONNX Runtime wrapper of ``lead_recon`` (no torch): missing leads from the present ones.

``LeadReconModel.predict(x, mask)`` returns all 12 leads in mV: present leads copied through, limb
leads computed exactly when two limb leads are present (Einthoven III = II - I; Goldberger
aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2; any two of the six give I and II), the other
missing leads from the network.

Present-set routing: next to ``lead_recon.onnx`` (any subset of leads) the wrapper loads the dedicated
models whose card says ``role: component`` and ``member_of: lead_recon`` and lists ``present_leads``; a window whose present leads
are exactly that set goes to the dedicated model (today ``lead_recon_ii.onnx``: lead II alone), every
other window to the general model. Without the dedicated artifact the general model serves all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Self

import numpy as np

from models.card import list_cards
from models.errors import ModelError
from models.preprocessing.leads import TWELVE_LEADS
from models.runtime.base import OnnxModel
from models.runtime.protocol import Recovered, Window
from models.runtime.registry import register

LIMB_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF")
#: each limb lead as a * I + b * II
LIMB_COEFFS = np.array(
    [[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0], [-0.5, -0.5], [1.0, -0.5], [-0.5, 1.0]],
    dtype=np.float64,
)
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
            pred = self.predict(
                np.stack([w.data for w, _ in pairs]), np.stack([p for _, p in pairs])
            )
        except ModelError as exc:
            return [], lost + [(w, f"model_error: {exc}") for w, _ in pairs]
        out = [
            Recovered(replace(w, data=x), self.name, float(1.0 - p.mean()))
            for (w, p), x in zip(pairs, pred.leads, strict=True)
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
        return LeadReconPrediction(leads=leads, derived=derived, learned=(m == 0) & ~derived)
