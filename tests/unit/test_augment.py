"""Heart-axis rotation augmentation (training.augment): exact on dipolar signals, limb leads consistent."""

from __future__ import annotations

import numpy as np

from training.augment import (
    INDEPENDENT,
    KORS,
    fit_back_projection,
    random_rotations,
    rotate_heart_axis,
    with_limb_leads,
)


def _dipolar_records(n: int = 6, t: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """12-lead records that are exact projections of a 3-D dipole (plus consistent limb leads)."""
    rng = np.random.default_rng(seed)
    lead_dirs = rng.normal(size=(8, 3))
    tt = np.linspace(0.0, 10.0, t)
    vcg = np.stack(
        [np.sin(2 * np.pi * f * tt + p) for f, p in rng.uniform(0.5, 3.0, size=(3, 2))], axis=-1
    )
    vcg = vcg[None] * rng.uniform(0.5, 2.0, size=(n, 1, 3))
    x = np.zeros((n, t, 12))
    x[..., INDEPENDENT] = vcg @ lead_dirs.T
    return with_limb_leads(x), lead_dirs


def test_rotations_are_proper_and_bounded() -> None:
    rots = random_rotations(500, 25.0, np.random.default_rng(1))
    assert np.allclose(rots @ rots.transpose(0, 2, 1), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(rots), 1.0)
    angles = np.degrees(
        np.arccos(np.clip((np.trace(rots, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0))
    )
    assert angles.max() <= 25.0 + 1e-9 and angles.max() > 20.0


def test_rotation_of_a_dipolar_ecg_rotates_its_vcg_exactly() -> None:
    x, _ = _dipolar_records()
    back = fit_back_projection(x)
    x8 = x[..., INDEPENDENT]
    assert np.allclose((x8 @ KORS.T) @ back.T, x8, atol=1e-9)  # purely dipolar: D K x8 == x8
    rots = random_rotations(x.shape[0], 30.0, np.random.default_rng(2))
    out = rotate_heart_axis(x, rots, back)
    vcg_before, vcg_after = x8 @ KORS.T, out[..., INDEPENDENT].astype(np.float64) @ KORS.T
    assert np.allclose(vcg_after, np.einsum("ntj,nij->nti", vcg_before, rots), atol=1e-4)
    # Einthoven / Goldberger hold in the augmented records
    assert np.allclose(out[..., 2], out[..., 1] - out[..., 0], atol=1e-5)
    assert np.allclose(out[..., 4], out[..., 0] - 0.5 * out[..., 1], atol=1e-5)
    assert out.dtype == np.float32 and out.shape == x.shape


def test_zero_angle_is_the_identity_and_the_residual_is_kept() -> None:
    x, _ = _dipolar_records(seed=3)
    noise = np.random.default_rng(4).normal(scale=0.05, size=x.shape)
    noisy = with_limb_leads(x + noise)  # a non-dipolar residual
    back = fit_back_projection(noisy)
    same = rotate_heart_axis(
        noisy, random_rotations(x.shape[0], 0.0, np.random.default_rng(5)), back
    )
    assert np.allclose(same, noisy, atol=1e-5)
