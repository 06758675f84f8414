"""What the CPU offers INT8 kernels, read from ``/proc/cpuinfo`` (ground floor: no distillkit imports).

`checks` reports it; `optimize` decides by it whether onnxruntime's INT8 weights must be 7-bit:
x86 CPUs without VNNI/AMX multiply uint8 activations by int8 weights with ``vpmaddubsw``, whose 16-bit
sums saturate with full 8-bit weights (measured here on a BCCD yolov8n: -6.5 points mAP50-95 with
8-bit weights, -0.2 with 7-bit).
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

#: Flags that give fast INT8 matrix products without saturation (onnxruntime's and OpenVINO's INT8 kernels use them).
INT8_DOT_FLAGS = ("avx512_vnni", "avx512vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def read_cpuinfo(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str | None, set[str] | None]:
    """(model name, every flag) from ``/proc/cpuinfo``; (None, None) when it cannot be read (not Linux)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None, None
    name: str | None = None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and value.strip():
            name = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return name, flags


@lru_cache(maxsize=1)
def int8_weights_need_reduced_range() -> bool:
    """True on an x86 CPU without VNNI/AMX (or one whose flags cannot be read): use 7-bit INT8 weights."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False  # ARM's int8 kernels widen before summing: no saturation
    _, flags = read_cpuinfo()
    return flags is None or not any(flag in flags for flag in INT8_DOT_FLAGS)
