"""Beat classifier network (torch; training and export only): a small MLP over beat feature vectors.

Input ``features`` ``[batch, F]`` (:data:`models.preprocessing.beatfeatures.FEATURE_NAMES`), output
``probs`` ``[batch, 5]`` (softmax over the AAMI classes N, S, V, F, Q). The graph standardises its input
with the training mean/std (buffers) and zeroes the features the selected feature set leaves out
(``mask``), so the runtime feeds the raw feature vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class BeatMLP(nn.Module):
    """Standardise -> mask -> [Linear -> ReLU -> Dropout] * len(hidden) -> Linear -> softmax."""

    mean: torch.Tensor
    std: torch.Tensor
    mask: torch.Tensor

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (64, 32),
        n_classes: int = 5,
        dropout: float = 0.1,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        mask: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        f = int(n_features)
        self.register_buffer(
            "mean", torch.zeros(f) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        )
        self.register_buffer(
            "std", torch.ones(f) if std is None else torch.as_tensor(std, dtype=torch.float32)
        )
        self.register_buffer(
            "mask", torch.ones(f) if mask is None else torch.as_tensor(mask, dtype=torch.float32)
        )
        layers: list[nn.Module] = []
        prev = f
        for h in hidden:
            layers += [nn.Linear(prev, int(h)), nn.ReLU(), nn.Dropout(dropout)]
            prev = int(h)
        layers.append(nn.Linear(prev, n_classes))
        self.net = nn.Sequential(*layers)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        z = (features - self.mean) / self.std * self.mask
        return self.net(z)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(features), dim=-1)
