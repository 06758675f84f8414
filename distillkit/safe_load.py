"""Model files are data, not code: every torch file a user passes is unpickled under an allowlist.

A ``.pt`` is a pickle, and a pickle can name any Python callable to run while it is read (``posix.system``
with a shell command, ``pathlib.Path.touch``...). Checkpoints travel between teams and come from the web,
so distillkit never reads one with ``torch.load(weights_only=False)``. ``safe_torch_load`` reads it with
torch's restricted unpickler (``weights_only=True``), allowing on top of torch's own tensors and containers
only the classes a genuine ultralytics / distillkit / timm checkpoint holds (``allowlist()``):

* every ``nn.Module`` class defined in ``torch.nn.modules``, ``ultralytics.nn.modules``, ``ultralytics.nn.tasks``
  and ``ultralytics.nn.distill_model``, the loss and assigner classes of ``ultralytics.utils.loss`` / ``.tal``,
  and distillkit's own modules marked ``@checkpoint_class`` (``C2fTwoConv`` of ``--prune``), each under the
  exact ``module.Class`` name pickle writes (plus the legacy names ultralytics itself maps);
* the data classes ultralytics saves: ``IterableSimpleNamespace``, ``PosixPath``, numpy scalars, dtypes and
  arrays (their reconstruction functions only), the classification transforms of torchvision, and
  ``argparse.Namespace`` (timm training checkpoints);
* ``getattr`` restricted to what checkpoints use it for: ``Detect.forward`` and enum members.

Classes are registered so pickle can *create* them the way it creates every module (``cls.__new__`` then the
saved state) but never *call* them: a call would run ``__init__`` with arguments chosen by the file
(ultralytics' model constructors ``eval`` the ``activation`` string of a model YAML).

Anything else (``posix.system``, ``builtins.exec``, a class from another package) is refused before a byte
is unpickled, with a one-line ``UsageError`` naming it. ``trust_model_files(True)`` (the CLI's
``--trust-model-file``, or ``DISTILLKIT_TRUST_MODEL_FILES=1``) restores plain ``torch.load`` for files the
user vouches for. ``install_ultralytics_guard()`` (run by ``import_ultralytics()``, and here before
ultralytics' classes are first listed) routes ultralytics' own loader (``YOLO(path)``, ``load_checkpoint``,
trainer resume, ``strip_optimizer``) through here too, and makes ultralytics build models from YAML
without ``eval``.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from distillkit.errors import UsageError

TRUST_ENV = "DISTILLKIT_TRUST_MODEL_FILES"
TRUST_HINT = "pass --trust-model-file if you trust where this file comes from"

_trusted = False
_lock = threading.RLock()  # torch's allowlist is process-wide: one restricted load at a time
_refusal = threading.local()  # what the restricted getattr / a class call refused, for the error line
_HIDDEN = "\n"  # prefix of names pickle cannot write (GLOBAL reads lines): real classes, for BUILD checks only


def trust_model_files(trust: bool) -> None:
    """Process-wide: load model files with plain ``torch.load`` (runs code inside them) when ``trust``."""
    global _trusted
    _trusted = bool(trust)


def model_files_trusted() -> bool:
    return _trusted or os.environ.get(TRUST_ENV, "").strip().lower() not in ("", "0", "false", "no")


class UnsafeModelFileError(UsageError):
    """A model file needs something outside the allowlist to load (exit code 2)."""

    def __init__(self, path: Any, needs: str) -> None:
        self.path = str(path)
        self.needs = needs  # "module.Global", or "(the unpickler's words)" when it named no global
        what = (
            f"holds objects that distillkit's data-only loader refuses {needs}"
            if needs.startswith("(")
            else f"needs {needs} to load, which is not on distillkit's allowlist of checkpoint classes"
        )
        super().__init__(f"{self.path} {what}", TRUST_HINT)


# --------------------------------------------------------------------------------------------- allowlist


class _CreateOnly:
    """Stands for an allowlisted class in the unpickler: ``cls.__new__`` works (pickle's NEWOBJ, how every
    module is saved), calling it does not (REDUCE with arguments from the file would run ``__init__``)."""

    def __init__(self, cls: type, name: str) -> None:
        self.cls = cls
        self.name = name
        self.__new__ = self._new  # torch's NEWOBJ calls ``cls.__new__(cls, *args)``; the instance attribute wins

    def _new(self, _proxy: Any, *args: Any) -> Any:
        return self.cls.__new__(self.cls, *args)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _refusal.needs = f"a call of {self.name}"
        raise pickle.UnpicklingError(f"GLOBAL {self.name} is allowlisted for creation, not for a call")

    def __repr__(self) -> str:
        return f"<allowlisted class {self.name}>"


def _restricted_getattr(obj: Any, name: str) -> Any:
    """``builtins.getattr`` as genuine checkpoints use it and no further: ``Detect.forward`` (a function, inert:
    the unpickler never calls what it was not given as a global) and enum members (``InterpolationMode.BILINEAR``).
    """
    import enum

    import torch

    target = obj.cls if isinstance(obj, _CreateOnly) else obj
    forward = ("forward", "forward_fuse")
    if isinstance(target, type) and issubclass(target, torch.nn.Module) and name in forward:
        return getattr(target, name)
    if isinstance(target, type) and issubclass(target, enum.Enum) and name in target.__members__:
        return target[name]
    if isinstance(target, torch.nn.Module) and name in forward:
        return getattr(type(target), name).__get__(target)
    owner = target if isinstance(target, type) else type(target)
    _refusal.needs = f"{owner.__module__}.{owner.__qualname__}.{name}"
    raise pickle.UnpicklingError(f"GLOBAL {_refusal.needs} is not allowed (restricted getattr)")


def _classes_in(module: Any, base: type | None) -> Iterator[type]:
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and value.__module__ == module.__name__
            and (base is None or issubclass(value, base))
        ):
            yield value


def _submodules(package: str) -> Iterator[Any]:
    import importlib
    import pkgutil

    root = importlib.import_module(package)
    yield root
    for info in pkgutil.iter_modules(root.__path__):
        try:
            yield importlib.import_module(f"{package}.{info.name}")
        except ImportError:  # an optional part needing a package that is not installed
            continue


class _Allowlist:
    """``name -> entries`` for ``torch.serialization.add_safe_globals``; built on first use, in two parts."""

    def __init__(self) -> None:
        self.entries: dict[str, list[Any]] = {}
        self._ultralytics_done = False
        self._torchvision_done = False
        self._core()

    def _create_only(self, cls: type, *names: str) -> None:
        real = f"{cls.__module__}.{cls.__qualname__}"
        for name in (real, *names):
            self.entries[name] = [(_CreateOnly(cls, name), name), (cls, _HIDDEN + real)]

    def _callable(self, obj: Any, *names: str) -> None:
        for name in names:
            self.entries[name] = [(obj, name)]

    def _core(self) -> None:
        import argparse
        import pathlib

        import numpy as np
        import torch

        for module in _submodules("torch.nn.modules"):
            for cls in _classes_in(module, torch.nn.Module):
                self._create_only(cls)
        package = sys.modules["torch.nn.modules"]
        for attr, value in vars(package).items():  # re-exported names: torch.nn.modules.Conv2d
            if isinstance(value, type) and issubclass(value, torch.nn.Module):
                self._create_only(value, f"torch.nn.modules.{attr}")
        # numpy scalars, dtypes and arrays: the reconstruction functions and the types they build, nothing else
        scalar = np.float64(0).__reduce__()[0]
        reconstruct = np.zeros(1).__reduce__()[0]
        self._callable(scalar, "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
        self._callable(reconstruct, "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct")
        self._callable(np.dtype, "numpy.dtype")
        self._callable(np.ndarray, "numpy.ndarray")
        dtype_classes = [(t, f"{t.__module__}.{t.__qualname__}") for t in _numpy_dtype_classes()]
        self.entries["numpy.dtype"] += dtype_classes  # a dtype is built as numpy.dtype(...), then set up by type
        self.entries["numpy.ndarray"] += dtype_classes
        # ultralytics pickles paths in old train_args; the other platform's path class maps to this one's
        local_path = type(pathlib.Path())
        names = [f"{m}.{c}" for m in ("pathlib", "pathlib._local") for c in ("PosixPath", "WindowsPath")]
        self._callable(local_path, *names)
        self._callable(argparse.Namespace, "argparse.Namespace")  # timm training checkpoints keep their args
        self._callable(_restricted_getattr, "builtins.getattr")

    def _torchvision(self) -> None:
        """The classification transforms a yolov8-cls checkpoint holds (torchvision imported only for those)."""
        if self._torchvision_done:
            return
        self._torchvision_done = True
        try:
            import torchvision.transforms.transforms as tvt
            from torchvision.transforms.functional import InterpolationMode
        except ImportError:  # pragma: no cover - torchvision is a dependency
            return
        for cls in (tvt.Compose, tvt.Normalize, tvt.Resize, tvt.CenterCrop, tvt.ToTensor):
            self._create_only(cls)
        self._callable(InterpolationMode, f"{InterpolationMode.__module__}.{InterpolationMode.__qualname__}")

    def add_ultralytics(self) -> None:
        if self._ultralytics_done:
            return
        self._ultralytics_done = True
        from distillkit.ultralytics_offline import import_ultralytics_offline

        import_ultralytics_offline()  # offline, as everywhere (ultralytics_env adds this module's guard on top)
        install_ultralytics_guard()  # ultralytics' own loader reads through here from now on
        import importlib

        import torch
        from ultralytics.utils import IterableSimpleNamespace

        for module in _submodules("ultralytics.nn.modules"):
            for cls in _classes_in(module, torch.nn.Module):
                self._create_only(cls)
        for attr, value in vars(sys.modules["ultralytics.nn.modules"]).items():  # pre-8.0.90 single-file layout
            if isinstance(value, type) and issubclass(value, torch.nn.Module):
                self._create_only(value, f"ultralytics.nn.modules.{attr}")
        for cls in _classes_in(importlib.import_module("ultralytics.nn.tasks"), torch.nn.Module):
            self._create_only(cls)
        # every class of these: feature-distillation hooks, and the criterion objects of older checkpoints
        for name in ("ultralytics.nn.distill_model", "ultralytics.utils.loss", "ultralytics.utils.tal"):
            try:
                module = importlib.import_module(name)
            except ImportError:  # pragma: no cover - other ultralytics versions
                continue
            for cls in _classes_in(module, None):
                self._create_only(cls)
        legacy = {  # names older checkpoints were written with, mapped as ultralytics' own loader maps them
            "ultralytics.nn.modules.block.Silence": torch.nn.Identity,
            "ultralytics.nn.tasks.YOLOv10DetectionModel": sys.modules["ultralytics.nn.tasks"].DetectionModel,
            "ultralytics.utils.loss.v10DetectLoss": getattr(
                sys.modules["ultralytics.utils.loss"], "E2EDetectLoss", None
            ),
        }
        for old, cls in legacy.items():
            if old not in self.entries and cls is not None:
                self._create_only(cls, old)
        self._callable(
            IterableSimpleNamespace,
            "ultralytics.utils.IterableSimpleNamespace",
            "ultralytics.yolo.utils.IterableSimpleNamespace",
        )

    def get(self, name: str) -> list[Any] | None:
        if name not in self.entries and name.startswith(("ultralytics.", "distillkit.")):
            self.add_ultralytics()
        if name not in self.entries and name.startswith("distillkit."):
            own = _checkpoint_class_named(name)
            if own is not None:
                self._create_only(own)
        if name not in self.entries and name.startswith("torchvision."):
            self._torchvision()
        return self.entries.get(name)


# distillkit's own classes that checkpoints hold, ``module.Class`` -> class (``@checkpoint_class``)
_checkpoint_classes: dict[str, type] = {}
_OWN_CLASS = re.compile(r"distillkit(?:\.[a-z][a-z0-9_]*)+\.[A-Z][A-Za-z0-9_]*")


def checkpoint_class(cls: type) -> type:
    """Class decorator: a distillkit ``nn.Module`` that checkpoints hold (e.g. the C2f rewrite of ``--prune``).

    A pickle naming ``distillkit.<module>.<Class>`` makes ``safe_torch_load`` import that distillkit module
    (distillkit's own code, by name: no code from the file runs) and allow the class, create-only like every
    module, only when the module marked it with this decorator. Any other distillkit name stays refused.
    """
    _checkpoint_classes[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def _checkpoint_class_named(name: str) -> type | None:
    """The ``@checkpoint_class`` class a pickle names, importing its distillkit module; None for anything else."""
    if not _OWN_CLASS.fullmatch(name):  # plain lowercase module names, a capitalised class name; no __main__
        return None
    if name not in _checkpoint_classes:
        import importlib
        import importlib.util

        module = name.rpartition(".")[0]
        try:
            if importlib.util.find_spec(module) is None:
                return None
            importlib.import_module(module)
        except ImportError:
            return None
    return _checkpoint_classes.get(name)


def _numpy_dtype_classes() -> list[type]:
    import numpy as np

    found = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDGSUVOMm"}
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found.update(v for v in vars(dtypes).values() if isinstance(v, type) and issubclass(v, np.dtype))
    return sorted(found, key=lambda t: t.__qualname__)


_allowlist: _Allowlist | None = None


def allowlist() -> _Allowlist:
    """The allowlist (built once; the ultralytics part when a file first names an ultralytics class)."""
    global _allowlist
    with _lock:
        if _allowlist is None:
            _allowlist = _Allowlist()
        return _allowlist


def allowlist_size() -> int:
    """How many global names are allowed on top of torch's own (ultralytics part included)."""
    table = allowlist()
    table.add_ultralytics()
    table._torchvision()
    return len(table.entries)


# --------------------------------------------------------------------------------------------- loading


def _globals_in_order(source: Any) -> list[str]:
    """The GLOBAL names of a ``torch.save`` zip's pickle, in order of appearance ([] when unreadable)."""
    from torch._utils import IMPORT_MAPPING, NAME_MAPPING

    try:
        with zipfile.ZipFile(source) as archive:
            record = next(name for name in archive.namelist() if name.endswith("data.pkl"))
            data = archive.read(record)
        found: list[str] = []
        for opcode, argument, _ in pickletools.genops(io.BytesIO(data)):
            if opcode.name == "GLOBAL":
                module, name = str(argument).split(" ", 1)
                if (module, name) in NAME_MAPPING:
                    module, name = NAME_MAPPING[(module, name)]
                module = IMPORT_MAPPING.get(module, module)
                if f"{module}.{name}" not in found:
                    found.append(f"{module}.{name}")
        return found
    except Exception:  # not a zip, no data.pkl, a damaged pickle: torch's own load will say
        return []
    finally:
        if hasattr(source, "seek"):
            source.seek(0)


def _unsafe_globals(source: Any) -> list[str] | None:
    """Globals outside torch's own allowlist (the caller cleared the registered ones); None if unscannable."""
    import torch

    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(source))
    except Exception:  # a legacy (non-zip) file, TorchScript, a damaged file: left to torch.load
        return None
    finally:
        if hasattr(source, "seek"):
            source.seek(0)


@contextmanager
def _only_these_globals(entries: list[Any]) -> Iterator[None]:
    """Exactly ``entries`` registered (besides torch's defaults) while the body runs, then the previous set."""
    import torch

    previous = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        if entries:
            torch.serialization.add_safe_globals(entries)
        yield
    finally:
        torch.serialization.clear_safe_globals()
        if previous:
            torch.serialization.add_safe_globals(previous)


_NEEDS_PATTERNS = (
    re.compile(r"GLOBAL (\S+) was not an allowed global"),
    re.compile(r"GLOBAL (\S+) whose module \S+ is blocked"),
    re.compile(r"GLOBAL (\S+)"),
    re.compile(r"allowlisted via `add_safe_globals`,? but got <class '([^']+)'>"),
)


def _needs_from_error(message: str, torch_file: bool) -> str | None:
    """The global torch's restricted unpickler refused, from its message; else, for a well-formed torch file
    (``torch_file``), the unpickler's own words; else None (a damaged or foreign file, not a refusal)."""
    for pattern in _NEEDS_PATTERNS:
        match = pattern.search(message)
        if match:
            name = match.group(1).rstrip(".,")
            return name if "." in name else f"builtins.{name}"
    if not torch_file or "Weights only load failed" not in message:
        return None
    detail = message.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
    words = detail[0].strip() if detail and "WeightsUnpickler error:" in message else ""
    return f"({words})" if words else "(an object outside the allowlist)"


def _is_zip(source: Any) -> bool:
    try:
        return zipfile.is_zipfile(source)
    except OSError:
        return False
    finally:
        if hasattr(source, "seek"):
            source.seek(0)


def _display(source: Any) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else "the model file"


def check_model_file(source: Any) -> None:
    """Raise ``UnsafeModelFileError`` when a ``torch.save`` file names a global outside the allowlist.

    Reads the pickle's opcodes only (nothing is unpickled); a file that cannot be scanned passes here and
    is judged by ``safe_torch_load``. Does nothing when model files are trusted.
    """
    if model_files_trusted():
        return
    with _lock, _only_these_globals([]):
        unsafe = _unsafe_globals(source)
    if unsafe:
        _refuse_outside_allowlist(source, unsafe)


def _refuse_outside_allowlist(source: Any, unsafe: list[str]) -> list[Any]:
    """The allowlist entries ``unsafe`` needs, or ``UnsafeModelFileError`` naming the first name it lacks."""
    table = allowlist()
    entries: list[Any] = []
    refused = []
    for name in unsafe:
        found = table.get(name)
        if found is None:
            refused.append(name)
        else:
            entries.extend(found)
    if refused:
        order = _globals_in_order(source)
        refused.sort(key=lambda n: order.index(n) if n in order else len(order))
        raise UnsafeModelFileError(_display(source), refused[0])
    return entries


def safe_torch_load(source: Any, *, trust: bool | None = None, map_location: Any = "cpu", **kwargs: Any) -> Any:
    """``torch.load`` of a user-given file under distillkit's allowlist; plain ``torch.load`` when trusted.

    ``source`` is a path or a seekable binary file. Raises ``UnsafeModelFileError`` (a one-line UsageError,
    exit 2) for a file needing anything off the allowlist; other failures (a damaged file) are torch's own.
    """
    import torch

    kwargs.pop("weights_only", None)
    kwargs.pop("pickle_module", None)
    if model_files_trusted() if trust is None else trust:
        return torch.load(source, map_location=map_location, weights_only=False, **kwargs)
    with _lock:
        with _only_these_globals([]):
            unsafe = _unsafe_globals(source)
        entries = _refuse_outside_allowlist(source, unsafe) if unsafe else []
        registered = set(unsafe or ())
        for _ in range(1000):  # unscannable (legacy) files: learn the allowed names one refusal at a time
            _refusal.needs = None
            try:
                with _only_these_globals(entries), _ultralytics_restricted():
                    return torch.load(source, map_location=map_location, weights_only=True, **kwargs)
            except pickle.UnpicklingError as exc:
                torch_file = unsafe is not None or _is_zip(source)
                needs = getattr(_refusal, "needs", None) or _needs_from_error(str(exc), torch_file)
                if needs is None:
                    raise  # not a refusal: a damaged or foreign file, reported by the caller as before
                found = allowlist().get(needs) if needs not in registered else None
                if found is None:
                    raise UnsafeModelFileError(_display(source), needs) from None
                registered.add(needs)
                entries.extend(found)
            finally:
                if hasattr(source, "seek"):
                    source.seek(0)
        raise UnsafeModelFileError(_display(source), "too many globals")  # pragma: no cover


@contextmanager
def _ultralytics_restricted() -> Iterator[None]:
    """While unpickling, ultralytics (when loaded) builds any model without ``eval`` (belt and braces)."""
    tasks = sys.modules.get("ultralytics.nn.tasks")
    local = getattr(getattr(tasks, "_SafeLoad", None), "_local", None)
    if local is None:
        yield
        return
    before = getattr(local, "active", False)
    local.active = True
    try:
        yield
    finally:
        local.active = before


# --------------------------------------------------------------------------------------------- ultralytics


def _guarded(original: Callable[..., Any]) -> Callable[..., Any]:
    def torch_load(*args: Any, **kwargs: Any) -> Any:
        """ultralytics' ``torch_load`` through distillkit's allowlist (plain when model files are trusted)."""
        if model_files_trusted():
            return original(*args, **kwargs)
        arguments = list(args)
        source = arguments.pop(0) if arguments else kwargs.pop("f")
        map_location = arguments.pop(0) if arguments else kwargs.pop("map_location", None)
        return safe_torch_load(source, trust=False, map_location=map_location, **kwargs)

    torch_load.__wrapped__ = original  # type: ignore[attr-defined]
    torch_load._distillkit_guard = True  # type: ignore[attr-defined]
    return torch_load


def install_ultralytics_guard() -> None:
    """Route every ultralytics checkpoint read through ``safe_torch_load``; build YAML models without eval.

    ``ultralytics.utils.patches.torch_load`` is what ``torch_safe_load`` (hence ``YOLO(path)``,
    ``load_checkpoint``, ``attempt_load_weights``, the trainers' resume) and ``strip_optimizer`` call; the
    modules that imported it by name get the guarded one too, and later imports read the patched attribute.
    ``parse_model`` evaluates a YAML's ``activation`` string with ``eval`` unless ultralytics' restricted mode
    is on: it is on unless model files are trusted. Idempotent.
    """
    import ultralytics.nn.tasks as tasks  # the loader and model builder (imported lazily by ultralytics)
    from ultralytics.utils import patches

    original = patches.torch_load
    if not getattr(original, "_distillkit_guard", False):
        guarded = _guarded(original)
        for name, module in list(sys.modules.items()):
            if (name == "ultralytics" or name.startswith("ultralytics.")) and getattr(
                module, "torch_load", None
            ) is original:
                module.torch_load = guarded
    safe = getattr(tasks, "_SafeLoad", None)
    if safe is not None and not getattr(safe, "_distillkit_guard", False):
        unrestricted = safe.restricted

        def restricted(cls: Any) -> bool:
            return bool(cls.SUPPORTED) and (not model_files_trusted() or unrestricted())

        safe.restricted = classmethod(restricted)
        safe._distillkit_guard = True


__all__ = [
    "TRUST_ENV",
    "TRUST_HINT",
    "UnsafeModelFileError",
    "allowlist",
    "allowlist_size",
    "check_model_file",
    "checkpoint_class",
    "install_ultralytics_guard",
    "model_files_trusted",
    "safe_torch_load",
    "trust_model_files",
]
