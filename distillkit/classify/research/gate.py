"""The "dynamic head attention" gate of the hybrid backbone: per-channel re-weighting of fused features.

    alpha = sigmoid(W2 · ReLU(W1 · z)),   z <- z ⊙ alpha

A squeeze-and-excitation gate over the concatenated CNN + ViT pooled features: the network learns,
per input, how much each channel of each stream should count before the projection.
"""

from __future__ import annotations

import torch
from torch import nn


class DynamicHeadGate(nn.Module):
    """Gate ``z`` (B, D) by ``sigmoid(W2 relu(W1 z))``; the hidden width is ``D // reduction``."""

    def __init__(self, dim: int, reduction: int = 4) -> None:
        super().__init__()
        if dim < 1 or reduction < 1:
            raise ValueError(f"dim and reduction must be positive, got {dim} and {reduction}")
        hidden = max(1, dim // reduction)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def weights(self, z: torch.Tensor) -> torch.Tensor:
        """alpha (B, D), each in (0, 1)."""
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(z))))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.weights(z)
