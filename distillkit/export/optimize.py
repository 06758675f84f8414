"""`distillkit optimize` as a library call: export, quantize, prune, measure, guard accuracy, report.

Every artefact (the source ``.pt`` included, as the reference) gets a row: file, size, median and
p90 latency per image on this machine (batch 1, stated threads, warm-up, timed interleaved), output
parity with the PyTorch model on real images, mAP50-95 / accuracy on ``val_data``, ratios to the
source. With ``val_data``, an artefact losing more than ``max_drop`` points fails the guard; with
``qat_epochs``, a static INT8 file that fails is replaced by a quantization-aware fine-tune (``qat.py``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distillkit.cpu_features import int8_weights_need_reduced_range
from distillkit.errors import UsageError
from distillkit.export.accuracy import Accuracy, detection_accuracy
from distillkit.export.benchmark import (
    WIDE_SPREAD,
    LatencyStats,
    Runner,
    engine_runner,
    measure_latency,
    onnx_runner,
    openvino_runner,
    output_parity,
    tflite_runner,
    torch_runner,
)
from distillkit.export.calibration import calibration_images, preprocess_many
from distillkit.export.onnx_export import SourceModel, export_yolo_onnx, load_source_model, verify_onnx_file
from distillkit.export.quantize import (
    DEFAULT_RECIPE,
    RECIPES,
    convert_fp16,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from distillkit.io import atomic_write_json
from distillkit.model_metadata import ModelMetadata, write_sidecar
from distillkit.paths import check_output_outside_inputs, image_folders
from distillkit.progress import NULL_PROGRESS, Progress
from distillkit.tasks import find

FORMATS = ("onnx", "engine", "openvino", "tflite")
QUANTIZE = ("int8", "int8-dynamic", "fp16", "none")
REPORT_NAME = "report.json"


@dataclass
class OptimizeOptions:
    formats: Sequence[str] = ("onnx",)
    quantize: Sequence[str] = ("int8",)
    int8_recipes: Sequence[str] = (DEFAULT_RECIPE,)  # the first is model_int8.onnx, others model_int8_<name>.onnx
    calib_data: Path | None = None
    calib_dir: Path | None = None
    calib_images: int = 100
    val_data: Path | None = None
    images_dir: Path | None = None  # where the images of --calib-data / --val-data are
    max_drop: float = 2.0  # points of mAP50-95 / accuracy
    force: bool = False
    imgsz: int | None = None
    dynamic: bool = False
    prune: float | None = None
    prune_finetune_epochs: int = 0
    prune_data: Path | None = None  # train COCO for fine-tuning the pruned model
    qat_epochs: int = 0  # >0: a failed static INT8 artefact gets a quantization-aware fine-tune (export/qat.py)
    qat_data: Path | None = None  # train COCO for it
    output: Path | None = None
    threads: int | None = None
    opset: int = 18
    latency_rounds: int = 5
    parity_images: int = 8


@dataclass
class Artefact:
    name: str
    path: Path
    format: str  # pt | onnx | engine | openvino | tflite
    precision: str  # fp32 | fp16 | int8
    size_mb: float
    latency: LatencyStats | None = None
    parity: dict[str, float] = field(default_factory=dict)
    accuracy: Accuracy | None = None
    status: str = "ok"  # reference | ok | failed | unchecked
    notes: list[str] = field(default_factory=list)

    def to_dict(self, reference: Artefact | None) -> dict[str, Any]:
        row: dict[str, Any] = {
            "name": self.name,
            "file": str(self.path),
            "format": self.format,
            "precision": self.precision,
            "size_mb": round(self.size_mb, 3),
            "latency": self.latency.to_dict() if self.latency else None,
            "parity_max_abs_diff": {key: _round(value) for key, value in self.parity.items()},
            "metric": self.accuracy.metric if self.accuracy else None,
            "accuracy": round(self.accuracy.value, 5) if self.accuracy else None,
            "accuracy_details": self.accuracy.details if self.accuracy else {},
            "status": self.status,
            "notes": self.notes,
        }
        if reference is not None and reference is not self:
            row["size_ratio"] = _ratio(self.size_mb, reference.size_mb)
            if self.latency and reference.latency:
                row["latency_ratio"] = _ratio(self.latency.median_ms, reference.latency.median_ms)
            if self.accuracy and reference.accuracy:
                row["accuracy_drop_points"] = round((reference.accuracy.value - self.accuracy.value) * 100, 3)
        return row


@dataclass
class OptimizeResult:
    source: Path
    output_dir: Path
    task: str
    imgsz: int
    threads: int
    artefacts: list[Artefact]
    max_drop: float
    forced: bool
    report_path: Path
    sidecar: Path
    notices: list[str] = field(default_factory=list)
    latency_rounds: int = 5
    qat: dict[str, Any] | None = None  # settings and training time of the QAT fallback, when it ran

    @property
    def failed(self) -> list[Artefact]:
        return [artefact for artefact in self.artefacts if artefact.status == "failed"]

    @property
    def passed(self) -> bool:
        return not self.failed or self.forced

    def matrix(self) -> list[dict[str, Any]]:
        """One row per written artefact, format x precision: what ultralytics' benchmark prints, plus the guard."""
        reference = self.artefacts[0]
        rows = []
        for artefact in self.artefacts:
            row = artefact.to_dict(reference)
            latency = row["latency"] or {}
            rows.append(
                {
                    "format": artefact.format,
                    "precision": artefact.precision,
                    "size_mb": row["size_mb"],
                    "median_ms": latency.get("median_ms"),
                    "p90_ms": latency.get("p90_ms"),
                    "latency_ratio": row.get("latency_ratio"),
                    "accuracy": row["accuracy"],
                    "drop_points": row.get("accuracy_drop_points"),
                    # None: no --val-data, so nothing was guarded
                    # a row QAT replaced failed its own guard all the same
                    "passed": None if artefact.accuracy is None else not artefact.status.startswith("failed"),
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        reference = self.artefacts[0]
        return {
            "source": str(self.source),
            "output_dir": str(self.output_dir),
            "task": self.task,
            "imgsz": self.imgsz,
            "latency_setup": {
                "batch": 1,
                "threads": self.threads,
                "what": "network forward only, real preprocessed images, after warm-up, artefacts interleaved",
                "rounds": self.latency_rounds,
                "runs_per_round": 6,
                "machine": _machine(),
            },
            "max_drop_points": self.max_drop,
            "forced": self.forced,
            "passed": self.passed,
            "failed": [artefact.name for artefact in self.failed],
            "artefacts": [artefact.to_dict(reference) for artefact in self.artefacts],
            "matrix": self.matrix(),
            "int8_recipes": {name: recipe.to_dict() for name, recipe in RECIPES.items()},
            "sidecar": str(self.sidecar),
            "notices": self.notices,
            "qat": self.qat,
        }


def optimize_model(model: str | Path, options: OptimizeOptions, progress: Progress = NULL_PROGRESS) -> OptimizeResult:
    _check_options(options)
    source_path = Path(model)
    output = options.output if options.output is not None else source_path.resolve().parent / "optimized"
    _check_output(output, source_path, options)
    source = original = load_source_model(source_path, options.imgsz)
    if options.qat_epochs and source.task == "classify":
        raise UsageError("--qat-epochs handles YOLO students", "classifiers keep the PTQ artefacts")
    if "engine" in options.formats:  # fail before any work when TensorRT cannot run here
        from distillkit.export.tensorrt_export import require_tensorrt

        require_tensorrt()
    if "tflite" in options.formats:  # the optional extra, and a converter for the task: say so before any work
        from distillkit.export.tflite_export import check_tflite_task, require_tflite

        check_tflite_task(source.task)
        require_tflite()
    if "openvino" in options.formats:  # the optional extra: say which one before any work
        from distillkit.export.openvino_export import require_openvino

        require_openvino(int8="int8" in options.quantize)

    output.mkdir(parents=True, exist_ok=True)
    threads = options.threads or _default_threads()
    notices: list[str] = []
    needs_calibration = "int8" in options.quantize
    calibration_paths = (
        calibration_images(options.calib_data, options.calib_dir, options.calib_images, images_dir=options.images_dir)
        if needs_calibration
        else []
    )
    if options.prune:
        from distillkit.export.prune import prune_model

        pruned = prune_model(
            source,
            options.prune,
            output,
            options.prune_finetune_epochs,
            options.prune_data,
            progress,
            images_dir=options.images_dir,
        )
        notices.extend(pruned.notes)
        source = load_source_model(pruned.path, source.imgsz)

    artefacts: list[Artefact] = [Artefact("pytorch", source_path, "pt", "fp32", _mb(source_path), status="reference")]
    if options.prune:
        artefacts.append(Artefact(f"pruned {options.prune:.0%}", source.path, "pt", "fp32", _mb(source.path)))

    fp32 = output / "model.onnx"
    with progress.task(f"exporting {fp32.name}", total=None):
        exporter = find("export.onnx", source.task) or export_yolo_onnx  # a family's own, else ultralytics'
        metadata = exporter(source, fp32, dynamic=options.dynamic, opset=options.opset)
        verify_onnx_file(fp32)
    sidecar = write_sidecar(output, metadata)
    artefacts.append(Artefact("onnx fp32", fp32, "onnx", "fp32", _mb(fp32)))

    calibration_inputs = preprocess_many(calibration_paths, metadata)
    if "onnx" in options.formats:
        for mode in options.quantize:
            artefacts.extend(_quantized(mode, fp32, metadata, calibration_inputs, options, progress))
    else:  # other formats only were asked for: model.onnx is their common source, and the baseline row
        notices.append(f"{fp32.name} is kept: the other formats were converted from it")
    if "engine" in options.formats:
        artefacts.extend(_engines(fp32, metadata, calibration_inputs, options, progress))
    if "openvino" in options.formats:
        artefacts.extend(_openvino(fp32, metadata, calibration_inputs, options, progress))
    if "tflite" in options.formats:
        artefacts.extend(_tflite(source, output, calibration_inputs, options, progress))

    parity_inputs = _parity_inputs(calibration_inputs, options, metadata)
    sources = {original.path: original, source.path: source}
    qat = None
    if options.val_data is not None:
        _guard_accuracy(source, artefacts, metadata, options, progress)
        # before timing, so that a QAT row is timed interleaved with the others and its ratios hold
        qat = _qat_fallback(source, artefacts, metadata, calibration_inputs, options, notices, progress)
    else:
        notices.append("no --val-data: accuracy not measured and not guarded")
    _measure(sources, artefacts, parity_inputs, metadata, threads, options, progress)
    notices.extend(_spread_notices(artefacts))
    result = OptimizeResult(
        source=source_path,
        output_dir=output,
        task=source.task,
        imgsz=source.imgsz,
        threads=threads,
        artefacts=artefacts,
        max_drop=options.max_drop,
        forced=options.force,
        report_path=output / REPORT_NAME,
        sidecar=sidecar,
        notices=notices,
        latency_rounds=options.latency_rounds,
        qat=qat,
    )
    atomic_write_json(result.report_path, result.to_dict())
    return result


def _check_output(output: Path, model: Path, options: OptimizeOptions) -> None:
    """Before the model loads: artefacts never land on an input file or inside an images folder."""
    files = [options.calib_data, options.val_data, options.prune_data, options.qat_data]
    folders = [options.calib_dir, *image_folders(files, options.images_dir)]
    check_output_outside_inputs(output, [model, *files, *folders])


def _check_options(options: OptimizeOptions) -> None:
    for value in options.formats:
        if value not in FORMATS:
            raise UsageError(f"unknown --format {value!r}", f"use {' or '.join(FORMATS)}")
    for value in options.quantize:
        if value not in QUANTIZE:
            raise UsageError(f"unknown --quantize {value!r}", f"use one of {', '.join(QUANTIZE)}")
    for value in options.int8_recipes:
        if value not in RECIPES:
            raise UsageError(f"unknown --int8-recipe {value!r}", f"use one of {', '.join(RECIPES)}")
    if options.prune is not None and not 0.0 < options.prune < 1.0:
        raise UsageError(f"--prune {options.prune} is not a ratio", "give a fraction of channels to remove, e.g. 0.2")
    if options.prune_finetune_epochs and options.prune_data is None:
        raise UsageError("--prune-finetune-epochs needs training data", "pass --prune-data train.json")
    if options.max_drop < 0:
        raise UsageError("--max-drop must be >= 0")
    if options.latency_rounds < 1:
        raise UsageError("--latency-rounds must be >= 1")
    if options.qat_epochs < 0:
        raise UsageError("--qat-epochs must be >= 0")
    if options.qat_epochs:  # QAT runs after the accuracy guard of a static INT8 file: all three must be possible
        if options.qat_data is None:
            raise UsageError("--qat-epochs needs training data", "pass --qat-data train.json")
        if options.val_data is None:
            raise UsageError("--qat-epochs needs --val-data", "QAT runs when an INT8 file fails the accuracy guard")
        if "int8" not in options.quantize or "onnx" not in options.formats:
            hint = "QAT replaces a static INT8 ONNX file that fails"
            raise UsageError("--qat-epochs needs --quantize int8 and --format onnx", hint)


def _quantized(
    mode: str,
    fp32: Path,
    metadata: ModelMetadata,
    calibration_inputs: list[np.ndarray],
    options: OptimizeOptions,
    progress: Progress,
) -> list[Artefact]:
    output = fp32.parent
    if mode == "none":
        return []
    if mode == "fp16":
        target = output / "model_fp16.onnx"
        with progress.task(f"converting {target.name}", total=None):
            convert_fp16(fp32, target, metadata)
        note = "for GPU targets: CPUs run fp16 ONNX slowly"
        return [Artefact("onnx fp16", target, "onnx", "fp16", _mb(target), notes=[note])]
    if mode == "int8-dynamic":
        target = output / "model_int8_dynamic.onnx"
        with progress.task(f"quantizing {target.name}", total=None):
            quantize_dynamic_int8(fp32, target, metadata)
        return [Artefact("onnx int8 dynamic", target, "onnx", "int8", _mb(target))]
    artefacts = []
    for position, recipe in enumerate(options.int8_recipes):
        target = output / ("model_int8.onnx" if position == 0 else f"model_int8_{recipe}.onnx")
        quantize_static_int8(fp32, target, metadata, calibration_inputs, recipe, progress)
        name = "onnx int8" if position == 0 else f"onnx int8 ({recipe})"
        notes = [f"static QDQ, recipe {recipe}: {RECIPES[recipe].description}; {len(calibration_inputs)} images"]
        if RECIPES[recipe].reduce_range is None and int8_weights_need_reduced_range():
            notes.append(
                "7-bit weights: this CPU has no VNNI/AMX, where 8-bit weights saturate onnxruntime's u8s8 kernels"
            )
        artefacts.append(Artefact(name, target, "onnx", "int8", _mb(target), notes=notes))
    return artefacts


def _engines(
    fp32: Path,
    metadata: ModelMetadata,
    calibration_inputs: list[np.ndarray],
    options: OptimizeOptions,
    progress: Progress,
) -> list[Artefact]:
    from distillkit.export.tensorrt_export import build_engine

    artefacts = []
    for mode in options.quantize:
        precision = {"int8": "int8", "fp16": "fp16"}.get(mode)
        if precision is None:
            continue  # dynamic int8 and "none" have no engine counterpart; fp16 is TensorRT's floor anyway
        target = fp32.parent / f"model_{precision}.engine"
        with progress.task(f"building {target.name}", total=None):
            build_engine(fp32, target, metadata, precision, calibration_inputs)
        artefacts.append(Artefact(f"tensorrt {precision}", target, "engine", precision, _mb(target)))
    if not artefacts:
        target = fp32.parent / "model_fp16.engine"
        with progress.task(f"building {target.name}", total=None):
            build_engine(fp32, target, metadata, "fp16")
        artefacts.append(Artefact("tensorrt fp16", target, "engine", "fp16", _mb(target)))
    return artefacts


def _openvino(
    fp32: Path,
    metadata: ModelMetadata,
    calibration_inputs: list[np.ndarray],
    options: OptimizeOptions,
    progress: Progress,
) -> list[Artefact]:
    """fp32 IR always (OpenVINO's own baseline), fp16 weights with -q fp16, NNCF INT8 with -q int8."""
    from distillkit.export.openvino_export import export_openvino, folder_size_mb, openvino_folder

    precisions = ["fp32", *(p for p in ("fp16", "int8") if p in options.quantize)]
    artefacts = []
    for precision in precisions:
        target = openvino_folder(fp32.parent, precision)
        with progress.task(f"converting {target.name}", total=None):
            export_openvino(fp32, target, metadata, precision, calibration_inputs, progress)
        notes = []  # the compute precision the CPU plugin picks is added when _measure compiles the folder
        if precision == "int8":
            notes.append(f"NNCF post-training INT8, {len(calibration_inputs)} images, head decoding in float")
        size = folder_size_mb(target)
        artefacts.append(Artefact(f"openvino {precision}", target, "openvino", precision, size, notes=notes))
    return artefacts


def _tflite(
    source: SourceModel,
    output: Path,
    calibration_inputs: list[np.ndarray],
    options: OptimizeOptions,
    progress: Progress,
) -> list[Artefact]:
    """model_fp16.tflite with -q fp16, model_int8.tflite with -q int8, model_fp32.tflite with -q none.

    With none of those asked for (e.g. only int8-dynamic), fp16: the one without an accuracy risk.
    """
    from distillkit.export.tflite_export import PRECISION_NOTES, YOLO_TASKS, export_yolo_tflite, tflite_path

    wanted = {"none": "fp32", "fp16": "fp16", "int8": "int8"}
    precisions = [wanted[mode] for mode in options.quantize if mode in wanted] or ["fp16"]
    exporter = find("export.tflite", source.task) or export_yolo_tflite  # a family's own, else ultralytics'
    exporter(source, output, precisions, calibration_inputs, progress)
    artefacts = []
    for precision in precisions:
        target = tflite_path(output, precision)
        note = PRECISION_NOTES[precision]
        if precision == "int8":
            note += f"; {len(calibration_inputs)} images"
            if exporter is export_yolo_tflite and source.task in YOLO_TASKS:
                note += "; head decoding (DFL, box decode, sigmoid, output concat) in float32"
        notes = [note]
        artefacts.append(Artefact(f"tflite {precision}", target, "tflite", precision, _mb(target), notes=notes))
    return artefacts


def _parity_inputs(
    calibration_inputs: list[np.ndarray], options: OptimizeOptions, metadata: ModelMetadata
) -> list[np.ndarray]:
    """Real images for parity and timing: calibration images, else validation images."""
    if calibration_inputs:
        return calibration_inputs[: options.parity_images]
    folder = options.calib_dir
    if options.calib_data is not None or folder is not None:
        paths = calibration_images(options.calib_data, folder, options.parity_images, images_dir=options.images_dir)
    elif options.val_data is not None:
        paths = calibration_images(options.val_data, None, options.parity_images, images_dir=options.images_dir)
    else:
        raise UsageError(
            "parity and latency are measured on real images", "pass --calib-data, --calib-dir or --val-data"
        )
    return preprocess_many(paths, metadata)


def _measure(
    sources: dict[Path, SourceModel],
    artefacts: list[Artefact],
    inputs: list[np.ndarray],
    metadata: ModelMetadata,
    threads: int,
    options: OptimizeOptions,
    progress: Progress,
) -> None:
    import torch

    previous_threads = torch.get_num_threads()  # torch_runner sets the stated count; give the caller theirs back
    try:
        runners: dict[str, Runner] = {}
        for artefact in artefacts:
            if artefact.format == "pt":
                runners[artefact.name] = torch_runner(sources[artefact.path], threads)
            elif artefact.format == "onnx":
                runners[artefact.name] = onnx_runner(artefact.path, threads)
            elif artefact.format == "openvino":
                from distillkit.export.openvino_export import compile_openvino, inference_precision

                compiled = compile_openvino(artefact.path, threads)  # once: timed, and asked its precision
                artefact.notes.insert(
                    0,
                    f"the CPU plugin computes in {inference_precision(compiled)} here "
                    "(bf16 on CPUs that have it: measured, not assumed)",
                )
                runners[artefact.name] = openvino_runner(artefact.path, threads, compiled)
            elif artefact.format == "tflite":
                runners[artefact.name] = tflite_runner(artefact.path, threads)
            else:
                runners[artefact.name] = engine_runner(artefact.path)
        reference = runners[artefacts[0].name]
        score_rows = slice(4, 4 + len(metadata.names)) if metadata.task in ("detect", "segment") else None
        with progress.task("checking parity with PyTorch", total=len(artefacts)) as bar:
            for artefact in artefacts:
                if artefact.format != "pt":
                    artefact.parity = output_parity(reference, runners[artefact.name], inputs, score_rows)
                bar.advance()
        latencies = measure_latency(runners, inputs, rounds=options.latency_rounds, progress=progress)
        for artefact in artefacts:
            artefact.latency = latencies[artefact.name]
    finally:
        torch.set_num_threads(previous_threads)


def _spread_notices(artefacts: list[Artefact]) -> list[str]:
    wide = [f"{a.name} ({a.latency.spread:.1f}x)" for a in artefacts if a.latency is not None and a.latency.too_wide]
    if not wide:
        return []
    return [
        f"latency spread too wide to trust for {', '.join(wide)} (p90 over median above {WIDE_SPREAD}x): "
        "other processes used the CPU while timing; re-run on a quiet machine or with more --latency-rounds"
    ]


def _guard_accuracy(
    source: SourceModel,
    artefacts: list[Artefact],
    metadata: ModelMetadata,
    options: OptimizeOptions,
    progress: Progress,
) -> None:
    assert options.val_data is not None
    paths = [artefact.path for artefact in artefacts]
    evaluate = find("export.accuracy", source.task) or detection_accuracy  # a family's own evaluator, else COCO mAP
    results = evaluate(options.val_data, paths, source.task, source.imgsz, options.images_dir, progress)
    for artefact, accuracy in zip(artefacts, results, strict=True):
        artefact.accuracy = accuracy
    reference = artefacts[0].accuracy
    assert reference is not None
    for artefact in artefacts[1:]:
        _apply_guard(reference, artefact, options.max_drop)


def _apply_guard(reference: Accuracy, artefact: Artefact, max_drop: float) -> None:
    assert artefact.accuracy is not None
    drop = (reference.value - artefact.accuracy.value) * 100
    if drop > max_drop:
        artefact.status = "failed"
        artefact.notes.append(f"{artefact.accuracy.metric} drops {drop:.2f} points (> --max-drop {max_drop})")


QAT_HINT = "recover it with quantization-aware training: --qat-epochs 3 --qat-data TRAIN.json"
QAT_REPLACED = "failed (replaced by qat)"


def _qat_fallback(
    source: SourceModel,
    artefacts: list[Artefact],
    metadata: ModelMetadata,
    calibration_inputs: list[np.ndarray],
    options: OptimizeOptions,
    notices: list[str],
    progress: Progress,
) -> dict[str, Any] | None:
    """When a static INT8 file failed the guard: QAT it (``--qat-epochs``) or say how; None when QAT did not run.

    A passing QAT row replaces the failed static rows (status ``failed (replaced by qat)``, not counted
    as failures: the folder then holds an INT8 file that passes, which is what the user asked for);
    a failing QAT row fails like any other.
    """
    failed = [a for a in artefacts if a.format == "onnx" and a.name.startswith("onnx int8") and a.status == "failed"]
    failed = [a for a in failed if "dynamic" not in a.name]  # dynamic INT8 has no calibrated ranges to train
    if not failed or source.task not in ("detect", "segment"):
        return None
    if not options.qat_epochs:
        for artefact in failed:
            artefact.notes.append(QAT_HINT)
        return None
    from distillkit.export.qat import QAT_FILE, QatSettings, qat_int8

    assert options.qat_data is not None and options.val_data is not None
    settings = QatSettings(epochs=options.qat_epochs)
    target = failed[0].path.parent / QAT_FILE
    result = qat_int8(
        source, options.qat_data, target, metadata, calibration_inputs, settings, options.images_dir, progress
    )
    note = f"quantization-aware training, {settings.epochs} epochs on {options.qat_data} ({result.train_seconds:.0f} s)"
    row = Artefact("onnx int8 (qat)", target, "onnx", "int8", _mb(target), notes=[note])
    row.accuracy = detection_accuracy(
        options.val_data, [target], source.task, source.imgsz, options.images_dir, progress
    )[0]
    assert artefacts[0].accuracy is not None
    _apply_guard(artefacts[0].accuracy, row, options.max_drop)
    artefacts.append(row)
    if row.status == "ok":
        for artefact in failed:
            artefact.status = QAT_REPLACED
            artefact.notes.append(f"replaced by {row.name} ({target.name}), which passes the accuracy guard")
        names = ", ".join(artefact.name for artefact in failed)
        notices.append(f"{names} failed the accuracy guard; {target.name} (QAT) passes it and replaces it")
    return {**result.to_dict(), "file": str(target), "replaced": [a.name for a in failed], "status": row.status}


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _machine() -> str:
    import platform

    return f"{platform.processor() or platform.machine()}, {_default_threads()} CPUs available"


def _mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def _ratio(value: float, reference: float) -> float | None:
    return round(value / reference, 4) if reference else None


def _round(value: float) -> float | str:
    return round(value, 6) if np.isfinite(value) else "shape mismatch"
