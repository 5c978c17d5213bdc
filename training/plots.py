"""Matplotlib (Agg) figures written into run directories: loss curves, ROC, score histograms, recoveries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_loss_curves(history: Mapping[str, Sequence[float]], path: Path, title: str = "") -> Path:
    """Training and validation loss per epoch (log scale)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("train_loss", "val_loss"):
        if history.get(key):
            ax.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title or "loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_roc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: Path, title: str = "ROC"
) -> Path:
    """ROC curves: ``{label: (fpr, tpr, auc)}``."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_score_hist(
    scores: Mapping[str, np.ndarray], threshold: float | None, path: Path, title: str = "scores"
) -> Path:
    """Histograms of anomaly scores per class, with the decision threshold."""
    fig, ax = plt.subplots(figsize=(7, 4))
    allv = np.concatenate([v for v in scores.values() if v.size]) if scores else np.zeros(1)
    hi = float(np.quantile(allv, 0.995)) if allv.size else 1.0
    bins = np.linspace(0.0, max(hi, 1e-6), 80).tolist()
    for label, v in scores.items():
        if v.size:
            ax.hist(
                np.clip(v, 0, hi), bins=bins, alpha=0.5, density=True, label=f"{label} (n={v.size})"
            )
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.4g}")
    ax.set_xlabel("anomaly score")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_signals(
    rows: Sequence[Mapping[str, np.ndarray]],
    path: Path,
    fs: float,
    spans: Sequence[tuple[int, int]] | None = None,
    title: str = "",
) -> Path:
    """One subplot per row, each a ``{label: signal}`` mapping (e.g. original / masked / recovered);
    ``spans`` shades sample ranges (masked regions)."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 2.2 * len(rows)), squeeze=False)
    styles = ["-", "--", "-", ":", "-."]
    for i, (ax, row) in enumerate(zip(axes[:, 0], rows, strict=True)):
        for j, (label, sig) in enumerate(row.items()):
            t = np.arange(sig.shape[0]) / fs
            ax.plot(t, sig, styles[j % len(styles)], lw=1.0, label=label)
        if spans is not None:
            a, b = spans[i]
            ax.axvspan(a / fs, b / fs, color="grey", alpha=0.2)
        ax.legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("s")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
