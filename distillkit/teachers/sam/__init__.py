"""SAM mask teacher: box-prompted SAM with LoRA on its mask decoder (transformers + peft).

    from distillkit.teachers.sam import train_sam, load_sam_teacher, predict_masks, evaluate_sam

``train_sam`` fine-tunes on a dataset's masks (encoders frozen, image embeddings computed once
where augmentation allows, LoRA on the decoder's attention, the IoU head trained) and writes
``EXP/teachers/sam_lora``; ``load_sam_teacher`` loads it back; ``predict_masks`` turns box prompts
(Grounding DINO's or ground-truth boxes) into RLE masks; ``evaluate_sam`` scores masks prompted
with the ground-truth boxes (COCO mask AP and mean IoU).
"""

from __future__ import annotations

from distillkit.teachers.sam.embeddings import CacheDecision, cache_decision
from distillkit.teachers.sam.evaluate import SamEvaluationResult, evaluate_sam
from distillkit.teachers.sam.predict import LoadedSam, load_sam_teacher, predict_masks
from distillkit.teachers.sam.train import SAM_DIR, SamTrainResult, train_sam

__all__ = [
    "SAM_DIR",
    "CacheDecision",
    "LoadedSam",
    "SamEvaluationResult",
    "SamTrainResult",
    "cache_decision",
    "evaluate_sam",
    "load_sam_teacher",
    "predict_masks",
    "train_sam",
]
