"""Token merging (ToMe, Bolya et al., ICLR 2023) patched into timm ViT blocks, no retraining needed.

In every block, after attention, the tokens are split alternately into sets A and B; each A token is
matched to its most similar B token (cosine similarity of the attention keys, averaged over heads)
and the ``r`` best-matched A tokens are merged into their partners by a size-weighted average. Each
token carries its size (how many patches it stands for); attention adds ``log(size)`` to the logits
("proportional attention") so a merged token keeps the weight of the patches it absorbed. The class
token is never merged. ``ratio`` merges ``floor(ratio * mergeable tokens)`` per block (at most half).

``apply_token_merging(vit, ratio)`` swaps the classes of the model's blocks and attention modules for
the ToMe subclasses below: the state dict is unchanged, so trained weights load as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Attention, Block, VisionTransformer
from torch import nn

Merge = Callable[[torch.Tensor, str], torch.Tensor]


def _identity(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    return x


def bipartite_soft_matching(metric: torch.Tensor, r: int, class_token: bool = False) -> Merge:
    """The merge function for ``metric`` (B, N, C): ``merge(x, mode)`` maps (B, N, D) to (B, N - r, D).

    Even-indexed tokens form set A, odd-indexed set B. The output holds A's unmerged tokens (in
    their order when there is a class token, so it stays first) followed by B's tokens, into which
    the ``r`` A tokens with the most similar B partner were reduced with ``mode`` (sum / mean).
    """
    protected = 1 if class_token else 0
    r = min(r, (metric.shape[1] - protected) // 2)
    if r <= 0:
        return _identity
    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = metric[..., ::2, :], metric[..., 1::2, :]
        scores = a @ b.transpose(-1, -2)
        if class_token:
            scores[..., 0, :] = -math.inf  # the class token (A's first) is never merged
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
        unmerged_idx = edge_idx[..., r:, :]
        src_idx = edge_idx[..., :r, :]
        dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)
        if class_token:
            unmerged_idx = unmerged_idx.sort(dim=1)[0]

    def merge(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        src, dst = x[..., ::2, :], x[..., 1::2, :]
        n, t1, c = src.shape
        unmerged = src.gather(dim=-2, index=unmerged_idx.expand(n, t1 - r, c))
        src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce=mode)
        return torch.cat([unmerged, dst], dim=1)

    return merge


def merge_weighted_average(
    merge: Merge, x: torch.Tensor, size: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge ``x`` as size-weighted averages; return the merged tokens and their new sizes (B, N', 1)."""
    if size is None:
        size = torch.ones_like(x[..., 0, None])
    merged = merge(x * size, "sum")
    size = merge(size, "sum")
    return merged / size, size


def tokens_to_merge(ratio: float, num_tokens: int, protected: int) -> int:
    """How many tokens a block merges: ``floor(ratio * mergeable)``, at most half of them."""
    mergeable = num_tokens - protected
    return min(int(ratio * mergeable), mergeable // 2)


class ToMeAttention(Attention):
    """timm Attention returning (output, keys averaged over heads), with proportional attention."""

    def forward(self, x: torch.Tensor, size: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        batch, n, _ = x.shape
        gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
        qkv = self.qkv(x).reshape(batch, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        bias = None if size is None else size.log()[:, None, None, :, 0].to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attn_drop.p if self.training else 0.0
        )
        out = self.norm(out.transpose(1, 2).reshape(batch, n, self.attn_dim))
        if gate is not None:
            out = out * gate
        return self.proj_drop(self.proj(out)), k.mean(dim=1)


class ToMeBlock(Block):
    """timm Block that merges ``_tome["r"]`` tokens between attention and MLP."""

    _tome: dict[str, Any]

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:  # type: ignore[override]
        info = self._tome
        size = info["size"] if info["proportional"] else None
        attended, keys = self.attn(self.norm1(x), size)
        x = x + self.drop_path1(self.ls1(attended))
        r = tokens_to_merge(info["ratio"], x.shape[1], info["protected"])
        if r > 0:
            merge = bipartite_soft_matching(keys, r, class_token=info["class_token"])
            x, info["size"] = merge_weighted_average(merge, x, info["size"])
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


def apply_token_merging(model: nn.Module, ratio: float, proportional_attention: bool = True) -> nn.Module:
    """Patch a timm VisionTransformer in place for token merging at ``ratio`` (0 < ratio <= 0.5).

    Returns the model. Raises ValueError for other architectures or an out-of-range ratio.
    """
    if not 0.0 < ratio <= 0.5:
        raise ValueError(f"token merging ratio must be in (0, 0.5], got {ratio}")
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"token merging needs a timm VisionTransformer, not {type(model).__name__}")
    class_token = model.cls_token is not None
    info: dict[str, Any] = {
        "ratio": float(ratio),
        "size": None,
        "proportional": proportional_attention,
        "class_token": class_token,
        # Only the class token is protected by the matching; other prefix tokens (registers) are not
        # supported, so they are counted here and refused below.
        "protected": 1 if class_token else 0,
    }
    if model.num_prefix_tokens != info["protected"]:
        raise ValueError("token merging supports ViTs with at most a class token (no register/distill tokens)")
    for block in model.blocks:
        if type(block) not in (Block, ToMeBlock) or type(block.attn) not in (Attention, ToMeAttention):
            raise ValueError(f"token merging supports timm Block/Attention, not {type(block).__name__}")
        block.__class__ = ToMeBlock
        block.attn.__class__ = ToMeAttention
        block._tome = info

    def reset(module: nn.Module, args: Any) -> None:
        info["size"] = None  # every forward starts with one patch per token

    model._tome = info  # type: ignore[assignment]
    model.blocks.register_forward_pre_hook(reset)
    return model


def token_merging_ratio(model: nn.Module) -> float:
    """The ratio a model was patched with (0.0 when it was not)."""
    info = getattr(model, "_tome", None)
    return float(info["ratio"]) if isinstance(info, dict) else 0.0
