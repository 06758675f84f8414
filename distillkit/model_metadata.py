"""What an exported model carries so that `infer` and `evaluate` need nothing else.

Every ONNX file distillkit writes holds, in ``metadata_props``, a ``distillkit`` entry (JSON): task,
class names in index order, the COCO category id of each class, input size and the exact
preprocessing. Ultralytics' own entries (``names``, ``task``, ``imgsz``, ``stride``...) are kept
beside it so ultralytics' runtime reads the file too. The same facts go into a sidecar
``class_mapping.yaml`` (the format ``train-student`` writes), which also serves TensorRT engines.
OpenVINO folders carry it in their ``metadata.yaml``, ``.tflite`` files in an appended ``distillkit.json``.

On the ground floor: ``export`` writes these records, ``inference`` and the families read them, and
``distillkit.tasks.model_task`` reads the task from them, none importing the others for it.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distillkit.errors import DataError, UsageError
from distillkit.io import atomic_write_yaml

METADATA_KEY = "distillkit"
METADATA_VERSION = 1
INPUT_NAME = "images"
SIDECAR_NAME = "class_mapping.yaml"
FOLDER_SUFFIX = "_openvino_model"  # ultralytics recognises an OpenVINO model by this folder name
METADATA_YAML = "metadata.yaml"  # inside an OpenVINO folder
DISTILLKIT_ENTRY = "distillkit.json"  # appended to a .tflite (a zip after the flatbuffer)

# Ultralytics' inference preprocessing, which YOLO students were trained with and are run with.
YOLO_PREPROCESSING: dict[str, Any] = {
    "resize": "letterbox",
    "pad_value": 114,
    "scale": 1 / 255,
    "channel_order": "RGB",
    "layout": "NCHW",
    "mean": None,
    "std": None,
}


@dataclass
class ModelMetadata:
    task: str  # detect | segment | classify
    names: list[str]  # class names in index order
    category_ids: list[int]  # COCO category id of each class index
    imgsz: list[int]  # [height, width] of the network input
    preprocessing: dict[str, Any] = field(default_factory=lambda: dict(YOLO_PREPROCESSING))
    dynamic_batch: bool = False
    precision: str = "fp32"  # fp32 | fp16 | int8
    multi_label: bool = False  # classifiers: sigmoid per class instead of softmax
    parameters: int | None = None  # of the source model (an engine file cannot say)
    outputs: list[str] = field(default_factory=list)
    source: str | None = None  # the model file this one was exported from
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the quantization recipe
    version: int = METADATA_VERSION

    @property
    def class_mapping(self) -> dict[int, int]:
        """COCO category id -> class index, as ``train-student`` stores it."""
        return {category: index for index, category in enumerate(self.category_ids)}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMetadata:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})

    def sidecar(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "category_ids": sorted(self.category_ids),
            "class_mapping": self.class_mapping,
            "task": self.task,
            "imgsz": list(self.imgsz),
            "multi_label": self.multi_label,
            "preprocessing": dict(self.preprocessing),
        }


def write_onnx_metadata(model: Any, metadata: ModelMetadata, ultralytics_keys: dict[str, str] | None = None) -> None:
    """Set the ``distillkit`` entry (and the given ultralytics entries) on an ``onnx.ModelProto``."""
    entries = dict(ultralytics_keys or {})
    entries[METADATA_KEY] = metadata.to_json()
    kept = [prop for prop in model.metadata_props if prop.key not in entries]
    del model.metadata_props[:]
    for prop in kept:
        model.metadata_props.add(key=prop.key, value=prop.value)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)


def onnx_metadata_props(model: Any) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def load_onnx_graph(path: str | Path) -> Any:
    """The ONNX model without its external weights; a one-line UsageError for a file that is not ONNX."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: the bytes are not an ONNX model
        raise UsageError(
            f"{path} is not a readable ONNX file ({type(exc).__name__}: {exc})",
            "pass a model.onnx written by distillkit optimize",
        ) from exc


def read_onnx_metadata(path: str | Path) -> ModelMetadata | None:
    """The ``distillkit`` entry of an ONNX file, without loading its weights; None when absent."""
    model = load_onnx_graph(path)
    raw = onnx_metadata_props(model).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        return ModelMetadata.from_dict(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{path}: unreadable distillkit metadata ({exc})", "re-export it with distillkit optimize"
        ) from exc


def write_sidecar(folder: Path, metadata: ModelMetadata) -> Path:
    target = folder / SIDECAR_NAME
    atomic_write_yaml(target, metadata.sidecar())
    return target


def read_sidecar(folder: Path) -> dict[str, Any] | None:
    path = folder / SIDECAR_NAME
    if not path.exists():
        return None
    return yaml.safe_load(path.read_text()) or {}


def check_single_input(model: Any, path: str | Path) -> None:
    """Raise unless the graph has exactly one input, named ``images`` (the prompt-free guarantee).

    Initializers listed as graph inputs (old exporters do that) are not inputs a caller feeds.
    """
    initializers = {init.name for init in model.graph.initializer}
    inputs = [value.name for value in model.graph.input if value.name not in initializers]
    if inputs != [INPUT_NAME]:
        raise DataError(
            f"{path} has inputs {inputs}, expected exactly one named {INPUT_NAME!r}",
            "a prompt-free model takes only the image tensor; export the model without text or prompt inputs",
        )


# --------------------------------------------------------------------------------- OpenVINO folders and LiteRT files


def is_openvino_model(path: Path) -> bool:
    """A folder named ``*_openvino_model`` (or the ``.xml`` inside one)."""
    folder = path.parent if path.suffix == ".xml" else path
    return folder.name.endswith(FOLDER_SUFFIX)


def openvino_model_folder(path: Path) -> Path:
    """The artefact folder of a user's path (the folder itself or its ``model.xml``), checked."""
    folder = path.parent if path.suffix == ".xml" else path
    if not folder.is_dir() or not any(folder.glob("*.xml")):
        raise UsageError(
            f"{path} is not an OpenVINO model folder (no .xml inside)",
            "pass a model_*_openvino_model folder written by distillkit optimize -f openvino",
        )
    return folder


def read_openvino_metadata(folder: Path) -> ModelMetadata | None:
    """The ``distillkit`` entry of a folder's ``metadata.yaml``; None when absent (a plain ultralytics export)."""
    path = folder / METADATA_YAML
    if not path.exists():
        return None
    try:
        data = yaml.safe_load(path.read_text()) or {}
        raw = data.get(METADATA_KEY) if isinstance(data, dict) else None
        return ModelMetadata.from_dict(json.loads(raw)) if raw else None
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: unreadable metadata ({exc})", "re-export it with distillkit optimize") from exc


def read_zip_entry(path: Path, name: str) -> dict[str, Any] | None:
    """A JSON entry appended to a ``.tflite``; None when the file has no such entry."""
    try:
        with zipfile.ZipFile(path) as archive:
            if name not in archive.namelist():
                return None
            raw = archive.read(name)
    except (zipfile.BadZipFile, OSError):
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise DataError(f"{path}: unreadable {name} ({exc})", "re-export it with distillkit optimize") from exc
    if not isinstance(value, dict):
        raise DataError(f"{path}: {name} is not a JSON object", "re-export it with distillkit optimize")
    return value


def read_tflite_metadata(path: str | Path) -> ModelMetadata | None:
    """The distillkit metadata of a ``.tflite``; None for a file distillkit did not write."""
    data = read_zip_entry(Path(path), DISTILLKIT_ENTRY)
    if data is None:
        return None
    try:
        return ModelMetadata.from_dict(data)
    except TypeError as exc:
        raise DataError(
            f"{path}: unreadable distillkit metadata ({exc})", "re-export it with distillkit optimize"
        ) from exc
