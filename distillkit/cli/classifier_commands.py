"""The classifier branches of `evaluate` and `infer`: run the classify family's evaluator / predictor, render.

`evaluate` and `infer` ask ``is_classifier_input`` (``model_task`` of every model) first and hand
classifier files (checkpoints, ONNX, OpenVINO, .tflite) to the functions here, so the detector paths stay untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from distillkit.cli.console import Output
from distillkit.errors import UsageError


def is_classifier_input(models: Sequence[Path]) -> bool:
    """True when every model is a classifier file; UsageError when classifiers and detectors are mixed."""
    if not models:
        return False
    from distillkit.tasks import model_task

    flags = [model_task(path) == "classify" for path in models]
    if any(flags) and not all(flags):
        mixed = ", ".join(str(p) for p, f in zip(models, flags, strict=True) if not f)
        raise UsageError(f"{mixed} is not a classifier, but other --model files are", "evaluate like models together")
    return all(flags)


def evaluate_classifiers_command(
    out: Output,
    data: Path,
    models: Sequence[Path],
    images_dir: Path | None,
    device: str | None,
    output: Path | None,
    json_mode: bool,
    tta: Sequence[str] = (),
    topk: Sequence[int] = (),
    batch: int = 32,
    threshold: float | None = None,
) -> None:
    from distillkit.classify.evaluate import evaluate_classifiers, write_classifier_evaluation

    evaluation = evaluate_classifiers(
        models,
        data,
        images_dir=images_dir,
        batch_size=batch,
        device=device,
        tta=tta,
        topk=list(topk) or None,
        threshold=threshold,
        progress=out.progress(),
    )
    _threshold_notice(out, evaluation.multi_label, threshold)
    for note in evaluation.notices:
        out.notice(note)
    document = evaluation.to_dict()
    if output is not None:
        written = write_classifier_evaluation(evaluation, output)
        document["outputs"] = {name: str(path) for name, path in written.items()}
        out.notice(f"evaluation written to {output}")
    if json_mode:
        out.emit_json(document)
        return
    metrics = evaluation.metrics
    title = f"{metrics.num_images} images, {len(evaluation.class_names)} classes"
    if len(evaluation.models) > 1:
        title += f", ensemble of {len(evaluation.models)} models"
    if evaluation.tta:
        title += f", TTA: {'+'.join(evaluation.tta)}"
    summary = Table(title=title, title_justify="left", show_edge=False)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    rows: list[tuple[str, float | None]] = [
        ("accuracy" + (" (subset)" if metrics.multi_label else ""), metrics.accuracy)
    ]
    rows += [(f"top-{k}", value) for k, value in metrics.top_k.items() if k != 1]
    rows += [
        ("macro F1", metrics.macro_f1),
        ("micro F1", metrics.micro_f1),
        ("ECE", metrics.ece),
        ("ECE before temperature scaling", evaluation.ece_uncalibrated),
    ]
    if metrics.multi_label:
        rows.append(("hamming loss", metrics.hamming_loss))
    for name, value in rows:
        summary.add_row(name, "-" if value is None else f"{value:.4f}")
    out.print(summary)
    source = f" (thr: {evaluation.thresholds.source} thresholds)" if evaluation.thresholds else ""
    table = Table(title=f"per class{source}", title_justify="left", show_edge=False)
    columns = ["class", "support", "predicted", "P", "R", "F1"] + (
        ["thr", "best thr", "best F1"] if evaluation.thresholds else []
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "class" else "right")
    cuts = evaluation.thresholds.values if evaluation.thresholds else [0.0] * len(metrics.per_class)
    for c, cut in zip(metrics.per_class, cuts, strict=True):
        cells = [c.name, str(c.support), str(c.predicted), f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}"]
        if evaluation.thresholds:
            cells += [f"{cut:.3f}", f"{c.best_threshold:.3f}", f"{c.best_f1:.3f}"]
        table.add_row(*cells)
    out.print(table)
    if len(evaluation.models) > 1:
        side = Table(title="models alone", title_justify="left", show_edge=False)
        for column in ("model", "accuracy", "macro F1", "ECE", "latency ms"):
            side.add_column(column, justify="left" if column == "model" else "right")
        for m in evaluation.models:
            side.add_row(
                m.model, f"{m.accuracy:.4f}", f"{m.macro_f1:.4f}", f"{m.ece:.4f}", f"{m.median_latency_ms:.2f}"
            )
        out.print(side)


def infer_classifier_command(
    out: Output,
    images: Sequence[Path],
    model: Path,
    output: Path,
    batch: int,
    device: str | None,
    json_mode: bool,
    tta: Sequence[str] = (),
    topk: int = 5,
    gradcam: Path | None = None,
    threshold: float | None = None,
) -> None:
    from distillkit.classify.infer import classify_images

    result = classify_images(
        [model],
        images,
        output=output,
        batch_size=batch,
        device=device,
        tta=tta,
        topk=topk,
        threshold=threshold,
        gradcam_dir=gradcam,
        progress=out.progress(),
    )
    _threshold_notice(out, result.multi_label, threshold)
    for note in result.notices:
        out.notice(note)
    summary = result.summary()
    if json_mode:
        out.emit_json({**summary, "results": result.records})
        return
    table = Table(title=f"{len(result.records)} images → {result.predictions}", title_justify="left", show_edge=False)
    table.add_column("image")
    table.add_column("classes")
    table.add_column("top probability", justify="right")
    for record in result.records[:20]:
        top = record["top"][0] if record["top"] else {"class": "-", "probability": 0.0}
        table.add_row(Path(record["file"]).name, ", ".join(record["classes"]) or "-", f"{top['probability']:.3f}")
    out.print(table)
    if len(result.records) > 20:
        out.print(f"... {len(result.records) - 20} more in {result.predictions}")
    if result.gradcam:
        out.print(f"Grad-CAM++ overlays: {gradcam}")


def _threshold_notice(out: Output, multi_label: bool, threshold: float | None) -> None:
    if threshold is not None and not multi_label:
        out.notice("--threshold has no effect on a single-label classifier (the prediction is the arg-max)")
