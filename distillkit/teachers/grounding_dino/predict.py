"""Grounding DINO inference: one forward pass per batch scores every class of the prompt.

Per query, the score of class c is the mean sigmoid of the tokens of phrase c (the same per-phrase
averaging the training matcher uses); the detection's score is its best class score and its class
that phrase. ``box_threshold`` keeps detections scoring at least that; ``text_threshold`` also
requires the best phrase to have one token at least that confident (a phrase "matched" in the
original Grounding DINO's sense). Boxes come back as ``xyxy`` pixels of the original image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from distillkit.teachers.grounding_dino.prompt import phrase_token_maps


@dataclass
class BoxPredictions:
    """Detections of one image: boxes (N, 4) xyxy pixels, scores (N,), class ids (N,), class scores (N, C)."""

    width: int
    height: int
    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_scores: np.ndarray


def _model_inputs(encoded: Any, device: torch.device) -> dict[str, torch.Tensor]:
    keys = ("pixel_values", "pixel_mask", "input_ids", "attention_mask", "token_type_ids")
    return {key: encoded[key].to(device) for key in keys if key in encoded}


@torch.inference_mode()
def predict_boxes(
    model: Any,
    processor: Any,
    prompt_text: str,
    num_classes: int,
    images: Sequence[np.ndarray],
    device: torch.device,
    box_threshold: float,
    text_threshold: float,
    max_detections: int = 100,
) -> list[BoxPredictions]:
    """Detections for ``images`` (RGB HWC uint8 arrays), all classes in one pass per batch."""
    if not images:
        return []
    encoded = processor(images=list(images), text=[prompt_text] * len(images), return_tensors="pt")
    inputs = _model_inputs(encoded, device)
    outputs = model(**inputs)
    token_probs = outputs.logits.float().sigmoid()  # (B, Q, T); -inf past the prompt → 0
    maps = phrase_token_maps(inputs["input_ids"], token_probs.shape[-1], num_classes).to(token_probs.device)
    class_scores = torch.einsum("bqt,bct->bqc", token_probs, maps) / maps.sum(-1).clamp(min=1)[:, None, :]
    # the strongest token inside each phrase, for the text threshold
    phrase_peak = (token_probs[:, :, None, :] * maps[:, None, :, :]).amax(-1)
    scores, class_ids = class_scores.max(-1)
    peak = phrase_peak.gather(-1, class_ids[..., None]).squeeze(-1)
    boxes = outputs.pred_boxes.float()
    results = []
    for index, image in enumerate(images):
        height, width = image.shape[:2]
        keep = (scores[index] >= box_threshold) & (peak[index] >= text_threshold)
        order = torch.argsort(scores[index].masked_fill(~keep, -1.0), descending=True)[: int(keep.sum())]
        order = order[:max_detections]
        cx, cy, w, h = boxes[index, order].unbind(-1)
        xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
        xyxy = xyxy * torch.tensor([width, height, width, height], dtype=xyxy.dtype, device=xyxy.device)
        xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, width)
        xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, height)
        results.append(
            BoxPredictions(
                width=width,
                height=height,
                boxes=xyxy.cpu().numpy().astype(np.float32),
                scores=scores[index, order].cpu().numpy().astype(np.float32),
                class_ids=class_ids[index, order].cpu().numpy().astype(np.int64),
                class_scores=class_scores[index, order].cpu().numpy().astype(np.float32),
            )
        )
    return results
