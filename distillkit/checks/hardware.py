"""Devices (CUDA GPUs, Apple MPS, the CPU and its INT8 instruction sets), memory and disk space."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Any

from distillkit.checks.model import FAIL, OK, UNAVAILABLE, WARN, Check
from distillkit.cpu_features import INT8_DOT_FLAGS, read_cpuinfo

GIB = 1024**3
#: Below this much free disk a training run (checkpoints, teacher caches, exports) may die midway.
LOW_DISK_GIB = 5.0
#: Below this much available memory, real-size teachers and dataloaders start swapping or get killed.
LOW_MEMORY_GIB = 4.0

# /proc/cpuinfo flags that matter for INT8 speed on CPUs (x86: AVX2, AVX-512, VNNI, AMX; ARM: NEON,
# dot product, int8 matrix multiply, SVE); the report keeps these and drops the rest.
_KNOWN_FLAGS = frozenset(
    {"avx2", "avx512f", "avx512_vnni", "avx512vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"}
    | {"asimd", "asimddp", "i8mm", "sve"}
)
_INT8_FLAGS = INT8_DOT_FLAGS


def _gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


# --------------------------------------------------------------------------------------------------
# CPU


def cpu_facts(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """Model name, core counts and the INT8-relevant instruction sets (None when they cannot be read)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    facts: dict[str, Any] = {
        "type": "cpu",
        "name": platform.processor() or platform.machine(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "flags": None,
    }
    name, flags = read_cpuinfo(cpuinfo)
    if flags is None:
        return facts  # not Linux (or a sandbox hiding /proc): instruction sets unknown
    if name:
        facts["name"] = name
    facts["flags"] = sorted(flags & _KNOWN_FLAGS)
    return facts


# What the summary line names (all flags stay in the data).
_SUMMARY_X86 = {
    "AVX2": ("avx2",),
    "AVX-512 VNNI": ("avx512_vnni", "avx512vnni"),
    "AVX-VNNI": ("avx_vnni",),
    "AMX-INT8": ("amx_int8",),
}
_SUMMARY_ARM = {"NEON": ("asimd",), "SDOT": ("asimddp",), "I8MM": ("i8mm",)}


def _flag_summary(flags: list[str], machine: str) -> str:
    table = _SUMMARY_ARM if machine.lower() in ("aarch64", "arm64") else _SUMMARY_X86
    return ", ".join(f"{label} {'yes' if any(f in flags for f in names) else 'no'}" for label, names in table.items())


def cpu_checks(facts: dict[str, Any]) -> list[Check]:
    """The CPU itself (a tensor round-trip through torch) and what it offers INT8 models."""
    cores = f"{facts['usable_cores']} of {facts['cores']} cores usable"
    checks: list[Check] = []
    try:
        import torch

        x = torch.arange(64, dtype=torch.float32)
        ok = bool(torch.equal((x.reshape(8, 8) @ torch.eye(8)).reshape(-1), x))
        trip = "tensor round-trip ok" if ok else "tensor round-trip gave wrong values"
    except Exception as exc:  # torch broken: reported in packages, not here
        ok, trip = False, f"tensor round-trip failed ({type(exc).__name__})"
    checks.append(Check("devices", "cpu", OK if ok else WARN, f"{facts['name']}, {cores}, {trip}", data=dict(facts)))
    flags = facts["flags"]
    if flags is None:
        checks.append(
            Check(
                "devices",
                "cpu int8",
                WARN,
                "instruction sets unknown (no /proc/cpuinfo on this system)",
                "nothing to fix; benchmark with `distillkit optimize --quantize int8` to see the speed-up",
            )
        )
        return checks
    summary = _flag_summary(flags, facts["machine"])
    fast = [flag for flag in _INT8_FLAGS if flag in flags]
    if fast:
        checks.append(Check("devices", "cpu int8", OK, f"{summary}: fast INT8 kernels", data={"flags": flags}))
    else:
        checks.append(
            Check(
                "devices",
                "cpu int8",
                WARN,
                f"{summary}: INT8 runs on slower kernels",
                "prefer --quantize int8 (static) to int8-dynamic here: dynamic INT8 can be slower than fp32",
                data={"flags": flags},
            )
        )
    return checks


# --------------------------------------------------------------------------------------------------
# GPUs


def _nvidia_driver_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def _cuda_round_trip(torch: Any, index: int) -> tuple[bool, str, dict[str, Any]]:
    """Copy a tensor to GPU ``index`` and back, and run a matmul under autocast (bf16 or fp16)."""
    device = torch.device("cuda", index)
    x = torch.arange(1024, dtype=torch.float32)
    y = (x.to(device) * 2).cpu()
    torch.cuda.synchronize(device)
    if not torch.equal(y, x * 2):
        return False, "tensor round-trip gave wrong values", {}
    with torch.cuda.device(index):
        bf16 = bool(torch.cuda.is_bf16_supported())
    dtype = torch.bfloat16 if bf16 else torch.float16
    a = torch.ones(16, 16, device=device)
    with torch.autocast("cuda", dtype=dtype):
        product = a @ a
    torch.cuda.synchronize(device)
    if product.dtype != dtype or float(product[0, 0]) != 16.0:
        return False, f"autocast {dtype} matmul gave wrong results", {}
    amp = "AMP bf16 + fp16" if bf16 else "AMP fp16 (no bf16)"
    return True, f"round-trip ok, {amp}", {"bf16": bf16, "amp": "bf16" if bf16 else "fp16"}


def gpu_checks() -> tuple[list[Check], list[dict[str, Any]]]:
    """One check per CUDA device (required: a visible GPU that cannot run a tensor is broken), or why none."""
    try:
        import torch
    except Exception:  # torch broken: reported in packages
        return [Check("devices", "cuda", UNAVAILABLE, "torch does not import", "see the torch line above")], []
    build = torch.version.cuda
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        data = {"cuda_build": build, "driver_present": _nvidia_driver_present(), "CUDA_VISIBLE_DEVICES": visible}
        if build is None:
            detail = f"torch {torch.__version__} is a CPU-only build"
            fix = "install a CUDA build of torch on GPU machines: pip install --force-reinstall torch torchvision"
            return [Check("devices", "cuda", UNAVAILABLE, detail, fix, data=data)], []
        if data["driver_present"]:
            detail = f"an NVIDIA driver is loaded but torch (CUDA {build} build) cannot use any GPU"
            if visible is not None:
                detail += f" (CUDA_VISIBLE_DEVICES={visible!r})"
            fix = f"install a driver that supports CUDA {build} (nvidia-smi shows it), or a torch build for yours"
            return [Check("devices", "cuda", WARN, detail, fix, data=data)], []
        detail = "no CUDA device visible: everything runs on the CPU"
        if visible is not None:
            detail += f" (CUDA_VISIBLE_DEVICES={visible!r})"
        fix = "use a machine with an NVIDIA GPU for real training runs"
        return [Check("devices", "cuda", UNAVAILABLE, detail, fix, data=data)], []

    checks: list[Check] = []
    devices: list[dict[str, Any]] = []
    for index in range(torch.cuda.device_count()):
        name = f"cuda:{index}"
        facts: dict[str, Any] = {"type": "cuda", "index": index}
        try:
            props = torch.cuda.get_device_properties(index)
            facts.update(
                name=props.name,
                memory_bytes=int(props.total_memory),
                compute_capability=f"{props.major}.{props.minor}",
                multiprocessors=int(props.multi_processor_count),
            )
            free, _total = torch.cuda.mem_get_info(index)
            facts["free_bytes"] = int(free)
            ok, trip, amp = _cuda_round_trip(torch, index)
            facts.update(amp)
        except Exception as exc:  # "no kernel image", ECC errors, out of memory, ...
            ok, trip = False, f"tensor round-trip failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})"
        facts["round_trip"] = ok
        devices.append(facts)
        memory = (
            f"{_gib(facts['memory_bytes'])} ({_gib(facts['free_bytes'])} free)" if "free_bytes" in facts else "memory ?"
        )
        detail = f"{facts.get('name', '?')}, {memory}, compute {facts.get('compute_capability', '?')}, {trip}"
        fix = None
        if not ok:
            arch = ", ".join(torch.cuda.get_arch_list()) or "none"
            fix = f"check nvidia-smi; torch {torch.__version__} (CUDA {build}) has kernels for {arch}"
        checks.append(Check("devices", name, OK if ok else FAIL, detail, fix, required=True, data=facts))
    return checks, devices


def mps_checks() -> tuple[list[Check], list[dict[str, Any]]]:
    try:
        import torch

        backend = getattr(torch.backends, "mps", None)
        if backend is None or not backend.is_available():
            return [], []
        y = (torch.arange(8.0, device="mps") * 2).cpu()
        ok = bool(torch.equal(y, torch.arange(8.0) * 2))
    except Exception:  # an MPS failure only removes a device
        ok = False
    facts = {"type": "mps", "name": "Apple GPU (MPS)", "round_trip": ok}
    status = OK if ok else WARN
    return [Check("devices", "mps", status, "Apple GPU, round-trip " + ("ok" if ok else "failed"), data=facts)], [facts]


# --------------------------------------------------------------------------------------------------
# memory and disk


def memory_facts(meminfo: Path = Path("/proc/meminfo")) -> dict[str, int | None]:
    """Total and available memory in bytes, and a cgroup (container) limit when one is set."""
    facts: dict[str, int | None] = {"total_bytes": None, "available_bytes": None, "cgroup_limit_bytes": None}
    try:
        for line in meminfo.read_text().splitlines():
            key, _, value = line.partition(":")
            parts = value.split()
            if key in ("MemTotal", "MemAvailable") and parts:
                facts["total_bytes" if key == "MemTotal" else "available_bytes"] = int(parts[0]) * 1024
    except (OSError, ValueError):
        pass
    if facts["total_bytes"] is None:
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            facts["total_bytes"] = page * os.sysconf("SC_PHYS_PAGES")
            facts["available_bytes"] = page * os.sysconf("SC_AVPHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            pass
    for limit_file in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = limit_file.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and (facts["total_bytes"] is None or int(text) < facts["total_bytes"]):
            facts["cgroup_limit_bytes"] = int(text)
        break
    return facts


def memory_check() -> Check:
    facts = memory_facts()
    total, available, limit = facts["total_bytes"], facts["available_bytes"], facts["cgroup_limit_bytes"]
    if total is None:
        return Check("resources", "memory", WARN, "unknown (no /proc/meminfo or sysconf)", data=dict(facts))
    detail = f"{_gib(total)} total"
    if available is not None:
        detail += f", {_gib(available)} available"
    if limit is not None:
        detail += f", container limit {_gib(limit)}"
    known = [value for value in (available, limit) if value is not None]
    usable = min(known) if known else total
    if usable < LOW_MEMORY_GIB * GIB:
        fix = "close other jobs, or lower student.batch / teacher batch_size and dataloader workers"
        return Check("resources", "memory", WARN, detail + f" (under {LOW_MEMORY_GIB:g} GiB)", fix, data=dict(facts))
    return Check("resources", "memory", OK, detail, data=dict(facts))


def _existing(path: Path) -> Path:
    """``path``, or its nearest existing parent (a cache folder that is not created yet)."""
    path = path.expanduser().absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def disk_check(name: str, path: Path) -> Check:
    where = _existing(path)
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        return Check(
            "resources", name, WARN, f"{path}: disk usage unreadable ({exc.strerror})", data={"path": str(path)}
        )
    data = {"path": str(path), "free_bytes": usage.free, "total_bytes": usage.total}
    detail = f"{_gib(usage.free)} free of {_gib(usage.total)} ({path})"
    if usage.free < LOW_DISK_GIB * GIB:
        fix = f"free space there, or point it elsewhere ({_DISK_HINTS.get(name, 'run from another folder')})"
        return Check("resources", name, WARN, detail + f", under {LOW_DISK_GIB:g} GiB", fix, data=data)
    return Check("resources", name, OK, detail, data=data)


_DISK_HINTS = {
    "disk: distillkit cache": "set DISTILLKIT_CACHE",
    "disk: Hugging Face cache": "set HF_HOME or HF_HUB_CACHE",
    "disk: working folder": "run from, or write --output to, another folder",
}


def resource_checks() -> list[Check]:
    from distillkit.teachers.weights import hub_cache_dir
    from distillkit.ultralytics_env import distillkit_cache_dir

    return [
        memory_check(),
        disk_check("disk: distillkit cache", distillkit_cache_dir()),
        disk_check("disk: Hugging Face cache", hub_cache_dir()),
        disk_check("disk: working folder", Path.cwd()),
    ]
