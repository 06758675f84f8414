"""Ultralytics, imported through distillkit, never reaches for the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from distillkit.ultralytics_env import import_ultralytics

PROBE = textwrap.dedent(
    """
    import json, socket
    attempts = []
    def blocked(self, address, *args, **kwargs):
        attempts.append(str(address))
        raise OSError("network blocked by the test")
    def no_dns(host, *args, **kwargs):
        attempts.append("dns:" + str(host))
        raise socket.gaierror("blocked by the test")
    socket.socket.connect = blocked
    socket.getaddrinfo = no_dns

    from distillkit.ultralytics_env import import_ultralytics
    ultralytics = import_ultralytics()
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS
    from ultralytics.utils.checks import check_font

    model = YOLO("yolov8n.yaml")           # architecture only: no weight download
    font = check_font("Arial.ttf")         # would be an HTTP request without the local copy
    print(json.dumps({
        "attempts": attempts,
        "sync": SETTINGS.get("sync"),
        "font": str(font),
        "params": sum(p.numel() for p in model.model.parameters()),
    }))
    """
)


def test_import_is_offline_and_configured(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env["DISTILLKIT_CACHE"] = str(tmp_path / "cache")
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert report["sync"] is False
    assert Path(report["font"]).is_relative_to(tmp_path / "cache" / "ultralytics")
    assert report["params"] > 1_000_000  # a real yolov8n built from its yaml


def test_unreadable_image_stays_a_pillow_error_after_import(tmp_path: Path) -> None:
    """ultralytics patches PIL.Image.open; an unreadable file must still raise Pillow's own error."""
    from PIL import Image, UnidentifiedImageError

    import_ultralytics()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(UnidentifiedImageError):
        Image.open(broken)
