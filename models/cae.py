"""Convolutional autoencoder for beat-window anomaly scoring (torch; training and export only).

Input: ``[batch, 720]`` normalised windows (2 s at 360 Hz centred on a beat). Outputs: the reconstruction
``[batch, 720]`` and a per-window anomaly ``score`` ``[batch]`` = weighted mean squared reconstruction
error, the weights emphasising the central beat (a buffer exported into the ONNX graph, chosen on
validation data after training).

Differences from the seed (4 Conv1D -> 32-d latent -> 4 ConvTranspose1D, 583k parameters): strided
encoder convolutions (strides 4-3-2-2) with batch norm and a linear bottleneck to the 32-d latent; a
decoder of 4 non-overlapping ConvTranspose1D (kernel = stride, no checkerboard overlap) followed by a
two-layer convolutional smoothing head; the score is computed inside the graph. About 4x fewer
multiply-adds per window than same-resolution convolutions, so it trains on a shared CPU.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
from torch import nn

from models.errors import ModelError


def center_weights(
    length: int, fs: float, center_seconds: float, center_weight: float
) -> np.ndarray:
    """Per-sample score weights: ``center_weight`` within ``center_seconds`` around the centre, 1 elsewhere, mean 1."""
    w = np.ones(length, dtype=np.float32)
    half = round(center_seconds * fs / 2)
    c = length // 2
    w[max(0, c - half) : c + half] = center_weight
    return (w / w.mean()).astype(np.float32)


class ConvAutoencoder(nn.Module):
    """1-D convolutional autoencoder with an in-graph weighted reconstruction-error score."""

    def __init__(
        self,
        length: int = 720,
        channels: Sequence[int] = (16, 32, 48, 64),
        kernels: Sequence[int] = (9, 7, 5, 5),
        strides: Sequence[int] = (4, 3, 2, 2),
        latent: int = 32,
        score_weights: np.ndarray | None = None,
        dropout: float = 0.0,
        head_channels: int = 8,
    ) -> None:
        super().__init__()
        if not len(channels) == len(kernels) == len(strides):
            raise ModelError("channels, kernels and strides must have the same length")
        total = int(np.prod(strides))
        if length % total:
            raise ModelError(f"length {length} must be divisible by the product of strides {total}")
        self.length = length
        self.reduced = length // total
        enc: list[nn.Module] = []
        c_in = 1
        for c, k, s in zip(channels, kernels, strides, strict=True):
            enc += [
                nn.Conv1d(c_in, c, k, stride=s, padding=k // 2),
                nn.BatchNorm1d(c),
                nn.LeakyReLU(0.1),
            ]
            c_in = c
        self.encoder = nn.Sequential(*enc)
        flat = channels[-1] * self.reduced
        self.to_latent = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(flat, latent))
        self.from_latent = nn.Sequential(nn.Linear(latent, flat), nn.LeakyReLU(0.1))
        dec: list[nn.Module] = []
        rev = [*channels[::-1], head_channels]
        for (a, b), s in zip(itertools.pairwise(rev), strides[::-1], strict=True):
            dec += [nn.ConvTranspose1d(a, b, s, stride=s), nn.BatchNorm1d(b), nn.LeakyReLU(0.1)]
        self.decoder = nn.Sequential(*dec)
        self.head = nn.Sequential(
            nn.Conv1d(head_channels, head_channels, 7, padding=3),
            nn.LeakyReLU(0.1),
            nn.Conv1d(head_channels, 1, 7, padding=3),
        )
        self.last_channels = channels[-1]
        w = (
            np.ones(length, dtype=np.float32)
            if score_weights is None
            else np.asarray(score_weights, dtype=np.float32)
        )
        self.set_score_weights(w)

    def set_score_weights(self, weights: np.ndarray) -> None:
        """Replace the per-sample score weights (shape ``[length]``)."""
        w = np.asarray(weights, dtype=np.float32)
        if w.shape != (self.length,):
            raise ModelError(f"score_weights must have shape ({self.length},), got {w.shape}")
        self.register_buffer("score_weights", torch.from_numpy(w.copy()))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.encoder(x.unsqueeze(1)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z).view(-1, self.last_channels, self.reduced)
        return self.head(self.decoder(h)).squeeze(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        recon = self.decode(self.encode(x))
        weights = cast(torch.Tensor, self.score_weights)  # a registered buffer
        score = ((recon - x) ** 2 * weights).mean(dim=1)
        return recon, score
