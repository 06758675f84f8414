"""Characteristic-based augmentation: describe the objects and the setting, get a correct pipeline.

    from distillkit.augmentation import build_pipeline
    pipe = build_pipeline(["changes_shape", "reflective_surface"], {"lighting": "variable"}, "medium", seed=0)
    out = pipe(image=image, masks=masks, bboxes=boxes, labels=class_ids)

albumentations is imported only when a pipeline is built, so importing this package stays cheap.
"""

from __future__ import annotations

from distillkit.augmentation.names import (
    CHARACTERISTIC_DESCRIPTIONS,
    CHARACTERISTICS,
    ENVIRONMENT_DESCRIPTIONS,
    ENVIRONMENT_OPTIONS,
    INTENSITIES,
    INTENSITY_DESCRIPTIONS,
)
from distillkit.augmentation.pipeline import AugmentationPipeline, build_pipeline, pipeline_from_config
from distillkit.augmentation.plan import PipelinePlan, TransformStep, describe_pipeline


def available_characteristics() -> dict[str, str]:
    """Every characteristic name with a one-line description, in display order."""
    return dict(CHARACTERISTIC_DESCRIPTIONS)


def available_environments() -> dict[str, dict[str, str]]:
    """Every environment factor → {option: description}; the first option of each is the neutral one."""
    return {factor: dict(options) for factor, options in ENVIRONMENT_DESCRIPTIONS.items()}


def available_intensities() -> dict[str, str]:
    return dict(INTENSITY_DESCRIPTIONS)


__all__ = [
    "CHARACTERISTICS",
    "ENVIRONMENT_OPTIONS",
    "INTENSITIES",
    "AugmentationPipeline",
    "PipelinePlan",
    "TransformStep",
    "available_characteristics",
    "available_environments",
    "available_intensities",
    "build_pipeline",
    "describe_pipeline",
    "pipeline_from_config",
]
