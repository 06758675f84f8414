"""Structured channel pruning of YOLO students with torch-pruning (L2 group magnitude).

Ultralytics' C2f block runs one convolution and *splits* its output in two; torch-pruning's
dependency graph cannot prune through that split (it indexes past the halves), so each C2f is first
rewritten as the equivalent two-convolution block (the same weights, split in two; outputs equal),
as torch-pruning's own YOLOv8 example does. The detection/segmentation head is kept whole so its
outputs keep their layout. The pruned model is saved as an ultralytics-style checkpoint (class
names and the distillkit class mapping kept), so it exports, quantizes and is measured like any
other artefact. Optional fine-tuning retrains it with ultralytics on YOLO-format data.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distillkit.errors import DataError, UsageError
from distillkit.export.onnx_export import SourceModel
from distillkit.io import atomic_open
from distillkit.progress import NULL_PROGRESS, Progress
from distillkit.safe_load import checkpoint_class, safe_torch_load


@dataclass
class PruneResult:
    path: Path
    ratio: float
    parameters_before: int
    parameters_after: int
    notes: list[str] = field(default_factory=list)


@checkpoint_class
class C2fTwoConv(nn.Module):
    """C2f with its first convolution as two (``cv0``, ``cv1``) instead of one conv and a split."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        half = block.c
        self.c = half
        self.cv0 = deepcopy(block.cv1)
        self.cv1 = deepcopy(block.cv1)
        for target, part in ((self.cv0, slice(0, half)), (self.cv1, slice(half, 2 * half))):
            conv, norm = target.conv, target.bn
            conv.weight = nn.Parameter(block.cv1.conv.weight.data[part].clone())
            conv.out_channels = half
            if conv.bias is not None:
                conv.bias = nn.Parameter(block.cv1.conv.bias.data[part].clone())
            norm.weight = nn.Parameter(block.cv1.bn.weight.data[part].clone())
            norm.bias = nn.Parameter(block.cv1.bn.bias.data[part].clone())
            norm.running_mean = block.cv1.bn.running_mean.data[part].clone()
            norm.running_var = block.cv1.bn.running_var.data[part].clone()
            norm.num_features = half
        self.m = block.m
        self.cv2 = block.cv2
        for attribute in ("i", "f", "type", "np"):  # ultralytics' graph bookkeeping on every layer
            if hasattr(block, attribute):
                setattr(self, attribute, getattr(block, attribute))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [self.cv0(x), self.cv1(x)]
        outputs.extend(module(outputs[-1]) for module in self.m)
        return self.cv2(torch.cat(outputs, 1))


def _replace_c2f(model: nn.Module) -> int:
    from ultralytics.nn.modules.block import C2f

    count = 0
    for name, child in list(model.named_children()):
        if type(child) is C2f:
            setattr(model, name, C2fTwoConv(child))
            count += 1
        else:
            count += _replace_c2f(child)
    return count


def prune_model(
    source: SourceModel,
    ratio: float,
    output: Path,
    finetune_epochs: int = 0,
    train_data: Path | None = None,
    progress: Progress = NULL_PROGRESS,
    images_dir: Path | None = None,
) -> PruneResult:
    """Remove ``ratio`` of the prunable channels; write ``output/model_pruned.pt``."""
    import torch_pruning as tp

    if source.task == "classify":
        raise UsageError("--prune handles YOLO students", "prune classifiers with a smaller timm backbone instead")
    checkpoint = safe_torch_load(source.path)
    model = deepcopy(source.handle.model).float().eval()
    before = sum(p.numel() for p in model.parameters())
    _replace_c2f(model)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    example = torch.zeros(1, 3, source.imgsz, source.imgsz)
    with progress.task(f"pruning {ratio:.0%} of channels", total=None):
        try:
            pruner = tp.pruner.MagnitudePruner(
                model,
                example,
                importance=tp.importance.GroupMagnitudeImportance(p=2),
                pruning_ratio=ratio,
                ignored_layers=[model.model[-1]],
                round_to=8,  # channel counts that vectorise well on CPUs and GPUs
            )
            pruner.step()
        except (RuntimeError, IndexError, ValueError) as exc:
            raise DataError(f"structured pruning of {source.path} failed ({exc})") from exc
    model.eval()
    with torch.no_grad():
        model(example)  # the pruned graph must still run end to end
    after = sum(p.numel() for p in model.parameters())
    target = output / "model_pruned.pt"
    notes = [f"pruned {ratio:.0%} of channels: {before:,} -> {after:,} parameters"]
    saved = _checkpoint(checkpoint, model)
    with atomic_open(target, "wb") as handle:
        torch.save(saved, handle)
    if finetune_epochs:
        notes.append(_finetune(target, finetune_epochs, train_data, source, progress, images_dir))
    else:
        notes.append("pruned without fine-tuning: pass --prune-finetune-epochs N --prune-data train.json to recover")
    return PruneResult(target, ratio, before, after, notes)


def _checkpoint(original: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    saved = {key: value for key, value in original.items() if key not in ("ema", "optimizer", "updates")}
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    saved["model"] = model.half()
    saved["ema"] = None
    return saved


def yolo_training_data(
    train_data: Path, images_dir: Path | None, task: str, folder: Path, progress: Progress = NULL_PROGRESS
) -> Path:
    """The COCO file as a YOLO dataset for ultralytics (train and val both its images); its yaml path.

    Shared by pruning's and QAT's fine-tuning: the same validation, image lookup and class mapping.
    """
    from distillkit.data.images import default_image_roots
    from distillkit.data.validate import load_valid_dataset
    from distillkit.data.yolo_format import SplitSource, prepare_yolo_dataset

    loaded = load_valid_dataset(train_data)
    assert loaded.dataset is not None
    roots = default_image_roots(Path(train_data), images_dir)
    dataset = prepare_yolo_dataset(
        {"train": SplitSource(loaded.dataset, roots), "val": SplitSource(loaded.dataset, roots)},
        folder,
        task,
        loaded.info.class_mapping,
        loaded.info.class_names,
        progress=progress,
    )
    return Path(dataset.yaml_path)


def _finetune(
    target: Path,
    epochs: int,
    train_data: Path | None,
    source: SourceModel,
    progress: Progress,
    images_dir: Path | None = None,
) -> str:
    """Retrain the pruned model with ultralytics on the COCO file converted to YOLO format."""
    from distillkit.ultralytics_env import import_ultralytics

    if train_data is None:
        raise UsageError("--prune-finetune-epochs needs --prune-data train.json")
    work = target.parent / "prune_finetune"
    yaml_path = yolo_training_data(train_data, images_dir, source.task, work / "yolo_data", progress)
    import_ultralytics()
    from ultralytics import YOLO
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.models.yolo.segment import SegmentationTrainer

    pruned = safe_torch_load(target)["model"].float()
    base = SegmentationTrainer if source.task == "segment" else DetectionTrainer

    class PrunedTrainer(base):  # type: ignore[misc, valid-type]
        # Ultralytics' trainer rebuilds the model from its yaml (undoing the pruning): hand it ours instead.
        def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> nn.Module:
            for parameter in pruned.parameters():
                parameter.requires_grad_(True)
            return pruned

    model = YOLO(str(target))
    with progress.task(f"fine-tuning the pruned model ({epochs} epochs)", total=None):
        model.train(
            trainer=PrunedTrainer,
            data=str(yaml_path),
            epochs=epochs,
            imgsz=source.imgsz,
            project=str(work.resolve()),
            name="train",
            exist_ok=True,
            plots=False,
            verbose=False,
            workers=0,
            device="0" if torch.cuda.is_available() else "cpu",
        )
    best = work / "train" / "weights" / "best.pt"
    if not best.exists():
        raise DataError("fine-tuning the pruned model wrote no best.pt")
    trained = safe_torch_load(best)
    original = safe_torch_load(target)
    trained["distillkit"] = original.get("distillkit")
    with atomic_open(target, "wb") as handle:
        torch.save(trained, handle)
    return f"fine-tuned {epochs} epochs on {train_data}"
