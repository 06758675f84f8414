"""Running a trained student on images and writing COCO-results detections, incrementally.

Models are loaded through ultralytics (offline); ``.onnx`` and TensorRT ``.engine`` files written by
``distillkit optimize`` go through ``distillkit.inference.exported`` (the same runtime). The class
index → COCO category id mapping comes from the checkpoint (``train-student`` stores it), the
exported file's metadata, or a ``class_mapping.yaml`` next to the model; a plain ultralytics model
without either uses the class index as the category id. Images are read by ultralytics from their
paths, upright (OpenCV applies the EXIF orientation tag): the frame ``distillkit.images`` reads and
the boxes and masks are reported in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import yaml

from distillkit.errors import DataError, UsageError
from distillkit.inference.detections import Detections
from distillkit.inference.loaded import LoadedModel
from distillkit.inference.slicing import SliceSpec, predict_sliced
from distillkit.io import atomic_open, dumps_json
from distillkit.progress import NULL_PROGRESS, Progress, ProgressTask
from distillkit.ultralytics_env import import_ultralytics

SUPPORTED_SUFFIXES = (".pt", ".onnx", ".engine", ".tflite")


@dataclass
class PredictionRun:
    images: int = 0
    detections: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # pre + inference + post, per image
    skipped: list[dict[str, Any]] = field(default_factory=list)  # unreadable images/frames left out: file_name, reason
    interrupted: bool = False  # stopped early by Ctrl-C (``stop``): what was predicted is complete and written

    @property
    def median_latency_ms(self) -> float:
        return float(np.median(self.latencies_ms)) if self.latencies_ms else float("nan")


def load_model(path: str | Path) -> LoadedModel:
    from distillkit.model_metadata import is_openvino_model

    model_path = Path(path)
    openvino = is_openvino_model(model_path)
    if not (model_path.is_file() or (openvino and model_path.exists())):
        raise UsageError(
            f"model {model_path} not found",
            "pass a .pt written by train-student, or an .onnx/.engine/.tflite file or *_openvino_model folder "
            "from optimize",
        )
    if model_path.suffix not in SUPPORTED_SUFFIXES and not openvino:
        raise UsageError(
            f"{model_path.name}: unsupported model format",
            "pass a .pt, .onnx, .engine or .tflite file or a *_openvino_model folder",
        )
    if model_path.suffix != ".pt":
        from distillkit.inference.exported import load_exported_model  # onnxruntime & co. only when asked for

        return load_exported_model(model_path)
    import_ultralytics()
    from ultralytics import YOLO

    try:
        model = YOLO(str(model_path))
    except UsageError:  # refused by distillkit.safe_load: its line says why
        raise
    except Exception as exc:  # a corrupt or foreign file: say so in one line
        raise UsageError(
            f"{model_path} is not an ultralytics checkpoint ({exc})", "pass a .pt written by train-student"
        ) from exc
    names = {int(k): str(v) for k, v in model.names.items()}
    return LoadedModel(model_path, model, model.task, names, _category_ids(model, model_path, names))


def _category_ids(model: Any, model_path: Path, names: dict[int, str]) -> dict[int, int]:
    # ultralytics keeps the checkpoint dict it loaded: read the mapping train-student stored there
    checkpoint = getattr(model, "ckpt", None)
    stored = checkpoint.get("distillkit", {}).get("class_mapping") if isinstance(checkpoint, dict) else None
    if stored is None:
        sidecar = model_path.parent / "class_mapping.yaml"
        if sidecar.exists():
            stored = (yaml.safe_load(sidecar.read_text()) or {}).get("class_mapping")
    if stored:
        return {int(index): int(category) for category, index in stored.items()}
    return {index: index for index in names}


def predict_images(
    loaded: LoadedModel,
    images: Sequence[Path],
    run: PredictionRun | None = None,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    imgsz: int | None = None,
    batch: int = 1,
    device: str | None = None,
    image_ids: dict[Path, int] | None = None,
    save_vis: Path | None = None,
    progress: Progress = NULL_PROGRESS,
    skip_unreadable: bool = False,
    slicing: SliceSpec | None = None,
    stop: Callable[[], bool] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield COCO-results detections one at a time, image by image; ``run`` collects the totals.

    Entries carry ``file_name``, ``category_id`` (the dataset's id), ``category_name``, ``bbox``
    (x, y, w, h in pixels), ``score``, ``segmentation`` (compressed RLE) for segmentation models,
    and ``image_id`` when ``image_ids`` knows the file. Nothing is kept in memory between images.

    An image that cannot be read (truncated, not an image) is a ``DataError`` naming it; with
    ``skip_unreadable`` it is left out and listed in ``run.skipped`` instead, and only a run where no
    image could be read is an error.

    ``slicing`` predicts each image on overlapping tiles and merges (``distillkit.inference.slicing``);
    latencies are then the wall time of all tiles and the merge. ``stop`` is asked between images
    (a Ctrl-C caught by ``graceful_interrupt``): when it says yes, the run ends after the image in hand.
    """
    if loaded.task == "classify":
        raise UsageError(f"{loaded.path.name} is a classifier", "detections come from detection or segmentation models")
    run = run if run is not None else PredictionRun()
    arguments = prediction_arguments(conf, iou, max_det, imgsz, batch, device)
    if save_vis is not None:
        save_vis.mkdir(parents=True, exist_ok=True)
    stopping = stop if stop is not None else _never
    with progress.task(f"predicting with {loaded.path.name}", total=len(images)) as bar:
        if slicing is not None:
            yield from _sliced_images(
                loaded, images, arguments, slicing, run, image_ids, save_vis, skip_unreadable, bar, stopping
            )
        else:
            yield from _whole_images(
                loaded, images, arguments, batch, run, image_ids, save_vis, skip_unreadable, bar, stopping
            )
    if skip_unreadable and run.skipped and not run.images:
        first = run.skipped[0]
        raise DataError(
            f"none of the {len(run.skipped)} images could be read (first: {first['reason']})",
            "remove or re-save those files and run again",
        )


def _never() -> bool:
    return False


def prediction_arguments(
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    imgsz: int | None = None,
    batch: int = 1,
    device: str | None = None,
) -> dict[str, Any]:
    """ultralytics' ``predict`` keywords, the same for images, tiles and video frames."""
    arguments: dict[str, Any] = {
        "conf": conf,
        "iou": iou,
        "max_det": max_det,
        "verbose": False,
        "stream": True,
        "retina_masks": True,  # masks at the picture's size: what entries and tile merging need
        "batch": batch,
    }
    if imgsz is not None:
        arguments["imgsz"] = imgsz
    if device is not None:
        arguments["device"] = device
    return arguments


def array_predictor(loaded: LoadedModel, arguments: dict[str, Any]) -> Callable[[list[np.ndarray]], list[Detections]]:
    """A function predicting BGR pictures (tiles, video frames) in memory: one ``Detections`` each."""

    def predict(pictures: list[np.ndarray]) -> list[Detections]:
        results = _naming_unreadable_images(loaded.model.predict(source=pictures, **arguments))
        return [Detections.from_result(result) for result in results]

    return predict


def _whole_images(
    loaded: LoadedModel,
    images: Sequence[Path],
    arguments: dict[str, Any],
    batch: int,
    run: PredictionRun,
    image_ids: dict[Path, int] | None,
    save_vis: Path | None,
    skip_unreadable: bool,
    bar: ProgressTask,
    stop: Callable[[], bool],
) -> Iterator[dict[str, Any]]:
    chunk_size = max(batch, 1) * 8  # ultralytics reads a list source eagerly: feed it a few batches at a time
    for start in range(0, len(images), chunk_size):
        chunk = list(images[start : start + chunk_size])
        for result in _chunk_results(loaded, chunk, arguments, run, skip_unreadable, bar):
            path = Path(result.path)
            run.images += 1
            run.latencies_ms.append(float(sum(result.speed.values())))
            detections = Detections.from_result(result)
            height, width = result.orig_shape
            for entry in detections.entries(loaded.names, loaded.category_ids, height, width, _head(path, image_ids)):
                run.detections += 1
                yield entry
            if save_vis is not None:
                _save_overlay(result.plot(), save_vis / f"{path.stem}.jpg")
            bar.advance()
            if stop():
                run.interrupted = True
                return


def _sliced_images(
    loaded: LoadedModel,
    images: Sequence[Path],
    arguments: dict[str, Any],
    slicing: SliceSpec,
    run: PredictionRun,
    image_ids: dict[Path, int] | None,
    save_vis: Path | None,
    skip_unreadable: bool,
    bar: ProgressTask,
    stop: Callable[[], bool],
) -> Iterator[dict[str, Any]]:
    """Each image read by ``distillkit.images`` (upright, EXIF applied), sliced, predicted, merged."""
    from distillkit.images import read_bgr

    predict = array_predictor(loaded, arguments)
    for path in images:
        try:
            picture = read_bgr(path)
        except DataError as error:
            if not skip_unreadable:
                raise
            run.skipped.append({"file_name": str(path), "reason": error.message})
            bar.advance()
            continue
        started = time.perf_counter()
        detections = predict_sliced(picture, predict, slicing, max_det=int(arguments["max_det"]))
        run.latencies_ms.append((time.perf_counter() - started) * 1000)
        run.images += 1
        height, width = picture.shape[:2]
        for entry in detections.entries(loaded.names, loaded.category_ids, height, width, _head(path, image_ids)):
            run.detections += 1
            yield entry
        if save_vis is not None:
            _save_overlay(detections.plot(picture, loaded.names), save_vis / f"{path.stem}.jpg")
        bar.advance()
        if stop():
            run.interrupted = True
            return


def _head(path: Path, image_ids: dict[Path, int] | None) -> dict[str, Any]:
    head: dict[str, Any] = {"file_name": str(path)}
    image_id = (image_ids or {}).get(path.resolve())
    if image_id is not None:
        head["image_id"] = image_id
    return head


class _UnreadableImage(Exception):
    """ultralytics could not read an image of the batch it was given (which one, it does not say)."""


def _chunk_results(
    loaded: LoadedModel,
    chunk: list[Path],
    arguments: dict[str, Any],
    run: PredictionRun,
    skip_unreadable: bool,
    bar: ProgressTask,
) -> Iterator[Any]:
    """ultralytics' results for ``chunk``; an unreadable image is named (and skipped with ``skip_unreadable``).

    ultralytics decodes a list source whole before predicting and stops at the first file it cannot
    read, without its name. Only then are the images not yet predicted run one at a time, to find the
    file and, when skipping, to predict the others: a folder of 100k images with one truncated file
    costs one retried chunk.
    """
    done = 0  # results come in the order of the chunk
    try:
        for result in _naming_unreadable_images(loaded.model.predict(source=[str(p) for p in chunk], **arguments)):
            done += 1
            yield result
        return
    except _UnreadableImage:
        pass
    for path in chunk[done:]:
        try:
            results = list(_naming_unreadable_images(loaded.model.predict(source=[str(path)], **arguments)))
        except _UnreadableImage as exc:
            reason = _unreadable_reason(path, exc)
            if not skip_unreadable:
                raise DataError(reason, "remove or re-save that file and run again") from exc
            run.skipped.append({"file_name": str(path), "reason": reason})
            bar.advance()
            continue
        yield from results


def _unreadable_reason(path: Path, exc: BaseException) -> str:
    """Why ``path`` cannot be read, naming it: distillkit's reader says, else ultralytics' error."""
    from distillkit.images import read_rgb

    try:
        read_rgb(path)
    except DataError as error:
        return error.message
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    return f"cannot read image {path} ({' '.join(str(cause).split()) or type(cause).__name__})"


def _naming_unreadable_images(results: Iterable[Any]) -> Iterator[Any]:
    """ultralytics' results, with the OSError it raises for a file that is no readable image as ``_UnreadableImage``.

    A folder of 100k images may hold one truncated or mislabelled file; the user needs its name, not a
    traceback (``_chunk_results`` finds it). Only the reading of the next result is guarded: errors while
    writing outputs stay as they are.
    """
    iterator = iter(results)
    while True:
        try:
            result = next(iterator)
        except StopIteration:
            return
        except OSError as exc:
            raise _UnreadableImage(str(exc)) from exc
        except Exception as exc:
            # onnxruntime refusing the graph's inputs/outputs: the .onnx is not a YOLO export, not a distillkit bug
            if not type(exc).__module__.startswith("onnxruntime"):
                raise
            reason = " ".join(str(exc).split())
            raise UsageError(
                f"onnxruntime cannot run the model on these images ({reason})",
                "pass a detection or segmentation model exported by distillkit optimize",
            ) from exc
        yield result


def _save_overlay(picture_bgr: np.ndarray, target: Path) -> None:
    from PIL import Image

    with atomic_open(target, "wb") as handle:
        Image.fromarray(np.ascontiguousarray(picture_bgr[:, :, ::-1])).save(handle, format="JPEG", quality=90)


def write_predictions(entries: Iterator[dict[str, Any]], path: Path, keep: bool = False) -> list[dict[str, Any]]:
    """Stream ``entries`` into a predictions file; return them too when ``keep`` (else an empty list)."""
    kept: list[dict[str, Any]] = []
    with PredictionsWriter(path) as writer:
        for entry in entries:
            writer.write(entry)
            if keep:
                kept.append(entry)
    return kept


class PredictionsWriter:
    """A JSON array written entry by entry to a temporary file, renamed into place when complete."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._context = atomic_open(path, "wb")
        self._handle: IO[bytes] | None = None

    def __enter__(self) -> PredictionsWriter:
        self._handle = self._context.__enter__()
        self._handle.write(b"[")
        return self

    def write(self, entry: dict[str, Any]) -> None:
        assert self._handle is not None
        self._handle.write((b",\n" if self.count else b"\n") + dumps_json(entry))
        self.count += 1

    def __exit__(self, *exc: Any) -> None:
        assert self._handle is not None
        if exc[0] is None:
            self._handle.write(b"\n]\n")
        self._context.__exit__(*exc)
