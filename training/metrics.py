"""Evaluation helpers on top of sklearn.metrics: threshold choice on validation data, binary figures."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm

AAMI_ORDER = ("N", "S", "V", "F", "Q")


def choose_threshold(
    y: np.ndarray, score: np.ndarray, method: str = "f1", targets: dict[str, float] | None = None
) -> float:
    """Decision threshold on ``score`` (positive = higher) chosen on (validation) data.

    ``f1``: maximum F1; ``youden``: maximum sensitivity + specificity - 1; ``targets``: the operating point
    that exceeds every figure of ``targets`` (accuracy, sensitivity, specificity, f1) by the largest common
    margin (a reference system's published operating point), F1 when no point exceeds them all.
    """
    y = np.asarray(y).astype(int)
    if y.min() == y.max():
        raise ValueError("threshold choice needs both classes in the validation data")
    if method == "targets":
        if not targets:
            raise ValueError("threshold method 'targets' needs target figures")
        ths = np.unique(np.quantile(score, np.linspace(0.01, 0.99, 981)))
        pred = np.asarray(score)[None, :] >= ths[:, None]  # one row per candidate threshold
        tp = (pred & (y == 1)).sum(axis=1)
        fp = (pred & (y == 0)).sum(axis=1)
        fn, tn = (y == 1).sum() - tp, (y == 0).sum() - fp
        figs = {
            "accuracy": (tp + tn) / y.size,
            "sensitivity": tp / np.maximum(tp + fn, 1),
            "specificity": tn / np.maximum(tn + fp, 1),
            "f1": 2 * tp / np.maximum(2 * tp + fp + fn, 1),
        }
        margin = np.min([figs[k] - float(v) for k, v in targets.items()], axis=0)
        best_th = float(ths[int(np.argmax(margin))]) if margin.max() > 0 else None
        return best_th if best_th is not None else choose_threshold(y, score, "f1")
    if method == "f1":
        prec, rec, th = skm.precision_recall_curve(y, score)
        f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
        i = int(np.argmax(f1[:-1]))
        return float(th[i])
    if method == "youden":
        fpr, tpr, th = skm.roc_curve(y, score)
        i = int(np.argmax(tpr - fpr))
        return float(th[i])
    raise ValueError(f"unknown threshold method {method!r}; use f1, youden or targets")


def binary_report(
    y: np.ndarray, score: np.ndarray, threshold: float, classes: np.ndarray | None = None
) -> dict[str, Any]:
    """ROC-AUC, accuracy, sensitivity, specificity, precision, F1 (positive = abnormal) and recall per class."""
    y = np.asarray(y).astype(int)
    pred = (np.asarray(score) >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    out: dict[str, Any] = {
        "roc_auc": float(skm.roc_auc_score(y, score)),
        "pr_auc": float(skm.average_precision_score(y, score)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "sensitivity": float(tp / max(tp + fn, 1)),
        "specificity": float(tn / max(tn + fp, 1)),
        "precision": float(tp / max(tp + fp, 1)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "threshold": float(threshold),
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "confusion": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }
    if classes is not None:
        rec: dict[str, float | None] = {}
        counts: dict[str, int] = {}
        for c in AAMI_ORDER:
            m = classes == c
            counts[c] = int(m.sum())
            if not m.any():
                rec[c] = None
            elif c == "N":
                rec[c] = float((pred[m] == 0).mean())
            else:
                rec[c] = float((pred[m] == 1).mean())
        out["recall_by_class"] = rec
        out["count_by_class"] = counts
    return out


def platt_fit(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """Platt scaling: ``(a, b)`` of ``P(y = 1 | score) = 1 / (1 + exp(-(a * score + b)))``, fitted by
    (almost unregularised) logistic regression on (validation) data."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y).astype(int)
    if y.min() == y.max():
        raise ValueError("Platt scaling needs both classes in the data it is fitted on")
    lr = LogisticRegression(C=1e6, max_iter=1000)
    lr.fit(np.asarray(score, dtype=float).reshape(-1, 1), y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def platt_apply(ab: tuple[float, float], score: np.ndarray) -> np.ndarray:
    """Calibrated probabilities of :func:`platt_fit`'s mapping."""
    a, b = ab
    z = np.clip(a * np.asarray(score, dtype=float) + b, -50.0, 50.0)
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> float:
    """ECE: mean over ``bins`` equal-width probability bins of |observed rate - mean probability|,
    weighted by the bin's share of the samples (Guo et al., 2017)."""
    y = np.asarray(y).astype(float)
    prob = np.asarray(prob, dtype=float)
    idx = np.minimum((prob * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(float(y[m].mean()) - float(prob[m].mean()))
    return float(ece)


def calibration_report(
    y_fit: np.ndarray,
    s_fit: np.ndarray,
    threshold: float,
    held_out: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    bins: int = 10,
    folds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Calibration of a score at its operating point ``threshold`` (``score > threshold`` = positive).

    A Platt mapping is fitted on (``y_fit``, ``s_fit``) (the validation data). Reported there: the in-sample
    ECE (optimistic) and a ``folds``-fold cross-fitted ECE (each part scored by the mapping fitted on the
    others); on each ``held_out`` split (name -> (y, score)): the ECE of the same mapping. At the operating
    point: the calibrated probability at the threshold, and the positive predictive value (PPV) and negative
    predictive value (NPV) of the decision on each split.
    """
    y_fit = np.asarray(y_fit).astype(int)
    s_fit = np.asarray(s_fit, dtype=float)
    ab = platt_fit(y_fit, s_fit)
    rng = np.random.default_rng(seed)
    part = rng.permutation(y_fit.size) % folds
    cross = np.zeros(y_fit.size)
    for k in range(folds):
        cross[part == k] = platt_apply(
            platt_fit(y_fit[part != k], s_fit[part != k]), s_fit[part == k]
        )

    def decision(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
        pred = s > threshold
        return {
            "ppv": float(y[pred].mean()) if pred.any() else float("nan"),
            "npv": float(1 - y[~pred].mean()) if (~pred).any() else float("nan"),
            "prevalence": float(y.mean()),
        }

    out: dict[str, Any] = {
        "method": f"Platt scaling of the score (logistic), fitted on the validation data; ECE with {bins} "
        "equal-width bins",
        "platt": {"a": ab[0], "b": ab[1]},
        "threshold": float(threshold),
        "probability_at_threshold": float(platt_apply(ab, np.array([threshold]))[0]),
        "validation": {
            "ece_in_sample": expected_calibration_error(y_fit, platt_apply(ab, s_fit), bins),
            f"ece_cross_fitted_{folds}fold": expected_calibration_error(y_fit, cross, bins),
            "brier": float(np.mean((platt_apply(ab, s_fit) - y_fit) ** 2)),
            **decision(y_fit, s_fit),
        },
    }
    for name, (y, s) in (held_out or {}).items():
        y = np.asarray(y).astype(int)
        s = np.asarray(s, dtype=float)
        p = platt_apply(ab, s)
        out[name] = {
            "ece": expected_calibration_error(y, p, bins),
            "brier": float(np.mean((p - y) ** 2)),
            **decision(y, s),
        }
    return out
