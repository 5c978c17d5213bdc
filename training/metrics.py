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
