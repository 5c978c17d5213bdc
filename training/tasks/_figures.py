"""Figures of the 12-lead and beat models (matplotlib Agg), written by ``python -m training report MODEL``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from stream.records import TWELVE_LEADS


def plot_12lead_reconstruction(
    x: np.ndarray,
    recon: np.ndarray,
    path: Path,
    title: str,
    fs: float = 100.0,
    lead_relative_error: np.ndarray | None = None,
    lead_attention: np.ndarray | None = None,
    time_attention: np.ndarray | None = None,
) -> Path:
    """12 panels (original black, reconstruction red); temporal attention as a heat-map behind each
    trace and lead attention / relative error in each panel's label."""
    t = np.arange(x.shape[0]) / fs
    fig, axes = plt.subplots(6, 2, figsize=(14, 12), sharex=True)
    for j, ax in enumerate(axes.T.reshape(-1)):
        if time_attention is not None:
            lo, hi = float(np.min(x[:, j])), float(np.max(x[:, j]))
            ax.imshow(
                time_attention[None, :],
                aspect="auto",
                cmap="Oranges",
                alpha=0.6,
                extent=(t[0], t[-1], lo - 0.1, hi + 0.1),
                origin="lower",
                vmin=float(time_attention.min()),
                vmax=float(time_attention.max()),
            )
        ax.plot(t, x[:, j], "k", lw=0.8, label="original")
        ax.plot(t, recon[:, j], "r", lw=0.8, alpha=0.8, label="reconstruction")
        label = TWELVE_LEADS[j]
        if lead_relative_error is not None:
            label += f"  rel.err {float(lead_relative_error[j]):.2f}"
        if lead_attention is not None:
            label += f"  lead attn {float(lead_attention[j]):.3f}"
        ax.set_title(label, fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("s")
    axes[-1, 1].set_xlabel("s")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_lead_reconstruction(
    x: np.ndarray,
    recon: np.ndarray,
    targets: Sequence[int],
    path: Path,
    title: str,
    fs: float = 100.0,
) -> Path:
    """Reconstructed leads (red) against the recorded ones (black), one panel per target lead."""
    t = np.arange(x.shape[0]) / fs
    fig, axes = plt.subplots(
        len(targets), 1, figsize=(10, 1.8 * len(targets)), sharex=True, squeeze=False
    )
    for ax, j in zip(axes[:, 0], targets, strict=True):
        r = float(np.corrcoef(x[:, j], recon[:, j])[0, 1]) if np.std(x[:, j]) > 0 else float("nan")
        ax.plot(t, x[:, j], "k", lw=0.8, label="recorded")
        ax.plot(t, recon[:, j], "r", lw=0.8, alpha=0.8, label="reconstructed")
        ax.set_title(f"{TWELVE_LEADS[j]}  r = {r:.3f}", fontsize=8, loc="left")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("s")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
