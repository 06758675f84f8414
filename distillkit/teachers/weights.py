"""Where teacher weights come from, and the preprocessing stored with them.

Training servers are often offline, so weights are looked up in this order:

1. a local folder (what ``save_pretrained`` writes, as users copy it to offline machines);
2. the Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME`` read at call time, so a value exported
   just before the command counts);
3. a download, only when the machine is online (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` unset).

Whatever the source, ``resolve_weights`` returns a local folder path, so every later
``from_pretrained`` call reads files only and never touches the network. A missing weight is a
one-line ``UsageError`` naming the flag that fixes it.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path
from typing import Any, TypeVar

from distillkit.config.schema import PreprocessingConfig
from distillkit.errors import UsageError

#: Which model a weights flag selects, for the error messages.
FLAG_MODELS = {"--dino-weights": "Grounding DINO", "--sam-weights": "SAM"}
#: The ``model_type`` in config.json that each flag expects (swapped folders fail deep inside transformers).
FLAG_MODEL_TYPES = {"--dino-weights": "grounding-dino", "--sam-weights": "sam"}

# Hugging Face repository ids: "name" or "owner/name" of word characters, dots and dashes.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# What a model folder needs for from_pretrained: configs, tokenizer files, safetensors weights.
_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]
#: Files in which transformers stores preprocessing (v4 wrote the first, v5 the second).
PREPROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
_OFF_VALUES = {"1", "true", "yes", "on"}

# PIL resampling codes, as the transformers image processors store them.
_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "area": 4}

P = TypeVar("P")


def quiet_transformers() -> None:
    """Library code never prints: silence transformers' loading bars and info logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def hub_offline() -> bool:
    """True when the user asked Hugging Face libraries not to use the network."""
    return any(
        os.environ.get(name, "").strip().lower() in _OFF_VALUES for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_cache_dir() -> Path:
    """The hub cache folder, read from the environment now (not at import time as huggingface_hub does)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _has_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _WEIGHT_FILES)


def _model_label(flag: str) -> str:
    return FLAG_MODELS.get(flag, "model")


def _check_local_folder(folder: Path, flag: str) -> str:
    label = _model_label(flag)
    if not folder.is_dir():
        raise UsageError(
            f"{label} weights {folder} is a file, not a folder",
            f"pass {flag} DIR (a folder written by save_pretrained)",
        )
    if not (folder / "config.json").is_file() or not _has_weights(folder):
        raise UsageError(
            f"{folder} does not hold {label} weights (config.json and model.safetensors are expected)",
            f"pass {flag} DIR (a folder written by save_pretrained)",
        )
    expected = FLAG_MODEL_TYPES.get(flag)
    try:
        found = json.loads((folder / "config.json").read_text()).get("model_type")
    except (ValueError, AttributeError, OSError):
        found = None  # an unreadable config is transformers' to report
    if expected is not None and isinstance(found, str) and found != expected:
        raise UsageError(
            f"{folder} holds '{found}' weights, not {label} ('{expected}')",
            f"pass {flag} DIR (a {label} folder written by save_pretrained)",
        )
    return str(folder)


def _cached_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of ``repo_id`` when its config and weights are both there."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=hub_cache_dir())
    if not isinstance(found, str):
        return None
    folder = Path(found).parent
    return folder if _has_weights(folder) else None


def resolve_weights(source: str | os.PathLike[str], *, flag: str) -> str:
    """A local folder holding the weights named by ``source`` (a folder path or a hub id).

    Raises UsageError (one line, naming ``flag``) when the folder is not a model folder, or when a
    hub id is neither cached nor downloadable (offline, or the download failed).
    """
    text = os.fspath(source)
    label = _model_label(flag)
    path = Path(text).expanduser()
    if path.exists():
        return _check_local_folder(path, flag)
    # A hub id has at most one "/" and no leading "." "/" "~": anything else was meant as a folder.
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    if looks_like_path or not _HUB_ID.match(text):
        raise UsageError(f"{label} weights folder not found: {text}", f"check the path given to {flag}")

    cached = _cached_snapshot(text)
    if cached is not None:
        return str(cached)
    fix = f"pass {flag} DIR (a folder written by save_pretrained)"
    if hub_offline():
        raise UsageError(
            f"{label} weights '{text}' are not in the local Hugging Face cache and the machine is offline",
            fix,
        )
    return _download(text, label, fix)


def _download(repo_id: str, label: str, fix: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, cache_dir=hub_cache_dir(), allow_patterns=_DOWNLOAD_PATTERNS))
    except Exception as exc:  # network, authentication, unknown repository: all end the same way for the user
        # huggingface_hub's messages run to several lines; keep the one-line error readable.
        reason = textwrap.shorten(str(exc), width=160, placeholder=" …")
        raise UsageError(
            f"{label} weights '{repo_id}' are not in the local Hugging Face cache and the download failed ({reason})",
            fix,
        ) from exc
    if not (folder / "config.json").is_file() or not _has_weights(folder):
        raise UsageError(f"the download of '{repo_id}' holds no safetensors weights for {label}", fix)
    return str(folder)


# --------------------------------------------------------------------------------------------------
# preprocessing


def stored_preprocessing(folder: str | os.PathLike[str]) -> Path | None:
    """The preprocessing file saved with the weights in ``folder``, if any."""
    for name in PREPROCESSOR_FILES:
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    return None


def image_processor_kwargs(defaults: PreprocessingConfig) -> dict[str, Any]:
    """``defaults/preprocessing.yaml`` expressed as transformers image-processor arguments."""
    return {
        "image_mean": list(defaults.mean),
        "image_std": list(defaults.std),
        "resample": _RESAMPLE[defaults.interpolation],
        "do_normalize": True,
        "do_rescale": True,
    }


def _image_processor_class(processor_cls: type) -> type:
    import transformers

    name = processor_cls.__name__.replace("Processor", "ImageProcessor")
    image_cls = getattr(transformers, name, None)
    if image_cls is None:
        raise TypeError(f"no image processor class {name} for {processor_cls.__name__}")
    return image_cls


def load_processor(
    cls: type[P], source: str | os.PathLike[str], defaults: PreprocessingConfig, **image_overrides: Any
) -> P:
    """The processor of ``cls`` (e.g. ``GroundingDinoProcessor``, ``SamProcessor``) for a weights folder.

    The preprocessing stored with the weights is honoured; when none is stored, the image processor
    is built from ``defaults`` (mean, std, interpolation). ``image_overrides`` (e.g. ``size``) are
    applied on top in both cases: they are explicit teacher settings. ``source`` is a local folder,
    as ``resolve_weights`` returns.
    """
    folder = Path(source)
    if stored_preprocessing(folder) is not None:
        processor = cls.from_pretrained(str(folder), local_files_only=True)  # type: ignore[attr-defined]
        image_processor = processor.image_processor
        for key, value in image_overrides.items():
            setattr(image_processor, key, value)
        return processor
    image_processor = _image_processor_class(cls)(**{**image_processor_kwargs(defaults), **image_overrides})
    parts: dict[str, Any] = {"image_processor": image_processor}
    if "tokenizer" in cls.get_attributes():  # type: ignore[attr-defined]
        from transformers import AutoTokenizer

        parts["tokenizer"] = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return cls(**parts)
