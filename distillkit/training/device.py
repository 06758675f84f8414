"""Which device to train on, and which mixed precision it supports."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distillkit.errors import UsageError
from distillkit.training.distributed import world_info


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(requested: str | torch.device | None = "auto") -> torch.device:
    """Turn a device name (auto | cpu | cuda | cuda:N | N | mps) into a torch.device that exists.

    ``auto`` picks CUDA, then MPS, then CPU. Under ``torchrun`` a bare ``cuda`` (or ``auto`` on a
    CUDA machine) means this process's GPU, ``cuda:LOCAL_RANK``. A device that is not visible is a
    UsageError telling the user what to pass instead.
    """
    name = str(requested) if isinstance(requested, torch.device) else (requested or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif _mps_available():
            name = "mps"
        else:
            name = "cpu"
    if name.replace(",", "").isdigit():
        # Ultralytics-style GPU indices ("0", "0,1"): one process uses the first listed GPU
        # (or its LOCAL_RANK-th one under torchrun).
        indices = [int(part) for part in name.split(",")]
        info = world_info()
        name = f"cuda:{indices[info.local_rank % len(indices)] if info.distributed else indices[0]}"
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise UsageError("mps requested but no Apple-silicon GPU is available", "pass --device cpu")
        return torch.device("mps")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("cuda requested but no CUDA device is visible", "pass --device cpu")
        if name == "cuda":
            info = world_info()
            index = info.local_rank if info.distributed else torch.cuda.current_device()
        else:
            index = int(name.split(":", 1)[1])
        count = torch.cuda.device_count()
        if index >= count:
            raise UsageError(
                f"{name if name != 'cuda' else f'cuda:{index}'} requested but only {count} CUDA device(s) are visible",
                f"pass --device cuda:0 .. cuda:{count - 1} or --device cpu",
            )
        return torch.device("cuda", index)
    raise UsageError(f"unknown device '{requested}'", "use auto, cpu, cuda, cuda:N or mps")


def gpu_indices(requested: str) -> list[int]:
    """The GPUs an ultralytics-style device list names ("0,1,2"); [] for anything else (cpu, cuda:0, auto, 0).

    A list of two or more is a multi-GPU run; every index must be visible, each once. A one-line
    UsageError says what this machine has otherwise.
    """
    name = (requested or "").strip().lower().removeprefix("cuda:")
    if "," not in name:
        return []
    parts = [part.strip() for part in name.split(",")]
    if not all(part.isdigit() for part in parts):
        raise UsageError(f"unknown device '{requested}'", "name GPUs by index, e.g. --device 0,1")
    indices = [int(part) for part in parts]
    if len(set(indices)) != len(indices):
        raise UsageError(f"--device {requested} names a GPU twice", "list each GPU once, e.g. --device 0,1")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [index for index in indices if index >= count]
    if missing:
        visible = f"GPUs 0..{count - 1}" if count else "no CUDA device"
        raise UsageError(
            f"--device {requested} asks for {len(indices)} GPUs but this machine shows {visible}",
            "pass the indices of visible GPUs, one GPU (--device 0) or --device cpu",
        )
    return indices


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: autocast dtype (None: full precision) and whether to scale the loss."""

    mode: str  # "off" | "bf16" | "fp16"
    dtype: torch.dtype | None
    use_scaler: bool

    @property
    def enabled(self) -> bool:
        return self.dtype is not None


def resolve_precision(amp: str, device: torch.device) -> Precision:
    """``auto``: bf16 on CUDA devices that support it, else fp16 on CUDA, full precision elsewhere.

    bf16 needs no loss scaling (same exponent range as fp32); fp16 does, through a GradScaler.
    """
    if amp == "off":
        return Precision("off", None, False)
    if amp == "auto":
        if device.type != "cuda":
            return Precision("off", None, False)
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UsageError(
                f"training_dynamics.amp=bf16 but {torch.cuda.get_device_name(device)} does not support bfloat16",
                "set training_dynamics.amp=fp16 or auto",
            )
        if device.type == "mps":
            raise UsageError(
                "training_dynamics.amp=bf16 is not supported on mps", "set training_dynamics.amp=fp16 or off"
            )
        return Precision("bf16", torch.bfloat16, False)
    if amp == "fp16":
        if device.type not in ("cuda", "mps"):
            raise UsageError(
                f"training_dynamics.amp=fp16 needs a GPU but training runs on {device.type}",
                "set training_dynamics.amp=off (or bf16)",
            )
        return Precision("fp16", torch.float16, True)
    raise UsageError(f"unknown training_dynamics.amp '{amp}'", "use auto, bf16, fp16 or off")
