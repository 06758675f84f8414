"""Whether each long-running command can run on this machine, and the one line that fixes it if not.

Built from the facts the other checks gathered; none of these lines is required for the exit code
(the broken part they depend on already is, where it should be).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distillkit.checks.model import FAIL, OK, UNAVAILABLE, WARN, Check
from distillkit.checks.packages import OPTIONAL_RUNTIMES, tensorrt_fix
from distillkit.checks.weights import BROKEN, DOWNLOAD, FOUND, TeacherWeights, default_weights
from distillkit.teachers.weights import FLAG_MODELS


@dataclass
class Facts:
    """What the readiness lines are decided from."""

    importable: dict[str, bool]
    teachers: dict[str, TeacherWeights]
    runtimes: dict[str, str | None]  # optional runtime name → module found (None: not installed)
    devices: list[dict[str, Any]] = field(default_factory=list)  # CUDA / MPS devices that work
    tensorrt: tuple[bool, str] = (False, "")
    ultralytics_guarded: bool = False
    optimize_formats: tuple[str, ...] = ()


def _device(facts: Facts) -> str:
    gpus = [d for d in facts.devices if d.get("round_trip")]
    if not gpus:
        return "on the CPU (slow for real datasets)"
    first = gpus[0]
    where = f"cuda:{first['index']}" if first["type"] == "cuda" else first["type"]
    return f"on {where} ({first.get('name', first['type'])})" + (f" +{len(gpus) - 1} more" if len(gpus) > 1 else "")


def _missing(facts: Facts, *modules: str) -> list[str]:
    return [module for module in modules if not facts.importable.get(module, False)]


def train_teacher(facts: Facts) -> Check:
    name = "train-teacher"
    broken = _missing(facts, "torch", "transformers", "peft")
    if broken:
        return Check("commands", name, FAIL, f"{', '.join(broken)} do(es) not import", "see the packages section")
    parts, ready, fixes, downloads = [], [], [], []
    for flag, weights in facts.teachers.items():
        label = FLAG_MODELS[flag]
        data_kind = "box data" if flag == "--dino-weights" else "mask data"
        if weights.state == FOUND:
            parts.append(f"{label} ready ({data_kind})")
            ready.append(flag)
        elif weights.state == DOWNLOAD:
            parts.append(f"{label} needs the network (downloads {weights.source})")
            ready.append(flag)
            downloads.append(flag)
        elif weights.state == BROKEN:
            parts.append(f"{label} weights {weights.source} are broken")
            fixes.append(flag)
        else:
            parts.append(f"{label} weights not found ({data_kind} cannot train)")
            fixes.append(flag)
    detail = "; ".join(parts) + f"; {_device(facts)}"
    data = {flag: {"state": w.state, "source": w.source} for flag, w in facts.teachers.items()}
    if not fixes and not downloads:
        return Check("commands", name, OK, detail, data=data)
    todo = fixes or downloads
    fix = "pass " + " / ".join(f"{flag} DIR" for flag in todo)
    fix += " or set HF_HOME to a cache holding " + " / ".join(default_weights(flag) for flag in todo)
    return Check("commands", name, WARN if ready else UNAVAILABLE, detail, fix, data=data)


def train_student(facts: Facts) -> Check:
    name = "train-student"
    broken = _missing(facts, "torch", "torchvision", "ultralytics")
    if broken:
        return Check("commands", name, FAIL, f"{', '.join(broken)} do(es) not import", "see the packages section")
    if not facts.ultralytics_guarded:
        detail = f"ultralytics imports, but some network features are still on; {_device(facts)}"
        return Check("commands", name, WARN, detail, "see 'ultralytics network features' under offline")
    return Check("commands", name, OK, f"ultralytics imports with its network features off; {_device(facts)}")


def optimize_onnx(facts: Facts) -> Check:
    name = "optimize -f onnx"
    broken = _missing(facts, "torch", "onnxruntime")
    if broken:
        return Check("commands", name, FAIL, f"{', '.join(broken)} do(es) not import", "see the packages section")
    return Check("commands", name, OK, "ONNX export, INT8/fp16 quantization and onnxruntime benchmarks")


def optimize_engine(facts: Facts) -> Check:
    name = "optimize -f engine" if "engine" in facts.optimize_formats else "runtime for optimize -f engine"
    usable, reason = facts.tensorrt
    if usable:
        return Check("commands", name, OK, "TensorRT and a CUDA GPU are present")
    return Check("commands", name, UNAVAILABLE, f"cannot build TensorRT engines here: {reason}", tensorrt_fix())


def _runtime_line(facts: Facts, runtime_name: str, command: str, available_as_command: bool) -> Check:
    runtime = next(r for r in OPTIONAL_RUNTIMES if r.name == runtime_name)
    name = command if available_as_command else f"runtime for {command}"
    module = facts.runtimes.get(runtime_name)
    if module is None:
        return Check("commands", name, UNAVAILABLE, f"{runtime_name} is not installed", runtime.fix)
    return Check("commands", name, OK, f"{runtime_name} is installed ({module})")


def command_checks(facts: Facts) -> list[Check]:
    formats = facts.optimize_formats
    return [
        train_teacher(facts),
        train_student(facts),
        optimize_onnx(facts),
        optimize_engine(facts),
        _runtime_line(facts, "openvino", "optimize -f openvino", "openvino" in formats),
        _runtime_line(facts, "LiteRT", "optimize -f tflite", "tflite" in formats),
        _runtime_line(facts, "ray", "label --backend ray", True),
    ]
