"""``run_checks``: every check in report order."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from distillkit.checks import commands, hardware, network, packages, weights
from distillkit.checks.model import Check, ChecksReport


def run_checks(
    dino_weights: str | None = None,
    sam_weights: str | None = None,
    *,
    import_probe: bool = True,
    probe_timeout: float = network.PROBE_TIMEOUT_S,
    environment: Mapping[str, str] | None = None,
) -> ChecksReport:
    """What this machine can do: versions, devices, weights, offline state, resources, commands.

    ``dino_weights`` / ``sam_weights``: folders (or hub ids) given by the user; a problem with one
    is a required failure. ``import_probe``: also import the stack in a fresh interpreter and report
    any network attempt (takes as long as those imports, ~10 s). ``environment``: the variables that
    probe runs with [default: this process's, as they were before ultralytics was configured here].
    """
    start = time.perf_counter()
    probe_env = dict(os.environ if environment is None else environment)
    checks: list[Check] = []

    checks += packages.python_checks()
    core, importable = packages.core_package_checks()
    checks += core
    runtime_list, runtimes = packages.runtime_checks()
    checks += runtime_list

    cpu = hardware.cpu_facts()
    gpu_list, gpus = hardware.gpu_checks()
    mps_list, mps = hardware.mps_checks()
    checks += hardware.cpu_checks(cpu) + gpu_list + mps_list

    teacher_list, teachers = weights.teacher_weight_checks(
        {"--dino-weights": dino_weights, "--sam-weights": sam_weights}
    )
    checks += teacher_list
    checks.append(weights.ultralytics_weight_check())

    ultralytics_line = network.ultralytics_offline_check()
    checks += [ultralytics_line, network.hub_mode_check()]
    if import_probe:
        checks.append(network.import_probe_check(env=probe_env, timeout=probe_timeout))

    checks += hardware.resource_checks()

    from distillkit.export.optimize import FORMATS
    from distillkit.export.tensorrt_export import tensorrt_available

    facts = commands.Facts(
        importable=importable,
        teachers=teachers,
        runtimes=runtimes,
        devices=gpus + mps,
        tensorrt=tensorrt_available(),
        ultralytics_guarded=ultralytics_line.status == "ok",
        optimize_formats=tuple(FORMATS),
    )
    checks += commands.command_checks(facts)

    versions = {c.name: c.data.get("version") for c in checks if c.section in ("packages", "runtimes")}
    return ChecksReport(
        checks=checks, versions=versions, devices=[cpu, *gpus, *mps], seconds=time.perf_counter() - start
    )
