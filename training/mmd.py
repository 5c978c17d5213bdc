"""Maximum mean discrepancy (MMD) with a Gaussian kernel and a permutation p-value.

Protocol used for the beat VAE (stated in full in its card and in ``evaluate beat_vae --json``):

- kernel ``k(x, y) = exp(-||x - y||^2 / (2 sigma^2))`` on the 400-sample z-scored beats;
- bandwidth ``sigma`` = median pairwise Euclidean distance of the *real* reference sample (fixed
  before any model output is seen; the same sigma for every comparison);
- statistic: unbiased MMD^2 (Gretton et al., JMLR 2012, eq. 3);
- p-value: permutation test on the pooled two samples, ``(1 + #{MMD^2_perm >= MMD^2_obs}) / (1 + P)``.
"""

from __future__ import annotations

import numpy as np


def pairwise_sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances [len(a), len(b)] (float64)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def median_bandwidth(x: np.ndarray) -> float:
    """Median pairwise Euclidean distance between distinct rows of ``x``."""
    d = pairwise_sq_dists(x, x)
    iu = np.triu_indices(len(x), k=1)
    return float(np.sqrt(np.median(d[iu])))


def _mmd2_from_kernel(k: np.ndarray, n: int) -> float:
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    m = k.shape[0] - n
    sxx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Unbiased MMD^2 between samples ``x`` [n, d] and ``y`` [m, d] with a Gaussian kernel of width ``sigma``."""
    pooled = np.concatenate([x, y])
    k = np.exp(-pairwise_sq_dists(pooled, pooled) / (2.0 * sigma**2))
    return _mmd2_from_kernel(k, len(x))


def mmd_test(
    x: np.ndarray, y: np.ndarray, sigma: float, permutations: int = 500, seed: int = 0
) -> tuple[float, float]:
    """``(MMD^2, permutation p-value)`` of H0: x and y come from the same distribution."""
    if len(x) < 2 or len(y) < 2:
        raise ValueError("MMD needs at least two samples on each side")
    pooled = np.concatenate([x, y])
    k = np.exp(-pairwise_sq_dists(pooled, pooled) / (2.0 * sigma**2))
    n = len(x)
    obs = _mmd2_from_kernel(k, n)
    rng = np.random.default_rng(seed)
    count = 0
    for _ in range(permutations):
        p = rng.permutation(len(pooled))
        if _mmd2_from_kernel(k[np.ix_(p, p)], n) >= obs:
            count += 1
    return obs, (1 + count) / (1 + permutations)
