"""12-lead augmentation by rotating the heart's electrical axis (pure numpy).

The 12 leads are close to linear projections of the cardiac dipole (the vectorcardiogram, VCG, X/Y/Z).
Rotating the VCG by a small random 3-D rotation gives the ECG of a plausible "other patient" whose
heart sits at a slightly different orientation, with every inter-lead relation kept:

- VCG from the 8 independent leads (I, II, V1-V6) with the Kors regression matrix
  (Kors et al. 1990, Eur Heart J 11:1083);
- back-projection ``D`` (VCG -> 8 leads) fitted by least squares on training data (a data-driven inverse
  Dower transform);
- ``x8' = x8 + D (R - I) K x8``: the dipolar part rotates, the non-dipolar residual is kept;
- III, aVR, aVL, aVF recomputed from the new I and II (Einthoven, Goldberger).

Lead order: :data:`stream.records.TWELVE_LEADS` (I, II, III, aVR, aVL, aVF, V1-V6).
"""

from __future__ import annotations

import numpy as np

#: indices of the 8 independent leads I, II, V1-V6 in the 12-lead order
INDEPENDENT = np.array([0, 1, 6, 7, 8, 9, 10, 11])
#: Kors regression matrix, rows X, Y, Z; columns I, II, V1-V6
KORS = np.array(
    [
        [0.38, -0.07, -0.13, 0.05, -0.01, 0.14, 0.06, 0.54],
        [-0.07, 0.93, 0.06, -0.02, -0.05, 0.06, -0.17, 0.13],
        [0.11, -0.23, -0.43, -0.06, -0.14, -0.20, -0.11, 0.31],
    ]
)


def fit_back_projection(x: np.ndarray, max_samples: int = 200_000, seed: int = 0) -> np.ndarray:
    """Least-squares ``D`` [8, 3] with ``x8 ~= D @ (KORS @ x8)`` from 12-lead records ``x`` [n, T, 12]."""
    flat = np.asarray(x, dtype=np.float64)[..., INDEPENDENT].reshape(-1, 8)
    if flat.shape[0] > max_samples:
        flat = flat[np.random.default_rng(seed).choice(flat.shape[0], max_samples, replace=False)]
    vcg = flat @ KORS.T  # [m, 3]
    sol, *_ = np.linalg.lstsq(vcg, flat, rcond=None)  # [3, 8]
    return np.asarray(sol.T)


def random_rotations(n: int, max_deg: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotation matrices [n, 3, 3]: uniform random axes, angles uniform in [-max_deg, max_deg]."""
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    theta = np.deg2rad(rng.uniform(-max_deg, max_deg, size=n))
    k = np.zeros((n, 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(0, 2, 1)  # skew-symmetric cross-product matrices
    s, c = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
    return np.eye(3)[None] + s * k + (1.0 - c) * (k @ k)  # Rodrigues


def with_limb_leads(x: np.ndarray) -> np.ndarray:
    """``x`` [..., 12] with III, aVR, aVL, aVF recomputed from its I and II."""
    out = np.array(x, copy=True)
    lead_i, lead_ii = out[..., 0], out[..., 1]
    out[..., 2] = lead_ii - lead_i
    out[..., 3] = -0.5 * (lead_i + lead_ii)
    out[..., 4] = lead_i - 0.5 * lead_ii
    out[..., 5] = lead_ii - 0.5 * lead_i
    return out


def rotate_heart_axis(x: np.ndarray, rotations: np.ndarray, back: np.ndarray) -> np.ndarray:
    """Records ``x`` [n, T, 12] with their VCG rotated by ``rotations`` [n, 3, 3] (``back`` from
    :func:`fit_back_projection`); float32 out."""
    x8 = np.asarray(x, dtype=np.float64)[..., INDEPENDENT]  # [n, T, 8]
    vcg = x8 @ KORS.T  # [n, T, 3]
    delta = np.einsum("ntj,nij->nti", vcg, rotations) - vcg  # (R - I) v per sample
    out = np.array(x, dtype=np.float64, copy=True)
    out[..., INDEPENDENT] = x8 + delta @ back.T
    return with_limb_leads(out).astype(np.float32)
