"""Import ultralytics with every network feature off, the same way on every machine.

Ultralytics probes DNS at import, fetches Arial.ttf during dataset checks, may pip-install missing
packages at export, syncs settings with its hub and reports to integrations (wandb, mlflow, ...).
Users run distillkit on offline training servers, so all of that is switched off here, before the
first import: environment variables, a private settings folder, local fonts, settings updates.

This is the bare offline import; ``distillkit.ultralytics_env.import_ultralytics()`` (what every other
module calls) adds distillkit's guards on top. ``distillkit.safe_load`` uses the bare one to list
ultralytics' checkpoint classes (and installs its loader guard itself), so the two import no circle.
"""

from __future__ import annotations

import os
import shutil
from functools import cache
from pathlib import Path
from types import ModuleType

from distillkit.errors import UsageError

_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
# Settings keys of ultralytics integrations; each is turned off when the installed version has it.
_INTEGRATION_KEYS = (
    "sync",
    "hub",
    "wandb",
    "mlflow",
    "comet",
    "clearml",
    "dvc",
    "neptune",
    "raytune",
    "tensorboard",
)


def distillkit_cache_dir() -> Path:
    """Where distillkit keeps tool state: ``$DISTILLKIT_CACHE``, else ``$XDG_CACHE_HOME/distillkit``."""
    explicit = os.environ.get("DISTILLKIT_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "distillkit"


def configure_offline_environment() -> Path:
    """Set the variables ultralytics reads at import; return its (private) settings folder."""
    config_dir = Path(os.environ.get("YOLO_CONFIG_DIR") or distillkit_cache_dir() / "ultralytics")
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    os.environ["YOLO_OFFLINE"] = "1"  # no DNS probe, no hub, no GitHub asset downloads
    os.environ["YOLO_AUTOINSTALL"] = "0"  # never pip-install at run time
    os.environ.setdefault("YOLO_VERBOSE", "False")  # distillkit shows its own progress
    os.environ.setdefault("MPLCONFIGDIR", str(distillkit_cache_dir() / "matplotlib"))
    _install_local_fonts(config_dir / "Ultralytics")
    return config_dir


def _install_local_fonts(folder: Path) -> None:
    """Ultralytics draws labels with Arial and downloads it when absent; matplotlib ships DejaVuSans."""
    missing = [name for name in _FONT_NAMES if not (folder / name).exists()]
    if not missing:
        return
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    folder.mkdir(parents=True, exist_ok=True)
    for name in missing:
        target = folder / name
        temporary = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(source, temporary)
        os.replace(temporary, target)


@cache
def import_ultralytics_offline() -> ModuleType:
    """The ``ultralytics`` module, configured to never touch the network (no distillkit guard installed)."""
    configure_offline_environment()
    try:
        import ultralytics
        from ultralytics.utils import SETTINGS
    except ImportError as exc:  # pragma: no cover - ultralytics is a dependency
        raise UsageError(f"ultralytics cannot be imported ({exc})", "reinstall distillkit") from exc
    updates = {key: False for key in _INTEGRATION_KEYS if key in SETTINGS and SETTINGS[key] is not False}
    if updates:
        SETTINGS.update(updates)
    _keep_pillow_errors_plain()
    return ultralytics


def _keep_pillow_errors_plain() -> None:
    # ultralytics replaces PIL.Image.open process-wide: on a file Pillow cannot identify it tries to
    # pip-install pi-heif and import it, so every unreadable image anywhere in distillkit would raise
    # ModuleNotFoundError instead of PIL's UnidentifiedImageError. Without pi-heif installed, mark the
    # plugin as handled so the patched open behaves exactly like Pillow's.
    import importlib.util

    if importlib.util.find_spec("pi_heif") is not None:
        return
    try:
        from ultralytics.utils import patches
    except ImportError:  # pragma: no cover - layout of other ultralytics versions
        return
    if hasattr(patches, "_pil_plugins_registered"):
        patches._pil_plugins_registered = True
