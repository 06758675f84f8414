"""Build the albumentations pipeline of a plan and apply it to an image with its annotations.

``pipe(image=..., masks=[...], bboxes=[...], keypoints=[...], labels=[...])`` keeps every
annotation consistent with the transformed image:
- boxes are COCO ``[x, y, w, h]`` in pixels; an object whose box leaves the frame (less than 10% of
  it still visible) is dropped together with its mask and its label;
- when masks come with boxes (or alone), they are the truth: each surviving box is recomputed as the
  tight box of its transformed mask (rotations and warps would otherwise leave it loose), and an
  object whose mask became empty (pushed out, fully occluded) is dropped;
- keypoints are ``[x, y]``; ones that leave the frame are dropped, with their ``keypoint_labels``.
``labels`` (one per object, any type: class ids, annotation ids, indices) tell which objects survived.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from distillkit.augmentation.plan import PipelinePlan, TransformStep, describe_pipeline
from distillkit.errors import UsageError

if TYPE_CHECKING:
    from distillkit.config.schema import AugmentationConfig

# Boxes with less than this fraction of their (transformed) area inside the image are dropped.
MIN_VISIBILITY = 0.1


def import_albumentations() -> Any:
    """albumentations, told never to look for updates on PyPI (distillkit runs offline)."""
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
    import albumentations

    return albumentations


def build_transforms(plan: PipelinePlan) -> list[Any]:
    """The plan as a list of albumentations transforms (groups become ``OneOf``), ready for ``Compose``."""
    A = import_albumentations()
    transforms: list[Any] = []
    groups: dict[str, list[TransformStep]] = {}
    for step in plan.steps:
        if step.group is None:
            transforms.append(_instantiate(A, step, step.p))
            continue
        if step.group not in groups:
            groups[step.group] = []
            transforms.append(step.group)  # placeholder keeps the group at its first member's position
        groups[step.group].append(step)
    for index, item in enumerate(transforms):
        if isinstance(item, str):
            members = groups[item]
            if len(members) == 1:
                transforms[index] = _instantiate(A, members[0], members[0].p)
            else:
                # OneOf picks a member with odds proportional to its p; the group fires as often as
                # "at least one of them would have" so a merged group is not applied less often.
                none_fires = float(np.prod([1.0 - step.p for step in members]))
                choices = [_instantiate(A, step, step.p) for step in members]
                transforms[index] = A.OneOf(choices, p=round(1.0 - none_fires, 4))
    return transforms


def _instantiate(A: Any, step: TransformStep, p: float) -> Any:
    return getattr(A, step.name)(**step.params, p=p)


def _has_spatial(A: Any, transforms: Iterable[Any]) -> bool:
    for transform in transforms:
        if isinstance(transform, A.BaseCompose):
            if _has_spatial(A, transform.transforms):
                return True
        elif isinstance(transform, A.DualTransform):
            return True
    return False


class AugmentationPipeline:
    """A seeded albumentations pipeline that keeps boxes, masks, labels and keypoints consistent."""

    def __init__(self, plan: PipelinePlan, seed: int | None = None) -> None:
        A = import_albumentations()
        self.plan = plan
        self.seed = seed
        self._worker_seeded: tuple[int, int] | None = None
        self.transforms = build_transforms(plan)
        self.spatial = _has_spatial(A, self.transforms)
        if self.spatial:
            self._compose = A.Compose(
                self.transforms,
                bbox_params=A.BboxParams(
                    format="coco",
                    label_fields=["object_index"],
                    min_visibility=MIN_VISIBILITY,
                    clip=True,
                    filter_invalid_bboxes=True,
                ),
                keypoint_params=A.KeypointParams(format="xy", label_fields=["keypoint_index"], remove_invisible=True),
                seed=seed,
            )
        else:  # nothing moves: annotations pass through untouched
            self._compose = A.Compose(self.transforms, seed=seed)

    def _reseed_in_data_loader_worker(self) -> None:
        # Each DataLoader worker receives a pickled copy of this pipeline with the same RNG state, so
        # without reseeding every worker would draw the same augmentations. torch gives each worker a
        # distinct, reproducible seed (derived from the loader's generator); use it once per worker.
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        if info is None:
            return
        key = (info.id, info.seed)
        if key != self._worker_seeded:
            base = 0 if self.seed is None else self.seed
            self._compose.set_random_seed((base + info.seed) % 2**32)
            self._worker_seeded = key

    def __repr__(self) -> str:
        names = ", ".join(step.name for step in self.plan.steps) or "identity"
        return f"AugmentationPipeline({names}; intensity={self.plan.intensity}, seed={self.seed})"

    def __call__(
        self,
        *,
        image: np.ndarray,
        masks: Sequence[np.ndarray] | np.ndarray | None = None,
        bboxes: Sequence[Sequence[float]] | np.ndarray | None = None,
        keypoints: Sequence[Sequence[float]] | np.ndarray | None = None,
        labels: Sequence[Any] | None = None,
        keypoint_labels: Sequence[Any] | None = None,
    ) -> dict[str, Any]:
        """Transform ``image`` and its annotations; the result has the same keys as the call."""
        self._reseed_in_data_loader_worker()
        pixels, restore = _as_rgb(image)
        height, width = pixels.shape[:2]
        mask_list, mask_dtype = _masks(masks, height, width)
        boxes = _boxes(bboxes)
        count = len(boxes) if boxes is not None else len(mask_list) if mask_list is not None else 0
        if boxes is not None and mask_list is not None and len(mask_list) != len(boxes):
            raise UsageError(f"got {len(mask_list)} masks for {len(boxes)} boxes", "pass one mask per box")
        if labels is not None and (boxes is None and mask_list is None):
            raise UsageError("labels were given without bboxes or masks", "pass the objects they label")
        if labels is not None and len(labels) != count:
            raise UsageError(f"got {len(labels)} labels for {count} objects", "pass one label per box/mask")
        points = _points(keypoints)
        if keypoint_labels is not None and (points is None or len(keypoint_labels) != len(points)):
            raise UsageError("keypoint_labels must have one entry per keypoint")

        if not self.spatial:
            result = self._compose(image=pixels)
            kept = list(range(count))
            out_masks = mask_list
            out_boxes = boxes
            kept_points = list(range(len(points))) if points is not None else []
            out_points = points
        else:
            result, kept, out_masks, out_boxes, kept_points, out_points = self._spatial(
                pixels, mask_list, boxes, points, count
            )

        output: dict[str, Any] = {"image": restore(result["image"])}
        if masks is not None:
            assert out_masks is not None
            output["masks"] = [out_masks[i].astype(mask_dtype, copy=False) for i in kept]
        if bboxes is not None:
            output["bboxes"] = out_boxes if out_boxes is not None else np.zeros((0, 4), np.float32)
        if labels is not None:
            output["labels"] = [labels[i] for i in kept]
        if keypoints is not None:
            output["keypoints"] = out_points if out_points is not None else np.zeros((0, 2), np.float32)
        if keypoint_labels is not None:
            output["keypoint_labels"] = [keypoint_labels[i] for i in kept_points]
        return output

    def _spatial(
        self,
        pixels: np.ndarray,
        masks: list[np.ndarray] | None,
        boxes: np.ndarray | None,
        points: np.ndarray | None,
        count: int,
    ) -> tuple[dict[str, Any], list[int], list[np.ndarray] | None, np.ndarray | None, list[int], np.ndarray | None]:
        if boxes is None and masks is not None:
            boxes = np.array([_tight_box(mask) or (0.0, 0.0, 1.0, 1.0) for mask in masks], np.float32).reshape(-1, 4)
        inputs: dict[str, Any] = {
            "image": pixels,
            "bboxes": boxes if boxes is not None else np.zeros((0, 4), np.float32),
            "object_index": np.arange(count),
            "keypoints": points if points is not None else np.zeros((0, 2), np.float32),
            "keypoint_index": np.arange(0 if points is None else len(points)),
        }
        if masks:  # albumentations cannot stack an empty list of masks
            inputs["masks"] = masks
        result = self._compose(**inputs)
        kept = [int(i) for i in result["object_index"]]
        new_boxes = np.asarray(result["bboxes"], np.float32).reshape(-1, 4)
        out_masks: list[np.ndarray] | None = None
        if masks is not None:
            out_masks = list(result["masks"]) if masks else []
            tight = {i: _tight_box(out_masks[i]) for i in kept}
            kept = [i for i in kept if tight[i] is not None]
            new_boxes = np.array([tight[i] for i in kept], np.float32).reshape(-1, 4)
        kept_points = [int(i) for i in result["keypoint_index"]]
        new_points = np.asarray(result["keypoints"], np.float32).reshape(-1, 2)[:, :2] if points is not None else None
        return result, kept, out_masks, new_boxes, kept_points, new_points


def _tight_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """COCO box of a mask's pixels (a pixel at column x spans [x, x + 1)); None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0]))


def _as_rgb(image: Any) -> tuple[np.ndarray, Any]:
    """3-channel pixels for the pipeline, and the function that restores the caller's layout."""
    pixels = np.asarray(image)
    if pixels.dtype not in (np.uint8, np.float32):
        raise UsageError(f"image dtype {pixels.dtype} is not supported", "pass uint8 (0-255) or float32 (0-1) pixels")
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return pixels, lambda result: result
    if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 1):
        import cv2

        single = pixels.reshape(pixels.shape[:2])
        keep_axis = pixels.ndim == 3

        def restore(result: np.ndarray) -> np.ndarray:
            gray = cv2.cvtColor(result, cv2.COLOR_RGB2GRAY)
            return gray[..., None] if keep_axis else gray

        return np.ascontiguousarray(np.repeat(single[..., None], 3, axis=2)), restore
    raise UsageError(f"image has shape {pixels.shape}", "pass an HxW grey or HxWx3 colour image")


def _masks(masks: Any, height: int, width: int) -> tuple[list[np.ndarray] | None, np.dtype]:
    if masks is None:
        return None, np.dtype(np.uint8)
    arrays = [np.asarray(mask) for mask in masks]
    for index, mask in enumerate(arrays):
        if mask.shape != (height, width):
            raise UsageError(f"mask {index} has shape {mask.shape}, the image is {height}x{width}")
    dtype = arrays[0].dtype if arrays else np.dtype(np.uint8)
    # albumentations warps uint8 masks; bool ones are converted and restored on the way out
    converted = [np.ascontiguousarray(mask.astype(np.uint8) if mask.dtype == bool else mask) for mask in arrays]
    return converted, dtype


def _boxes(bboxes: Any) -> np.ndarray | None:
    if bboxes is None:
        return None
    boxes = np.asarray(bboxes, np.float32)
    if boxes.size == 0:
        return np.zeros((0, 4), np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise UsageError(f"bboxes have shape {boxes.shape}", "pass COCO boxes [x, y, width, height], one per object")
    return boxes


def _points(keypoints: Any) -> np.ndarray | None:
    if keypoints is None:
        return None
    points = np.asarray(keypoints, np.float32)
    if points.size == 0:
        return np.zeros((0, 2), np.float32)
    if points.ndim != 2 or points.shape[1] != 2:
        raise UsageError(f"keypoints have shape {points.shape}", "pass [x, y] points")
    return points


def build_pipeline(
    characteristics: Iterable[str] = (),
    environment: Mapping[str, str] | Any | None = None,
    intensity: str = "medium",
    seed: int | None = None,
) -> AugmentationPipeline:
    """A pipeline for objects with ``characteristics`` in ``environment`` at ``intensity``.

    ``environment`` maps factors (lighting, camera, background, distance) to options; factors left
    out are neutral. The same ``seed`` gives the same sequence of outputs.
    """
    return AugmentationPipeline(describe_pipeline(characteristics, environment, intensity), seed=seed)


def pipeline_from_config(config: AugmentationConfig, seed: int | None = None) -> AugmentationPipeline:
    """The pipeline of an ``augmentation`` config section; ``seed`` overrides ``config.seed``."""
    return build_pipeline(
        config.characteristics, config.environment, config.intensity, seed=config.seed if seed is None else seed
    )
