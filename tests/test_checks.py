"""`distillkit checks`: the machine report (no GPU and no network here), weights lookup, exit codes."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from distillkit.checks import FAIL, OK, UNAVAILABLE, hardware, network_attempts_on_import, packages
from distillkit.checks.network import import_probe_check
from distillkit.cli import main
from distillkit.export.tensorrt_export import tensorrt_available

DINO_ID = "IDEA-Research/grounding-dino-tiny"
SAM_ID = "facebook/sam-vit-base"


def run(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, stdout.getvalue(), stderr.getvalue()


def run_json(*args: str) -> tuple[int, dict[str, Any], str]:
    code, out, err = run("checks", "--json", "--no-import-probe", *args)
    return code, json.loads(out), err  # json.loads: the whole of stdout is exactly one document


def find(document: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    matches = [c for c in document["checks"] if c["section"] == section and c["name"] == name]
    assert len(matches) == 1, f"{section}/{name} not in {[(c['section'], c['name']) for c in document['checks']]}"
    return matches[0]


@pytest.fixture(scope="module")
def tiny_teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    from tests.tiny_sam import write_tiny_sam
    from tests.tiny_teachers import write_tiny_grounding_dino

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("weights")
        return {
            "dino": write_tiny_grounding_dino(root / "gdino-tiny", save_processor=False),
            "sam": write_tiny_sam(root / "sam-tiny", save_processor=False),
        }
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, offline Hugging Face cache and an empty working folder."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("DISTILLKIT_WEIGHTS", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return cache


def put_in_hub_cache(
    cache: Path, repo_id: str, source: Path, commit: str = "0123456789abcdef" * 2 + "01234567"
) -> Path:
    """Lay ``source`` out as huggingface_hub stores a download: snapshots/<commit>/ and refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(source, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_report_on_this_machine_json(isolated: Path) -> None:
    import torch

    code, document, err = run_json()
    assert code == 0, err
    assert document["ok"] is True and document["exit_code"] == 0 and document["failures"] == []
    # versions of the stack, without importing the optional runtimes
    for name in ("distillkit", "python", "torch", "torchvision", "ultralytics", "transformers", "peft", "timm"):
        assert document["versions"][name], name
    assert "CPUExecutionProvider" in find(document, "packages", "onnxruntime")["data"]["providers"]
    assert find(document, "packages", "torch")["required"] is True

    # devices: this machine has no GPU, so the CPU only
    kinds = [device["type"] for device in document["devices"]]
    if torch.cuda.is_available():
        assert kinds.count("cuda") == torch.cuda.device_count()
    else:
        assert kinds == ["cpu"]
        cuda = find(document, "devices", "cuda")
        assert cuda["status"] == UNAVAILABLE and cuda["required"] is False and cuda["fix"]
        assert [c["name"] for c in document["checks"] if c["section"] == "devices"] == ["cpu", "cpu int8", "cuda"]
    cpu = document["devices"][0]
    assert cpu["cores"] >= 1 and find(document, "devices", "cpu")["status"] == OK

    # TensorRT: unavailable, with the reason `optimize -f engine` gives, and not required
    usable, reason = tensorrt_available()
    if not usable:
        trt = find(document, "runtimes", "tensorrt")
        assert trt["status"] == UNAVAILABLE and trt["required"] is False
        assert reason in trt["detail"] and trt["fix"]
        engine = find(document, "commands", "optimize -f engine")
        assert engine["status"] == UNAVAILABLE and reason in engine["detail"]
    for runtime in packages.OPTIONAL_RUNTIMES:
        line = find(document, "runtimes", runtime.name)
        assert line["required"] is False
        if line["status"] == UNAVAILABLE and runtime.name != "tensorrt":
            assert line["fix"].startswith("pip install")

    # offline state: what the guard turned off, read back from ultralytics' settings
    guard = find(document, "offline", "ultralytics network features")
    assert guard["status"] == OK
    assert guard["data"]["environment"]["YOLO_OFFLINE"] == "1"
    assert guard["data"]["settings"] and not any(guard["data"]["settings"].values())
    assert find(document, "offline", "Hugging Face hub")["data"]["offline"] is True
    assert not [c for c in document["checks"] if c["name"] == "network on import"]  # --no-import-probe

    # nothing cached and offline: the teachers are unavailable (not required), with the fix line
    dino = find(document, "weights", "Grounding DINO")
    assert dino["status"] == UNAVAILABLE and dino["required"] is False and "--dino-weights" in dino["fix"]
    teacher = find(document, "commands", "train-teacher")
    assert teacher["status"] == UNAVAILABLE
    assert "--dino-weights DIR" in teacher["fix"] and DINO_ID in teacher["fix"] and SAM_ID in teacher["fix"]
    for name in ("memory", "disk: distillkit cache", "disk: Hugging Face cache", "disk: working folder"):
        assert find(document, "resources", name)["status"] in (OK, "warn")
    assert {c["name"] for c in document["checks"] if c["section"] == "commands"} >= {
        "train-teacher",
        "train-student",
        "label --backend ray",  # the command exists now: no longer "runtime for ..."
    }


def test_report_table(isolated: Path) -> None:
    code, out, err = run("checks", "--no-import-probe")
    assert code == 0, err
    for text in ("packages", "runtimes", "devices", "weights", "offline", "resources", "commands"):
        assert text in out
    assert "tensorrt" in out and "unavailable" in out and "every required part works" in out
    assert "error:" not in err


def test_weights_in_given_folders(isolated: Path, tiny_teachers: dict[str, Path]) -> None:
    dino, sam = tiny_teachers["dino"], tiny_teachers["sam"]
    code, document, err = run_json("--dino-weights", str(dino), "--sam-weights", str(sam))
    assert code == 0, err
    for name, folder, model_type in (("Grounding DINO", dino, "grounding-dino"), ("SAM", sam, "sam")):
        line = find(document, "weights", name)
        assert line["status"] == OK and line["required"] is True
        assert line["data"]["folder"] == str(folder) and line["data"]["model_type"] == model_type
        assert line["data"]["origin"] == "given folder"
    assert find(document, "commands", "train-teacher")["status"] == OK


def test_weights_in_the_hugging_face_cache(isolated: Path, tiny_teachers: dict[str, Path]) -> None:
    snapshot = put_in_hub_cache(isolated, DINO_ID, tiny_teachers["dino"])
    code, document, err = run_json()
    assert code == 0, err
    dino = find(document, "weights", "Grounding DINO")
    assert dino["status"] == OK and dino["data"]["folder"] == str(snapshot)
    assert dino["data"]["model_type"] == "grounding-dino" and "Hugging Face cache" in dino["data"]["origin"]
    sam = find(document, "weights", "SAM")  # not cached, and HF_HUB_OFFLINE=1: unavailable, exit still 0
    assert sam["status"] == UNAVAILABLE and "--sam-weights" in sam["fix"]
    teacher = find(document, "commands", "train-teacher")
    assert teacher["status"] == "warn" and "--sam-weights DIR" in teacher["fix"] and "--dino" not in teacher["fix"]

    # a hub id given to the flag is looked up in the same cache
    put_in_hub_cache(isolated, SAM_ID, tiny_teachers["sam"])
    code, document, _ = run_json("--sam-weights", SAM_ID)
    assert code == 0 and find(document, "weights", "SAM")["status"] == OK


def test_broken_weights_folder_exits_1_naming_it(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # a wide table: the folder's path on one line
    broken = tmp_path / "broken-dino"
    broken.mkdir()
    (broken / "config.json").write_text("{ this is not json")
    (broken / "model.safetensors").write_bytes(b"")
    code, out, err = run("checks", "--no-import-probe", "--dino-weights", str(broken))
    assert code == 1
    assert f"{broken}: config.json does not load" in out and "1 required check(s) failed" in out
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and str(broken) in error_lines[0] and "--dino-weights" in error_lines[0]
    assert "Traceback" not in err

    code, document, err = run_json("--dino-weights", str(broken))
    assert code == 1 and document["ok"] is False and document["exit_code"] == 1
    line = find(document, "weights", "Grounding DINO")
    assert line["status"] == FAIL and line["required"] is True and str(broken) in line["detail"]
    assert document["failures"] == ["weights: Grounding DINO"]


@pytest.mark.parametrize("layout", ["empty", "missing", "swapped"])
def test_other_bad_weights_folders_exit_1(
    isolated: Path, tmp_path: Path, tiny_teachers: dict[str, Path], layout: str
) -> None:
    folder = {"empty": tmp_path / "empty", "missing": tmp_path / "nowhere", "swapped": tiny_teachers["dino"]}[layout]
    if layout == "empty":
        folder.mkdir()
    code, document, err = run_json("--sam-weights", str(folder))
    assert code == 1, document
    assert str(folder) in find(document, "weights", "SAM")["detail"] and str(folder) in err


def test_cpu_instruction_sets(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Test CPU\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_tile amx_int8\n")
    facts = hardware.cpu_facts(cpuinfo)
    assert facts["name"] == "Test CPU" and {"avx2", "avx512_vnni", "amx_int8"} <= set(facts["flags"])
    int8 = next(c for c in hardware.cpu_checks(facts) if c.name == "cpu int8")
    assert int8.status == OK and "AVX-512 VNNI yes" in int8.detail and "AMX-INT8 yes" in int8.detail

    cpuinfo.write_text("model name\t: Old CPU\nflags\t\t: fpu sse2 avx2\n")
    int8 = next(c for c in hardware.cpu_checks(hardware.cpu_facts(cpuinfo)) if c.name == "cpu int8")
    assert int8.status == "warn" and "AVX2 yes" in int8.detail and int8.fix

    missing = hardware.cpu_facts(tmp_path / "absent")  # not Linux: unknown, never an error
    assert missing["flags"] is None
    assert [c.status for c in hardware.cpu_checks(missing)] == [OK, "warn"]


def test_a_gpu_that_cannot_run_a_tensor_is_a_required_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", broken)
    checks, devices = hardware.gpu_checks()
    assert [c.name for c in checks] == ["cuda:0"]
    assert checks[0].blocking and "no kernel image" in checks[0].detail and checks[0].fix
    assert devices[0]["round_trip"] is False


def test_a_core_package_that_does_not_import_is_a_required_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = packages.CorePackage("distillkit_no_such_module", "pip install it")
    monkeypatch.setattr(packages, "CORE_PACKAGES", (broken,))
    checks, importable = packages.core_package_checks()
    assert importable == {"distillkit_no_such_module": False}
    assert checks[0].blocking and "not installed" in checks[0].detail and checks[0].fix == "pip install it"


def test_import_probe_records_network_attempts() -> None:
    result = network_attempts_on_import(
        [
            "import socket; socket.getaddrinfo('example.invalid', 443)",
            "import urllib.request; urllib.request.urlopen('http://example.invalid/x', timeout=5)",
            "import socket; socket.create_connection(('192.0.2.1', 80), timeout=5)",
        ],
        timeout=60,
    )
    hosts = {attempt["host"] for attempt in result["attempts"]}
    assert {"example.invalid", "192.0.2.1"} <= hosts
    assert len(result["errors"]) == 3 and not result["timed_out"]  # each attempt was refused at once


def test_importing_the_stack_makes_no_network_attempt() -> None:
    check = import_probe_check(timeout=120)
    assert check.status == OK, (check.detail, check.data)
    assert check.data["attempts"] == [] and check.data["errors"] == []


def test_help_and_usage_errors() -> None:
    code, out, _ = run("--help")
    assert code == 0 and "checks" in out
    code, out, _ = run("checks", "--help")
    assert code == 0 and "Examples" in out and "distillkit checks" in out and "--dino-weights" in out
    code, _, err = run("checks", "--no-such-option")
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
