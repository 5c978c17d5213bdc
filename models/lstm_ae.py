"""Masked-segment recovery networks (torch; training and export only).

- :class:`MaskedRecoveryNet` (ours): the mask is an input channel; conv front-end (optionally strided),
  2-layer bidirectional LSTM, transposed-conv upsampling, a conv head that also sees the input, and the
  output composed in the graph as ``observed + mask * prediction`` so observed samples pass unchanged.
- :class:`SeedLSTMAE` (baseline): the seed's LSTM 64 -> LSTM 32 -> LSTM 64 -> TimeDistributed(Dense(1))
  autoencoder, input = the masked signal only (gap set to zero), output = the reconstructed sequence.

Inputs: ``signal`` ``[batch, L]`` and ``mask`` ``[batch, L]`` (1 = missing sample, 0 = observed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.errors import ModelError


class MaskedRecoveryNet(nn.Module):
    """Conv-BiLSTM gap filler with the mask as an input channel.

    A full-rate conv front-end (``head_channels``), a strided conv down to ``1/down`` of the rate, a
    bidirectional LSTM there, a transposed conv back to full rate and a conv head that also sees the
    front-end features and the input; the segment is zero-padded internally to a multiple of ``down``.
    """

    def __init__(
        self,
        channels: int = 32,
        hidden: int = 48,
        layers: int = 2,
        kernel: int = 9,
        down: int = 4,
        head_channels: int = 16,
    ) -> None:
        super().__init__()
        if down not in (1, 2, 4, 8):
            raise ModelError("down must be 1, 2, 4 or 8")
        self.down = down
        hc = head_channels
        self.front = nn.Sequential(nn.Conv1d(2, hc, kernel, padding=kernel // 2), nn.GELU())
        if down > 1:
            self.reduce: nn.Module = nn.Sequential(
                nn.Conv1d(hc, channels, 2 * down, stride=down, padding=down // 2), nn.GELU()
            )
            self.expand: nn.Module = nn.ConvTranspose1d(
                2 * hidden, hc, 2 * down, stride=down, padding=down // 2
            )
        else:
            self.reduce = nn.Sequential(nn.Conv1d(hc, channels, 1), nn.GELU())
            self.expand = nn.Conv1d(2 * hidden, hc, 1)
        self.lstm = nn.LSTM(
            channels, hidden, num_layers=layers, batch_first=True, bidirectional=True
        )
        self.head = nn.Sequential(
            nn.Conv1d(2 * hc + 2, hc, 5, padding=2), nn.GELU(), nn.Conv1d(hc, 1, 1)
        )

    def forward(self, signal: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = signal.shape[-1]
        observed = signal * (1.0 - mask)
        inp = torch.stack([observed, mask], dim=1)  # [B, 2, L]
        pad = (-length) % self.down
        if pad:
            inp = F.pad(inp, (0, pad))
        f = self.front(inp)
        h, _ = self.lstm(self.reduce(f).transpose(1, 2))
        h = self.expand(h.transpose(1, 2))
        y = self.head(torch.cat([h, f, inp], dim=1))[:, 0, :length]
        return observed + mask * y


class SeedLSTMAE(nn.Module):
    """The seed's LSTM autoencoder (64 -> 32 -> 64 -> Dense(1) per step); ``mask`` only zeroes the gap."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.LSTM(1, 64, batch_first=True)
        self.enc2 = nn.LSTM(64, 32, batch_first=True)
        self.dec = nn.LSTM(32, 64, batch_first=True)
        self.out = nn.Linear(64, 1)

    def forward(self, signal: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = (signal * (1.0 - mask)).unsqueeze(-1)
        h, _ = self.enc1(x)
        h, _ = self.enc2(h)
        h, _ = self.dec(h)
        return self.out(h).squeeze(-1)
