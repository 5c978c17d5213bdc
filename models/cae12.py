"""12-lead convolutional autoencoder (torch, training only) for unsupervised anomaly detection.

Input ``x`` [batch, 1000, 12]: 10 s at 100 Hz, leads in ``TWELVE_LEADS`` order, filtered, in mV.
Per-lead normalisation is part of the network, so the exported ONNX graph takes millivolts: either
global (buffers ``center``/``scale``: per-lead median and robust scale of the training NORM records)
or, with ``record_norm``, per record and lead (mean and standard deviation over the window + 0.05 mV).

Outputs ``(recon_mV [batch, 1000, 12], lead_error [batch, 12])`` where ``lead_error`` is the mean
squared reconstruction error of each lead in normalised units (the anomaly score's raw material).
"""

from __future__ import annotations

import torch
from torch import nn

N_LEADS = 12
WINDOW = 1000


class LeadNorm(nn.Module):
    """Fixed per-lead affine normalisation ``(x - center) / scale`` over the last axis."""

    center: torch.Tensor  # registered buffers
    scale: torch.Tensor

    def __init__(self, n_leads: int = N_LEADS) -> None:
        super().__init__()
        self.register_buffer("center", torch.zeros(n_leads))
        self.register_buffer("scale", torch.ones(n_leads))

    def set_stats(self, center: torch.Tensor, scale: torch.Tensor) -> None:
        self.center.copy_(center)
        self.scale.copy_(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center) / self.scale

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.scale + self.center


class RecordLeadNorm(nn.Module):
    """Per-record, per-lead standardisation over time: ``(x - mean_t) / (std_t + eps)``.

    ``eps`` (mV) keeps near-flat leads from being blown up. Stats of the last call are kept for
    :meth:`inverse` (the forward pass of one batch).
    """

    def __init__(self, eps: float = 0.05) -> None:
        super().__init__()
        self.eps = eps

    def stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = x.mean(dim=1, keepdim=True)
        std = ((x - mean) ** 2).mean(dim=1, keepdim=True).sqrt() + self.eps
        return mean, std


def normalise(
    norm: nn.Module, rec_norm: RecordLeadNorm | None, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(normalised x, centre, scale) with the record-wise rule when ``rec_norm`` is set, else global."""
    if rec_norm is None:
        assert isinstance(norm, LeadNorm)
        return norm(x), norm.center, norm.scale
    mean, std = rec_norm.stats(x)
    return (x - mean) / std, mean, std


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel_size=7, stride=stride, padding=3),
        nn.BatchNorm1d(c_out),
        nn.GELU(),
    )


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose1d(c_in, c_out, kernel_size=4, stride=2, padding=1),
        nn.BatchNorm1d(c_out),
        nn.GELU(),
    )


class CAE12(nn.Module):
    """Conv1d encoder (3 stride-2 stages, 1000 -> 125 steps) to a narrow bottleneck, mirrored decoder."""

    def __init__(
        self,
        channels: tuple[int, ...] = (32, 64, 64),
        bottleneck: int = 8,
        record_norm: bool = False,
    ) -> None:
        super().__init__()
        self.norm = LeadNorm()
        self.rec_norm = RecordLeadNorm() if record_norm else None
        c1, c2, c3 = channels
        self.encoder = nn.Sequential(
            _block(N_LEADS, c1, 2),
            _block(c1, c1, 1),
            _block(c1, c2, 2),
            _block(c2, c2, 1),
            _block(c2, c3, 2),
            nn.Conv1d(c3, bottleneck, kernel_size=3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv1d(bottleneck, c3, kernel_size=3, padding=1),
            nn.GELU(),
            _up(c3, c2),
            _block(c2, c2, 1),
            _up(c2, c1),
            _block(c1, c1, 1),
            _up(c1, c1),
            nn.Conv1d(c1, N_LEADS, kernel_size=7, padding=3),
        )

    def reconstruct_normalised(self, xn: torch.Tensor) -> torch.Tensor:
        """Normalised input [B, T, 12] -> normalised reconstruction [B, T, 12]."""
        z = self.encoder(xn.transpose(1, 2))
        return self.decoder(z).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xn, center, scale = normalise(self.norm, self.rec_norm, x)
        rn = self.reconstruct_normalised(xn)
        lead_error = ((rn - xn) ** 2).mean(dim=1)
        return rn * scale + center, lead_error
