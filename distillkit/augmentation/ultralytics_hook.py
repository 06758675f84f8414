"""Hand the characteristic-based pipeline to an ultralytics YOLO trainer.

Ultralytics' own hook is the ``augmentations`` training argument: a list of albumentations
transforms that its ``Albumentations`` step (inside every training dataset's transform ``Compose``,
after mosaic/affine/mixup and before HSV jitter and flips) applies in place of its default blur/CLAHE
set. For spatial transforms it carries the boxes, the polygon points of segmentation labels (boxes
are then recomputed from the moved polygons, so they stay tight) and the keypoints through the same
transform, and it drops objects that leave the frame. The list is stored in the run's ``args`` and
checkpoints (as albumentations dicts), so ``--resume`` keeps it. Ultralytics seeds the transforms
from its own seed (``training_dynamics.seed``) in each data-loader worker.

Ultralytics reads images as BGR: hue shifts and colour-temperature jitter are symmetric in these
recipes, so the channel order does not bias them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distillkit.augmentation.pipeline import build_transforms
from distillkit.augmentation.plan import describe_pipeline

if TYPE_CHECKING:
    from distillkit.config.schema import AugmentationConfig


def ultralytics_augmentations(config: AugmentationConfig) -> list[Any]:
    """The section's pipeline as albumentations transforms for ultralytics; empty when it is off."""
    plan = describe_pipeline(config.characteristics, config.environment, config.intensity)
    return build_transforms(plan) if not plan.is_empty else []


def ultralytics_augmentation_arguments(config: AugmentationConfig) -> dict[str, Any]:
    """``model.train(...)`` keyword arguments installing the pipeline: ``{"augmentations": [...]}``.

    Empty when the pipeline is off (intensity ``none`` or nothing requested), which leaves
    ultralytics' default albumentations set in place.
    """
    transforms = ultralytics_augmentations(config)
    return {"augmentations": transforms} if transforms else {}
