"""TokenLearner (Ryoo et al., NeurIPS 2021): K learned summary tokens replace N input tokens.

Each output token i is a weighted average of the inputs, ``y_i = sum_n a_in x_n``, with the weights
``a_i = softmax_n(MLP(LN(x))_i)`` computed from the tokens themselves (the v1.1 form, softmax over
positions). Placed mid-network, the remaining transformer blocks process K tokens instead of N, which
is where its speed and its "attend to what matters" inductive bias come from.
"""

from __future__ import annotations

import torch
from torch import nn


class TokenLearner(nn.Module):
    """(B, N, C) -> (B, K, C); ``attention(x)`` gives the (B, K, N) weights, each row summing to 1."""

    def __init__(self, dim: int, num_tokens: int, hidden: int | None = None) -> None:
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be at least 1, got {num_tokens}")
        self.num_tokens = num_tokens
        self.norm = nn.LayerNorm(dim)
        hidden = hidden or max(num_tokens, dim // 4)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, num_tokens))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(x)).transpose(1, 2).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x) @ x
