"""The wheel ships defaults/*.yaml and the installed tool runs from outside the source tree.

Builds the wheel with the project's build backend, installs it (without dependencies) into a fresh
virtual environment that borrows the current environment's third-party packages, and runs the
`distillkit` executable from a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

SECTIONS = {
    "augmentation",
    "checkpointing",
    "classifier",
    "distillation",
    "preprocessing",
    "student",
    "teacher_grounding_dino_lora",
    "teacher_sam_lora",
    "training_dynamics",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hatchling", reason="the test extra installs hatchling to build the wheel")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO_ROOT),
        ],
        check=True,
        timeout=300,
    )
    wheels = list(out.glob("distillkit-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_contains_every_default_yaml(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).stem for n in names if n.startswith("distillkit/defaults/") and n.endswith(".yaml")}
    assert shipped == SECTIONS
    assert any(n.endswith("entry_points.txt") for n in names)


def test_installed_wheel_runs_outside_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    purelib = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    # Third-party dependencies come from the current environment (a path entry, so its .pth files
    # — including an editable install of distillkit itself — are not processed).
    (purelib / "borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        timeout=300,
    )
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bin_dir / "distillkit"), *args], cwd=workdir, capture_output=True, text=True, env=env, timeout=120
        )

    where = subprocess.run(
        [str(python), "-c", "import distillkit; print(distillkit.__file__)"],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(env_dir), where

    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("distillkit ")
    resolved = run("config", "--json")
    assert resolved.returncode == 0, resolved.stderr
    document = json.loads(resolved.stdout)
    assert set(document) >= SECTIONS

    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 8, 1, 8, 8]]}],
        "categories": [{"id": 1, "name": "x"}],
    }
    (workdir / "data.json").write_text(json.dumps(coco))
    checked = run("validate", "data.json", "--json")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["generated"]["bbox"] == 1
