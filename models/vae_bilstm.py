"""12-lead VAE-BiLSTM and VAE-BiLSTM-MHA (torch, training only) for unsupervised anomaly detection.

Same input as :mod:`models.cae12` (``[batch, 1000, 12]`` filtered mV, per-lead normalisation inside).
A strided conv front-end downsamples time by 8 (1000 -> 125 steps) so the BiLSTMs stay cheap on CPU.
The latent is a sequence ``z [batch, 125, latent]`` (OmniAnomaly-style, one Gaussian per step).

``VAEBiLSTM.forward`` (deterministic, uses the posterior mean) returns
``(recon_mV, lead_error [B, 12], kl [B])``; with attention (``attention=True``) it also returns
``lead_attention [B, 12]`` (mean attention each lead receives in the lead-wise MHA) and
``time_attention [B, 1000]`` (mean attention each time step receives in the temporal MHA, upsampled
to the input rate). Training uses :meth:`VAEBiLSTM.elbo_terms` with the reparameterisation trick.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.cae12 import N_LEADS, WINDOW, LeadNorm, RecordLeadNorm, normalise
from models.errors import ModelError

DOWN = 8


class Attention(nn.Module):
    """Multi-head self-attention written out (exports to plain ONNX ops), returning the
    head-averaged attention weights ``[B, L, L]`` with the output."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ModelError(f"dim {dim} not divisible by heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        w = torch.softmax(q @ k.transpose(-1, -2) / self.head_dim**0.5, dim=-1)  # [B, H, L, L]
        y = (w @ v).transpose(1, 2).reshape(b, n, d)
        return self.out(y), w.mean(dim=1)


class VAEBiLSTM(nn.Module):
    """Conv front-end -> (lead-wise MHA) -> BiLSTM -> (temporal MHA) -> Gaussian latent per step ->
    BiLSTM decoder -> transposed-conv back-end."""

    def __init__(
        self,
        hidden: int = 48,
        latent: int = 8,
        conv: int = 32,
        attention: bool = False,
        heads: int = 4,
        record_norm: bool = False,
    ) -> None:
        super().__init__()
        self.norm = LeadNorm()
        self.rec_norm = RecordLeadNorm() if record_norm else None
        self.attention = attention
        self.lead_dim = 16
        if attention:
            # lead-wise: each lead encoded on its own (grouped conv) into a token sequence
            self.lead_enc = nn.Sequential(
                nn.Conv1d(
                    N_LEADS, N_LEADS * self.lead_dim, kernel_size=8, stride=DOWN, groups=N_LEADS
                ),
                nn.GELU(),
            )
            self.lead_embed = nn.Parameter(torch.zeros(1, N_LEADS, self.lead_dim))
            self.lead_mha = Attention(self.lead_dim, heads=2)
            self.front = nn.Sequential(
                nn.Conv1d(N_LEADS * self.lead_dim, conv, kernel_size=3, padding=1),
                nn.GELU(),
            )
        else:
            self.front = nn.Sequential(
                nn.Conv1d(N_LEADS, conv, kernel_size=7, stride=2, padding=3),
                nn.GELU(),
                nn.Conv1d(conv, conv, kernel_size=5, stride=2, padding=2),
                nn.GELU(),
                nn.Conv1d(conv, conv, kernel_size=5, stride=2, padding=2),
                nn.GELU(),
            )
        self.enc_lstm = nn.LSTM(conv, hidden, batch_first=True, bidirectional=True)
        if attention:
            self.time_mha = Attention(2 * hidden, heads=heads)
        self.to_mu = nn.Linear(2 * hidden, latent)
        self.to_logvar = nn.Linear(2 * hidden, latent)
        self.dec_lstm = nn.LSTM(latent, hidden, batch_first=True, bidirectional=True)
        self.back = nn.Sequential(
            nn.ConvTranspose1d(2 * hidden, conv, kernel_size=4, stride=2, padding=1),
            nn.GELU(),
            nn.ConvTranspose1d(conv, conv, kernel_size=4, stride=2, padding=1),
            nn.GELU(),
            nn.ConvTranspose1d(conv, conv, kernel_size=4, stride=2, padding=1),
            nn.GELU(),
            nn.Conv1d(conv, N_LEADS, kernel_size=7, padding=3),
        )

    def encode(
        self, xn: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Normalised [B, T, 12] -> (mu, logvar [B, T/8, latent], lead_attn [B,12] | None, time_attn [B,T/8] | None)."""
        b = xn.shape[0]
        lead_attn = time_attn = None
        if self.attention:
            tok = self.lead_enc(xn.transpose(1, 2))  # [B, 12*D, S]
            s = tok.shape[-1]
            tok = (
                tok.reshape(b, N_LEADS, self.lead_dim, s)
                .permute(0, 3, 1, 2)
                .reshape(b * s, N_LEADS, self.lead_dim)
            )
            tok = tok + self.lead_embed
            att, w = self.lead_mha(tok)
            tok = tok + att  # [B*S, 12, D]
            lead_attn = w.reshape(b, s, N_LEADS, N_LEADS).mean(
                dim=(1, 2)
            )  # attention received per lead
            feats = tok.reshape(b, s, N_LEADS * self.lead_dim).transpose(1, 2)
            h = self.front(feats).transpose(1, 2)
        else:
            h = self.front(xn.transpose(1, 2)).transpose(1, 2)  # [B, S, C]
        h, _ = self.enc_lstm(h)
        if self.attention:
            att, w = self.time_mha(h)
            h = h + att
            time_attn = w.mean(dim=1)  # [B, S] attention received per step
        return self.to_mu(h), self.to_logvar(h).clamp(-8.0, 8.0), lead_attn, time_attn

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent [B, S, latent] -> normalised reconstruction [B, 8*S, 12]."""
        h, _ = self.dec_lstm(z)
        return self.back(h.transpose(1, 2)).transpose(1, 2)

    def elbo_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampled reconstruction MSE [B] and KL [B] (per element / per latent step means)."""
        xn, _, _ = normalise(self.norm, self.rec_norm, x)
        mu, logvar, _, _ = self.encode(xn)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        rn = self.decode(z)
        rec = ((rn - xn) ** 2).mean(dim=(1, 2))
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=-1).mean(dim=-1)
        return rec, kl

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        xn, center, scale = normalise(self.norm, self.rec_norm, x)
        mu, logvar, lead_attn, time_attn = self.encode(xn)
        rn = self.decode(mu)
        lead_error = ((rn - xn) ** 2).mean(dim=1)
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=-1).mean(dim=-1)
        recon = rn * scale + center
        if not self.attention or lead_attn is None or time_attn is None:
            return recon, lead_error, kl
        time_full = F.interpolate(time_attn.unsqueeze(1), size=WINDOW, mode="nearest").squeeze(1)
        return recon, lead_error, kl, lead_attn, time_full
