"""ONNX Runtime wrapper of ``lead_recon`` (no torch): missing leads from the present ones.

``LeadReconModel.predict(x, mask)`` returns all 12 leads in mV: present leads copied through, limb
leads computed exactly when two limb leads are present (Einthoven III = II - I; Goldberger
aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2; any two of the six give I and II), the other
missing leads from the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.runtime.base import OnnxModel
from stream.errors import ModelError

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


@dataclass(frozen=True)
class LeadReconPrediction:
    """``leads`` [B, 1000, 12] mV; ``derived`` [B, 12] limb leads computed exactly; ``learned`` [B, 12]
    leads produced by the network."""

    leads: np.ndarray
    derived: np.ndarray
    learned: np.ndarray


class LeadReconModel(OnnxModel):
    """``lead_recon.onnx`` + card."""

    default_name = "lead_recon"

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
            raise ModelError(f"mask must be [12] or [B, 12] matching x, got {m.shape} for x {arr.shape}")
        if not (m > 0).any(axis=1).all():
            raise ModelError("every window needs at least one present lead")
        m = (m > 0).astype(np.float32)
        arr = np.where(m[:, None, :] > 0, np.nan_to_num(arr), 0.0).astype(np.float32)
        outs = [self.run({"ecg": arr[s : s + batch], "mask": m[s : s + batch]})["recon"] for s in range(0, arr.shape[0], batch)]
        recon = np.concatenate(outs)
        merged = np.where(m[:, None, :] > 0, arr, recon)
        leads, derived = derive_limb_leads(merged, m)
        return LeadReconPrediction(leads=leads, derived=derived, learned=(m == 0) & ~derived)
