"""Real images for calibration, parity and latency, preprocessed exactly as at inference.

YOLO models: ultralytics' own ``LetterBox`` (square, pad 114, no upscaling past the model size
rules it applies), BGR→RGB, /255, NCHW — the predictor's steps for a fixed-size exported model.
Classifiers: their family's own loading (registered in ``distillkit.tasks``) with the settings stored
in their metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distillkit.errors import UsageError
from distillkit.model_metadata import ModelMetadata


def calibration_images(
    calib_data: Path | None = None,
    calib_dir: Path | None = None,
    count: int = 100,
    seed: int = 0,
    images_dir: Path | None = None,
) -> list[Path]:
    """Up to ``count`` images from a COCO file's images or a folder, a seeded sample (stable order)."""
    if calib_data is not None:
        paths = coco_image_paths(calib_data, images_dir)
    elif calib_dir is not None:
        from distillkit.inference.sources import collect_images

        paths = collect_images([calib_dir], recursive=True)
    else:
        raise UsageError("INT8 quantization needs calibration images", "pass --calib-data COCO.json or --calib-dir DIR")
    if len(paths) > count:
        chosen = np.random.default_rng(seed).choice(len(paths), size=count, replace=False)
        paths = [paths[index] for index in sorted(chosen)]
    return paths


def coco_image_paths(annotations: Path, images_dir: Path | None = None) -> list[Path]:
    """The images of a COCO file that exist on disk (found the way `evaluate` finds them)."""
    from distillkit.data.images import ImageLocator, default_image_roots
    from distillkit.io import read_json

    dataset = read_json(annotations)
    locator = ImageLocator(default_image_roots(Path(annotations), images_dir))
    found = [locator.resolve(image["file_name"]) for image in dataset.get("images", [])]
    paths = [path for path in found if path is not None]
    if not paths:
        raise UsageError(f"none of the images of {annotations} was found", "put them next to the JSON or in images/")
    return paths


def preprocess(path: Path, metadata: ModelMetadata) -> np.ndarray:
    """One image as the network input: float32 (1, 3, H, W)."""
    height, width = metadata.imgsz
    if metadata.preprocessing.get("resize") == "letterbox":
        return _letterbox(path, (height, width), int(metadata.preprocessing.get("pad_value", 114)))
    return _resize_normalize(path, (height, width), metadata.preprocessing, metadata.task)


def preprocess_many(paths: Sequence[Path], metadata: ModelMetadata) -> list[np.ndarray]:
    return [preprocess(path, metadata) for path in paths]


def _letterbox(path: Path, shape: tuple[int, int], pad_value: int) -> np.ndarray:
    from distillkit.images import read_bgr
    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics.data.augment import LetterBox

    image = read_bgr(path)  # BGR and upright (EXIF orientation applied), as ultralytics' loaders read it
    boxed = LetterBox(shape, auto=False, stride=32, padding_value=pad_value)(image=image)
    tensor = boxed[:, :, ::-1].transpose(2, 0, 1)  # BGR HWC -> RGB CHW
    return (np.ascontiguousarray(tensor, dtype=np.float32) / 255.0)[None]


def _resize_normalize(path: Path, shape: tuple[int, int], steps: dict[str, object], task: str) -> np.ndarray:
    # The model family's own loading code (classifiers: EXIF orientation, cv2 resize, normalisation), not a
    # lookalike: registered for the task in ``distillkit.tasks`` (``export.preprocess``).
    from distillkit.tasks import lookup

    return lookup("export.preprocess", task)(path, shape, steps)
