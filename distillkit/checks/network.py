"""Offline state: what distillkit turns off in ultralytics, the Hugging Face hub mode, and a probe
that imports the whole stack in a fresh interpreter and records every network attempt it makes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from distillkit.checks.model import OK, WARN, Check

#: What the probe imports: the stack as every distillkit command loads it (ultralytics through the guard).
STACK_IMPORTS = (
    "import torch",
    "import torchvision",
    "from distillkit.ultralytics_env import import_ultralytics; import_ultralytics()",
    "import transformers",
    "import peft",
    "import timm",
    "import onnxruntime",
)
PROBE_TIMEOUT_S = 120.0

# Run with `python -c`: patch the socket layer so every attempt to reach a non-loopback host is
# recorded and refused (as on an offline server, without waiting for timeouts), then run each import.
_PROBE = r"""
import json, socket, sys
attempts, errors = [], []
def _local(host):
    host = "" if host is None else str(host)
    return host in ("", "localhost", "::1", "0.0.0.0") or host.startswith("127.")
def _record(call, host, port=None):
    attempts.append({"call": call, "host": str(host), "port": port})
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
_getaddrinfo, _gethostbyname, _gethostbyname_ex = socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex
def _address(address):
    return (address[0], address[1]) if isinstance(address, tuple) and len(address) >= 2 else (address, None)
def connect(self, address):
    host, port = _address(address)
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(host):
        _record("socket.connect", host, port)
        raise OSError(101, "Network is unreachable (blocked by distillkit checks)")
    return _connect(self, address)
def connect_ex(self, address):
    host, port = _address(address)
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(host):
        _record("socket.connect_ex", host, port)
        return 101
    return _connect_ex(self, address)
def getaddrinfo(host, port, *args, **kwargs):
    if not _local(host):
        _record("socket.getaddrinfo", host, port)
        raise socket.gaierror(-3, "Temporary failure in name resolution (blocked by distillkit checks)")
    return _getaddrinfo(host, port, *args, **kwargs)
def gethostbyname(host):
    if not _local(host):
        _record("socket.gethostbyname", host)
        raise socket.gaierror(-3, "Temporary failure in name resolution (blocked by distillkit checks)")
    return _gethostbyname(host)
def gethostbyname_ex(host):
    if not _local(host):
        _record("socket.gethostbyname_ex", host)
        raise socket.gaierror(-3, "Temporary failure in name resolution (blocked by distillkit checks)")
    return _gethostbyname_ex(host)
_create_connection = socket.create_connection
def create_connection(address, *args, **kwargs):
    host, port = _address(address)
    if not _local(host):
        _record("socket.create_connection", host, port)
        raise OSError(101, "Network is unreachable (blocked by distillkit checks)")
    return _create_connection(address, *args, **kwargs)
socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex = getaddrinfo, gethostbyname, gethostbyname_ex
socket.create_connection = create_connection
for statement in json.loads(sys.argv[1]):
    try:
        exec(statement, {})
    except BaseException as exc:
        errors.append({"statement": statement, "error": type(exc).__name__ + ": " + (str(exc).splitlines() or [""])[0]})
sys.stdout.flush()
print("\n@@distillkit-probe@@" + json.dumps({"attempts": attempts, "errors": errors}))
"""
_MARKER = "@@distillkit-probe@@"


def network_attempts_on_import(
    imports: Sequence[str] = STACK_IMPORTS,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = PROBE_TIMEOUT_S,
) -> dict[str, Any]:
    """Run ``imports`` in a fresh interpreter with the socket layer recording (and refusing) network use.

    Returns ``{"attempts": [{call, host, port}], "errors": [{statement, error}], "timed_out": bool}``;
    loopback connections are allowed and not recorded.
    """
    command = [sys.executable, "-c", _PROBE, json.dumps(list(imports))]
    repo_root = str(Path(__file__).resolve().parents[2])  # distillkit importable even when not installed
    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, environment.get("PYTHONPATH")) if p)
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=environment, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return {"attempts": [], "errors": [], "timed_out": True}
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(_MARKER):
            result = json.loads(line[len(_MARKER) :])
            result["timed_out"] = False
            return result
    tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
    return {"attempts": [], "errors": [{"statement": "(probe)", "error": tail}], "timed_out": False}


def import_probe_check(env: Mapping[str, str] | None = None, timeout: float = PROBE_TIMEOUT_S) -> Check:
    name = "network on import"
    result = network_attempts_on_import(env=env, timeout=timeout)
    if result["timed_out"]:
        detail = f"importing the stack did not finish in {timeout:g} s (a network wait, or a very slow disk)"
        return Check(
            "offline", name, WARN, detail, "run `distillkit checks` again; if it repeats, report it", data=result
        )
    hosts = sorted({f"{a['host']}" + (f":{a['port']}" if a.get("port") else "") for a in result["attempts"]})
    errors = [e["error"] for e in result["errors"]]
    if hosts:
        detail = f"importing the stack tried to reach {', '.join(hosts)}"
        fix = "export HF_HUB_OFFLINE=1, and report the host to distillkit (its imports should stay offline)"
        return Check("offline", name, WARN, detail, fix, data=result)
    if errors:
        detail = f"no network attempt, but imports failed in a fresh process: {'; '.join(errors)}"
        return Check("offline", name, WARN, detail, "see the packages section", data=result)
    detail = "importing the stack in a fresh interpreter made no network attempt"
    return Check("offline", name, OK, detail, data=result)


def ultralytics_offline_check() -> Check:
    """What ``ultralytics_offline`` turned off, read back from the environment and ultralytics' settings."""
    from distillkit import ultralytics_env, ultralytics_offline

    name = "ultralytics network features"
    try:
        ultralytics_env.import_ultralytics()
        import ultralytics.utils as ultra_utils
        from ultralytics.utils import SETTINGS
    except Exception as exc:  # reported as a required failure in packages
        return Check("offline", name, WARN, f"ultralytics does not import ({type(exc).__name__})", "see packages")
    config_dir = Path(os.environ.get("YOLO_CONFIG_DIR", "?"))
    env = {key: os.environ.get(key) for key in ("YOLO_OFFLINE", "YOLO_AUTOINSTALL", "YOLO_CONFIG_DIR")}
    settings = {key: SETTINGS[key] for key in ultralytics_offline._INTEGRATION_KEYS if key in SETTINGS}
    still_on = [key for key, value in settings.items() if value is not False]
    fonts = {font: (config_dir / "Ultralytics" / font).is_file() for font in ultralytics_offline._FONT_NAMES}
    online = getattr(ultra_utils, "ONLINE", None)
    data = {"environment": env, "settings": settings, "local_fonts": fonts, "ultralytics_online": online}
    problems = []
    if env["YOLO_OFFLINE"] != "1":
        problems.append("YOLO_OFFLINE is not 1")
    if env["YOLO_AUTOINSTALL"] not in ("0", "false", "False"):
        problems.append("automatic pip installs are on")
    if still_on:
        problems.append("still on: " + ", ".join(still_on))
    missing_fonts = [font for font, present in fonts.items() if not present]
    if missing_fonts:
        problems.append("fonts would be downloaded: " + ", ".join(missing_fonts))
    off = ", ".join(key for key in settings if key not in still_on)
    detail = (
        f"off: DNS probe and downloads (YOLO_OFFLINE=1), pip installs (YOLO_AUTOINSTALL=0), {off}; "
        f"fonts local; settings in {config_dir}"
    )
    if problems:
        fix = "import ultralytics only through distillkit.ultralytics_env.import_ultralytics()"
        return Check("offline", name, WARN, "; ".join(problems), fix, data=data)
    return Check("offline", name, OK, detail, data=data)


def hub_mode_check() -> Check:
    from distillkit.teachers.weights import hub_cache_dir, hub_offline

    variables = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE")}
    data = {"offline": hub_offline(), "cache": str(hub_cache_dir()), "environment": variables}
    if hub_offline():
        detail = f"offline (HF_HUB_OFFLINE): weights come from folders and {hub_cache_dir()} only"
        return Check("offline", "Hugging Face hub", OK, detail, data=data)
    detail = f"online: weights missing from {hub_cache_dir()} are downloaded on first use"
    fix = "without internet, export HF_HUB_OFFLINE=1 so nothing waits on the network"
    return Check("offline", "Hugging Face hub", OK, detail, fix, data=data)
