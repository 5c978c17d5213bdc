"""12-lead reconstruction from any subset of leads (torch, training only).

Inputs: ``ecg`` [batch, 1000, 12] filtered mV (values of missing leads are ignored) and ``mask``
[batch, 12] (1 = lead present). Output: ``recon`` [batch, 1000, 12] in mV for every lead (the runtime
wrapper copies present leads through and computes derivable limb leads exactly).

Architecture (after the seed's "contrastive representation + raw-lead projections, fused, light conv
decoder per target lead"):

- raw branch: masked normalised leads + mask channels -> stride-2 conv stem (50 Hz) -> dilated
  residual blocks, concatenated with the stem (skip);
- contrastive branch (optional): :class:`ContrastiveEncoder`, pre-trained with a supervised contrastive
  loss (SupCon, Khosla et al. 2020) on PTB-XL diagnostic superclass sets, then frozen; its embedding is
  projected and tiled along time, fused with the raw features;
- decoder: one light conv head per target lead (grouped convolutions, 12 groups), upsampling back
  to 100 Hz with a grouped transposed convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.cae12 import N_LEADS, LeadNorm
from models.errors import ModelError


def lead_heads(n_leads: int, head: int) -> nn.Sequential:
    """One light decoder per output lead (grouped convs): upsample x2 back to 100 Hz, then two 5-tap convs."""
    c = n_leads * head
    return nn.Sequential(
        nn.GELU(),
        nn.ConvTranspose1d(c, c, 4, stride=2, padding=1, groups=n_leads),
        nn.GELU(),
        nn.Conv1d(c, c, 5, padding=2, groups=n_leads),
        nn.GELU(),
        nn.Conv1d(c, n_leads, 5, padding=2, groups=n_leads),
    )


class ContrastiveEncoder(nn.Module):
    """Masked 12-lead input -> L2-normalised embedding [B, dim] (global morphology representation)."""

    def __init__(self, dim: int = 64, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(2 * N_LEADS, width, 7, stride=2, padding=3),
            nn.BatchNorm1d(width),
            nn.GELU(),
            nn.Conv1d(width, 2 * width, 7, stride=2, padding=3),
            nn.BatchNorm1d(2 * width),
            nn.GELU(),
            nn.Conv1d(2 * width, 2 * width, 5, stride=2, padding=2),
            nn.BatchNorm1d(2 * width),
            nn.GELU(),
            nn.Conv1d(2 * width, dim, 5, stride=2, padding=2),
            nn.GELU(),
        )
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats`` [B, 24, T] (masked normalised leads + mask) -> embedding [B, dim] (before the head)."""
        return self.net(feats).mean(dim=-1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.embed(feats)), dim=-1)


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss; ``z`` [B, d] normalised, ``labels`` [B] ints (same int = positive)."""
    sim = z @ z.T / temperature
    b = z.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, -1e9)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    n_pos = pos.sum(dim=1)
    valid = n_pos > 0
    loss = -(log_prob * pos).sum(dim=1)[valid] / n_pos[valid]
    return loss.mean() if valid.any() else sim.sum() * 0.0


class _Res(nn.Module):
    def __init__(self, c: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(c, c, 5, padding=2 * dilation, dilation=dilation),
            nn.BatchNorm1d(c),
            nn.GELU(),
            nn.Conv1d(c, c, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x + self.conv(x))


class LeadRecon(nn.Module):
    """Masked 12 leads -> all 12 leads (see module docstring)."""

    def __init__(
        self,
        stem: int = 32,
        width: int = 64,
        head: int = 12,
        use_contrastive: bool = True,
        contrastive_dim: int = 64,
        fuse_dim: int = 16,
        dilations: tuple[int, ...] = (1, 2, 4, 8, 16),
    ) -> None:
        super().__init__()
        self.norm = LeadNorm()
        self.use_contrastive = use_contrastive
        # raw-lead projection at half rate (100 Hz -> 50 Hz), dilated residual blocks, skip from the stem
        self.stem = nn.Sequential(
            nn.Conv1d(2 * N_LEADS, stem, 8, stride=2, padding=3), nn.BatchNorm1d(stem), nn.GELU()
        )
        self.down = nn.Sequential(
            nn.Conv1d(stem, width, 3, padding=1), nn.BatchNorm1d(width), nn.GELU()
        )
        self.blocks = nn.Sequential(*[_Res(width, d) for d in dilations])
        fused = stem + width
        if use_contrastive:
            self.contrastive = ContrastiveEncoder(contrastive_dim)
            self.fuse = nn.Linear(contrastive_dim, fuse_dim)
            fused += fuse_dim
        self.proj = nn.Conv1d(fused, N_LEADS * head, 1)
        self.heads = lead_heads(N_LEADS, head)

    def features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, 24, T]: normalised leads with missing ones zeroed, and the mask broadcast over time."""
        xn = self.norm(x) * mask[:, None, :]
        m = mask[:, None, :].expand_as(xn)
        return torch.cat([xn, m], dim=-1).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        f = self.features(x, mask)
        s = self.stem(f)
        h = self.blocks(self.down(s))
        parts = [s, h]
        if self.use_contrastive:
            e = self.fuse(self.contrastive.embed(f))  # [B, fuse_dim]
            parts.append(e[:, :, None].expand(-1, -1, s.shape[-1]))
        out = self.heads(self.proj(torch.cat(parts, dim=1))).transpose(
            1, 2
        )  # normalised [B, T, 12]
        return self.norm.inverse(out)


#: leads the single-lead model's network produces (the other limb leads follow from I and II exactly)
SINGLE_LEARNED: tuple[int, ...] = (0, 6, 7, 8, 9, 10, 11)  # I, V1-V6 in TWELVE_LEADS order
SOURCE_II = 1


class LeadReconII(nn.Module):
    """Lead II alone -> all 12 leads (the dedicated model of the ``II_only`` configuration).

    Same interface as :class:`LeadRecon` (``ecg`` [B, T, 12], ``mask`` [B, 12]) but only lead II is
    read (times its mask bit). Lead II at 50 Hz through a stride-2 stem and dilated residual blocks
    (receptive field up to the whole 10 s), a record-level context vector (time average, projected
    and tiled along time; with ``film`` it also scales and shifts the local features, FiLM-style, so the
    record sets how each lead is read out of lead II), and one light conv decoder per learned lead for I
    and V1-V6. III, aVR,
    aVL and aVF are computed in the graph from the predicted I and the recorded II
    (Einthoven/Goldberger), so the six limb leads are always consistent. No contrastive branch. With
    ``gru`` > 0 a bidirectional GRU over the features at 12.5 Hz adds an order-aware whole-record context.
    """

    use_contrastive = False

    def __init__(
        self,
        stem: int = 32,
        width: int = 64,
        head: int = 16,
        global_dim: int = 32,
        dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
        film: bool = False,
        gru: int = 0,
    ) -> None:
        super().__init__()
        self.norm = LeadNorm()
        # optional recurrent context: a BiGRU over the features at 12.5 Hz (order-aware, whole record), added
        # back as a residual; its output projection starts at zero, so a trained CNN run can be continued
        self.gru: nn.GRU | None = (
            nn.GRU(width, gru, batch_first=True, bidirectional=True) if gru else None
        )
        self.gru_out: nn.Conv1d | None = nn.Conv1d(2 * gru, width, 1) if gru else None
        if self.gru_out is not None:
            for p in self.gru_out.parameters():
                nn.init.zeros_(p)
        self.film: nn.Module | None = nn.Linear(global_dim, 2 * (stem + width)) if film else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)  # starts as the identity modulation
            nn.init.zeros_(self.film.bias)
        n_out = len(SINGLE_LEARNED)
        self.stem = nn.Sequential(
            nn.Conv1d(1, stem, 8, stride=2, padding=3), nn.BatchNorm1d(stem), nn.GELU()
        )
        self.down = nn.Sequential(
            nn.Conv1d(stem, width, 3, padding=1), nn.BatchNorm1d(width), nn.GELU()
        )
        self.blocks = nn.Sequential(*[_Res(width, d) for d in dilations])
        self.glob = nn.Sequential(nn.Linear(width, global_dim), nn.GELU())
        self.proj = nn.Conv1d(stem + width + global_dim, n_out * head, 1)
        self.heads = lead_heads(n_out, head)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ii = x[:, :, SOURCE_II] * mask[:, SOURCE_II : SOURCE_II + 1]  # [B, T] mV
        z = ((ii - self.norm.center[SOURCE_II]) / self.norm.scale[SOURCE_II])[:, None, :]
        s = self.stem(z)
        h = self.blocks(self.down(s))
        if self.gru is not None and self.gru_out is not None:
            seq, _ = self.gru(
                F.avg_pool1d(h, 4, ceil_mode=True).transpose(1, 2)
            )  # [B, T/4, 2 * gru]
            r = F.interpolate(self.gru_out(seq.transpose(1, 2)), scale_factor=4.0, mode="nearest")[
                :, :, : h.shape[-1]
            ]
            h = h + r
        gv = self.glob(h.mean(dim=-1))  # [B, global_dim] record context
        local = torch.cat([s, h], dim=1)
        if self.film is not None:
            gamma, beta = self.film(gv)[:, :, None].chunk(2, dim=1)
            local = local * (1.0 + gamma) + beta
        g = gv[:, :, None].expand(-1, -1, h.shape[-1])
        out = self.heads(self.proj(torch.cat([local, g], dim=1))).transpose(
            1, 2
        )  # normalised [B, T, 7]
        idx = list(SINGLE_LEARNED)
        mv = out * self.norm.scale[idx] + self.norm.center[idx]
        lead_i = mv[:, :, 0]
        limb = [lead_i, ii, ii - lead_i, -0.5 * (lead_i + ii), lead_i - 0.5 * ii, ii - 0.5 * lead_i]
        return torch.cat([torch.stack(limb, dim=-1), mv[:, :, 1:]], dim=-1)  # [B, T, 12] mV


class LeadReconIIEnsemble(nn.Module):
    """Average of several :class:`LeadReconII` members (same interface and output).

    The members are trained alike on the same folds with different seeds; their outputs are averaged in
    mV. The limb leads stay exact: each member computes them linearly from its I and the recorded II,
    so the average equals the limb leads of the averaged I. All members share the normalisation
    statistics (training folds), exposed as ``norm``.
    """

    use_contrastive = False

    def __init__(self, members: list[LeadReconII]) -> None:
        super().__init__()
        if not members:
            raise ModelError("an ensemble needs at least one member")
        ref = members[0].norm
        for m in members[1:]:
            if not (
                torch.equal(m.norm.center, ref.center) and torch.equal(m.norm.scale, ref.scale)
            ):
                raise ModelError(
                    "ensemble members must share their normalisation statistics (same training folds)"
                )
        self.members = nn.ModuleList(members)

    @property
    def norm(self) -> LeadNorm:
        """The members' shared normalisation (of the first member)."""
        norm = self.members[0].norm
        assert isinstance(norm, LeadNorm)
        return norm

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x, mask) for m in self.members]).mean(dim=0)
