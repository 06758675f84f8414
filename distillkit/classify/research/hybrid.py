"""Hybrid CNN + ViT backbone: two timm models, pooled features concatenated, gated, projected.

    z = [pool(CNN(x)), pool(ViT(x))]            (B, Dc + Dv)
    z = z ⊙ sigmoid(W2 ReLU(W1 z))              the dynamic head attention gate
    f = GELU(LN(W z))                           (B, fusion_dim)  -> head

The ViT stream optionally carries a TokenLearner after its middle block (the later blocks then see
K learned tokens plus the class token instead of N patches) and token merging (ToMe) in its blocks.
``HybridBackbone`` follows the timm model interface the classifier wrapper relies on
(``forward_features``, ``forward_head(pre_logits=)``, ``get_classifier``, ``num_features``).
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from distillkit.classify.research.gate import DynamicHeadGate
from distillkit.classify.research.token_learner import TokenLearner


class ViTStream(nn.Module):
    """A headless timm transformer -> pooled features (B, D), with an optional TokenLearner."""

    def __init__(self, vit: nn.Module, token_learner_tokens: int = 0) -> None:
        super().__init__()
        self.vit = vit
        self.num_features = int(vit.num_features)
        self.token_learner = TokenLearner(self.num_features, token_learner_tokens) if token_learner_tokens > 0 else None
        blocks = getattr(vit, "blocks", None)
        #: TokenLearner sits after this many blocks (flat ViTs); other transformers get it at the end.
        self.split = len(blocks) // 2 if isinstance(vit, VisionTransformer) and blocks is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.token_learner is None:
            return self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)
        if self.split is not None:
            return self._flat_vit(x)
        tokens = self.vit.forward_features(x)
        if tokens.ndim == 4:
            if getattr(self.vit, "output_fmt", "NCHW") == "NCHW":
                tokens = tokens.flatten(2).transpose(1, 2)
            else:
                tokens = tokens.flatten(1, 2)
        return self.token_learner(tokens).mean(dim=1)

    def _flat_vit(self, x: torch.Tensor) -> torch.Tensor:
        vit, learner = self.vit, self.token_learner
        assert isinstance(vit, VisionTransformer) and learner is not None and self.split is not None
        tome = getattr(vit, "_tome", None)
        if tome is not None:
            tome["size"] = None
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        for block in vit.blocks[: self.split]:
            x = block(x)
        prefix = vit.num_prefix_tokens
        x = torch.cat([x[:, :prefix], learner(x[:, prefix:])], dim=1)
        if tome is not None:
            tome["size"] = None  # learned tokens each count as one unit from here on
        for block in vit.blocks[self.split :]:
            x = block(x)
        return vit.forward_head(vit.norm(x), pre_logits=True)


class HybridBackbone(nn.Module):
    """CNN + ViT streams fused by the dynamic head attention gate; see the module docstring."""

    def __init__(
        self,
        cnn: nn.Module,
        vit: nn.Module,
        num_classes: int,
        fusion_dim: int = 256,
        token_learner_tokens: int = 0,
        drop_rate: float = 0.0,
        gate_reduction: int = 4,
    ) -> None:
        super().__init__()
        self.cnn = cnn
        self.vit_stream = ViTStream(vit, token_learner_tokens)
        joint = int(cnn.num_features) + self.vit_stream.num_features
        self.gate = DynamicHeadGate(joint, gate_reduction)
        self.proj = nn.Sequential(nn.Linear(joint, fusion_dim), nn.LayerNorm(fusion_dim), nn.GELU())
        self.head_drop = nn.Dropout(drop_rate)
        self.head: nn.Module = nn.Linear(fusion_dim, num_classes)
        self.num_features = fusion_dim
        self.num_classes = num_classes
        self.pretrained_cfg = {"classifier": "head"}

    def fused(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(concatenated stream features before the gate, gate weights)."""
        cnn = self.cnn.forward_head(self.cnn.forward_features(x), pre_logits=True)
        z = torch.cat([cnn, self.vit_stream(x)], dim=1)
        return z, self.gate.weights(z)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        z, alpha = self.fused(x)
        return self.proj(z * alpha)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
