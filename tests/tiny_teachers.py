"""Tiny random-weight teachers and small generated datasets for the teacher tests (no downloads).

``write_tiny_grounding_dino`` saves a 0.5 M-parameter Grounding DINO with a local BERT vocabulary
and its processor through ``save_pretrained``, so tests load it through the same local-folder path
users take on offline servers. The vocabulary keeps the token ids hard-coded in the model:
[PAD]=0, [CLS]=101, [SEP]=102, '.'=1012, '?'=1029.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

WORDS = ["red", "green", "blue", "square", "scratch", "dent", "ear", "of", "bag", "stain", "hole"]
COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}


def tiny_vocab(words: list[str] = WORDS) -> dict[str, int]:
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    while len(tokens) < 1012:
        tokens.append(f"[unused{len(tokens)}]")
    tokens.append(".")
    while len(tokens) < 1029:
        tokens.append(f"[unused{len(tokens)}]")
    tokens.append("?")
    tokens += words
    return {token: index for index, token in enumerate(tokens)}


def write_tiny_grounding_dino(folder: Path, seed: int = 0, image_size: int = 96, save_processor: bool = True) -> Path:
    import torch
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    vocab = tiny_vocab()
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)  # vocab=, not vocab_file= (ignored in v5)
    backbone = SwinConfig(
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        image_size=image_size,
        window_size=4,
        out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        num_queries=30,
        max_text_len=32,
    )
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config)
    model.save_pretrained(folder)
    if save_processor:
        image_processor = GroundingDinoImageProcessor(size={"shortest_edge": image_size, "longest_edge": image_size})
        GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    else:
        tokenizer.save_pretrained(folder)
    return folder


def write_shapes_dataset(
    folder: Path,
    num_images: int = 8,
    mode: str = "boxes",
    classes: tuple[str, ...] = ("red", "green", "blue"),
    size: int = 64,
    seed: int = 0,
    name: str = "data.json",
) -> Path:
    """Coloured squares on grey: class = colour. ``mode``: boxes (bbox only), masks (polygons only), both."""
    rng = np.random.default_rng(seed)
    images_dir = folder / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in range(num_images):
        pixels = np.full((size, size, 3), 128, dtype=np.uint8)
        file_name = f"img_{seed}_{index:03d}.png"
        for slot in range(2):
            class_index = int(rng.integers(len(classes)))
            side = int(rng.integers(size // 5, size // 3))
            x = int(rng.integers(0, size // 2 - side)) + slot * size // 2
            y = int(rng.integers(0, size - side))
            pixels[y : y + side, x : x + side] = COLORS.get(classes[class_index], (200, 200, 0))
            ann: dict[str, Any] = {
                "id": len(annotations) + 1,
                "image_id": index + 1,
                "category_id": class_index + 1,
                "iscrowd": 0,
            }
            if mode in ("boxes", "both"):
                ann["bbox"] = [float(x), float(y), float(side), float(side)]
                ann["area"] = float(side * side)
            if mode in ("masks", "both"):
                ann["segmentation"] = [[x, y, x + side, y, x + side, y + side, x, y + side]]
            annotations.append(ann)
        Image.fromarray(pixels).save(images_dir / file_name)
        images.append({"id": index + 1, "file_name": file_name, "width": size, "height": size})
    categories = [{"id": i + 1, "name": name_, "supercategory": "shape"} for i, name_ in enumerate(classes)]
    path = folder / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path
