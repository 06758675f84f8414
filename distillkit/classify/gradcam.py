"""Grad-CAM++ heat maps of a classifier's decision, as overlays on the input images.

Uses the ``grad-cam`` package (pytorch-grad-cam) on the deepest spatial stage of the backbone (after
its CBAM block when there is one). The map explains the predicted class (each predicted class for
multi-label images is merged by taking the first; pass ``class_index`` to explain another).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from distillkit.classify.checkpoint import LoadedClassifier
from distillkit.classify.dataset import resize, to_tensor
from distillkit.errors import UsageError
from distillkit.images import read_rgb
from distillkit.io import atomic_open
from distillkit.progress import NULL_PROGRESS, Progress


@dataclass(frozen=True)
class GradCamResult:
    image: Path
    overlay: Path
    class_index: int
    heatmap: np.ndarray  # (H, W) in [0, 1] at the model's input size


def gradcam_maps(loaded: LoadedClassifier, batch: torch.Tensor, class_indices: Sequence[int]) -> np.ndarray:
    """Grad-CAM++ maps (B, H, W) in [0, 1] for a normalised batch, one target class per image."""
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = loaded.model
    target_layer = model.last_stage_module()
    device = next(model.parameters()).device
    with GradCAMPlusPlus(model=model, target_layers=[target_layer]) as cam:
        maps = cam(input_tensor=batch.to(device), targets=[ClassifierOutputTarget(int(i)) for i in class_indices])
    return np.asarray(maps, dtype=np.float32)


def write_gradcam_overlays(
    loaded: LoadedClassifier,
    images: Sequence[Path],
    output_dir: Path,
    class_indices: Sequence[int] | None = None,
    batch_size: int = 8,
    progress: Progress = NULL_PROGRESS,
) -> list[GradCamResult]:
    """One ``<stem>_gradcam.png`` per image in ``output_dir``: the heat map blended over the resized image."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    if loaded.model.stage_modules == {}:
        raise UsageError(f"{loaded.path} has no spatial stage for Grad-CAM", "Grad-CAM needs a CNN backbone")
    output_dir.mkdir(parents=True, exist_ok=True)
    results: list[GradCamResult] = []
    used: set[str] = set()
    with progress.task("Grad-CAM++", total=len(images)) as task:
        for start in range(0, len(images), batch_size):
            chunk = list(images[start : start + batch_size])
            pixels = [resize(read_rgb(path), loaded.input_hw, loaded.meta.interpolation) for path in chunk]
            batch = torch.stack([to_tensor(p, loaded.mean, loaded.std) for p in pixels])
            if class_indices is None:
                with torch.no_grad():
                    chosen = loaded.model(batch.to(next(loaded.model.parameters()).device)).argmax(dim=1).tolist()
            else:
                chosen = [int(i) for i in class_indices[start : start + batch_size]]
            maps = gradcam_maps(loaded, batch, chosen)
            for path, rgb, heat, index in zip(chunk, pixels, maps, chosen, strict=True):
                overlay = show_cam_on_image(rgb.astype(np.float32) / 255.0, heat, use_rgb=True)
                target = output_dir / _unique_name(path, used)
                ok, encoded = cv2.imencode(".png", cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
                if not ok:
                    raise UsageError(f"could not encode the Grad-CAM overlay of {path}")
                with atomic_open(target, "wb") as handle:
                    handle.write(encoded.tobytes())
                results.append(GradCamResult(path, target, index, heat))
                task.advance()
    return results


def _unique_name(path: Path, used: set[str]) -> str:
    name = f"{path.stem}_gradcam.png"
    counter = 1
    while name in used:
        counter += 1
        name = f"{path.stem}_{counter}_gradcam.png"
    used.add(name)
    return name
