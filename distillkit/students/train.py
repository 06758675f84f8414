"""Train a prompt-free ultralytics YOLO / YOLO-seg student on a COCO dataset.

The flow, all inside the experiment folder ``DIR``:
1. both COCO files go through ``validate``'s checks and repairs (the same classes everywhere);
2. the configuration (defaults → data → overrides) is written as ``distillation_config.yaml`` with
   ``metadata.json``, and the class mapping as ``class_mapping.yaml``;
3. the data is converted once to ultralytics' format in ``DIR/yolo_data`` (reused while unchanged);
4. ultralytics trains in ``DIR/train`` (its own run folder: ``weights/last.pt`` is what ``--resume``
   continues), network features off;
5. ``best.pt`` / ``last.pt`` (class names and the COCO category mapping inside), ``results.csv`` and
   the training-curve plot are placed at the top of ``DIR``.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from distillkit.augmentation.ultralytics_hook import ultralytics_augmentation_arguments
from distillkit.config import ConfigOverrides
from distillkit.data.images import default_image_roots
from distillkit.data.validate import ValidationResult
from distillkit.data.yolo_format import SOFT_TARGETS_FILE, SplitSource, YoloDataset, prepare_yolo_dataset
from distillkit.errors import DataError, UsageError
from distillkit.experiment import ExperimentRun, PreviousRun, coco_inputs, load_coco_pair
from distillkit.interrupts import deferred_interrupt
from distillkit.io import atomic_open, atomic_write_yaml
from distillkit.labelling.types import Teacher
from distillkit.paths import check_output_outside_inputs
from distillkit.progress import NULL_PROGRESS, Progress, epoch_line, log_line, values_text
from distillkit.students.checkpoints import ExactResume, inspect_checkpoint
from distillkit.students.copy_paste import with_rare_class_paste
from distillkit.students.distill_trainer import distillation_trainer
from distillkit.students.distillation import (
    PSEUDO_SPLIT,
    add_pseudo_labels,
    plan_distillation,
    train_on_extra_splits,
)
from distillkit.students.soft_targets import SoftTargetSettings
from distillkit.students.student_model import StudentSpec, load_student_model, resolve_student
from distillkit.training.device import gpu_indices

RUN_NAME = "train"  # ultralytics' run folder inside the experiment folder
CHECKPOINT_KEY = "distillkit"  # extra entry stored in the .pt files distillkit writes
STUDENT_INIT = "student_init.pt"  # the student's starting weights when selected from the teacher
STUDENT_SECTIONS = ("student", "distillation", "augmentation", "training_dynamics")


@dataclass
class StudentTrainingResult:
    output_dir: Path
    best: Path
    last: Path
    results_csv: Path
    task: str
    student: StudentSpec
    epochs_run: int
    metrics: dict[str, float]
    dataset: YoloDataset | None  # None: --resume of a run that had already finished (nothing was done)
    resumed: bool
    notices: list[str] = field(default_factory=list)
    distillation: dict[str, Any] = field(default_factory=dict)  # components: weight, active, reason
    pseudo_labels: dict[str, int] = field(default_factory=dict)
    already_finished: bool = False  # --resume found a finished run: nothing was trained

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.output_dir),
            "best": str(self.best),
            "last": str(self.last),
            "results_csv": str(self.results_csv),
            "task": self.task,
            "student": {
                "name": self.student.name,
                "source": self.student.source,
                "pretrained": self.student.pretrained,
            },
            "epochs_run": self.epochs_run,
            "metrics": self.metrics,
            "dataset_reused": self.dataset.reused if self.dataset is not None else None,
            "resumed": self.resumed,
            "notices": self.notices,
            "distillation": self.distillation,
            "pseudo_labels": self.pseudo_labels,
            "already_finished": self.already_finished,
        }


class StudentRun(ExperimentRun[StudentTrainingResult]):
    """``train-student``: the prompt-free YOLO student, distilled from the teachers it is given."""

    config_file = "distillation_config.yaml"
    sections = STUDENT_SECTIONS
    # On --resume the teachers, KD weights and augmentation of the interrupted run, unless overridden again.
    resume_sections = ("distillation", "augmentation")

    def __init__(
        self,
        train: str | Path,
        val: str | Path,
        output: str | Path,
        *,
        images_dir: str | Path | None = None,
        val_images_dir: str | Path | None = None,
        callbacks: Mapping[str, Callable[[Any], None]] | None = None,
        teacher: Teacher | None = None,
        **common: Any,
    ) -> None:
        super().__init__(output, **common)
        self.train_file, self.val_file = Path(train), Path(val)
        self.images_dir = _path(images_dir)
        self.val_images_dir = _path(val_images_dir or images_dir)
        self.callbacks = dict(callbacks or {})
        self.teacher = teacher
        self.run_dir = self.folder / RUN_NAME
        self.notices: list[str] = []

    def inputs(self) -> list[Path | None]:
        return coco_inputs(self.train_file, self.val_file, self.images_dir, self.val_images_dir)

    def previous_run(self) -> PreviousRun:
        last = self.run_dir / "weights" / "last.pt"
        state = inspect_checkpoint(last)
        return PreviousRun(state.kind, last, state.problem, run_dir=self.run_dir)  # type: ignore[arg-type]

    def finished_result(self, previous: PreviousRun) -> StudentTrainingResult:
        return _finished_run(self.folder, self.train_file)

    def train(self) -> StudentTrainingResult:
        train_data, val_data = load_coco_pair(self.train_file, self.val_file, self.progress)
        config = self.configure(train_data.info, self.train_file)
        # a GPU list this machine lacks: said before any work; two or more GPUs: ultralytics' DDP workers
        multi_gpu = len(gpu_indices(self._device_setting(config))) > 1
        spec, model = self._student(config, train_data)
        task = model.task
        plan = self._plan(config, train_data, model, spec, task)
        self._record(config, spec, task, plan)
        dataset, pseudo_report = self._training_data(config, train_data, val_data, model, spec, task, plan)
        if plan.student_init is not None:  # weight selection: train from the teacher-derived start
            model = load_student_model(
                str(save_student_init(plan.student_init, self.folder / STUDENT_INIT)), "--student"
            )
        self._fit(model, config, dataset, plan, spec, task, multi_gpu)
        trainer = model.trainer
        pseudo_report.soft_targets_matched = int(getattr(trainer, "soft_labels_matched", 0))
        metrics = {key: float(value) for key, value in (trainer.metrics or {}).items()}
        if not metrics:  # a multi-GPU run trained in ultralytics' worker processes: their results.csv says
            metrics = _last_metrics(self.run_dir / "results.csv")
        warning = all_zero_warning(
            metrics,
            int(trainer.epochs),
            len(getattr(trainer, "train_loader", None) or []),
            bool(spec.pretrained or plan.student_init is not None or self.resume),
        )
        if warning:
            self.notices.append(warning)
        best, last, results_csv = self._publish(train_data.info.class_mapping)
        return StudentTrainingResult(
            output_dir=self.folder,
            best=best,
            last=last,
            results_csv=results_csv,
            task=task,
            student=spec,
            epochs_run=_epochs_in(results_csv),
            metrics=metrics,
            dataset=dataset,
            resumed=bool(self.resume),
            notices=self.notices,
            distillation=plan.to_dict()["components"],
            pseudo_labels=pseudo_report.to_dict(),
        )

    # -- the steps --------------------------------------------------------------------------------

    def _device_setting(self, config: Any) -> str:
        """The devices this run trains on: on --resume ultralytics takes them from last.pt (one GPU or several)."""
        if self.resume:
            from distillkit.safe_load import safe_torch_load

            try:
                saved = safe_torch_load(self.run_dir / "weights" / "last.pt").get("train_args") or {}
            except Exception:  # an unreadable checkpoint is reported by the resume itself
                saved = {}
            if saved.get("device") not in (None, ""):
                return str(saved["device"])
        return str(config.training_dynamics.device)

    def _student(self, config: Any, train_data: ValidationResult) -> tuple[StudentSpec, Any]:
        """The student model, loaded once: the model itself says its task (a .pt its checkpoint, a .yaml its name)."""
        student_cfg, distill_cfg = config.student, config.distillation
        # the --unlabeled folder is read for images; local --student/--teacher files are inputs too
        weights = [m for m in (student_cfg.model, distill_cfg.ultralytics_teacher) if m and Path(m).is_file()]
        check_output_outside_inputs(self.folder, [distill_cfg.unlabeled_images, *weights])
        if student_cfg.model is None:
            raise DataError(f"{self.train_file} has neither boxes nor masks: there is nothing to train a student on")
        spec = resolve_student(student_cfg.model, pretrained=student_cfg.pretrained)
        last = str(self.run_dir / "weights" / "last.pt")
        model = load_student_model(
            last if self.resume else spec.source, last if self.resume else f"--student {spec.name}"
        )
        if model.task not in ("detect", "segment"):
            raise UsageError(
                f"{student_cfg.model} is a {model.task} model", "choose a detection or segmentation student"
            )
        if model.task == "segment" and not train_data.info.has_masks:
            raise UsageError(
                f"{student_cfg.model} is a segmentation model but {self.train_file} has no masks",
                "choose a detection student",
            )
        if spec.notice:
            self.notices.append(spec.notice)
        return spec, model

    def _plan(self, config: Any, train_data: ValidationResult, model: Any, spec: StudentSpec, task: str) -> Any:
        device = _device(config.training_dynamics.device)
        plan = plan_distillation(
            config,
            train_data.info.class_names,
            task,
            int(model.model.model[-1].reg_max),
            "cpu" if device == "cpu" else f"cuda:{device.split(',')[0]}",
            self.teacher,
            scratch_student=None if self.resume or spec.pretrained else model,
            selected_start=self.folder / STUDENT_INIT if self.resume else None,
        )
        self.notices += plan.notices
        return plan

    def _record(self, config: Any, spec: StudentSpec, task: str, plan: Any, **extra: Any) -> None:
        """The configuration and metadata.json (again once the pseudo-label gates are calibrated)."""
        self.write_config(
            config,
            dataset_path=self.train_file,
            val=str(self.val_file.resolve()),
            student=spec.source,
            task=task,
            distillation=plan.to_dict(),
            **extra,
        )

    def _training_data(
        self,
        config: Any,
        train_data: ValidationResult,
        val_data: ValidationResult,
        model: Any,
        spec: StudentSpec,
        task: str,
        plan: Any,
    ) -> tuple[YoloDataset, Any]:
        """The class mapping, the teachers' labels, and the data in ultralytics' format."""
        info = train_data.info
        atomic_write_yaml(
            self.folder / "class_mapping.yaml",
            {
                "names": info.class_names,
                "category_ids": sorted(info.class_mapping),
                "class_mapping": info.class_mapping,
            },
        )
        splits, pseudo_report = add_pseudo_labels(
            plan,
            config,
            SplitSource(_dataset(train_data), default_image_roots(self.train_file, self.images_dir)),
            SplitSource(_dataset(val_data), default_image_roots(self.val_file, self.val_images_dir)),
            self.folder,
            task,
            progress=self.progress,
            validation=val_data,
            resume=bool(self.resume),
            student_reference=None
            if self.resume
            else _student_reference(spec, model, self.val_file, self.val_images_dir, config),
        )
        self.notices += pseudo_report.notices
        _check_teacher_contributed(plan, pseudo_report)
        if plan.components["pseudo_labels"].active:  # the calibrated gates and labelling figures, written down
            self._record(config, spec, task, plan, pseudo_labels=pseudo_report.to_dict())
        dataset = prepare_yolo_dataset(
            splits, self.folder / "yolo_data", task, info.class_mapping, info.class_names, progress=self.progress
        )
        if PSEUDO_SPLIT in splits:
            train_on_extra_splits(dataset, [PSEUDO_SPLIT])
        if plan.components["soft_targets"].active and (dataset.root / SOFT_TARGETS_FILE).is_file():
            plan.soft = SoftTargetSettings(dataset.root / SOFT_TARGETS_FILE, len(info.class_names))
        return dataset, pseudo_report

    def _fit(
        self, model: Any, config: Any, dataset: YoloDataset, plan: Any, spec: StudentSpec, task: str, multi_gpu: bool
    ) -> None:
        """ultralytics' training loop, with progress, exact resume and a prompt Ctrl-C."""
        # distillkit's KD terms live in a trainer subclass; ultralytics' own distill_model is a train argument
        trainer_class = _trainer_class(task, plan, config.augmentation, self.notices, multi_gpu)
        with self.progress.task(f"training {Path(spec.source).stem}", total=config.student.epochs) as bar:
            exact = ExactResume()
            exact.attach(model)
            for event, function in self.callbacks.items():
                model.add_callback(event, function)
            with deferred_interrupt() as interrupt:
                if multi_gpu:
                    # ultralytics runs DDP in worker processes it starts itself (torch.distributed.run),
                    # handing them the trainer class and these callbacks by pickle: they get a plain
                    # per-epoch line (this process's bar and Ctrl-C flag stay here). A Ctrl-C reaches
                    # the workers through the process group; here it ends the wait at once (exit 130).
                    model.add_callback("on_fit_epoch_end", print_epoch_line)
                else:
                    _add_progress_callbacks(model, bar, self.progress)
                    # Ctrl-C stops at the next batch boundary, where nothing swallows the KeyboardInterrupt
                    # and last.pt is the previous epoch's, complete; before the loop starts it stops at once.
                    model.add_callback("on_train_start", lambda trainer: interrupt.defer())
                    for event in ("on_train_batch_end", "on_train_epoch_start", "on_val_batch_end", "on_fit_epoch_end"):
                        model.add_callback(event, interrupt.check)
                if self.resume:
                    model.train(resume=True, data=str(dataset.yaml_path), **trainer_class)
                else:
                    arguments = ultralytics_train_arguments(config, dataset, self.folder)
                    if plan.ultralytics_distill is not None:
                        arguments.update(
                            distill_model=str(plan.ultralytics_distill), dis=config.distillation.dis_weight
                        )
                    model.train(**arguments, **trainer_class)
                interrupt.defer(False)
            self.notices += exact.notices

    def _publish(self, class_mapping: Mapping[int, int]) -> tuple[Path, Path, Path]:
        """best.pt / last.pt (with the COCO category mapping), results.csv and the plots at the folder's top."""
        weights = self.run_dir / "weights"
        best = _export_checkpoint(weights / "best.pt", self.folder / "best.pt", class_mapping)
        last = _export_checkpoint(weights / "last.pt", self.folder / "last.pt", class_mapping)
        results_csv = self.folder / "results.csv"
        if (self.run_dir / "results.csv").exists():
            shutil.copyfile(self.run_dir / "results.csv", results_csv)
            plot_training_curves(results_csv, self.folder / "plots" / "training_curves.png")
        for picture in self.run_dir.glob("*.png"):
            (self.folder / "plots").mkdir(exist_ok=True)
            shutil.copyfile(picture, self.folder / "plots" / picture.name)
        return best, last, results_csv


def train_student(
    train: str | Path,
    val: str | Path,
    output_dir: str | Path,
    overrides: ConfigOverrides = (),
    images_dir: str | Path | None = None,
    val_images_dir: str | Path | None = None,
    resume: bool = False,
    progress: Progress = NULL_PROGRESS,
    callbacks: Mapping[str, Callable[[Any], None]] | None = None,
    teacher: Teacher | None = None,
) -> StudentTrainingResult:
    """Train the student; ``overrides`` are typed values by dotted key (``{"student.epochs": 50}``) or ``--set`` text.

    ``callbacks`` maps ultralytics callback events (``on_fit_epoch_end``, ...) to extra functions.
    Teachers come from ``distillation.ultralytics_teacher`` / ``distillation.teacher_dir`` (``--teacher``,
    ``--teacher-dir``) or ``teacher``, any object implementing the ``Teacher`` protocol (pseudo-labels).
    On ``resume`` the saved distillation settings (teachers included) are used again.
    """
    return StudentRun(
        train,
        val,
        output_dir,
        images_dir=images_dir,
        val_images_dir=val_images_dir,
        callbacks=callbacks,
        teacher=teacher,
        overrides=overrides,
        resume=resume,
        progress=progress,
    ).run()


def _add_progress_callbacks(model: Any, bar: Any, progress: Progress) -> None:
    """One bar step and one line per epoch; resumed runs start part-way."""
    shown = {"epochs": 0}

    def on_epoch_end(trainer: Any) -> None:
        if int(trainer.epoch) >= int(trainer.epochs):  # ultralytics' final validation of best.pt calls back too
            log_line(progress, best_validation_line(trainer))
            return
        done = int(trainer.epoch) + 1
        bar.advance(max(0, done - shown["epochs"]))
        shown["epochs"] = done
        log_line(progress, student_epoch_line(trainer))

    def on_start(trainer: Any) -> None:
        shown["epochs"] = int(trainer.start_epoch)
        bar.advance(shown["epochs"])

    model.add_callback("on_train_start", on_start)
    model.add_callback("on_fit_epoch_end", on_epoch_end)


def print_epoch_line(trainer: Any) -> None:
    """The per-epoch line on stderr, from a DDP worker (rank 0 only): a module function, so it pickles."""
    import sys

    from distillkit.training.distributed import is_main_process

    if not is_main_process():
        return
    line = best_validation_line(trainer) if int(trainer.epoch) >= int(trainer.epochs) else student_epoch_line(trainer)
    print(line, file=sys.stderr, flush=True)


def student_epoch_line(trainer: Any) -> str:
    """One line per epoch as ultralytics prints it: the epoch's mean training losses, then validation."""
    values: dict[str, float] = {}
    if getattr(trainer, "tloss", None) is not None:
        values.update(
            {k.removeprefix("train/"): float(v) for k, v in trainer.label_loss_items(trainer.tloss, "train").items()}
        )
    for key, value in (trainer.metrics or {}).items():
        if key.startswith("metrics/"):
            values[key.removeprefix("metrics/")] = float(value)
    seconds = getattr(trainer, "epoch_time", None)
    return epoch_line(int(trainer.epoch) + 1, int(trainer.epochs), values, float(seconds) if seconds else None)


def best_validation_line(trainer: Any) -> str:
    """The line for ultralytics' closing validation of ``best.pt``."""
    values = {
        k.removeprefix("metrics/"): float(v) for k, v in (trainer.metrics or {}).items() if k.startswith("metrics/")
    }
    return f"best.pt  {values_text(values)}" if values else "best.pt validated"


ZERO_METRICS = ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)")


def all_zero_warning(metrics: dict[str, float], epochs: int, steps_per_epoch: int, pretrained: bool) -> str | None:
    """A warning when a run ends with every validation metric at 0, with the likely causes."""
    found = [metrics[k] for k in ZERO_METRICS if k in metrics]
    if not found or any(v > 0 for v in found):
        return None
    causes = [f"{epochs} epochs x {steps_per_epoch} batches = {epochs * steps_per_epoch} optimiser steps"]
    if not pretrained:
        causes.append("the student starts from random weights (student.pretrained=false)")
    return (
        "warning: every validation metric is 0 at the end of training: the student learnt nothing usable yet ("
        + "; ".join(causes)
        + "). Train longer (--epochs), start from pretrained weights (--student yolov8n.pt), or check the labels"
    )


def _finished_run(folder: Path, train: str | Path) -> StudentTrainingResult:
    """``--resume`` of a run that already ended: say so, touch no training, only finish the folder's exports."""
    run_dir = folder / RUN_NAME
    epochs = _epochs_in(run_dir / "results.csv")
    metadata = _read_metadata(folder)
    source = str(metadata.get("student") or "student")
    spec = StudentSpec(Path(source).stem, source, source.endswith(".pt"))
    mapping_file = folder / "class_mapping.yaml"
    mapping = yaml.safe_load(mapping_file.read_text()).get("class_mapping", {}) if mapping_file.is_file() else {}
    exported = {}
    for name in ("last.pt", "best.pt"):  # a run killed after training but before its exports gets them now
        target, source_file = folder / name, run_dir / "weights" / name
        # an export made before the weights were finished is replaced by the finished ones
        finished_now = _finish_checkpoint(source_file)
        if source_file.is_file() and (finished_now or not target.is_file()):
            _export_checkpoint(source_file, target, mapping)
        exported[name] = target
    if (run_dir / "results.csv").is_file() and not (folder / "results.csv").is_file():
        shutil.copyfile(run_dir / "results.csv", folder / "results.csv")
    notice = (
        f"{folder} already finished its training ({epochs} epochs): nothing to resume, nothing was trained; "
        f"to train longer, start a new run from its weights, e.g. --student {exported['best.pt']} --output OTHER"
    )
    return StudentTrainingResult(
        output_dir=folder,
        best=exported["best.pt"],
        last=exported["last.pt"],
        results_csv=folder / "results.csv",
        task=str(metadata.get("task") or "detect"),
        student=spec,
        epochs_run=epochs,
        metrics=_last_metrics(run_dir / "results.csv"),
        dataset=None,
        resumed=False,
        notices=[notice],
        already_finished=True,
    )


def _holds_training_state(path: Path) -> bool:
    """Whether an ultralytics checkpoint still holds its optimizer: written per epoch, not yet finalised."""
    from distillkit.safe_load import safe_torch_load

    try:
        checkpoint = safe_torch_load(path)
    except Exception:  # an unreadable file is for inspect_checkpoint and the export to report
        return False
    return isinstance(checkpoint, dict) and checkpoint.get("optimizer") is not None


def _finish_checkpoint(path: Path) -> bool:
    """Finalise an epoch checkpoint the way ultralytics ends a run (EMA as the model, no optimizer).

    A Ctrl-C or kill after the last epoch's checkpoint but before ultralytics' closing ``strip_optimizer``
    leaves the run finished but its weights in training form (``model`` None, the EMA beside it);
    ``--resume`` finishes that step instead of exporting them as they are. True when it did.
    """
    if not path.is_file() or not _holds_training_state(path):
        return False
    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics.engine import trainer as engine  # its strip_optimizer is the guard's atomic one

    engine.strip_optimizer(path)
    return True


def _read_metadata(folder: Path) -> dict[str, Any]:
    try:
        document = orjson.loads((folder / "metadata.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    extra = document.get("extra") if isinstance(document, dict) else None  # what train_student recorded
    return extra if isinstance(extra, dict) else {}


def _last_metrics(results_csv: Path) -> dict[str, float]:
    if not results_csv.is_file():
        return {}
    with open(results_csv, newline="") as handle:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(handle)]
    if not rows:
        return {}
    return {key: float(value) for key, value in rows[-1].items() if key.startswith("metrics/")}


def ultralytics_train_arguments(config: Any, dataset: YoloDataset, folder: Path) -> dict[str, Any]:
    student, augmentation, dynamics = config.student, config.augmentation, config.training_dynamics
    device = _device(dynamics.device)
    arguments: dict[str, Any] = {
        "data": str(dataset.yaml_path),
        "epochs": student.epochs,
        "imgsz": student.imgsz,
        "batch": student.batch,
        "nbs": student.nbs,
        "patience": student.patience,
        "optimizer": student.optimizer,
        "warmup_epochs": student.warmup_epochs,
        "workers": student.workers,
        "cache": student.cache,
        "plots": student.plots,
        "device": device,
        "seed": dynamics.seed,
        "deterministic": dynamics.deterministic,
        "amp": device != "cpu" and dynamics.amp != "off",
        "mosaic": augmentation.mosaic,
        "close_mosaic": augmentation.close_mosaic,
        "mixup": augmentation.mixup,
        "copy_paste": augmentation.copy_paste,
        # donors from other images (ultralytics' "mixup" mode) so rare-class donors can be chosen
        "copy_paste_mode": "mixup" if _rare_class_paste(augmentation, dataset.task) else "flip",
        "project": str(folder.resolve()),
        "name": RUN_NAME,
        "exist_ok": True,
        "verbose": False,
        "val": True,
    }
    if student.lr0 is not None:
        arguments["lr0"] = student.lr0
    arguments.update(ultralytics_augmentation_arguments(augmentation))  # the characteristic-based pipeline
    return arguments


def save_student_init(model: Any, target: Path) -> Path:
    """An ultralytics-loadable checkpoint of ``model`` (what ``YOLO(path)`` and the trainer expect)."""
    import torch

    with atomic_open(target, "wb") as handle:
        torch.save({"model": model, "train_args": {}, "epoch": -1, "date": None}, handle)
    return target


def _rare_class_paste(augmentation: Any, task: str) -> bool:
    return bool(augmentation.copy_paste_rare_classes and augmentation.copy_paste > 0 and task == "segment")


def _trainer_class(
    task: str, plan: Any, augmentation: Any, notices: list[str], multi_gpu: bool = False
) -> dict[str, type]:
    """``model.train(trainer=...)``: the KD trainer and/or rare-class copy-paste; empty for ultralytics' own.

    Multi-GPU runs always get distillkit's trainer class: ultralytics' DDP workers import ultralytics
    bare, and that class's constructor installs distillkit's guards (offline, atomic checkpoints) there.
    """
    wanted = plan.kd is not None or bool(plan.soft) or multi_gpu
    trainer = distillation_trainer(task, plan.kd, plan.soft) if wanted else None
    if _rare_class_paste(augmentation, task):
        if trainer is None:
            from ultralytics.models.yolo.segment import SegmentationTrainer

            trainer = SegmentationTrainer
        trainer = with_rare_class_paste(trainer)
    elif augmentation.copy_paste_rare_classes:
        notices.append(
            "augmentation.copy_paste_rare_classes has no effect: copy-paste needs a segmentation student "
            "and augmentation.copy_paste > 0"
        )
    return {"trainer": trainer} if trainer is not None else {}


def _student_reference(spec: StudentSpec, model: Any, val: str | Path, images_dir: Any, config: Any) -> Any:
    """("the student's starting AP", AP on --val) when the student starts from trained weights for these classes."""
    from distillkit.students.yolo_teacher import checkpoint_class_names

    if config.distillation.force_teacher or not spec.pretrained or not str(spec.source).endswith(".pt"):
        return None
    names = [n.lower() for n in checkpoint_class_names(model.names)]
    if names != [n.lower() for n in config.data.class_names]:
        return None  # e.g. COCO-pretrained weights: their AP on these classes says nothing yet
    from distillkit.evaluation.models import evaluate_models

    evaluation = evaluate_models(
        val, [spec.source], images_dir=images_dir, iou_types="bbox", imgsz=config.student.imgsz
    )
    stats = next(iter(evaluation[0].result.metrics.values())).stats
    return ("the student's starting AP", max(0.0, float(stats["AP"])))


def _check_teacher_contributed(plan: Any, report: Any) -> None:
    """A teacher that was given yet changes nothing is an error that says why, never a silent no-op."""
    if not plan.components["pseudo_labels"].active:
        return
    others = [n for n in ("logit_kd", "dfl_kd", "feature_kd", "weight_selection") if plan.components[n].active]
    if report.labels_added or report.ground_truth_soft_targets or others:
        return
    images = report.train_images_labelled + report.unlabeled_images
    raise DataError(
        f"the {plan.labeller_source} contributed nothing: not one of its detections on {images} images passed "
        f"the class thresholds {report.thresholds}, and none overlapped an annotated object",
        "lower them with --set distillation.class_thresholds=[...] or distillation.calibrate_thresholds=false "
        "distillation.pseudo_label_conf=..., or train the teacher further",
    )


def _device(requested: str) -> str:
    if requested != "auto":
        return requested.removeprefix("cuda:") if requested.startswith("cuda:") else requested
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def _export_checkpoint(source: Path, target: Path, class_mapping: Mapping[int, int]) -> Path:
    """Copy an ultralytics checkpoint, adding the COCO category mapping next to the names inside."""
    import torch

    from distillkit.safe_load import safe_torch_load

    checkpoint = safe_torch_load(source)  # data only: never runs code a replaced last.pt could carry
    checkpoint[CHECKPOINT_KEY] = {
        "class_mapping": {int(k): int(v) for k, v in class_mapping.items()},
        "category_ids": sorted(int(k) for k in class_mapping),
    }
    with atomic_open(target, "wb") as handle:
        torch.save(checkpoint, handle)
    return target


def plot_training_curves(results_csv: Path, target: Path) -> Path:
    """Training losses, validation losses and validation metrics per epoch (from results.csv)."""
    from matplotlib.figure import Figure  # no pyplot: nothing global, and cheaper to set up

    with open(results_csv, newline="") as handle:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(handle)]
    if not rows:
        return target
    epochs = [int(float(r["epoch"])) for r in rows]
    panels = [("training losses", "train/"), ("validation losses", "val/"), ("validation metrics", "metrics/")]
    figure = Figure(figsize=(13, 3.6), dpi=110)
    for position, (title, prefix) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, 3, position)
        for column in (c for c in rows[0] if c.startswith(prefix)):
            axes.plot(
                epochs,
                [float(r[column]) for r in rows],
                marker="o",
                markersize=2,
                linewidth=1.2,
                label=column.removeprefix(prefix),
            )
        axes.set(title=title, xlabel="epoch")
        if prefix != "metrics/" and all(float(r[c]) > 0 for r in rows for c in r if c.startswith(prefix)):
            axes.set_yscale("log")  # early validation losses of a run from scratch span decades
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(target, "wb") as handle:
        figure.savefig(handle, format="png")
    return target


def _epochs_in(results_csv: Path) -> int:
    if not results_csv.exists():
        return 0
    with open(results_csv, newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def _dataset(result: ValidationResult) -> dict[str, Any]:
    assert result.dataset is not None
    return result.dataset


def _path(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None
