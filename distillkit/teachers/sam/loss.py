"""The SAM fine-tuning loss: dice + BCE on the mask logits, MSE of the IoU head against the real IoU.

As in SAM's own training, with several candidate masks per prompt (``multimask_output``) only the
candidate with the lowest mask loss is penalised (the prompt is ambiguous, any one good mask is
right), while the IoU head learns the real IoU of every candidate, which is what ranks them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distillkit.config.schema import SamLoraConfig


def binary_iou(logits: torch.Tensor, targets: torch.Tensor, threshold: float) -> torch.Tensor:
    """IoU of the mask ``logits > threshold`` with ``targets`` over the last two dims (empty vs empty = 1).

    ``targets`` may be soft (the share of each low-resolution pixel the object covers at full
    resolution): intersection and union then count covered area, so a thin scratch that covers a
    third of its low-resolution pixels still has an IoU to learn, instead of vanishing as it would
    after thresholding the target at 0.5. For binary targets this is the plain IoU.
    """
    predicted = (logits > threshold).float()
    intersection = (predicted * targets).flatten(-2).sum(-1)
    union = predicted.flatten(-2).sum(-1) + targets.flatten(-2).sum(-1) - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1e-6), torch.ones_like(union))


def sam_loss(
    pred_masks: torch.Tensor,
    iou_pred: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    config: SamLoraConfig,
) -> dict[str, torch.Tensor]:
    """Loss terms for decoder outputs ``pred_masks`` (B, K, M, L, L), ``iou_pred`` (B, K, M).

    ``targets`` (B, K, L, L) in [0, 1], ``valid`` (B, K) marks real prompts (padding is ignored).
    Returns ``loss`` (what is optimised), ``dice``, ``bce``, ``iou`` (the IoU-head MSE) and
    ``mask_iou`` (the IoU the masks reach, a training-set metric), each a mean over valid prompts.
    """
    logits = pred_masks.float()
    target = targets.float().unsqueeze(2).expand_as(logits)
    probabilities = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(-2).mean(-1)
    numerator = 2.0 * (probabilities * target).flatten(-2).sum(-1) + 1.0
    denominator = probabilities.flatten(-2).sum(-1) + target.flatten(-2).sum(-1) + 1.0
    dice = 1.0 - numerator / denominator  # (B, K, M)

    mask_loss = config.dice_weight * dice + config.bce_weight * bce
    best = mask_loss.argmin(dim=-1, keepdim=True)  # the candidate each prompt is judged by

    with torch.no_grad():
        real_iou = binary_iou(logits, target, config.mask_threshold)
    iou_error = (iou_pred.float() - real_iou).pow(2).mean(-1)  # (B, K)

    # Padding prompts weigh 0; a batch without any real prompt gives a zero loss that still has a
    # graph (so the step is a no-op, not an error) and no host synchronisation is needed to know.
    weights = valid.float()
    count = weights.sum().clamp(min=1.0)

    def mean(values: torch.Tensor) -> torch.Tensor:
        return (values * weights).sum() / count

    chosen_dice = mean(dice.gather(-1, best).squeeze(-1))
    chosen_bce = mean(bce.gather(-1, best).squeeze(-1))
    iou_term = mean(iou_error)
    loss = mean(mask_loss.gather(-1, best).squeeze(-1))
    if config.train_iou_head:
        # Without a trained IoU head, the IoU error would only pull the adapters towards predicting it.
        loss = loss + config.iou_weight * iou_term
    return {
        "loss": loss,
        "dice": chosen_dice.detach(),
        "bce": chosen_bce.detach(),
        "iou": iou_term.detach(),
        "mask_iou": mean(real_iou.gather(-1, best).squeeze(-1)).detach(),
    }
