"""`distillkit train-student`: a prompt-free ultralytics YOLO / YOLO-seg student from COCO data."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from distillkit.cli.common import (
    JSON_OPTION,
    QUIET_OPTION,
    TRUST_MODEL_FILE_OPTION,
    command_overrides,
    make_output,
)
from distillkit.safe_load import trust_model_files
from distillkit.students.train import train_student as run_training


def train_student(
    data: Path = typer.Option(..., "--data", "-d", help="Training set: a COCO annotation file."),
    val: Path = typer.Option(..., "--val", "-v", help="Validation set: a COCO annotation file (same categories)."),
    output: Path = typer.Option(..., "--output", "-o", help="Experiment folder for the student."),
    student: str | None = typer.Option(
        None, "--student", help="Model name (yolov8s, yolo11n-seg), .yaml or local .pt [default: from the data]."
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Training epochs [default: student.epochs]."),
    imgsz: int | None = typer.Option(None, "--imgsz", min=32, help="Input size in pixels [default: student.imgsz]."),
    batch: int | None = typer.Option(None, "--batch", min=1, help="Images per batch [default: student.batch]."),
    device: str | None = typer.Option(None, "--device", help="cpu, 0, cuda:0, ... [default: auto]."),
    teacher_dir: Path | None = typer.Option(
        None, "--teacher-dir", help="Experiment folder of teachers trained by train-teacher (pseudo-labels)."
    ),
    teacher: Path | None = typer.Option(
        None, "--teacher", help="Ultralytics .pt used as a closed-set teacher (pseudo-labels and KD losses)."
    ),
    unlabeled: Path | None = typer.Option(
        None, "--unlabeled", help="Folder of images without labels, labelled by the teacher."
    ),
    exclude: list[Path] = typer.Option(
        [], "--exclude", help="COCO file whose images must never be labelled for training, e.g. test.json (repeatable)."
    ),
    force_teacher: bool = typer.Option(
        False, "--force-teacher", help="Use a teacher that scores below distillation.teacher_min_ap on --val."
    ),
    label_backend: str | None = typer.Option(
        None, "--label-backend", help="local or ray: the teacher labels on a Ray cluster (distillkit[ray])."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="With --label-backend ray: auto or HOST:PORT [default: start Ray for the run]."
    ),
    images_dir: Path | None = typer.Option(
        None, "--images-dir", help="Folder holding the images [default: each JSON's folder and its images/]."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --output from last.pt."),
    overrides: list[str] = typer.Option([], "--set", help="Config override section.key=value (repeatable)."),
    trust_model_file: bool = TRUST_MODEL_FILE_OPTION,
    json_mode: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Train a small, prompt-free YOLO student on the ground truth, distilled from teachers when given.

    The data decides the model: masks → yolov8s-seg, boxes only → yolov8s (change it with
    --student). A local .pt is used as starting weights; otherwise the architecture is trained from
    scratch (nothing is ever downloaded). The COCO data is converted once into DIR/yolo_data and
    reused while unchanged. DIR receives best.pt and last.pt (class names and COCO category ids
    inside), class_mapping.yaml, distillation_config.yaml, metadata.json, results.csv and
    plots/training_curves.png; ultralytics' own run folder is DIR/train. --resume continues an
    interrupted run (its teachers and distillation settings are reused).

    Teachers: a teacher given is always used. --teacher-dir (train-teacher's adapters) and --teacher
    (a YOLO .pt whose class names cover the dataset's) are first scored on --val: below
    distillation.teacher_min_ap the run stops (--force-teacher uses it anyway), and each class gets
    its own score gate at the teacher's best-F1 point there. The teacher then labels the training
    images (objects the annotator missed are added; the annotated ones get the teacher's soft class
    scores) and every --unlabeled image (copies of --data, --val and --exclude images are skipped).
    Its labels keep their soft targets (per-class scores, confidence, SAM's mask quality) in the
    student's loss. A YOLO teacher also adds KD loss terms (class logits, box distributions, neck
    features) weighted in defaults/distillation.yaml, and a student starting from scratch is
    initialised with weights selected out of it (same family, e.g. yolov8n from yolov8s;
    DIR/student_init.pt). Teacher predictions are cached in DIR/cache/teacher_outputs (EXP/cache/... for
    --teacher-dir, shared with `label`); the teacher's
    validation scores are in DIR/teacher_calibration.json.

    Examples:

        distillkit train-student --data data/train.json --val data/val.json --output exp/run1/student

        distillkit train-student -d data/train.json -v data/val.json -o exp/s --student yolov8n --epochs 30 --imgsz 320

        distillkit train-student -d data/train.json -v data/val.json -o exp/s --teacher big/best.pt --student yolov8n

        distillkit train-student -d data/train.json -v data/val.json -o exp/run1/s --teacher-dir exp/run1

        distillkit train-student -d train.json -v val.json -o s --teacher-dir exp --unlabeled u/ --exclude test.json

        distillkit train-student -d data/train.json -v data/val.json -o exp/s --resume
    """
    trust_model_files(trust_model_file)  # before anything reads a model file
    out = make_output(json_mode, quiet)
    settings = command_overrides(
        overrides,
        {
            "student.model": student,
            "student.epochs": epochs,
            "student.imgsz": imgsz,
            "student.batch": batch,
            "training_dynamics.device": device,
            "distillation.teacher_dir": teacher_dir,
            "distillation.ultralytics_teacher": teacher,
            "distillation.unlabeled_images": unlabeled,
            "distillation.force_teacher": True if force_teacher else None,
            "distillation.label_backend": label_backend,
            "distillation.ray_address": ray_address,
            "distillation.exclude": [str(path.resolve()) for path in exclude] if exclude else None,
        },
    )
    result = run_training(
        data, val, output, overrides=settings, images_dir=images_dir, resume=resume, progress=out.progress()
    )
    for notice in result.notices:
        out.notice(notice, style="yellow")
    if json_mode:
        out.emit_json(result.to_dict())
        return
    table = Table(
        title=f"student {result.student.name} ({result.task}), {result.epochs_run} epochs",
        title_justify="left",
        show_edge=False,
    )
    table.add_column("validation metric")
    table.add_column("value", justify="right")
    for key, value in result.metrics.items():
        table.add_row(key.removeprefix("metrics/"), f"{value:.4f}")
    out.print(table)
    if any(c["active"] for c in result.distillation.values()):
        components = Table(title="distillation", title_justify="left", show_edge=False)
        for column in ("component", "weight", "why"):
            components.add_column(column)
        for name, component in result.distillation.items():
            weight = f"{component['weight']:g}" if component["active"] else "0 (off)"
            components.add_row(name, weight, component["reason"])
        out.print(components)
        labels = result.pseudo_labels
        if labels.get("unlabeled_images") or labels.get("train_images_labelled"):
            if labels.get("teacher_ap") is not None:
                gates = ", ".join(f"{t:.2f}" for t in labels.get("thresholds", []))
                out.print(f"teacher on --val: box AP {labels['teacher_ap']:.3f}; per-class score gates [{gates}]")
            out.print(
                f"pseudo-labels: {labels['unlabeled_labels']} on {labels['unlabeled_images']} unlabelled images, "
                f"{labels['train_labels_added']} added to {labels['train_images_labelled']} training images "
                f"({labels['duplicates_dropped']} duplicates of ground truth dropped, "
                f"{labels['ground_truth_soft_targets']} annotated objects given soft targets); "
                f"{labels['skipped_duplicate_images']} unlabelled images skipped as copies; teacher cache: "
                f"{labels['cache_hits']} hits, {labels['computed']} computed"
            )
    out.print(f"best weights: {result.best}")
