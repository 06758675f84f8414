"""Writing a configuration into an experiment folder, with the metadata that makes it traceable.

``<exp>/<filename>`` gets the merged YAML; ``<exp>/metadata.json`` gets what is needed to know
what produced it: dataset path and content hash, counts, time, library versions, Python and
platform, the git commit when run inside a git work tree, and the overrides used. Both files are
written atomically. Several commands may write configs into the same folder (teacher_config.yaml,
distillation_config.yaml...): metadata.json describes the latest write and keeps one entry per
config file under ``configs`` so earlier entries are not lost.
"""

from __future__ import annotations

import os
import platform
import subprocess
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import orjson
import yaml

from distillkit import __version__
from distillkit.config.build import ExperimentConfig, validate_section
from distillkit.config.defaults import load_defaults
from distillkit.config.explain import unknown_section_error
from distillkit.config.schema import ALL_SCHEMAS, REMOVED_KEYS, SECTIONS
from distillkit.errors import ConfigError, UsageError
from distillkit.io import atomic_write_json, atomic_write_text, sha256_bytes, sha256_file

METADATA_FILENAME = "metadata.json"

#: Distributions whose versions are recorded; alternatives are tried in order (first installed wins).
TRACKED_PACKAGES: dict[str, tuple[str, ...]] = {
    "distillkit": ("distillkit",),
    "torch": ("torch",),
    "torchvision": ("torchvision",),
    "transformers": ("transformers",),
    "peft": ("peft",),
    "ultralytics": ("ultralytics", "ultralytics-opencv-headless"),  # the headless build is what we install
    "timm": ("timm",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "numpy": ("numpy",),
    "pydantic": ("pydantic",),
}


def package_versions() -> dict[str, str | None]:
    """Installed versions of the tracked packages (None when absent), read without importing them."""
    versions: dict[str, str | None] = {}
    for name, distributions in TRACKED_PACKAGES.items():
        found: str | None = None
        for distribution in distributions:
            try:
                found = importlib_metadata.version(distribution)
                break
            except importlib_metadata.PackageNotFoundError:
                continue
        versions[name] = found
    if versions["distillkit"] is None:  # running from a source checkout that is not installed
        versions["distillkit"] = __version__
    return versions


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},  # never take the index lock of a busy repo
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_state(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Commit, dirty flag and root of the git work tree containing ``folder``; None outside one."""
    path = Path(folder)
    if not path.is_dir():
        path = path.parent
    if not path.is_dir():
        return None
    if _git(["rev-parse", "--is-inside-work-tree"], path) != "true":
        return None
    commit = _git(["rev-parse", "HEAD"], path)  # None in a repository without commits
    status = _git(["status", "--porcelain", "--untracked-files=no"], path)
    return {
        "commit": commit,
        "dirty": None if status is None else bool(status),
        "root": _git(["rev-parse", "--show-toplevel"], path),
    }


def _git_record(dataset_path: Path | None) -> dict[str, Any]:
    """The git state of the working folder, else of the dataset's folder, else all None."""
    places: list[tuple[str, Path]] = [("cwd", Path.cwd())]
    if dataset_path is not None:
        places.append(("dataset", dataset_path))
    for source, place in places:
        state = git_state(place)
        if state is not None:
            return {**state, "source": source}
    return {"commit": None, "dirty": None, "root": None, "source": None}


def _dataset_record(config: ExperimentConfig, dataset_path: Path | None) -> dict[str, Any]:
    record: dict[str, Any] = {"path": None, "sha256": None, "size_bytes": None}
    if dataset_path is not None:
        record["path"] = Path(os.path.abspath(dataset_path)).as_posix()
        if dataset_path.is_file():
            record["sha256"] = sha256_file(dataset_path)
            record["size_bytes"] = dataset_path.stat().st_size
    info = config.dataset_info
    if info is not None:
        record.update(
            images=info.num_images,
            annotations=info.num_annotations,
            classes=info.num_classes,
            empty_images=info.num_empty_images,
            has_boxes=info.has_boxes,
            has_masks=info.has_masks,
        )
    return record


def _previous_configs(path: Path) -> dict[str, Any]:
    """The ``configs`` entries of an existing metadata.json (empty when absent or unreadable)."""
    if not path.is_file():
        return {}
    try:
        previous = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    configs = previous.get("configs") if isinstance(previous, dict) else None
    return dict(configs) if isinstance(configs, dict) else {}


def build_metadata(
    config: ExperimentConfig,
    config_text: str,
    filename: str,
    dataset_path: Path | None,
    extra_metadata: Mapping[str, Any] | None,
    previous_configs: Mapping[str, Any],
) -> dict[str, Any]:
    """The metadata.json document for one config write."""
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    entry = {
        "sha256": sha256_bytes(config_text.encode("utf-8")),
        "created": created,
        "sections": config.names,
        "overrides": list(config.overrides),
    }
    document: dict[str, Any] = {
        "distillkit_version": __version__,
        "created": created,
        "config_file": filename,
        "reproduce_config": config.command_line(),
        "overrides": list(config.overrides),
        "dataset": _dataset_record(config, dataset_path),
        "versions": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": _git_record(dataset_path),
        "configs": {**previous_configs, filename: entry},
    }
    if extra_metadata:
        document["extra"] = dict(extra_metadata)
    return document


def write_experiment_config(
    exp_dir: str | os.PathLike[str],
    config: ExperimentConfig,
    filename: str = "config.yaml",
    dataset_path: str | os.PathLike[str] | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``config`` as ``exp_dir/filename`` plus ``exp_dir/metadata.json``; return the config path.

    ``dataset_path`` defaults to the one the config was built with. ``extra_metadata`` (JSON-able)
    is stored under ``extra``. The folder is created if needed; both writes are atomic.
    """
    folder = Path(exp_dir)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} exists and is not a folder", "pass an experiment folder to --output")
    if Path(filename).name != filename or filename in ("", ".", "..", METADATA_FILENAME):
        raise UsageError(f"invalid config file name {filename!r}", "use a plain name like config.yaml")
    data_path = Path(dataset_path) if dataset_path is not None else config.dataset_path
    text = config.to_yaml()
    config_path = folder / filename
    metadata_path = folder / METADATA_FILENAME
    document = build_metadata(config, text, filename, data_path, extra_metadata, _previous_configs(metadata_path))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config_path, text)
        atomic_write_json(metadata_path, document)
    except OSError as exc:
        raise UsageError(f"cannot write to {folder}: {exc.strerror or exc}", "check the --output folder") from exc
    return config_path


def load_experiment_config(path: str | os.PathLike[str]) -> ExperimentConfig:
    """Read a configuration written by ``write_experiment_config`` back, validating every section.

    Keys added to a section since the file was written take their shipped defaults; keys removed
    since (``REMOVED_KEYS``) are ignored with a ``DeprecationWarning``.

    Later commands use this to pick up what an earlier one resolved (e.g. the student reading the
    teacher's ``data`` section). The dataset path comes from the ``data`` section when present.
    """
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"config file not found: {file}", "check the path")
    try:
        tree = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{file} is not a readable YAML configuration ({exc})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{file} must hold a mapping of sections")
    sections = {}
    for name in ALL_SCHEMAS:  # canonical order, whatever the file's order
        if name in tree:
            if not isinstance(tree[name], dict):
                raise ConfigError(f"section '{name}' in {file} must be a mapping of keys")
            # A config written by an earlier version lacks the keys added since: they take the shipped
            # defaults, so older experiments stay readable (keys it holds keep their values). Keys removed
            # since are left out.
            shipped = load_defaults(name) if name in SECTIONS else {}
            sections[name] = validate_section(name, {**shipped, **_without_removed_keys(name, tree[name], file)})
    for name in tree:
        if name not in ALL_SCHEMAS:
            raise unknown_section_error(str(name), list(ALL_SCHEMAS))
    dataset = sections["data"].model_dump().get("dataset") if "data" in sections else None
    return ExperimentConfig(sections=sections, dataset_path=Path(dataset) if dataset else None)


def _without_removed_keys(section: str, values: dict[str, Any], file: Path) -> dict[str, Any]:
    """``values`` less the keys ``section`` no longer has, named in one ``DeprecationWarning``."""
    removed = REMOVED_KEYS.get(section, {})
    dropped = [key for key in values if key in removed]
    if dropped:
        why = "; ".join(f"{section}.{key}: {removed[key]}" for key in dropped)
        warnings.warn(f"{file}: settings removed since it was written are ignored ({why})", DeprecationWarning, 3)
    return {key: value for key, value in values.items() if key not in removed}
