"""Versions of the stack, whether each core package imports, and which optional runtimes exist.

Versions come from the installed distributions (``importlib.metadata``); optional runtimes are
only looked up (``importlib.util.find_spec``), never imported, so a missing or heavy one costs
nothing. A core package that fails to import is a required failure: every command needs it.
"""

from __future__ import annotations

import importlib
import importlib.metadata as importlib_metadata
import importlib.util
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

from distillkit import __version__
from distillkit.checks.model import FAIL, OK, UNAVAILABLE, Check


@cache
def _module_distributions() -> dict[str, list[str]]:
    return importlib_metadata.packages_distributions()


def distribution_of(module: str) -> str | None:
    """The installed distribution that provides the top-level ``module`` (``ultralytics`` →
    ``ultralytics-opencv-headless``), or None."""
    names = _module_distributions().get(module) or []
    return names[0] if names else None


def installed_version(module: str) -> str | None:
    """The version of the distribution providing ``module``, without importing it (None if absent)."""
    for name in [distribution_of(module), module]:
        if not name:
            continue
        try:
            return importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return None


def _import_ultralytics() -> ModuleType:
    from distillkit.ultralytics_env import import_ultralytics

    return import_ultralytics()


@dataclass(frozen=True)
class CorePackage:
    module: str
    fix: str
    importer: Callable[[], ModuleType] | None = None  # default: importlib.import_module(module)


_REINSTALL_TORCH = (
    "reinstall torch and torchvision together from one index: pip install --force-reinstall torch torchvision"
)
#: Packages every distillkit command relies on: an import failure here makes `checks` exit 1.
CORE_PACKAGES = (
    CorePackage("torch", _REINSTALL_TORCH),
    CorePackage("torchvision", _REINSTALL_TORCH),
    CorePackage("ultralytics", "pip install --force-reinstall ultralytics-opencv-headless", _import_ultralytics),
    CorePackage("transformers", "pip install --force-reinstall transformers"),
    CorePackage("peft", "pip install --force-reinstall peft"),
    CorePackage("timm", "pip install --force-reinstall timm"),
    CorePackage("onnxruntime", "pip install --force-reinstall onnxruntime (or onnxruntime-gpu)"),
)


@dataclass(frozen=True)
class OptionalRuntime:
    name: str  # as users call it
    modules: tuple[str, ...]  # the first one found is used
    purpose: str
    fix: str


#: Runtimes distillkit uses when present; missing ones are reported, never required.
OPTIONAL_RUNTIMES = (
    OptionalRuntime(
        "tensorrt",
        ("tensorrt",),
        "TensorRT engines (optimize -f engine)",
        "install TensorRT for your CUDA version on the GPU machine, e.g. pip install tensorrt-cu12",
    ),
    OptionalRuntime(
        "openvino",
        ("openvino",),
        "OpenVINO IR (Intel CPUs, GPUs, NPUs)",
        'pip install "distillkit[openvino]" (openvino and nncf)',
    ),
    OptionalRuntime(
        "LiteRT",
        ("ai_edge_litert", "tflite_runtime", "tensorflow"),
        "TFLite / LiteRT models (phones, microcontrollers)",
        'pip install "distillkit[tflite]"',
    ),
    OptionalRuntime("ray", ("ray",), "labelling on a Ray cluster", 'pip install "distillkit[ray]"'),
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _torch_detail(module: Any) -> tuple[str, dict[str, Any]]:
    cuda = getattr(module.version, "cuda", None)
    data: dict[str, Any] = {"cuda_build": cuda}
    if cuda is None:
        return "CPU-only build", data
    try:
        cudnn = module.backends.cudnn.version()
    except Exception:  # cuDNN missing is reported as unknown
        cudnn = None
    data["cudnn"] = cudnn
    return f"CUDA {cuda} build" + (f", cuDNN {_cudnn_text(cudnn)}" if cudnn else ""), data


def _cudnn_text(version: int) -> str:
    """cuDNN's integer version as people write it: 92400 → 9.24.0 (cuDNN 9+), 8907 → 8.9.7."""
    if version >= 90000:
        return f"{version // 10000}.{version % 10000 // 100}.{version % 100}"
    return f"{version // 1000}.{version % 1000 // 100}.{version % 100}"


def _onnxruntime_detail(module: Any) -> tuple[str, dict[str, Any]]:
    providers = list(module.get_available_providers())
    return "providers: " + ", ".join(providers), {"providers": providers}


_DETAILS: dict[str, Callable[[Any], tuple[str, dict[str, Any]]]] = {
    "torch": _torch_detail,
    "onnxruntime": _onnxruntime_detail,
}


def python_checks() -> list[Check]:
    """distillkit and Python themselves (always there, or this code would not run)."""
    return [
        Check("packages", "distillkit", OK, __version__, data={"version": __version__}),
        Check(
            "packages",
            "python",
            OK,
            f"{platform.python_version()} ({platform.python_implementation()}, {sys.executable})",
            data={"version": platform.python_version(), "executable": sys.executable},
        ),
    ]


def core_package_checks() -> tuple[list[Check], dict[str, bool]]:
    """One required check per core package (imported here), and which of them import."""
    checks: list[Check] = []
    importable: dict[str, bool] = {}
    for package in CORE_PACKAGES:
        version = installed_version(package.module)
        data: dict[str, Any] = {"version": version, "distribution": distribution_of(package.module)}
        try:
            module = (package.importer or (lambda name=package.module: importlib.import_module(name)))()
        except Exception as exc:  # any import failure (missing CUDA libs, ABI mismatch) counts
            importable[package.module] = False
            what = "not installed" if version is None else f"{version} installed but import fails"
            checks.append(
                Check("packages", package.module, FAIL, f"{what} ({_first_line(exc)})", package.fix, True, data)
            )
            continue
        importable[package.module] = True
        version = version or getattr(module, "__version__", None)
        data["version"] = version
        detail = str(version or "version unknown")
        if package.module in _DETAILS:
            extra, facts = _DETAILS[package.module](module)
            detail += f" ({extra})"
            data.update(facts)
        checks.append(Check("packages", package.module, OK, detail, required=True, data=data))
    return checks, importable


def find_runtime(runtime: OptionalRuntime) -> tuple[str | None, str | None]:
    """(module found, its version) for an optional runtime, (None, None) when none of its modules exists."""
    for module in runtime.modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken parent package or a half-removed install
            found = False
        if found:
            return module, installed_version(module)
    return None, None


def tensorrt_fix() -> str:
    """The fix sentence of the TensorRT export error, so `checks` and `optimize -f engine` say the same."""
    from distillkit.export.tensorrt_export import TENSORRT_MISSING

    _, found, tail = TENSORRT_MISSING.partition("{reason}. ")
    return tail[:1].lower() + tail[1:] if found else OPTIONAL_RUNTIMES[0].fix


def runtime_checks() -> tuple[list[Check], dict[str, str | None]]:
    """One check per optional runtime (never required); returns them and {name: module found or None}.

    TensorRT counts as available only with a CUDA device too; its reason text is the one
    `optimize -f engine` gives.
    """
    from distillkit.export.tensorrt_export import tensorrt_available

    checks: list[Check] = []
    found_modules: dict[str, str | None] = {}
    for runtime in OPTIONAL_RUNTIMES:
        module, version = find_runtime(runtime)
        found_modules[runtime.name] = module
        data: dict[str, Any] = {"module": module, "version": version, "purpose": runtime.purpose}
        label = f"{module} {version}" if version else str(module)
        if runtime.name == "tensorrt":
            usable, reason = tensorrt_available()
            if not usable:
                data["reason"] = reason
                installed = f"{label} installed, but " if module else ""
                checks.append(
                    Check("runtimes", runtime.name, UNAVAILABLE, f"{installed}{reason}", tensorrt_fix(), data=data)
                )
                continue
        if module is None:
            detail = f"not installed; for {runtime.purpose}"
            checks.append(Check("runtimes", runtime.name, UNAVAILABLE, detail, runtime.fix, data=data))
            continue
        checks.append(Check("runtimes", runtime.name, OK, f"{label}; for {runtime.purpose}", data=data))
    return checks, found_modules
