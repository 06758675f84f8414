"""The Grounding DINO set loss with the weights of ``teacher_grounding_dino_lora.loss``.

This is transformers' own criterion (its Hungarian matcher and ``GroundingDinoImageLoss``), called
directly instead of through ``model(labels=...)`` because that path hard-codes the classification
weight (2.0) and the focal gamma (2): here ``class_weight``, ``bbox_weight``, ``giou_weight``,
``focal_alpha`` and ``focal_gamma`` all come from the config, and the matcher's costs use the same
weights. The two-stage encoder proposals get the same terms (suffix ``_enc``), as in transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.loss.loss_grounding_dino import (
    GroundingDinoHungarianMatcher,
    GroundingDinoImageLoss,
    sigmoid_focal_loss,
)
from transformers.models.grounding_dino.modeling_grounding_dino import build_label_maps, build_text_mask

from distillkit.config.schema import GroundingDinoLossConfig


class _FocalImageLoss(GroundingDinoImageLoss):
    """transformers' criterion with a configurable focal gamma."""

    def __init__(self, matcher: GroundingDinoHungarianMatcher, focal_alpha: float, focal_gamma: float) -> None:
        super().__init__(matcher=matcher, focal_alpha=focal_alpha, losses=["labels", "boxes"])
        self.focal_gamma = focal_gamma

    def loss_labels(self, outputs: dict[str, Any], targets: list[dict[str, Any]], indices: Any, num_boxes: Any) -> dict:
        onehot = self._get_target_classes_one_hot(outputs, targets, indices)
        text_mask = outputs["text_mask"]
        logits = torch.masked_select(outputs["logits"], text_mask)  # positions past the prompt are -inf
        target = torch.masked_select(onehot, text_mask).float()
        loss = sigmoid_focal_loss(logits, target, num_boxes, alpha=self.focal_alpha, gamma=self.focal_gamma)
        return {"loss_ce": loss}


class GroundingDinoLoss:
    """``loss(outputs, input_ids, attention_mask, labels)`` → ``{"loss", "ce", "bbox", "giou", "ce_enc", ...}``."""

    def __init__(self, config: GroundingDinoLossConfig) -> None:
        self.config = config
        matcher = GroundingDinoHungarianMatcher(
            class_cost=config.class_weight, bbox_cost=config.bbox_weight, giou_cost=config.giou_weight
        )
        self.criterion = _FocalImageLoss(matcher, config.focal_alpha, config.focal_gamma)
        self.weights = {
            "loss_ce": config.class_weight,
            "loss_bbox": config.bbox_weight,
            "loss_giou": config.giou_weight,
        }

    def __call__(
        self,
        outputs: Any,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: Sequence[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        logits = outputs.logits
        label_maps = build_label_maps(logits, input_ids)
        text_mask = build_text_mask(logits, attention_mask)
        targets = list(labels)
        terms = self.criterion(
            {"logits": logits, "pred_boxes": outputs.pred_boxes, "label_maps": label_maps, "text_mask": text_mask},
            targets,
        )
        if getattr(outputs, "encoder_logits", None) is not None:
            encoder_terms = self.criterion(
                {
                    "logits": outputs.encoder_logits,
                    "pred_boxes": outputs.encoder_pred_boxes,
                    "label_maps": label_maps,
                    "text_mask": text_mask,
                },
                targets,
            )
            terms.update({f"{key}_enc": value for key, value in encoder_terms.items()})
        total = logits.new_zeros(())
        for key, value in terms.items():
            weight = self.weights.get(key.removesuffix("_enc"))
            if weight is not None:
                total = total + weight * value
        out = {"loss": total}
        for key, value in terms.items():  # ce, bbox, giou (+ _enc): logged per epoch by the training loop
            if key.removesuffix("_enc") in self.weights:
                out[key.removeprefix("loss_")] = value.detach()
        return out
