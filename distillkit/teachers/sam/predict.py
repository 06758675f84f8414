"""Using a trained SAM teacher: load it from its ``sam_lora`` folder, turn box prompts into masks.

One image embedding per image, however many boxes: the encoder runs once and the light mask
decoder runs on the boxes in chunks. Masks come back as COCO RLE at the image's own size, with the
IoU head's prediction (clipped to [0, 1]) as each mask's score.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillkit.config.build import section_defaults
from distillkit.config.schema import PreprocessingConfig
from distillkit.errors import DataError, UsageError
from distillkit.io import read_json, sha256_file
from distillkit.teachers.sam.data import encode_masks
from distillkit.teachers.sam.embeddings import image_embeddings, model_dtype, preprocess_images
from distillkit.teachers.sam.geometry import SamGeometry
from distillkit.teachers.sam.model import (
    SAM_WEIGHTS_FLAG,
    adapter_files_present,
    load_adapters,
    load_base_sam,
    load_sam_processor,
    sam_core,
)
from distillkit.teachers.weights import resolve_weights

#: What ``train_sam`` writes next to the adapters: everything needed to rebuild the teacher.
TEACHER_FILE = "sam_teacher.json"
TEACHER_FORMAT = "distillkit.sam_teacher/1"
MERGED_DIR = "merged"
# Box prompts decoded per pass: bounds the decoder's memory on images with hundreds of objects.
PROMPTS_PER_PASS = 64
# Masks brought to full resolution per step (K full-size float maps at once can be large).
UPSAMPLE_CHUNK = 16


@dataclass
class LoadedSam:
    """A SAM teacher ready for inference (``model`` in eval mode on ``device``)."""

    model: Any
    processor: Any
    geometry: SamGeometry
    device: torch.device
    class_names: list[str]
    mask_threshold: float
    multimask_output: bool
    adapter_dir: Path
    merged: bool
    identity: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _teacher_metadata(adapter_dir: Path) -> dict[str, Any]:
    """The teacher description of a folder that holds SAM adapters (UsageError when it does not)."""
    if not adapter_files_present(adapter_dir):
        raise UsageError(
            f"{adapter_dir} holds no SAM adapters (adapter_config.json + adapter_model.safetensors)",
            "pass the teachers/sam_lora folder that 'distillkit train-teacher' wrote",
        )
    path = adapter_dir / TEACHER_FILE
    if not path.is_file():
        raise UsageError(
            f"{adapter_dir} holds no trained SAM teacher ({TEACHER_FILE} is missing)",
            "pass the teachers/sam_lora folder that 'distillkit train-teacher' wrote",
        )
    metadata = read_json(path)
    if not isinstance(metadata, dict) or metadata.get("format") != TEACHER_FORMAT:
        raise DataError(f"{path} is not a distillkit SAM teacher description", "re-run 'distillkit train-teacher'")
    return metadata


def _identity(adapter_dir: Path, metadata: dict[str, Any], merged: bool) -> str:
    digest = hashlib.sha256()
    digest.update(sha256_file(adapter_dir / "adapter_model.safetensors").encode())
    for key in ("base_weights", "mask_threshold", "multimask_output"):
        digest.update(f"{key}={metadata.get(key)!r};".encode())
    digest.update(b"merged" if merged else b"adapters")
    return digest.hexdigest()[:16]


def _uses_merged(folder: Path, weights: str | None, prefer_merged: bool) -> bool:
    return prefer_merged and weights is None and (folder / MERGED_DIR / "config.json").is_file()


def sam_teacher_info(
    adapter_dir: str | os.PathLike[str], *, weights: str | None = None, prefer_merged: bool = True
) -> tuple[str, list[str]]:
    """The identity and class names ``load_sam_teacher`` would give, from the files alone (nothing is built)."""
    folder = Path(adapter_dir)
    metadata = _teacher_metadata(folder)
    merged = _uses_merged(folder, weights, prefer_merged)
    return _identity(folder, metadata, merged), list(metadata.get("class_names") or [])


def load_sam_teacher(
    adapter_dir: str | os.PathLike[str],
    device: torch.device | str | None = None,
    *,
    weights: str | None = None,
    prefer_merged: bool = True,
    preprocessing: PreprocessingConfig | None = None,
) -> LoadedSam:
    """Load the teacher saved in ``adapter_dir`` (``EXP/teachers/sam_lora``).

    The merged model is used when one was saved (no base weights needed, no adapter overhead);
    otherwise the base weights recorded at training (or ``weights``, e.g. a local copy on an
    offline machine) are resolved and the adapters loaded onto them.
    """
    from distillkit.training import resolve_device

    folder = Path(adapter_dir)
    metadata = _teacher_metadata(folder)
    target = resolve_device(device if device is not None else "auto")
    merged_dir = folder / MERGED_DIR
    use_merged = _uses_merged(folder, weights, prefer_merged)
    if use_merged:
        model = load_base_sam(merged_dir, target)
    else:
        base_source = weights or metadata.get("base_weights")
        if not base_source:
            raise DataError(f"{folder / TEACHER_FILE} does not name the base weights", f"pass {SAM_WEIGHTS_FLAG}")
        base = load_base_sam(resolve_weights(base_source, flag=SAM_WEIGHTS_FLAG), target)
        model = load_adapters(base, folder).to(target)
    model.eval()
    defaults = preprocessing or section_defaults("preprocessing")
    assert isinstance(defaults, PreprocessingConfig)
    processor = load_sam_processor(folder, sam_core(model).config, defaults)
    return LoadedSam(
        model=model,
        processor=processor,
        geometry=SamGeometry.from_processor(processor, sam_core(model).config),
        device=target,
        class_names=list(metadata.get("class_names") or []),
        mask_threshold=float(metadata.get("mask_threshold", 0.0)),
        multimask_output=bool(metadata.get("multimask_output", False)),
        adapter_dir=folder,
        merged=use_merged,
        identity=_identity(folder, metadata, use_merged),
        metadata=metadata,
    )


@torch.no_grad()
def decode_prompts(
    model: Any, embedding: torch.Tensor, boxes_input: torch.Tensor, multimask_output: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-resolution logits (K, L, L) and predicted IoUs (K,) for one image's embedding (1, C, h, w).

    With several candidates per prompt the one with the highest predicted IoU is returned, as SAM does.
    """
    logits: list[torch.Tensor] = []
    scores: list[torch.Tensor] = []
    for start in range(0, boxes_input.shape[0], PROMPTS_PER_PASS):
        chunk = boxes_input[start : start + PROMPTS_PER_PASS].to(embedding.device, torch.float32)
        out = model(image_embeddings=embedding, input_boxes=chunk[None], multimask_output=multimask_output)
        masks, ious = out.pred_masks[0], out.iou_scores[0]  # (k, M, L, L), (k, M)
        best = ious.argmax(dim=-1)
        picked = torch.arange(masks.shape[0], device=masks.device)
        logits.append(masks[picked, best].float())
        scores.append(ious[picked, best].float())
    return torch.cat(logits), torch.cat(scores)


@torch.no_grad()
def full_size_rles(
    logits: torch.Tensor, geometry: SamGeometry, height: int, width: int, threshold: float
) -> list[dict[str, Any]]:
    """COCO RLEs at the image's size from low-resolution logits (K, L, L).

    Upsampled and encoded a few masks at a time: hundreds of full-size masks of a large image
    would not fit in memory at once, their RLEs do.
    """
    rles: list[dict[str, Any]] = []
    for start in range(0, logits.shape[0], UPSAMPLE_CHUNK):
        chunk = geometry.low_to_image(logits[start : start + UPSAMPLE_CHUNK], height, width)
        rles.extend(encode_masks((chunk > threshold).to(torch.uint8).cpu().numpy()))
    return rles


@torch.no_grad()
def embed_image(loaded: LoadedSam, image: np.ndarray) -> torch.Tensor:
    """(1, C, h, w) image embedding of an RGB uint8 image."""
    pixels = preprocess_images(loaded.processor, [image]).to(loaded.device, model_dtype(loaded.model))
    return image_embeddings(loaded.model, pixels)


def predict_masks(
    loaded: LoadedSam, image: np.ndarray, boxes_xyxy: np.ndarray
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Masks for box prompts: (one COCO RLE per box at the image's size, (N,) float32 scores in [0, 1]).

    ``image`` is (H, W, 3) uint8 RGB; ``boxes_xyxy`` (N, 4) absolute pixel corners in that image.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return [], np.zeros(0, dtype=np.float32)
    height, width = image.shape[:2]
    embedding = embed_image(loaded, image)
    boxes_input = torch.from_numpy(loaded.geometry.boxes_to_input(boxes, height, width))
    logits, scores = decode_prompts(loaded.model, embedding, boxes_input, loaded.multimask_output)
    rles = full_size_rles(logits, loaded.geometry, height, width, loaded.mask_threshold)
    return rles, scores.clamp(0.0, 1.0).cpu().numpy().astype(np.float32)
