"""Benchmark: each research technique of ``train-classifier`` against the plain baseline, same budget, same run.

Two data sets, both CPU-sized:

- **digits**: scikit-learn's ``load_digits()`` (1797 8x8 digits, 10 balanced classes), written and
  split 75/25 by ``bench_classifier.write_digits``;
- **bccd**: cell crops cut from the boxes of ``../shared/data/bccd`` (RBC / WBC / Platelets — real
  microscopy, imbalanced), split 75/25 stratified; ``--max-per-class`` caps the crops per class.

Every technique is one ``train_classifier`` run with the baseline settings plus its switches (same
epochs, batch, lr, image size, seed), scored on the held-out 25%: accuracy, macro F1 and ECE (with
the temperature fitted on the validation split, as the product ships). Token merging is measured
without retraining on the hybrid model: accuracy and CPU latency with and without ToMe.

    .venv/bin/python tests/bench/bench_classifier_techniques.py [--datasets digits,bccd] [--epochs 4]
        [--imgsz 48] [--techniques baseline,hybrid,...] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[2]
BCCD = REPO.parent / "shared" / "data" / "bccd"

CNN = "resnet10t"
VIT = "vit_tiny_patch16_224"


def hybrid_name(imgsz: int, **extra: Any) -> str:
    from distillkit.classify.research import ResearchModel

    return ResearchModel(CNN, vit=VIT, vit_depth=4, vit_patch=8, img=imgsz, fusion_dim=128, **extra).name


def techniques(imgsz: int) -> dict[str, list[str]]:
    """Technique -> overrides added to the baseline (the baseline is the plain resnet10t run)."""
    return {
        "baseline": [],
        "hybrid_gate": [f"classifier.model={hybrid_name(imgsz)}"],
        "hybrid_token_learner": [f"classifier.model={hybrid_name(imgsz)}", "classifier.token_learner_tokens=8"],
        "lora_r8": ["classifier.lora_rank=8"],
        "supcon_then_finetune": ["@supcon"],
        "arcface": ["classifier.head=arcface", "classifier.margin=0.3"],
        "adaface": ["classifier.head=adaface", "classifier.margin=0.4"],
        "curricularface": ["classifier.head=curricularface", "classifier.margin=0.3"],
        "evidential": ["classifier.loss=evidential", "classifier.evidential_anneal_epochs=2"],
        "mixup": ["classifier.mixing=mixup", "classifier.mixing_alpha=0.2"],
        "cutmix": ["classifier.mixing=cutmix", "classifier.mixing_alpha=1.0"],
        "tokenmix_hybrid": [f"classifier.model={hybrid_name(imgsz)}", "classifier.mixing=tokenmix"],
        "sam": ["classifier.sam_rho=0.05"],
        "lookahead": ["classifier.lookahead_k=5"],
        "grad_centralization": ["classifier.grad_centralization=true"],
        "sam+lookahead+gc": [
            "classifier.sam_rho=0.05",
            "classifier.lookahead_k=5",
            "classifier.grad_centralization=true",
        ],
    }


def write_bccd(root: Path, max_per_class: int, seed: int) -> tuple[Path, Path]:
    """Crops of the annotated cells (square, 10% margin) as class folders, 75/25 stratified."""
    from PIL import Image
    from sklearn.model_selection import train_test_split

    coco = json.loads((BCCD / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    images = {i["id"]: i for i in coco["images"]}
    by_class: dict[str, list[dict[str, Any]]] = {}
    for ann in coco["annotations"]:
        if ann["bbox"][2] >= 4 and ann["bbox"][3] >= 4:
            by_class.setdefault(names[ann["category_id"]], []).append(ann)
    rng = random.Random(seed)
    chosen: list[tuple[dict[str, Any], str]] = []
    for name, anns in sorted(by_class.items()):
        rng.shuffle(anns)
        chosen += [(ann, name) for ann in anns[:max_per_class]]
    labels = [name for _, name in chosen]
    train_idx, test_idx = train_test_split(np.arange(len(chosen)), test_size=0.25, stratify=labels, random_state=seed)
    opened: dict[int, Any] = {}
    for split, indices in (("train", train_idx), ("test", test_idx)):
        for i in indices:
            ann, name = chosen[i]
            info = images[ann["image_id"]]
            if info["id"] not in opened:
                opened[info["id"]] = Image.open(BCCD / "images" / Path(info["file_name"]).name).convert("RGB")
            x, y, w, h = ann["bbox"]
            side = max(w, h) * 1.1
            cx, cy = x + w / 2, y + h / 2
            crop = opened[info["id"]].crop(
                (int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2))
            )
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            crop.save(folder / f"{ann['id']}.png")
    return root / "train", root / "test"


def score(best: Path, test: Path, evidential: bool) -> dict[str, Any]:
    """Accuracy, macro F1, ECE (stored temperature) on the test tree; uncertainty summary when evidential."""
    from torch.utils.data import DataLoader

    from distillkit.classify import load_classifier
    from distillkit.classify.dataset import ClassificationDataset
    from distillkit.classify.metrics import classification_metrics
    from distillkit.classify.research.objectives import (
        evidential_probabilities,
        evidential_uncertainty,
        uncertainty_summary,
    )
    from distillkit.classify.sources import load_classification_data

    model = load_classifier(best)
    data = load_classification_data(test).aligned_to(model.class_names)
    dataset = ClassificationDataset(data.paths, data.targets, model.input_hw, model.mean, model.std)
    logits, targets = [], []
    started = time.perf_counter()
    with torch.no_grad():
        for images, target in DataLoader(dataset, batch_size=128):
            logits.append(model.model(images))
            targets.append(target)
    latency = (time.perf_counter() - started) * 1000 / len(dataset)
    z, y = torch.cat(logits), torch.cat(targets)
    probs = evidential_probabilities(z) if evidential else model.probabilities(z)
    metrics = classification_metrics(probs.numpy(), y.numpy(), model.class_names, False, topk=[1])
    row: dict[str, Any] = {
        "accuracy": metrics.accuracy,
        "macro_f1": metrics.macro_f1,
        "ece": metrics.ece,
        "ms": latency,
    }
    if evidential:
        correct = probs.argmax(1) == y.argmax(1)
        row["uncertainty"] = uncertainty_summary(evidential_uncertainty(z), correct)
    return row


def tome_effect(best: Path, test: Path, ratio: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The hybrid model's test scores without and with token merging (same weights, no retraining)."""
    from distillkit.classify.checkpoint import ClassifierMeta, _read, save_classifier
    from distillkit.classify.models import ClassifierSpec, build_classifier
    from distillkit.classify.research import ResearchModel

    plain = score(best, test, False)
    raw = _read(best)
    assert raw is not None
    meta = ClassifierMeta.from_dict(raw["distillkit"])
    name = ResearchModel.parse(meta.spec.name).with_changes(tome=ratio).name
    spec = ClassifierSpec(name, meta.spec.num_classes, drop_rate=meta.spec.drop_rate)
    model = build_classifier(spec).model
    model.load_state_dict(raw["model"])
    meta.spec = spec
    merged_path = save_classifier(best.parent / f"best_tome{ratio}.pt", model, meta)
    merged = score(merged_path, test, False)
    for row in (plain, merged):  # a steadier latency: best of 3 passes
        row["ms"] = min(row["ms"], *(score(best if row is plain else merged_path, test, False)["ms"] for _ in range(2)))
    return plain, merged


def tome_vit_latency(ratio: float, repeats: int = 5) -> tuple[float, float]:
    """ms per 224-px image of a random-weight vit_tiny_patch16_224 (196 patches) without and with ToMe.

    At the benchmark's small inputs the ViT stream has too few tokens for merging to pay; this is the
    speed at the token count ToMe is designed for (accuracy is measured on the trained hybrid above).
    """
    import timm

    from distillkit.classify.research.token_merging import apply_token_merging

    vit = timm.create_model(VIT, pretrained=False, num_classes=10).eval()
    images = torch.randn(8, 3, 224, 224)
    timings = []
    for patched in (False, True):
        if patched:
            apply_token_merging(vit, ratio)
        with torch.no_grad():
            vit(images)  # warm-up
            best = min(_timed(lambda: vit(images)) for _ in range(repeats))
        timings.append(best * 1000 / len(images))
    return timings[0], timings[1]


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="digits,bccd")
    parser.add_argument("--techniques", default="all", help="comma list of technique names (see the table)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--imgsz", type=int, default=48)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--max-per-class", type=int, default=1000, help="bccd: crops per class (caps RBC only)")
    parser.add_argument("--tome-ratio", type=float, default=0.25)
    parser.add_argument("--tome-vit-latency", action="store_true", help="also time ToMe on a 224-px ViT")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from bench_classifier import write_digits

    from distillkit.classify.train import train_classifier

    work = args.workdir or Path(tempfile.mkdtemp(prefix="distillkit-bench-techniques-"))
    table = techniques(args.imgsz)
    chosen = list(table) if args.techniques == "all" else args.techniques.split(",")
    base = [
        f"training_dynamics.epochs={args.epochs}",
        f"training_dynamics.batch_size={args.batch}",
        f"training_dynamics.lr={args.lr}",
        f"training_dynamics.seed={args.seed}",
        "training_dynamics.weight_decay=0.05",
        "training_dynamics.warmup_epochs=1",
        "training_dynamics.num_workers=0",
        "training_dynamics.device=cpu",
        "training_dynamics.early_stopping_patience=0",
        "augmentation.intensity=none",
        f"classifier.model={CNN}",
        f"classifier.imgsz={args.imgsz}",
        "classifier.pretrained=false",
        "classifier.topk=[1]",
    ]
    loaders: dict[str, Callable[[Path], tuple[Path, Path]]] = {
        "digits": lambda root: write_digits(root, args.seed)[:2],
        "bccd": lambda root: write_bccd(root, args.max_per_class, args.seed),
    }
    results: dict[str, dict[str, Any]] = {}
    for dataset in filter(None, args.datasets.split(",")):
        train, test = loaders[dataset](work / dataset)
        counts = {p.name: len(list(p.glob("*.png"))) for p in sorted(train.iterdir())}
        print(f"\n== {dataset}: train {counts}, test {sum(1 for _ in test.rglob('*.png'))} images, {args.imgsz} px")
        rows: dict[str, Any] = {}
        for name in chosen:
            overrides = [*base, *(o for o in table[name] if not o.startswith("@"))]
            out = work / "exp" / dataset / name
            started = time.perf_counter()
            if "@supcon" in table[name]:
                warm = train_classifier(train, out / "supcon", overrides=[*overrides, "classifier.supcon=true"])
                trained = train_classifier(
                    train, out / "finetune", overrides=[*overrides, f"classifier.model={warm.best.as_posix()}"]
                )
            else:
                trained = train_classifier(train, out, overrides=overrides)
            elapsed = time.perf_counter() - started
            row = score(trained.best, test, "classifier.loss=evidential" in overrides)
            row["train_s"] = elapsed
            rows[name] = row
            if name == "hybrid_gate":
                plain, merged = tome_effect(trained.best, test, args.tome_ratio)
                rows[f"hybrid+tome{args.tome_ratio}"] = {
                    **merged,
                    "train_s": 0.0,
                    "speedup": plain["ms"] / merged["ms"],
                }
                rows["hybrid_gate"]["ms"] = plain["ms"]
            print(_line(name, row, rows.get("baseline")), flush=True)
            if f"hybrid+tome{args.tome_ratio}" in rows and name == "hybrid_gate":
                key = f"hybrid+tome{args.tome_ratio}"
                print(_line(key, rows[key], rows["hybrid_gate"]) + f"  speed-up x{rows[key]['speedup']:.2f} vs hybrid")
        results[dataset] = rows
    if args.tome_vit_latency:
        plain_ms, merged_ms = tome_vit_latency(args.tome_ratio)
        print(
            f"\nToMe r={args.tome_ratio} on {VIT} at 224 px (196 patches, random weights): "
            f"{plain_ms:.1f} -> {merged_ms:.1f} ms/img, speed-up x{plain_ms / merged_ms:.2f}"
        )
        results["tome_vit_224"] = {"ms": plain_ms, "ms_tome": merged_ms, "speedup": plain_ms / merged_ms}
    work.mkdir(parents=True, exist_ok=True)
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {work / 'results.json'}")
    return 0


def _line(name: str, row: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    text = (
        f"{name:24s} acc {row['accuracy']:.4f}  F1 {row['macro_f1']:.4f}  ECE {row['ece']:.4f}  "
        f"{row['ms']:.2f} ms/img  train {row['train_s']:.0f} s"
    )
    if baseline is not None and baseline is not row:
        text += f"  | Δacc {row['accuracy'] - baseline['accuracy']:+.4f}  ΔECE {row['ece'] - baseline['ece']:+.4f}"
    if "uncertainty" in row:
        u = row["uncertainty"]
        text += (
            f"  | u right {u['mean_u_right'] or 0:.3f} wrong {u['mean_u_wrong'] or 0:.3f} AUROC {u['auroc'] or 0:.3f}"
        )
    return text


if __name__ == "__main__":
    sys.exit(main())
