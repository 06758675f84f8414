"""`distillkit label`: teachers label a folder of images into a scored COCO file, for review or training."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from distillkit.cli.common import JSON_OPTION, QUIET_OPTION, TRUST_MODEL_FILE_OPTION, make_output
from distillkit.cli.console import Output
from distillkit.cli.render import display_path
from distillkit.errors import UsageError
from distillkit.labelling.ray_backend import BACKENDS, require_ray
from distillkit.locking import output_lock
from distillkit.paths import check_output_outside_inputs
from distillkit.safe_load import trust_model_files

if TYPE_CHECKING:
    from distillkit.labelling.factory import LabellingTeacher
    from distillkit.labelling.to_coco import LabelResult


def label(
    sources: list[str] = typer.Argument(..., help="Image files, folders (searched recursively) or glob patterns."),
    output: Path = typer.Option(..., "--output", "-o", help="The COCO file to write (e.g. labels.json)."),
    teacher_dir: Path | None = typer.Option(
        None, "--teacher-dir", help="Experiment folder of teachers trained by train-teacher."
    ),
    teacher: Path | None = typer.Option(
        None, "--teacher", help="An ultralytics .pt (detection or segmentation) labelling its own classes."
    ),
    classes: str | None = typer.Option(
        None, "--classes", help="Class names, comma-separated: zero-shot with base weights, or a --teacher subset."
    ),
    dino_weights: str | None = typer.Option(
        None, "--dino-weights", help="Grounding DINO base weights: a local folder or a Hugging Face id."
    ),
    sam_weights: str | None = typer.Option(
        None, "--sam-weights", help="SAM base weights (folder or hub id); with --classes, masks from DINO's boxes."
    ),
    exclude: list[Path] = typer.Option(
        [], "--exclude", help="COCO file whose images must not be labelled, e.g. the test split (repeatable)."
    ),
    exclude_images_dir: Path | None = typer.Option(
        None, "--exclude-images-dir", help="Folder holding --exclude images [default: each JSON's folder, images/]."
    ),
    conf: float | None = typer.Option(
        None,
        "--conf",
        min=0.0,
        max=1.0,
        help="Keep labels scored at least this [default: the teacher's calibrated per-class thresholds, else 0.25].",
    ),
    iou: float = typer.Option(0.6, "--iou", min=0.0, max=1.0, help="Same-class boxes overlapping more are one."),
    mask_format: str = typer.Option("rle", "--mask-format", help="Masks as rle (compressed) or polygon."),
    max_images: int | None = typer.Option(None, "--max-images", min=1, help="Label at most this many images."),
    batch: int = typer.Option(8, "--batch", min=1, help="Images per teacher pass."),
    device: str | None = typer.Option(None, "--device", help="cpu, 0, cuda:0, ... [default: auto]."),
    imgsz: int = typer.Option(640, "--imgsz", min=32, help="Input size of a YOLO --teacher."),
    backend: str = typer.Option(
        "local", "--backend", help="local (this process) or ray (an actor pool on a Ray cluster; distillkit[ray])."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="With --backend ray: auto or HOST:PORT of a running cluster [default: start one]."
    ),
    ray_actors: int | None = typer.Option(
        None, "--ray-actors", min=1, help="Teacher actors [default: one per GPU, else one per CPU]."
    ),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Teacher-output cache [default: EXP/cache/teacher_outputs, else $DISTILLKIT_CACHE/teacher_outputs].",
    ),
    trust_model_file: bool = TRUST_MODEL_FILE_OPTION,
    json_mode: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Label images with a teacher and write a COCO file with a score on every annotation.

    The teacher is one of: --teacher-dir EXP (the Grounding DINO / SAM adapters of train-teacher),
    --teacher MODEL.pt (an ultralytics checkpoint; --classes picks some of its classes), or
    --classes "scratch,dent" alone: zero-shot, base Grounding DINO weights (--dino-weights, default
    IDEA-Research/grounding-dino-tiny) prompted with the class names, and base SAM masks when
    --sam-weights is given. Every image is listed (those without detections too), file_name relative
    to the output's folder (or, when the images lie elsewhere, to the folder printed as images_root:
    pass it to validate --images-dir). Masks are RLE, or polygons with --mask-format polygon.

    Review loop: label, import the file into CVAT or Label Studio (COCO import), correct, export as
    COCO, then `distillkit validate` it and train with `train-student --data reviewed.json`.

    Resumable: each image's prediction is cached by content as soon as its batch is done; after a
    kill or Ctrl-C the same command computes only the missing images. Images whose content equals an
    image of an --exclude file (or an earlier source image) are skipped and counted.

    Examples:

        distillkit label data/raw/ -o data/labels.json --teacher-dir exp/run1 --exclude data/test.json

        distillkit label "line3/*.png" -o line3.json --teacher big/best.pt --conf 0.4

        distillkit label raw/ -o raw.json --classes "scratch,dent" --dino-weights /m/gdino --sam-weights /m/sam
    """
    trust_model_files(trust_model_file)  # before anything reads a model file
    out = make_output(json_mode, quiet)
    if backend not in BACKENDS:
        raise UsageError(f"--backend {backend} is unknown", f"use {' or '.join(BACKENDS)}")
    if backend == "ray":
        require_ray()  # before any work
    elif ray_address is not None or ray_actors is not None:
        raise UsageError("--ray-address and --ray-actors go with --backend ray", "add --backend ray, or drop them")
    if mask_format not in ("rle", "polygon"):
        raise UsageError(f"--mask-format {mask_format} is unknown", "use rle or polygon")
    names = None
    if classes is not None:
        from distillkit.teachers.zero_shot import parse_class_names

        names = parse_class_names(classes)
    missing = next((path for path in exclude if not path.is_file()), None)
    if missing is not None:
        raise UsageError(f"--exclude {missing} is not a file", "pass a COCO annotation file (e.g. data/test.json)")
    if output.is_dir():
        raise UsageError(f"--output {output} is a folder", "give the COCO file to write, e.g. labels.json")
    from distillkit.inference.sources import collect_images

    images = collect_images(sources, recursive=True)
    inputs = [*(path for path in (Path(s).expanduser() for s in sources) if path.exists()), *exclude, teacher]
    check_output_outside_inputs(output, inputs)
    if cache_dir is not None:
        check_output_outside_inputs(cache_dir, inputs, "--cache-dir")
    # two label runs writing one COCO file: refuse the second; a Ray started here is shut down on the way out
    with output_lock(output, kind="file"), contextlib.ExitStack() as cleanup:
        on_ray = backend == "ray"  # Ray workers build the same teacher elsewhere: absolute paths
        arguments: dict[str, Any] = {
            "teacher_dir": _absolute(teacher_dir) if on_ray else teacher_dir,
            "checkpoint": _absolute(teacher) if on_ray else teacher,
            "classes": names,
            "dino_weights": _absolute_if_path(dino_weights) if on_ray else dino_weights,
            "sam_weights": _absolute_if_path(sam_weights) if on_ray else sam_weights,
            "batch_size": batch,
            "conf": conf,
            "imgsz": imgsz,
        }

        def load() -> LabellingTeacher:
            from distillkit.labelling.factory import load_labelling_teacher

            # on Ray the actors hold the GPUs and build the models; the driver's copy only names the classes and
            # the cache identity, so a train-teacher folder's models are not even built here
            return load_labelling_teacher(**arguments, device="cpu" if on_ray else device, defer_models=on_ray)

        filler = None
        if on_ray:
            from distillkit.labelling.ray_backend import RayOptions, TeacherRecipe, connect_while, fill_cache_ray

            recipe = TeacherRecipe(arguments, trust_model_files=trust_model_file)
            options = RayOptions(address=ray_address, actors=ray_actors)
            loaded, close_ray = connect_while(options, load)  # Ray starts while the teacher's files are read
            cleanup.callback(close_ray)

            def filler(images: Any, keys: Any, cache: Path, batch_size: int, progress: Any) -> Any:
                return fill_cache_ray(
                    recipe, loaded.teacher, images, keys, cache, options, batch_size=batch_size, progress=progress
                )
        else:
            loaded = load()
        from distillkit.labelling.to_coco import label_to_coco

        result = label_to_coco(
            loaded.teacher,
            images,
            output,
            cache_dir if cache_dir is not None else loaded.cache_dir,
            categories=loaded.categories,
            exclude=exclude,
            exclude_images_dir=exclude_images_dir,
            conf=conf,
            class_thresholds=loaded.class_thresholds,
            nms_iou=iou,
            mask_format=mask_format,
            batch_size=batch,
            max_images=max_images,
            info={"teacher": loaded.describe()},
            progress=out.progress(),
            filler=filler,
        )
    result.notices[:0] = loaded.notices
    for notice in result.notices:
        out.notice(notice, style="yellow")
    if json_mode:
        out.emit_json({"teacher": loaded.describe(), **result.to_dict()})
        return
    _render(out, result)


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else path.expanduser().resolve()


def _absolute_if_path(source: str | None) -> str | None:
    """A local weights folder as an absolute path; a Hugging Face id stays as it is."""
    if source is None or not Path(source).expanduser().exists():
        return source
    return str(Path(source).expanduser().resolve())


def _render(out: Output, result: LabelResult) -> None:
    table = Table(title=f"labels → {display_path(str(result.output))}", title_justify="left", show_edge=False)
    table.add_column("class")
    table.add_column("labels", justify="right")
    table.add_column("threshold", justify="right")
    for name, count in result.per_class.items():
        table.add_row(name, str(count), f"{result.thresholds.get(name, 0.0):.3g}")
    out.print(table)
    out.print(
        f"{result.images} images ({result.images_without_detections} without labels), {result.annotations} labels"
        f" ({result.masks} with masks, {result.mask_format}); teacher: {result.computed} computed,"
        f" {result.cached} from the cache; thresholds: {result.threshold_source}"
    )
    skipped = result.skipped
    if skipped.get("excluded") or skipped.get("duplicates") or skipped.get("beyond_max_images"):
        out.print(
            f"skipped: {skipped['excluded']} copies of --exclude images, {skipped['duplicates']} repeated images,"
            f" {skipped['beyond_max_images']} beyond --max-images"
        )
    images_dir = result.images_root
    hint = "" if images_dir == result.output.resolve().parent else f" --images-dir {display_path(str(images_dir))}"
    out.print(f"check it: distillkit validate {display_path(str(result.output))}{hint}")
