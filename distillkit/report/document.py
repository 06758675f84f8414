"""Building a report: one JSON document (what ``--json`` prints) plus the figures and pictures of the page.

Every number the HTML page shows is read from ``Report.document``; the figures and sample pictures
are kept beside it (``ExperimentReport.figures`` / ``pictures``) so the document stays small text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from distillkit import __version__
from distillkit.errors import UsageError
from distillkit.progress import NULL_PROGRESS, Progress
from distillkit.report.collect import CLASSIFIER, DETECTOR, ExperimentRecord, collect_experiment, unique_names
from distillkit.report.figures import metric_vs_latency, training_curves
from distillkit.report.scoring import Scored, ValidationNotFoundError, score_classifier, score_detector

REPORT_VERSION = 1
KD_COLUMNS = {"logit_kd": "train/kd_logit", "dfl_kd": "train/kd_dfl", "feature_kd": "train/kd_feat"}
PASSED = ("reference", "ok")
TEACHER_KEYS = ("distillation.ultralytics_teacher", "distillation.teacher_dir", "classifier.kd_teacher")  # own column
KEY_SETTINGS = 4  # settings shown per run in the comparison table (all differences are in config_differences)


@dataclass
class ExperimentReport:
    record: ExperimentRecord
    document: dict[str, Any]
    figures: dict[str, bytes] = field(default_factory=dict)  # name -> PNG
    pictures: list[bytes] = field(default_factory=list)  # JPEG, one per document["samples"]["images"] entry


@dataclass
class Report:
    document: dict[str, Any]
    experiments: list[ExperimentReport]
    figures: dict[str, bytes] = field(default_factory=dict)  # comparison figures


def build_report(
    folders: Sequence[str | Path],
    data: str | Path | None = None,
    images_dir: str | Path | None = None,
    device: str | None = None,
    evaluate: bool = True,
    samples: int = 12,
    max_side: int = 320,
    progress: Progress = NULL_PROGRESS,
) -> Report:
    """Read every experiment folder, score each model (unless ``evaluate`` is False) and compare them."""
    if not folders:
        raise UsageError("no experiment folder given", "pass one or more --output folders of training commands")
    paths = [Path(folder) for folder in folders]
    if len({p.resolve() for p in paths}) != len(paths):
        raise UsageError("an experiment folder is given twice", "pass each folder once")
    records = [collect_experiment(path, name) for path, name in zip(paths, unique_names(paths), strict=True)]
    kinds = {record.kind for record in records}
    if len(kinds) > 1:
        raise UsageError(
            "detector and classifier experiments cannot share one comparison (their metrics differ)",
            "build one report for the students and one for the classifiers",
        )
    data_path = Path(data) if data is not None else None
    experiments = []
    for record in records:
        scored, skipped = None, None
        if evaluate:
            scored = _score(record, data_path, images_dir, device, samples, max_side, progress)
            if isinstance(scored, str):
                scored, skipped = None, scored
        else:
            skipped = "not evaluated (--no-eval): figures from the training log only"
        experiments.append(_experiment(record, scored, skipped))
    _measure_distillation_gains(experiments)
    document: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "distillkit_version": __version__,
        "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "kind": records[0].kind,
        "evaluation_data": str(data_path) if data_path is not None else None,
        "experiments": [e.document for e in experiments],
        "comparison": None,
    }
    figures: dict[str, bytes] = {}
    if len(experiments) > 1:
        document["comparison"] = _comparison(experiments)
        points = [
            {**e.document["summary"], "pareto": e.document["summary"]["name"] in document["comparison"]["pareto"]}
            for e in experiments
        ]
        scatter = metric_vs_latency(points, document["comparison"]["metric_name"])
        if scatter is not None:
            figures["pareto"] = scatter
    return Report(document, experiments, figures)


def _score(
    record: ExperimentRecord,
    data: Path | None,
    images_dir: str | Path | None,
    device: str | None,
    samples: int,
    max_side: int,
    progress: Progress,
) -> Scored | str:
    """The scored run, or the reason it could not be scored on its own validation data."""
    folder = Path(images_dir) if images_dir is not None else None
    if record.kind == CLASSIFIER:
        try:
            return score_classifier(record, data, folder, device, samples, max_side, progress)
        except ValidationNotFoundError as exc:
            return f"not evaluated: {exc}"
    target = data if data is not None else record.validation
    if target is None:
        recorded = (record.metadata.get("extra") or {}).get("val")
        return f"not evaluated: the run's validation file {recorded or '(not recorded)'} is not there; pass --data"
    return score_detector(
        record, target, "given" if data is not None else "val", folder, device, samples, max_side, progress
    )


# --------------------------------------------------------------------------------------------------
# one experiment


def _experiment(record: ExperimentRecord, scored: Scored | None, skipped: str | None) -> ExperimentReport:
    metadata = record.metadata
    results = record.classifier_results or {}
    run = {
        "created": metadata.get("created"),
        "folder": str(record.path.resolve()),
        "dataset": metadata.get("dataset"),
        "validation": (metadata.get("extra") or {}).get("val"),
        "classes": record.class_names,
        "student": record.student,
        "teacher": record.teacher,
        "epochs": len(record.history),
        "training_time_s": _round(record.training_time_s, 2),
        "reproduce_config": metadata.get("reproduce_config"),
        "overrides": metadata.get("overrides") or [],
        "versions": metadata.get("versions") or {},
        "python": metadata.get("python"),
        "platform": metadata.get("platform"),
        "git": metadata.get("git"),
        "notices": list(results.get("notices") or []),
    }
    document: dict[str, Any] = {
        "name": record.name,
        "path": str(record.path),
        "kind": record.kind,
        "task": record.task,
        "run": run,
        "settings": [s.to_dict() for s in record.settings],
        "training": _training(record),
        "evaluation": scored.document if scored is not None else None,
        "evaluation_skipped": skipped,
        "distillation": _distillation(record),
        "optimize": _optimize(record.optimize, record.path),
        "samples": None,
        "notes": list(record.notes),
    }
    if scored is not None:
        order = "lowest per-image F1 first" if record.kind == DETECTOR else "lowest probability of the true class first"
        if record.kind == CLASSIFIER and record.classifier_results and record.classifier_results.get("multi_label"):
            order = "lowest per-image F1 first"
        document["samples"] = {"order": order, "images": scored.samples}
    document["summary"] = _summary(record, document)
    figures = dict(scored.figures) if scored is not None else {}
    curves = training_curves(record.history)
    if curves is not None:
        figures["training_curves"] = curves
    return ExperimentReport(record, document, figures, list(scored.pictures) if scored is not None else [])


def _training(record: ExperimentRecord) -> dict[str, Any]:
    history = record.history
    best = _best_row(record)
    return {
        "source": record.history_source or None,
        "epochs": len(history),
        "time_s": _round(record.training_time_s, 2),
        "columns": sorted({key for row in history for key in row}),
        "final": history[-1] if history else None,
        "best": best,
        "history": history,
    }


def _best_row(record: ExperimentRecord) -> dict[str, float] | None:
    history = record.history
    if not history:
        return None
    if record.kind == CLASSIFIER:
        results = record.classifier_results or {}
        epoch = results.get("best_epoch")
        row = next((r for r in history if r.get("epoch") == epoch), None)
        if row is not None:
            return row
        monitor = str(results.get("monitor") or "val/accuracy")
        return max(history, key=lambda r: r.get(monitor, -math.inf))
    return max(history, key=_fitness)  # ultralytics keeps best.pt by this fitness


def _fitness(row: dict[str, float]) -> float:
    total = 0.0
    for suffix in ("(B)", "(M)"):
        total += 0.1 * row.get(f"metrics/mAP50{suffix}", 0.0) + 0.9 * row.get(f"metrics/mAP50-95{suffix}", 0.0)
    return total


def _distillation(record: ExperimentRecord) -> dict[str, Any] | None:
    plan = record.distillation
    if plan is None:
        return None
    pseudo = plan.get("pseudo_labels") or {}
    calibration = plan.get("teacher_calibration") or {}
    history = record.history
    components = []
    for component in plan.get("components") or []:
        measured: dict[str, Any] = {}
        name = component.get("name")
        if name in KD_COLUMNS:
            values = [row[KD_COLUMNS[name]] for row in history if KD_COLUMNS[name] in row]
            if values:
                measured = {"first_epoch_loss": values[0], "last_epoch_loss": values[-1]}
        elif name == "pseudo_labels" and pseudo:
            measured = {
                key: pseudo.get(key)
                for key in ("train_labels_added", "train_images_labelled", "unlabeled_labels", "unlabeled_images")
            }
        elif name == "soft_targets" and pseudo:
            measured = {
                "ground_truth_soft_targets": pseudo.get("ground_truth_soft_targets")
            }  # matched: after training, not recorded
        elif name == "calibrated_thresholds" and pseudo.get("thresholds"):
            thresholds = [float(t) for t in pseudo["thresholds"]]
            measured = {"lowest_gate": min(thresholds), "highest_gate": max(thresholds)}
        elif name == "weight_selection" and component.get("active"):
            measured = {"student_init_saved": (record.path / "student_init.pt").is_file()}
        components.append({**component, "measured": measured})
    teacher = None
    if calibration:
        teacher = {
            "AP": calibration.get("ap"),
            "AP50": calibration.get("ap50"),
            "validation": calibration.get("validation"),
            "images": calibration.get("num_images"),
        }
    return {
        "active": any(c.get("active") for c in components),
        "labeller": plan.get("labeller"),
        "teacher": record.teacher,
        "teacher_on_validation": teacher,
        "components": components,
        "pseudo_labels": pseudo or None,
        "gain_vs_alone": None,  # filled in when the comparison holds the same run without a teacher
    }


def _optimize(report: dict[str, Any] | None, folder: Path) -> dict[str, Any] | None:
    if not report:
        return None
    rows = []
    for artefact in report.get("artefacts") or []:
        latency = artefact.get("latency") or {}
        rows.append(
            {
                "name": artefact.get("name"),
                "file": artefact.get("file"),
                "format": artefact.get("format"),
                "precision": artefact.get("precision"),
                "size_mb": artefact.get("size_mb"),
                "latency_ms": latency.get("median_ms"),
                "latency_p90_ms": latency.get("p90_ms"),
                "metric": artefact.get("metric"),
                "accuracy": artefact.get("accuracy"),
                "accuracy_drop_points": artefact.get("accuracy_drop_points"),
                "size_ratio": artefact.get("size_ratio"),
                "latency_ratio": artefact.get("latency_ratio"),
                "status": artefact.get("status"),
                "passed": artefact.get("status") in PASSED,
                "notes": list(artefact.get("notes") or []),
            }
        )
    return {
        "source": str(folder / "optimized" / "report.json"),
        "passed": report.get("passed"),
        "max_drop_points": report.get("max_drop_points"),
        "forced": report.get("forced"),
        "latency_setup": report.get("latency_setup"),
        "artefacts": rows,
    }


def _summary(record: ExperimentRecord, document: dict[str, Any]) -> dict[str, Any]:
    evaluation = document["evaluation"]
    optimize = document["optimize"]
    summary: dict[str, Any] = {
        "name": record.name,
        "kind": record.kind,
        "task": record.task,
        "student": record.student,
        "teacher": record.teacher,
        "epochs": len(record.history),
        "training_time_s": _round(record.training_time_s, 2),
        "size_mb": round(record.model_file.stat().st_size / 1e6, 3),
        "parameters": None,
        "latency_ms": None,
        "metric_source": None,
    }
    if record.kind == DETECTOR:
        main, mAP, mAP50 = _detector_metric(record, evaluation, document["training"]["best"])
        summary.update(metric_name=f"mAP50-95 ({main})", metric=mAP, mAP=mAP, mAP50=mAP50)
    else:
        multi = bool((record.classifier_results or {}).get("multi_label"))
        source = evaluation or ((record.classifier_results or {}).get("metrics") or {})
        metric = source.get("macro_f1" if multi else "accuracy")
        summary.update(
            metric_name="macro F1" if multi else "accuracy",
            metric=metric,
            accuracy=source.get("accuracy"),
            macro_f1=source.get("macro_f1"),
            ece=source.get("ece"),
        )
    if evaluation is not None:
        where = "the run's validation split" if evaluation["split"] == "val" else evaluation["data"]
        summary.update(
            parameters=evaluation.get("parameters"),
            latency_ms=evaluation.get("latency_ms"),
            metric_source=f"report evaluation on {where}",
        )
    else:
        summary["metric_source"] = "training log (validation during training)"
        reference = next((a for a in (optimize or {}).get("artefacts", []) if a["status"] == "reference"), None)
        if reference is not None:
            summary["latency_ms"] = reference.get("latency_ms")
    deployable = [a for a in (optimize or {}).get("artefacts", []) if a["passed"] and a["latency_ms"] is not None]
    fastest = min(deployable, key=lambda a: a["latency_ms"]) if deployable else None
    summary["fastest_export"] = (
        {"name": fastest["name"], "latency_ms": fastest["latency_ms"], "size_mb": fastest["size_mb"]}
        if fastest
        else None
    )
    return summary


def _detector_metric(
    record: ExperimentRecord, evaluation: dict[str, Any] | None, best: dict[str, float] | None
) -> tuple[str, float | None, float | None]:
    if evaluation is not None:
        main = evaluation["main_iou_type"]
        metrics = evaluation["iou_types"][main]
        return main, metrics["AP"], metrics["AP50"]
    suffix, main = ("(M)", "segm") if record.task == "segment" else ("(B)", "bbox")
    if best is None:
        return main, None, None
    return main, best.get(f"metrics/mAP50-95{suffix}"), best.get(f"metrics/mAP50{suffix}")


# --------------------------------------------------------------------------------------------------
# several experiments


def _comparison(experiments: list[ExperimentReport]) -> dict[str, Any]:
    summaries = [e.document["summary"] for e in experiments]
    names = {s["metric_name"] for s in summaries}
    keys = sorted({key for e in experiments for key in e.record.config})
    differences = []
    for key in keys:
        values = [e.record.config.get(key) for e in experiments]
        if any(v != values[0] for v in values[1:]):
            differences.append({"key": key, "values": values})
    # the key settings of the table: what the runs set by hand first (--set), then what else differs
    by_hand = {setting.key for e in experiments for setting in e.record.settings if setting.source == "--set"}
    candidates = [d["key"] for d in differences if not d["key"].startswith("data.") and d["key"] not in TEACHER_KEYS]
    shown = sorted(candidates, key=lambda key: key not in by_hand)[:KEY_SETTINGS]
    return {
        "metric_name": names.pop() if len(names) == 1 else "metric",
        "pareto": pareto_front(summaries),
        "config_differences": differences,
        "key_settings": [{key: e.record.config.get(key) for key in shown} for e in experiments],
    }


def pareto_front(summaries: Sequence[dict[str, Any]]) -> list[str]:
    """Names of the runs no other run beats on both metric (higher) and latency (lower)."""
    usable = [s for s in summaries if s.get("metric") is not None and s.get("latency_ms") is not None]
    front = []
    for s in usable:
        dominated = any(
            o is not s
            and o["metric"] >= s["metric"]
            and o["latency_ms"] <= s["latency_ms"]
            and (o["metric"] > s["metric"] or o["latency_ms"] < s["latency_ms"])
            for o in usable
        )
        if not dominated:
            front.append(s["name"])
    return front


def _measure_distillation_gains(experiments: list[ExperimentReport]) -> None:
    """A distilled run compared with the same student on the same data without a teacher, when one is given."""
    for experiment in experiments:
        plan = experiment.document["distillation"]
        if not plan or not plan["active"]:
            continue
        for other in experiments:
            other_plan = other.document["distillation"]
            if other is experiment or (other_plan and other_plan["active"]) or not _same_setup(experiment, other):
                continue
            mine, theirs = experiment.document["summary"]["metric"], other.document["summary"]["metric"]
            if mine is not None and theirs is not None:
                plan["gain_vs_alone"] = {"baseline": other.record.name, "delta": mine - theirs}
                break


def _same_setup(a: ExperimentReport, b: ExperimentReport) -> bool:
    dataset_a = (a.record.metadata.get("dataset") or {}).get("sha256")
    dataset_b = (b.record.metadata.get("dataset") or {}).get("sha256")
    return a.record.student == b.record.student and dataset_a == dataset_b and dataset_a is not None


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def report_inputs(
    folders: Sequence[str | Path], data: str | Path | None = None, images_dir: str | Path | None = None
) -> list[Path]:
    """The files and image folders a report reads, so its ``--output`` can be kept apart from them.

    The experiment folders themselves are not among them (a report may be written into one, as any
    command may write into an experiment folder it reads), but the files read there are.
    """
    from distillkit.paths import image_folders
    from distillkit.report.collect import CONFIG_FILES, OPTIMIZE_REPORT

    inputs: list[Path] = []
    for folder in map(Path, folders):
        inputs += [folder / name for name in ("metadata.json", "best.pt", "results.csv", "results.json", "split.json")]
        inputs += [folder / name for name in CONFIG_FILES] + [folder / OPTIMIZE_REPORT]
        try:
            metadata = orjson.loads((folder / "metadata.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        if not isinstance(metadata, dict):
            continue
        extra = metadata.get("extra") or {}
        dataset = (metadata.get("dataset") or {}).get("path")  # a classifier's own validation images lie there
        for source in (extra.get("val"), dataset if extra.get("task") == "classify" else None):
            if source and data is None:
                inputs.append(Path(source))
                if str(source).endswith(".json"):
                    inputs += image_folders([source])
    if data is not None:
        inputs.append(Path(data))
        inputs += image_folders([data], images_dir) if str(data).endswith(".json") else []
    if images_dir is not None:
        inputs.append(Path(images_dir))
    return inputs
