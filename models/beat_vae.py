"""Single-lead beat VAE (torch, training only): 400-sample cardiac cycle <-> 25-dim latent.

Input ``beat`` [batch, 400]: one cycle (0.25 s before to 0.45 s after the R peak, resampled to 400
samples) **z-scored per beat** (see :func:`training.datasets.ludb.zscore_beats`). FC encoder
400-512-256 -> (mu, logvar) in R^25, mirrored FC decoder. Loss: MSE + beta * KL.

``forward(beat, z)`` serves both uses in one exported graph: it returns
``(recon [B,400] decoded from mu, mu [B,25], logvar [B,25], decoded [B2,400] = decoder(z))``.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

BEAT_LENGTH = 400
LATENT = 25


class BeatVAE(nn.Module):
    def __init__(
        self, hidden: tuple[int, ...] = (512, 256), latent: int = LATENT, length: int = BEAT_LENGTH
    ) -> None:
        super().__init__()
        self.latent = latent
        dims = [length, *hidden]
        enc: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            enc += [nn.Linear(a, b), nn.GELU()]
        self.encoder = nn.Sequential(*enc)
        self.to_mu = nn.Linear(dims[-1], latent)
        self.to_logvar = nn.Linear(dims[-1], latent)
        rdims = [latent, *reversed(hidden)]
        dec: list[nn.Module] = []
        for a, b in itertools.pairwise(rdims):
            dec += [nn.Linear(a, b), nn.GELU()]
        dec.append(nn.Linear(rdims[-1], length))
        self.decoder = nn.Sequential(*dec)

    def encode(self, beat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(beat)
        return self.to_mu(h), self.to_logvar(h).clamp(-10.0, 10.0)

    def loss_terms(self, beat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampled reconstruction MSE [B] (mean over samples) and KL [B] (sum over latent dims)."""
        mu, logvar = self.encode(beat)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        rec = ((self.decoder(z) - beat) ** 2).mean(dim=1)
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=1)
        return rec, kl

    def forward(
        self, beat: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(beat)
        return self.decoder(mu), mu, logvar, self.decoder(z)
