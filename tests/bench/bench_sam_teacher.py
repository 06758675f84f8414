"""Benchmark: SAM teacher training with cached image embeddings against recomputing them every epoch.

Both runs train the same random-weight SAM (built from a config, no download) on the same generated
images with the same settings, in the same process, interleaved ``--repeat`` times; the baseline
sets ``teacher_sam_lora.cache_image_embeddings=false``, so its frozen encoder runs on every
training batch and every validation image of every epoch. Printed: wall time per run, image-encoder
passes (counted), the ratio cached / baseline, and both runs' best val mask IoU (they train the same
decoder, so they agree up to float16 rounding of the cached embeddings).

    .venv/bin/python tests/bench/bench_sam_teacher.py [--images 8] [--epochs 3] [--image-size 256]
    .venv/bin/python tests/bench/bench_sam_teacher.py --vit-b --images 4 --epochs 2   # SAM ViT-B shapes, 1024 px
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any


def _write_model(folder: Path, args: argparse.Namespace) -> Path:
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    if args.vit_b:
        config = SamConfig()  # facebook/sam-vit-base's architecture: ViT-B/16, 1024 px, 256-d decoder
    else:
        patch = 16
        config = SamConfig(
            vision_config={
                "hidden_size": args.vision_hidden,
                "num_hidden_layers": args.vision_layers,
                "num_attention_heads": 4,
                "image_size": args.image_size,
                "patch_size": patch,
                "output_channels": 64,
                "mlp_dim": 4 * args.vision_hidden,
                "global_attn_indexes": [args.vision_layers - 1],
                "window_size": 4,
                "num_pos_feats": 32,
            },
            prompt_encoder_config={"hidden_size": 64, "image_size": args.image_size, "patch_size": patch},
            mask_decoder_config={
                "hidden_size": 64,
                "mlp_dim": 256,
                "num_attention_heads": 4,
                "iou_head_hidden_dim": 64,
            },
        )
    torch.manual_seed(0)
    model = SamModel(config)
    for module in model.modules():  # SAM's own init (range 1e-10) gives near-constant outputs
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    model.save_pretrained(folder)
    side = config.vision_config.image_size
    low = 4 * config.prompt_encoder_config.image_embedding_size
    SamProcessor(
        image_processor=SamImageProcessor(
            size={"longest_edge": side},
            pad_size={"height": side, "width": side},
            mask_size={"longest_edge": low},
            mask_pad_size={"height": low, "width": low},
        )
    ).save_pretrained(folder)
    return folder


def _train(train: Path, val: Path, weights: Path, out: Path, args: argparse.Namespace, cached: bool) -> dict[str, Any]:
    from transformers.models.sam import modeling_sam

    from distillkit.config import build_config
    from distillkit.teachers.sam import train_sam

    overrides = [
        f"teacher_sam_lora.epochs={args.epochs}",
        f"teacher_sam_lora.batch_size={args.batch}",
        f"teacher_sam_lora.cache_image_embeddings={'true' if cached else 'false'}",
        "training_dynamics.device=cpu",
        "training_dynamics.num_workers=0",
    ]
    config = build_config(
        ["preprocessing", "augmentation", "training_dynamics", "checkpointing", "teacher_sam_lora"], overrides=overrides
    )
    encoded: list[int] = []
    original = modeling_sam.SamVisionEncoder.forward

    def counting(self: Any, pixel_values: Any = None, **kwargs: Any) -> Any:
        encoded.append(int(pixel_values.shape[0]))
        return original(self, pixel_values, **kwargs)

    modeling_sam.SamVisionEncoder.forward = counting
    try:
        start = time.perf_counter()
        result = train_sam(train, val, config, out, weights=str(weights))
        seconds = time.perf_counter() - start
    finally:
        modeling_sam.SamVisionEncoder.forward = original
    return {"seconds": seconds, "encoded": sum(encoded), "best_iou": result.best_mask_iou}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="training images (validation: half as many)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=256, help="model input side (a multiple of 16)")
    parser.add_argument("--vision-hidden", type=int, default=96)
    parser.add_argument("--vision-layers", type=int, default=4)
    parser.add_argument("--vit-b", action="store_true", help="SAM ViT-B architecture at 1024 px (slow on CPU)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "distillkit-bench-sam")
    args = parser.parse_args()

    import torch

    from distillkit.data.synthetic import generate_inspection_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    side = 1024 if args.vit_b else args.image_size
    train = generate_inspection_dataset(
        work / "train", num_images=args.images, seed=0, image_size=(side, side * 3 // 4)
    )
    val = generate_inspection_dataset(
        work / "val", num_images=max(1, args.images // 2), seed=1, image_size=(side, side * 3 // 4)
    )
    weights = _write_model(work / ("vit_b" if args.vit_b else "weights"), args)

    runs: dict[str, list[dict[str, Any]]] = {"cached": [], "baseline": []}
    for repeat in range(args.repeat):
        for name in ("baseline", "cached"):
            runs[name].append(
                _train(train, val, weights, work / f"{name}_{repeat}" / "teachers", args, name == "cached")
            )

    best = {name: min(items, key=lambda item: item["seconds"]) for name, items in runs.items()}
    print(
        f"SAM teacher, {args.images} train / {max(1, args.images // 2)} val images, {args.epochs} epochs, "
        f"batch {args.batch}, input {side} px{' (ViT-B)' if args.vit_b else ''}, {torch.get_num_threads()} threads"
    )
    for name in ("baseline", "cached"):
        item = best[name]
        print(
            f"  {name:9s} {item['seconds']:8.1f} s   encoder images {item['encoded']:5d}"
            f"   best val mask IoU {item['best_iou']:.4f}"
        )
    ratio = best["cached"]["seconds"] / best["baseline"]["seconds"]
    print(f"  ratio cached / baseline: {ratio:.2f} (speed-up {1 / ratio:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
