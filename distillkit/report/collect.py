"""Reading an experiment folder into one record: what ran, with which settings, and what it wrote.

Only files are read here (no model runs): ``metadata.json``, the ``*_config.yaml`` files (compared
with the shipped defaults), the training log (``results.csv`` of ``train-student``, ``results.json``
/ ``metrics.csv`` of ``train-classifier``), ``optimized/report.json`` of ``optimize``, the
distillation plan and pseudo-label figures (``metadata.json`` ``extra``) and the teacher's validation
score (``teacher_calibration.json``).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from distillkit.config import load_experiment_config, section_defaults
from distillkit.config.overrides import parse_override
from distillkit.errors import ConfigError, DataError, UsageError

CONFIG_FILES = ("distillation_config.yaml", "classifier_config.yaml", "teacher_config.yaml", "config.yaml")
OPTIMIZE_REPORT = Path("optimized") / "report.json"
TEACHER_CALIBRATION = "teacher_calibration.json"
DETECTOR, CLASSIFIER = "detector", "classifier"


@dataclass
class Setting:
    """One configuration value that differs from the shipped default."""

    key: str
    default: Any
    value: Any
    source: str  # "--set" (an override on the command line) or "data" (decided from the data / the command)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "default": self.default, "value": self.value, "source": self.source}


@dataclass
class ExperimentRecord:
    """Everything the files of one experiment folder say."""

    path: Path
    name: str
    kind: str  # detector | classifier
    task: str  # detect | segment | classify
    model_file: Path  # best.pt
    metadata: dict[str, Any]
    class_names: list[str]
    config: dict[str, Any]  # flattened "section.key" -> value, every section of every config file
    settings: list[Setting]  # the values that differ from the shipped defaults
    history: list[dict[str, float]]  # one row per epoch, numbers only
    history_source: str
    training_time_s: float | None
    optimize: dict[str, Any] | None = None
    distillation: dict[str, Any] | None = None
    classifier_results: dict[str, Any] | None = None  # results.json of train-classifier
    validation: Path | None = None  # the run's own validation data, when recorded and present
    notes: list[str] = field(default_factory=list)

    @property
    def student(self) -> str:
        """The trained model's name (ultralytics student or timm classifier)."""
        if self.kind == CLASSIFIER:
            results = self.classifier_results or {}
            return str(results.get("model") or self.config.get("classifier.model") or "?")
        source = str((self.metadata.get("extra") or {}).get("student") or self.config.get("student.model") or "?")
        return Path(source).stem if source.endswith((".yaml", ".pt")) else source

    @property
    def teacher(self) -> str | None:
        """The teacher(s) the run learnt from, as given on the command line."""
        if self.kind == CLASSIFIER:
            value = self.config.get("classifier.kd_teacher")
            return str(value) if value else None
        parts = [
            f"{label} {value}"
            for label, value in (
                ("--teacher", self.config.get("distillation.ultralytics_teacher")),
                ("--teacher-dir", self.config.get("distillation.teacher_dir")),
            )
            if value
        ]
        return ", ".join(parts) or None


def collect_experiment(folder: str | Path, name: str | None = None) -> ExperimentRecord:
    """Read ``folder`` (a train-student or train-classifier output); UsageError when it is neither."""
    path = Path(folder)
    if not path.is_dir():
        raise UsageError(f"experiment folder not found: {path}", "pass the --output folder of a training command")
    metadata = _read_json(path / "metadata.json") or {}
    configs = [file for file in (path / name for name in CONFIG_FILES) if file.is_file()]
    results = _read_json(path / "results.json")
    if (path / "classifier_config.yaml").is_file() or (isinstance(results, dict) and results.get("task") == "classify"):
        kind, task = CLASSIFIER, "classify"
    elif (path / "distillation_config.yaml").is_file():
        kind, task = DETECTOR, str((metadata.get("extra") or {}).get("task") or "detect")
    elif (path / "teacher_config.yaml").is_file():
        raise UsageError(
            f"{path} holds train-teacher output, not a trained student or classifier",
            "pass the --output folder of train-student (e.g. EXP/student) or train-classifier",
        )
    else:
        raise UsageError(
            f"{path} is not an experiment folder (no distillation_config.yaml or classifier_config.yaml)",
            "pass the --output folder of train-student or train-classifier",
        )
    model_file = path / "best.pt"
    if not model_file.is_file():
        raise UsageError(f"{path} has no best.pt (the run did not finish)", "finish the run with --resume")
    flat, settings = _configuration(configs, metadata)
    notes: list[str] = []
    if kind == CLASSIFIER:
        assert isinstance(results, dict) or results is None
        history, source, time_s = _classifier_history(path, results)
        class_names = list((results or {}).get("class_names") or flat.get("data.class_names") or [])
        validation = _existing((metadata.get("extra") or {}).get("val"))
    else:
        history, source, time_s = _student_history(path / "results.csv")
        class_names = list(flat.get("data.class_names") or [])
        validation = _existing((metadata.get("extra") or {}).get("val"))
        if validation is None and (metadata.get("extra") or {}).get("val"):
            notes.append(f"the run's validation file {metadata['extra']['val']} is no longer there")
    return ExperimentRecord(
        path=path,
        name=name or path.name,
        kind=kind,
        task=task,
        model_file=model_file,
        metadata=metadata,
        class_names=class_names,
        config=flat,
        settings=settings,
        history=history,
        history_source=source,
        training_time_s=time_s,
        optimize=_read_json(path / OPTIMIZE_REPORT),
        distillation=_distillation(path, metadata) if kind == DETECTOR else _classifier_distillation(flat),
        classifier_results=results if kind == CLASSIFIER else None,
        validation=validation,
        notes=notes,
    )


def unique_names(folders: list[Path]) -> list[str]:
    """Short, distinct names: the folder names, with parents added until no two are alike."""
    resolved = [folder.resolve() for folder in folders]
    depth = 1
    while True:
        names = ["/".join(folder.parts[-depth:]) for folder in resolved]
        if len(set(names)) == len(names) or depth >= max(len(folder.parts) for folder in resolved):
            return names
        depth += 1


# --------------------------------------------------------------------------------------------------
# configuration against the shipped defaults


def _configuration(files: list[Path], metadata: dict[str, Any]) -> tuple[dict[str, Any], list[Setting]]:
    overridden = []
    for text in metadata.get("overrides") or []:
        try:
            overridden.append(parse_override(str(text)).key)
        except Exception:  # an unreadable override entry: just not marked as one
            continue
    flat: dict[str, Any] = {}
    settings: dict[str, Setting] = {}
    for file in files:
        try:
            config = load_experiment_config(file)
        except (ConfigError, UsageError) as exc:
            raise DataError(f"cannot read {file}: {exc}", "the report reads configs written by this version") from None
        for section, model in config.sections.items():
            values = _flatten(model.model_dump(mode="json"), section)
            flat.update(values)
            if section == "data":
                continue
            defaults = _flatten(section_defaults(section).model_dump(mode="json"), section)
            for key, value in values.items():
                if key in defaults and defaults[key] != value:
                    by_hand = any(key == k or key.startswith(f"{k}.") for k in overridden)
                    settings[key] = Setting(key, defaults[key], value, "--set" if by_hand else "data")
    return flat, list(settings.values())


def _flatten(tree: Any, prefix: str) -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}.{key}"))
        return out
    return {prefix: tree}


# --------------------------------------------------------------------------------------------------
# training logs


def _student_history(results_csv: Path) -> tuple[list[dict[str, float]], str, float | None]:
    if not results_csv.is_file():
        return [], "", None
    with open(results_csv, newline="", encoding="utf-8") as handle:
        rows = [{(k or "").strip(): _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    history = [{k: v for k, v in row.items() if v is not None and k} for row in rows]
    times = [row["time"] for row in history if "time" in row]
    return history, "results.csv", (times[-1] if times else None)  # ultralytics' time: seconds since the start


def _classifier_history(path: Path, results: dict[str, Any] | None) -> tuple[list[dict[str, float]], str, float | None]:
    history: list[dict[str, float]] = []
    source = ""
    if results and isinstance(results.get("history"), list):
        history = [{k: float(v) for k, v in row.items() if _number(v) is not None} for row in results["history"]]
        source = "results.json"
    elif (path / "metrics.csv").is_file():
        history, source, _ = _student_history(path / "metrics.csv")
        source = "metrics.csv"
    elapsed = _number((results or {}).get("elapsed_s"))
    if elapsed is None:
        epochs = [row.get("time/epoch_s") for row in history]
        elapsed = sum(e for e in epochs if e is not None) if any(e is not None for e in epochs) else None
    return history, source, elapsed


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# --------------------------------------------------------------------------------------------------
# distillation


def _distillation(path: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    extra = metadata.get("extra") or {}
    plan = extra.get("distillation") or {}
    return {
        "labeller": plan.get("labeller"),
        "components": [{"name": name, **values} for name, values in (plan.get("components") or {}).items()],
        "pseudo_labels": extra.get("pseudo_labels"),
        "teacher_calibration": _read_json(path / TEACHER_CALIBRATION),
    }


def _classifier_distillation(flat: dict[str, Any]) -> dict[str, Any] | None:
    teacher = flat.get("classifier.kd_teacher")
    if not teacher:
        return None
    return {
        "labeller": None,
        "components": [
            {
                "name": "kd_logit",
                "weight": flat.get("classifier.kd_alpha"),
                "active": bool(flat.get("classifier.kd_alpha")),
                "reason": f"KL to the teacher at temperature {flat.get('classifier.kd_temperature')}",
            },
            {
                "name": "kd_feature",
                "weight": flat.get("classifier.feature_weight"),
                "active": bool(flat.get("classifier.feature_weight")),
                "reason": "MSE of projected features to the teacher's",
            },
        ],
        "pseudo_labels": None,
        "teacher_calibration": None,
    }


# --------------------------------------------------------------------------------------------------
# small readers


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise DataError(f"{path} is not readable JSON ({exc})", "re-run the command that wrote it") from None


def _existing(value: Any) -> Path | None:
    if not value:
        return None
    path = Path(str(value))
    return path if path.exists() else None
