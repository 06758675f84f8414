"""`train-classifier` as a library call: data → config → model → shared Trainer → self-contained checkpoints.

``train_classifier(data, output, ...)`` reads the labels (any source of ``sources.py``), splits off a
stratified validation set when none is given, builds the experiment config (shipped defaults → data
→ overrides), the timm model (+ CBAM) and loss, and runs ``distillkit.training.Trainer``. Every
epoch writes ``EXP/last.pt`` and, when the monitored metric improves, ``EXP/best.pt``: classifier
checkpoints with class names and preprocessing inside (``checkpoint.py``), holding the evaluated
(EMA) weights. At the end a softmax temperature is fitted on the validation set and stored in
``best.pt``, and ``results.json`` plus ``training_curves.png`` are written. The Trainer's own full
training state (for ``--resume``) lives in ``EXP/checkpoints/``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from distillkit.classify.checkpoint import (
    ClassifierMeta,
    LoadedClassifier,
    is_classifier_checkpoint,
    load_classifier,
    save_classifier,
)
from distillkit.classify.dataset import ClassificationDataset, common_image_size
from distillkit.classify.loss_computer import LossComputer
from distillkit.classify.losses import build_loss
from distillkit.classify.metrics import classification_metrics, fit_temperature
from distillkit.classify.mixing import build_mixer
from distillkit.classify.models import ClassifierSpec, TimmClassifier, build_classifier
from distillkit.classify.research.training import build_research_training, research_model_name
from distillkit.classify.sources import ClassificationData, load_classification_data, split_classification_data
from distillkit.classify.thresholds import tune_thresholds
from distillkit.config import ConfigOverrides, build_config
from distillkit.config.build import ExperimentConfig
from distillkit.data.info import CategoryInfo, DatasetInfo
from distillkit.errors import DataError, UsageError
from distillkit.experiment import ExperimentRun, PreviousRun
from distillkit.io import atomic_write_json
from distillkit.progress import NULL_PROGRESS, Progress
from distillkit.training.rng import seed_everything

PathLike = str | os.PathLike[str]

SECTIONS = ("preprocessing", "augmentation", "training_dynamics", "checkpointing", "classifier")
CONFIG_FILE = "classifier_config.yaml"
RESULTS_FILE = "results.json"
CURVES_FILE = "training_curves.png"
SPLIT_FILE = "split.json"
DEFAULT_VAL_FRACTION = 0.2


@dataclass
class ClassifierTrainingResult:
    """What a training run produced (``to_dict`` is the ``--json`` document)."""

    output_dir: Path
    best: Path
    last: Path
    class_names: list[str]
    multi_label: bool
    model: str
    epochs_run: int
    best_epoch: int | None
    monitor: str
    best_value: float | None
    stopped_early: bool
    metrics: dict[str, Any]  # validation metrics of best.pt (calibrated)
    temperature: float
    ece_before: float | None
    ece_after: float | None
    train_images: int
    val_images: int
    split: str  # "given" (--val) | "auto" (stratified split of --data)
    elapsed_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    thresholds: dict[str, float] | None = None  # multi-label with classifier.tune_thresholds: per class, in best.pt

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.output_dir),
            "best": str(self.best),
            "last": str(self.last),
            "model": self.model,
            "class_names": self.class_names,
            "multi_label": self.multi_label,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "monitor": self.monitor,
            "best_value": self.best_value,
            "stopped_early": self.stopped_early,
            "metrics": self.metrics,
            "calibration": {
                "temperature": self.temperature,
                "ece_before": self.ece_before,
                "ece_after": self.ece_after,
            },
            "train_images": self.train_images,
            "val_images": self.val_images,
            "split": self.split,
            "thresholds": self.thresholds,
            "elapsed_s": round(self.elapsed_s, 2),
            "files": self.files,
            "notices": self.notices,
        }


# --------------------------------------------------------------------------------------------------
# the model the Trainer optimises


class ClassifierTrainingModule(nn.Module):
    """The classifier plus what only training needs (the feature projector for distillation).

    ``forward`` returns (logits, pooled features) so distributed wrappers see one forward pass.
    """

    def __init__(self, classifier: TimmClassifier, projector: nn.Module | None = None) -> None:
        super().__init__()
        self.classifier = classifier
        self.projector = projector

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.classifier.forward_with_features(images)


class Teacher:
    """A frozen classifier whose inputs are re-sized and re-normalised from the student's batch."""

    def __init__(self, loaded: LoadedClassifier, student_mean: Sequence[float], student_std: Sequence[float]) -> None:
        self.loaded = loaded
        self.model = loaded.model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self._student = (torch.tensor(student_mean).view(1, -1, 1, 1), torch.tensor(student_std).view(1, -1, 1, 1))
        self._own = (torch.tensor(loaded.mean).view(1, -1, 1, 1), torch.tensor(loaded.std).view(1, -1, 1, 1))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = images.device
        self.model.to(device)
        s_mean, s_std = (t.to(device) for t in self._student)
        t_mean, t_std = (t.to(device) for t in self._own)
        pixels = images.float() * s_std + s_mean
        if tuple(pixels.shape[-2:]) != self.loaded.input_hw:
            pixels = F.interpolate(pixels, size=self.loaded.input_hw, mode="bilinear", align_corners=False)
        return self.model.forward_with_features((pixels - t_mean) / t_std)


def _unwrap(model: nn.Module) -> ClassifierTrainingModule:
    inner = getattr(model, "module", model)
    assert isinstance(inner, ClassifierTrainingModule)
    return inner


# --------------------------------------------------------------------------------------------------
# evaluation during training


@torch.no_grad()
def collect_logits(model: nn.Module, loader: DataLoader[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(logits, targets) of a whole loader with ``model`` (a classifier or the training module)."""
    device = next(model.parameters()).device
    logits, targets = [], []
    for images, target in loader:
        output = model(images.to(device))
        logits.append((output[0] if isinstance(output, tuple) else output).float().cpu())
        targets.append(target)
    return torch.cat(logits).numpy(), torch.cat(targets).numpy()


def _probabilities(logits: np.ndarray, multi_label: bool, temperature: float = 1.0) -> np.ndarray:
    scaled = torch.from_numpy(logits).double() / temperature
    return (torch.sigmoid(scaled) if multi_label else torch.softmax(scaled, dim=1)).numpy()


def _val_loss(logits: np.ndarray, targets: np.ndarray, multi_label: bool) -> float:
    z, y = torch.from_numpy(logits).float(), torch.from_numpy(targets).float()
    if multi_label:
        return float(F.binary_cross_entropy_with_logits(z, y))
    return float(F.cross_entropy(z, y))


@dataclass
class ValidationEvaluator:
    """``evaluate(model)`` for the Trainer: accuracy, macro F1, ECE, top-k and loss on the val set."""

    loader: DataLoader[Any]
    class_names: list[str]
    multi_label: bool
    topk: list[int]
    threshold: float

    def __call__(self, model: nn.Module) -> dict[str, float]:
        logits, targets = collect_logits(model, self.loader)
        metrics = classification_metrics(
            _probabilities(logits, self.multi_label),
            targets,
            self.class_names,
            self.multi_label,
            topk=self.topk,
            thresholds=self.threshold,
        )
        row = {
            "val/loss": _val_loss(logits, targets, self.multi_label),
            "val/accuracy": metrics.accuracy,
            "val/macro_f1": metrics.macro_f1,
            "val/micro_f1": metrics.micro_f1,
            "val/ece": metrics.ece,
        }
        for k, value in metrics.top_k.items():
            if k != 1:
                row[f"val/top{k}"] = value
        if self.multi_label and metrics.hamming_loss is not None:
            row["val/hamming_loss"] = metrics.hamming_loss
        return row


class CheckpointWriter:
    """Trainer callback: after every epoch, ``EXP/last.pt`` (and ``EXP/best.pt`` on improvement).

    The weights written are the ones just evaluated: the EMA average when EMA is on.
    """

    def __init__(self, output_dir: Path, meta: ClassifierMeta) -> None:
        self.output_dir = output_dir
        self.meta = meta

    def on_epoch_end(self, trainer: Any, epoch: int, row: dict[str, Any]) -> None:
        if not trainer.world.is_main:
            return
        classifier = _unwrap(trainer.model).classifier
        metrics = {key: value for key, value in row.items() if key.startswith("val/")}
        meta = replace(self.meta, metrics=metrics, epoch=epoch)
        swap = trainer.ema.swapped_in() if trainer.ema is not None else _nothing()
        with swap:
            save_classifier(self.output_dir / "last.pt", classifier, meta)
            if trainer.monitor.best_epoch == epoch:
                save_classifier(self.output_dir / "best.pt", classifier, meta)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --------------------------------------------------------------------------------------------------
# setup helpers


def dataset_info_for(data: ClassificationData) -> DatasetInfo:
    """The config's data layer for image-level labels: classes and counts, no boxes, no masks."""
    counts = data.class_counts()
    categories = tuple(
        CategoryInfo(id=index, name=name, annotations=int(counts[index]), images=int(counts[index]))
        for index, name in enumerate(data.class_names)
    )
    empty = int((data.targets.sum(axis=1) == 0).sum())
    return DatasetInfo(
        num_images=len(data),
        num_annotations=int(data.targets.sum()),
        categories=categories,
        num_empty_images=empty,
    )


def _multi_label_setting(config: ExperimentConfig, data: ClassificationData) -> tuple[bool, list[str]]:
    """Resolve ``multi_label: auto`` and make the loss fit it; returns (multi_label, notices)."""
    setting = config.classifier.multi_label
    notices: list[str] = []
    if setting is False and data.multi_label:
        raise DataError(
            f"classifier.multi_label is false but {data.source} has images with no label or several",
            "drop the override (auto detects it) or fix the labels",
        )
    multi_label = data.multi_label if setting == "auto" else bool(setting)
    loss_given = config.is_overridden("classifier.loss")
    if multi_label and config.classifier.loss == "cross_entropy":
        if loss_given:
            raise UsageError(
                "the data is multi-label but classifier.loss=cross_entropy treats classes as exclusive",
                "use classifier.loss=bce or focal",
            )
        config.classifier.loss = "bce"
        notices.append("multi-label data (images with no label or several): using the bce loss")
    return multi_label, notices


def _input_size(config: ExperimentConfig, train: ClassificationData, val: ClassificationData) -> tuple[int, int]:
    if config.classifier.keep_full_resolution:
        return common_image_size(list(train.paths) + list(val.paths))
    size = config.classifier.imgsz
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _augment_factory(config: ExperimentConfig) -> Any:
    """A per-worker pipeline factory, or None when augmentation is off or plans nothing."""
    if config.augmentation.intensity == "none":
        return None
    from distillkit.augmentation.pipeline import pipeline_from_config

    probe = pipeline_from_config(config.augmentation, seed=config.augmentation.seed)
    if not probe.plan.steps:
        return None
    base = config.augmentation.seed

    def factory(worker_seed: int) -> Any:
        return pipeline_from_config(config.augmentation, seed=(base + worker_seed) % (2**31))

    return factory


def _build_model(config: ExperimentConfig, num_classes: int) -> tuple[TimmClassifier, list[str]]:
    """The student: a timm name, or a classifier checkpoint to fine-tune (its matching weights)."""
    settings = config.classifier
    source = Path(settings.model).expanduser()
    if source.suffix in (".pt", ".pth") and source.is_file():
        if not is_classifier_checkpoint(source):
            raise UsageError(f"{source} is not a train-classifier checkpoint", "pass a timm model name or a best.pt")
        start = load_classifier(source)
        spec = ClassifierSpec(
            name=research_model_name(start.meta.spec.name, settings),
            num_classes=num_classes,
            cbam_stages=start.meta.spec.cbam_stages,
            drop_rate=settings.drop_rate,
            drop_path_rate=settings.drop_path_rate,
        )
        model = build_classifier(spec).model
        own = model.state_dict()
        usable = {k: v for k, v in start.model.state_dict().items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(usable, strict=False)
        return model, [f"started from {source} ({len(usable)}/{len(own)} tensors loaded)"]
    spec = ClassifierSpec(
        name=research_model_name(settings.model, settings),
        num_classes=num_classes,
        cbam_stages=tuple(settings.cbam_stages),
        drop_rate=settings.drop_rate,
        drop_path_rate=settings.drop_path_rate,
    )
    built = build_classifier(spec, pretrained=settings.pretrained, weights=settings.weights)
    return built.model, built.notices


def _load_teacher(path: str, class_names: list[str], multi_label: bool) -> LoadedClassifier:
    teacher = load_classifier(path)
    if teacher.class_names != class_names:
        raise DataError(
            f"teacher {path} has classes {teacher.class_names}, the data has {class_names}",
            "distil from a teacher trained on the same classes",
        )
    if teacher.multi_label != multi_label:
        raise DataError(f"teacher {path} and the data differ in multi-label mode", "use a teacher of the same task")
    return teacher


def _write_split(path: Path, train: ClassificationData, val: ClassificationData, how: str) -> None:
    atomic_write_json(path, {"split": how, "train": [str(p) for p in train.paths], "val": [str(p) for p in val.paths]})


# --------------------------------------------------------------------------------------------------
# the entry point


@dataclass
class _Prepared:
    """What the start of a classifier run settles: data, configuration, model and its teacher."""

    train_data: ClassificationData
    val_data: ClassificationData
    split: str  # "given" or "auto"
    config: ExperimentConfig
    multi_label: bool
    size: tuple[int, int]
    model: TimmClassifier
    teacher: Teacher | None
    projector: nn.Module | None


class ClassifierRun(ExperimentRun[ClassifierTrainingResult]):
    """``train-classifier``: a timm classifier on the shared ``Trainer``, calibrated and scored at the end."""

    config_file = CONFIG_FILE
    sections = SECTIONS

    def __init__(
        self,
        data: PathLike,
        output: PathLike,
        *,
        val: PathLike | None = None,
        images_dir: PathLike | None = None,
        val_images_dir: PathLike | None = None,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        teacher: PathLike | None = None,
        **common: Any,
    ) -> None:
        super().__init__(output, **common)
        self.data, self.val = data, val
        self.images_dir, self.val_images_dir = images_dir, val_images_dir
        self.val_fraction = val_fraction
        self.teacher_file = teacher
        self.notices: list[str] = []

    def inputs(self) -> list[PathLike | None]:
        return [self.data, self.val, self.images_dir, self.val_images_dir]

    def previous_run(self) -> PreviousRun:
        # Checked before anything is written: a new run would overwrite the old run's best.pt and last.pt.
        state = self.folder / "checkpoints" / "last.pt"  # where Trainer keeps the loop's state
        return PreviousRun("resumable" if state.exists() else "missing", state)

    def train(self) -> ClassifierTrainingResult:
        started = time.perf_counter()
        prepared = self._prepare()
        self.write_config(prepared.config, task="classify", val=str(self.val) if self.val else None)
        _write_split(self.folder / SPLIT_FILE, prepared.train_data, prepared.val_data, prepared.split)
        module, val_loader, meta, fit = self._fit(prepared)
        classifier = module.classifier.eval()  # now holding the best epoch's evaluated weights
        calibration = self._calibrate(classifier, val_loader, prepared, meta)
        meta.epoch = fit.best_epoch
        best_path = save_classifier(self.folder / "best.pt", classifier, meta)
        last_path = self.folder / "last.pt"
        if not last_path.is_file():  # e.g. checkpointing.save_last=false: the final weights still go somewhere
            save_classifier(last_path, classifier, meta)
        return self._result(prepared, meta, fit, calibration, best_path, last_path, time.perf_counter() - started)

    # -- the steps --------------------------------------------------------------------------------

    def _load_data(self) -> tuple[ClassificationData, ClassificationData, ClassificationData, str]:
        """(all labelled data, train part, validation part, how they were split)."""
        full = load_classification_data(self.data, self.images_dir)
        empty = [name for name, count in zip(full.class_names, full.class_counts(), strict=True) if count == 0]
        if full.kind == "folder" and empty:  # the model would get an output no image ever trains
            raise DataError(
                f"class folder(s) {', '.join(empty)} of {self.data} hold no images", "add images or remove them"
            )
        if self.val is not None:
            val_data = load_classification_data(self.val, self.val_images_dir or self.images_dir)
            return full, full, val_data.aligned_to(full.class_names), "given"
        # the seed of the split
        probe = build_config(
            ["training_dynamics"], overrides=[o for o in self.overrides if o.section == "training_dynamics"]
        )
        train_data, val_data = split_classification_data(full, self.val_fraction, seed=probe.training_dynamics.seed)
        return full, train_data, val_data, "auto"

    def _prepare(self) -> _Prepared:
        full, train_data, val_data, how = self._load_data()
        teacher_setting = {"classifier.kd_teacher": Path(self.teacher_file).as_posix()} if self.teacher_file else {}
        config = self.configure(dataset_info_for(train_data), self.data, last=teacher_setting)
        if config.classifier.num_classes != train_data.num_classes:
            raise UsageError(
                f"classifier.num_classes is {config.classifier.num_classes} but the data has "
                f"{train_data.num_classes} classes",
                "leave classifier.num_classes at null",
            )
        multi_label, notices = _multi_label_setting(config, full)
        self.notices.extend(notices)
        if not multi_label and train_data.num_classes < 2:
            raise DataError(
                f"{self.data} has a single class ({', '.join(train_data.class_names)}): nothing to tell apart",
                "give each class its own sub-folder (or label); at least two classes are needed",
            )
        if config.classifier.tune_thresholds and not multi_label:
            self.notices.append(
                "classifier.tune_thresholds has no effect on single-label data (the prediction is the arg-max)"
            )
        size = _input_size(config, train_data, val_data)
        # Seeded first: a model built from a timm name (and the KD projector) starts from the same random
        # weights on every run with the same seed, as the training loop after it already does.
        seed_everything(config.training_dynamics.seed)
        model, model_notices = _build_model(config, train_data.num_classes)
        self.notices.extend(model_notices)
        teacher, projector = self._teacher(config, model, train_data, multi_label)
        return _Prepared(train_data, val_data, how, config, multi_label, size, model, teacher, projector)

    def _teacher(
        self, config: ExperimentConfig, model: TimmClassifier, train_data: ClassificationData, multi_label: bool
    ) -> tuple[Teacher | None, nn.Module | None]:
        """The distillation teacher and, for feature distillation, the projection onto its features."""
        settings, pre = config.classifier, config.preprocessing
        if not settings.kd_teacher:
            if settings.feature_weight > 0:
                self.notices.append(
                    "classifier.feature_weight is set but there is no teacher: feature distillation is off"
                )
            return None, None
        loaded = _load_teacher(settings.kd_teacher, train_data.class_names, multi_label)
        projector = nn.Linear(model.num_features, loaded.model.num_features) if settings.feature_weight > 0 else None
        return Teacher(loaded, pre.mean, pre.std), projector

    def _fit(self, prepared: _Prepared) -> tuple[ClassifierTrainingModule, DataLoader[Any], ClassifierMeta, Any]:
        """Datasets, loss and the shared ``Trainer``; returns the trained module and what scoring needs."""
        from distillkit.training import Trainer

        config, train_data, size = prepared.config, prepared.train_data, prepared.size
        pre, dynamics, settings = config.preprocessing, config.training_dynamics, config.classifier
        train_set = ClassificationDataset(
            train_data.paths, train_data.targets, size, pre.mean, pre.std, pre.interpolation, _augment_factory(config)
        )
        val_data = prepared.val_data
        val_set = ClassificationDataset(val_data.paths, val_data.targets, size, pre.mean, pre.std, pre.interpolation)
        _preload([train_set, val_set], self.progress)
        val_workers = min(dynamics.num_workers, 2)
        val_loader = DataLoader(
            val_set,
            batch_size=dynamics.batch_size * 2,
            shuffle=False,
            num_workers=val_workers,
            persistent_workers=val_workers > 0,  # evaluated every epoch: keep the workers instead of re-forking
        )
        meta = ClassifierMeta(
            spec=prepared.model.spec,
            class_names=list(train_data.class_names),
            multi_label=prepared.multi_label,
            imgsz=size if size[0] != size[1] else size[0],
            mean=list(pre.mean),
            std=list(pre.std),
            interpolation=pre.interpolation,
            threshold=settings.threshold,
        )
        module = ClassifierTrainingModule(prepared.model, prepared.projector)
        research = self._objective(prepared, module, train_data)
        trainer = Trainer(
            module,
            research.compute_loss,
            train_set,
            evaluate=ValidationEvaluator(
                val_loader, train_data.class_names, prepared.multi_label, settings.topk, settings.threshold
            ),
            dynamics=dynamics,
            checkpointing=config.checkpointing,
            output_dir=self.folder,
            monitor="val/macro_f1" if prepared.multi_label else "val/accuracy",
            progress=self.progress,
            extra_state={"task": "classify", "classifier": meta.to_dict()},
            callbacks=[CheckpointWriter(self.folder, meta), *research.callbacks],
            drop_last=len(train_set) > dynamics.batch_size,
            optimizer_wrapper=research.optimizer_wrapper,
        )
        fit = trainer.fit(resume=self.resume)
        if fit.diverged:
            raise DataError("training diverged (non-finite loss)", "lower training_dynamics.lr or enable grad clipping")
        return module, val_loader, meta, fit

    def _objective(self, prepared: _Prepared, module: ClassifierTrainingModule, train_data: ClassificationData) -> Any:
        """The loss (with mixing and distillation) and the research techniques' callbacks and optimiser wrapper."""
        settings, multi_label = prepared.config.classifier, prepared.multi_label
        criterion = build_loss(settings, multi_label, train_data.class_counts(), len(train_data))
        mixer, mixer_notices = build_mixer(settings, multi_label, prepared.model)
        self.notices.extend(mixer_notices)
        compute_loss = LossComputer(
            criterion=criterion,
            mixer=mixer,
            multi_label=multi_label,
            teacher=prepared.teacher,
            kd_temperature=settings.kd_temperature,
            kd_alpha=settings.kd_alpha,
            feature_weight=settings.feature_weight if prepared.projector is not None else 0.0,
        )
        # Research techniques (classify/research): loss options, callbacks and optimiser wrapper; none when all off.
        research = build_research_training(settings, module, compute_loss, multi_label, self.folder)
        self.notices.extend(research.notices)
        return research

    def _calibrate(
        self, classifier: nn.Module, val_loader: DataLoader[Any], prepared: _Prepared, meta: ClassifierMeta
    ) -> _Calibration:
        """Temperature scaling (and, opt-in, per-class thresholds) on the validation set; scores into ``meta``."""
        settings, multi_label = prepared.config.classifier, prepared.multi_label
        names = prepared.train_data.class_names
        logits, targets = collect_logits(classifier, val_loader)
        ece_before = classification_metrics(
            _probabilities(logits, multi_label), targets, names, multi_label, settings.topk, settings.threshold
        ).ece
        temperature = fit_temperature(logits, targets, multi_label) if settings.calibrate else 1.0
        calibrated = _probabilities(logits, multi_label, temperature)  # what inference will see
        cut: list[float] | float = settings.threshold
        tuning = None
        if multi_label and settings.tune_thresholds:
            # Opt-in: tuned on the same images they are then scored on, so the validation metrics below are
            # optimistic, and a small validation set overfits them (see classify/thresholds.py).
            tuning = tune_thresholds(calibrated, targets, names, settings.threshold)
            meta.thresholds = cut = tuning.thresholds
            self.notices.append(
                f"per-class thresholds tuned on the {len(prepared.val_data)} validation images and stored in best.pt "
                "(infer/evaluate apply them; --threshold overrides): the validation metrics use them and are "
                "optimistic — judge them on held-out data with evaluate"
            )
        final = classification_metrics(calibrated, targets, names, multi_label, settings.topk, cut)
        meta.temperature = temperature
        meta.metrics = {**final.to_dict(), "ece_uncalibrated": ece_before}
        meta.metrics.pop("reliability", None)
        if tuning is not None:
            at_default = classification_metrics(
                calibrated, targets, names, multi_label, settings.topk, settings.threshold
            )
            meta.metrics["threshold_tuning"] = {
                **tuning.to_dict(names),
                "macro_f1_at_default": at_default.macro_f1,
                "micro_f1_at_default": at_default.micro_f1,
            }
        return _Calibration(temperature, ece_before, final, tuning)

    def _result(
        self,
        prepared: _Prepared,
        meta: ClassifierMeta,
        fit: Any,
        calibration: _Calibration,
        best_path: Path,
        last_path: Path,
        elapsed: float,
    ) -> ClassifierTrainingResult:
        """The result object, the curves plot and ``results.json``."""
        exp, names = self.folder, prepared.train_data.class_names
        files = {"best": str(best_path), "last": str(last_path), "config": str(exp / CONFIG_FILE)}
        if fit.history:
            from distillkit.classify.plots import plot_training_curves

            files["curves"] = str(plot_training_curves(fit.history, exp / CURVES_FILE, fit.monitor))
        if fit.metrics_csv is not None:
            files["metrics_csv"] = str(fit.metrics_csv)
        files["tensorboard"] = str(exp / "tensorboard")
        tuning = calibration.tuning
        result = ClassifierTrainingResult(
            output_dir=exp,
            best=best_path,
            last=last_path,
            class_names=list(names),
            multi_label=prepared.multi_label,
            model=prepared.model.spec.name,
            epochs_run=fit.epochs_run,
            best_epoch=fit.best_epoch,
            monitor=fit.monitor,
            best_value=fit.best_value,
            stopped_early=fit.stopped_early,
            metrics=meta.metrics,
            temperature=calibration.temperature,
            ece_before=calibration.ece_before,
            ece_after=calibration.final.ece,
            train_images=len(prepared.train_data),
            val_images=len(prepared.val_data),
            split=prepared.split,
            elapsed_s=elapsed,
            history=fit.history,
            notices=self.notices,
            files=files,
            thresholds=None if tuning is None else dict(zip(names, tuning.thresholds, strict=True)),
        )
        files["results"] = str(exp / RESULTS_FILE)
        atomic_write_json(
            exp / RESULTS_FILE,
            {
                "task": "classify",
                **result.to_dict(),
                "config": prepared.config.to_dict(),
                "history": fit.history,
                "reliability": calibration.final.to_dict()["reliability"],
            },
        )
        return result


@dataclass
class _Calibration:
    temperature: float
    ece_before: float
    final: Any  # the calibrated validation metrics
    tuning: Any  # per-class threshold tuning, when asked for


def train_classifier(
    data: PathLike,
    output: PathLike,
    val: PathLike | None = None,
    overrides: ConfigOverrides = (),
    images_dir: PathLike | None = None,
    val_images_dir: PathLike | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    teacher: PathLike | None = None,
    resume: bool | PathLike = False,
    progress: Progress = NULL_PROGRESS,
) -> ClassifierTrainingResult:
    """Train an image classifier; see the module docstring. Raises DataError / UsageError / ConfigError.

    ``overrides``: typed values by dotted key (``{"training_dynamics.epochs": 5}``) or ``--set`` text.
    """
    return ClassifierRun(
        data,
        output,
        val=val,
        images_dir=images_dir,
        val_images_dir=val_images_dir,
        val_fraction=val_fraction,
        teacher=teacher,
        overrides=overrides,
        resume=resume,
        progress=progress,
    ).run()


def _preload(datasets: Sequence[ClassificationDataset], progress: Progress) -> None:
    """Decode cached datasets once in this process, so data-loader workers inherit the pixels."""
    total = sum(len(d) for d in datasets if d.cached)
    if not total:
        return
    with progress.task("reading images", total=total) as task:
        for dataset in datasets:
            if dataset.cached:
                for index in range(len(dataset)):
                    dataset.load(index)
                    task.advance()
