"""Model files are data, not code: a checkpoint whose pickle runs something is refused, on every path.

Each malicious file below would create MARKER when unpickled by plain ``torch.load``. Every command that
reads a model file must refuse it (exit 2, one line naming the global it needs, no traceback) without the
marker appearing; ``--trust-model-file`` lifts the refusal. Genuine ultralytics / distillkit checkpoints
load as before.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distillkit.errors import UsageError
from distillkit.safe_load import (
    UnsafeModelFileError,
    allowlist,
    allowlist_size,
    check_model_file,
    safe_torch_load,
    trust_model_files,
)
from distillkit.ultralytics_env import import_ultralytics
from tests.malicious_payloads import BoundTouch, ModelConstructor, PathTouch, ShellCommand, malicious_checkpoint
from tests.optimize_helpers import make_checkpoint, make_images
from tests.test_cli import run

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLKIT_CACHE", str(tmp_path_factory.getbasetemp() / "distillkit-cache"))
    monkeypatch.delenv("DISTILLKIT_TRUST_MODEL_FILES", raising=False)
    trust_model_files(False)


# --------------------------------------------------------------------------------------------- payloads


PAYLOADS = {
    ShellCommand: "posix.system",
    PathTouch: "pathlib.Path",
    BoundTouch: "pathlib.PosixPath.touch",
    ModelConstructor: "a call of ultralytics.nn.tasks.DetectionModel",
}


def assert_refused(code: int, stderr: str, marker: Path, needs: str = "posix.system", path: Path | None = None) -> None:
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    assert f"needs {needs} to load" in stderr and "--trust-model-file" in stderr, stderr
    if path is not None:  # the refusal itself, not wrapped in another message
        assert stderr.startswith(f"error: {path} needs {needs} to load"), stderr
    assert "Traceback" not in stderr
    assert not marker.exists(), "the payload ran"


# --------------------------------------------------------------------------------------------- the loader


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_every_payload_is_refused_naming_what_it_needs(payload: type, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    evil = malicious_checkpoint(tmp_path / "evil.pt", marker, payload)
    with pytest.raises(UnsafeModelFileError) as caught:
        safe_torch_load(evil)
    assert caught.value.needs == PAYLOADS[payload] and caught.value.exit_code == 2
    assert str(caught.value) == (
        f"{evil} needs {PAYLOADS[payload]} to load, which is not on distillkit's allowlist of checkpoint classes; "
        "pass --trust-model-file if you trust where this file comes from"
    )
    import_ultralytics()
    from ultralytics import YOLO

    with pytest.raises(UnsafeModelFileError):  # ultralytics' own loader goes through the allowlist too
        YOLO(str(evil))
    assert not marker.exists()


def test_legacy_format_and_file_objects(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    legacy = tmp_path / "legacy.pt"
    torch.save({"x": ShellCommand(marker), "t": torch.ones(1)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeModelFileError, match=r"needs posix\.system"):
        safe_torch_load(legacy)
    assert not marker.exists()
    import_ultralytics()
    from ultralytics.utils import IterableSimpleNamespace

    plain = tmp_path / "plain_legacy.pt"
    saved = {"args": IterableSimpleNamespace(imgsz=64), "fitness": np.float64(0.5), "t": torch.arange(3)}
    torch.save(saved, plain, _use_new_zipfile_serialization=False)
    loaded = safe_torch_load(plain)  # allowlisted globals are learnt from the refusals, one at a time
    assert loaded["args"].imgsz == 64 and loaded["fitness"] == 0.5 and loaded["t"].tolist() == [0, 1, 2]
    with open(tmp_path / "evil.pt", "wb") as handle:
        torch.save({"x": PathTouch(marker)}, handle)
    with open(tmp_path / "evil.pt", "rb") as handle, pytest.raises(UnsafeModelFileError, match="the model file"):
        safe_torch_load(handle)
    assert not marker.exists()


def test_trust_runs_the_file_as_plain_torch_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "MARKER"
    evil = malicious_checkpoint(tmp_path / "evil.pt", marker, PathTouch)
    check_model_file(tmp_path / "evil.pt.missing")  # an unreadable file is left to the loader
    with pytest.raises(UnsafeModelFileError):
        check_model_file(evil)
    safe_torch_load(evil, trust=True)
    assert marker.exists()
    marker.unlink()
    monkeypatch.setenv("DISTILLKIT_TRUST_MODEL_FILES", "1")
    check_model_file(evil)
    safe_torch_load(evil)
    assert marker.exists()


def test_genuine_ultralytics_checkpoints_load_unchanged(tmp_path: Path) -> None:
    import_ultralytics()
    from ultralytics import YOLO
    from ultralytics.nn.modules.head import Detect
    from ultralytics.utils import IterableSimpleNamespace

    for task in ("detect", "segment"):
        path = make_checkpoint(tmp_path / f"{task}.pt", task=task)
        safe, plain = safe_torch_load(path), torch.load(path, map_location="cpu", weights_only=False)
        assert safe.keys() == plain.keys() and safe["distillkit"] == plain["distillkit"]
        expected = plain["model"].state_dict()
        assert all(torch.equal(value, expected[name]) for name, value in safe["model"].state_dict().items())
        assert YOLO(str(path)).task == task
    # what ultralytics' trainer saves (numpy metrics, an args namespace, an EMA), and the pre-8.1 Segment layout
    model = YOLO("yolov8n-seg.yaml").model
    model.args = IterableSimpleNamespace(imgsz=64, task="segment")
    model.model[-1].detect = Detect.forward  # pickled as getattr(Detect, "forward")
    checkpoint = {
        "epoch": 3,
        "best_fitness": np.float64(0.25),
        "model": None,
        "ema": model.half(),
        "train_args": {"imgsz": 64, "task": "segment"},
        "train_metrics": {"metrics/mAP50(B)": np.float32(0.5)},
        "train_results": {"epoch": np.arange(3)},
    }
    torch.save(checkpoint, tmp_path / "trainer.pt")
    loaded = safe_torch_load(tmp_path / "trainer.pt")
    assert loaded["ema"].model[-1].detect is Detect.forward and loaded["ema"].args.imgsz == 64
    assert loaded["best_fitness"] == 0.25 and loaded["train_results"]["epoch"].tolist() == [0, 1, 2]
    assert YOLO(str(tmp_path / "trainer.pt")).task == "segment"


def test_pruned_checkpoints_hold_only_allowlisted_classes(tmp_path: Path) -> None:
    from distillkit.export.prune import _replace_c2f

    path = make_checkpoint(tmp_path / "model.pt")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    assert _replace_c2f(checkpoint["model"]) > 0
    torch.save(checkpoint, tmp_path / "model_pruned.pt")
    import_ultralytics()
    from ultralytics import YOLO

    assert YOLO(str(tmp_path / "model_pruned.pt")).task == "detect"


def test_distillkit_training_and_classifier_checkpoints(tmp_path: Path) -> None:
    from distillkit.classify import is_classifier_checkpoint, load_classifier
    from distillkit.training.checkpoint import CHECKPOINT_FORMAT, read_checkpoint

    state = {"format": CHECKPOINT_FORMAT, "epoch": 1, "rng": [{"torch": torch.get_rng_state(), "python": [1, 2]}]}
    torch.save(state, tmp_path / "last.pt")
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    marker = tmp_path / "MARKER"
    evil = malicious_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(UnsafeModelFileError, match=r"needs posix\.system"):
        read_checkpoint(evil)  # --resume of train-teacher / train-classifier
    with pytest.raises(UnsafeModelFileError, match=r"needs posix\.system"):
        is_classifier_checkpoint(evil)  # every command's "is it a classifier?" probe refuses it too
    with pytest.raises(UnsafeModelFileError, match=r"needs posix\.system"):
        load_classifier(evil)  # train-classifier --teacher / --model
    assert not is_classifier_checkpoint(tmp_path / "last.pt")
    assert not marker.exists()


def test_model_yaml_is_built_without_eval(tmp_path: Path) -> None:
    """``parse_model`` evaluates a YAML's ``activation`` with eval unless ultralytics' restricted mode is on."""
    import yaml

    from distillkit.students.student_model import load_student_model

    ultralytics = import_ultralytics()  # the guard is installed with it
    marker = tmp_path / "MARKER"
    spec = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg/models/v8/yolov8.yaml").read_text())
    spec["activation"] = f"__import__('pathlib').Path({str(marker)!r}).touch() or nn.SiLU()"
    (tmp_path / "evil.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(UsageError, match="cannot be loaded as an ultralytics model"):
        load_student_model(str(tmp_path / "evil.yaml"), "--student evil.yaml")
    assert not marker.exists()
    spec["activation"] = "nn.ReLU()"  # the documented form still works
    (tmp_path / "relu.yaml").write_text(yaml.safe_dump(spec))
    assert load_student_model(str(tmp_path / "relu.yaml"), "--student relu.yaml").task == "detect"


def test_the_allowlist_is_classes_and_functions_not_modules() -> None:
    size = allowlist_size()
    assert 300 < size < 2000
    table = allowlist()
    for name in table.entries:
        assert name.split(".")[0] in {
            "torch",
            "ultralytics",
            "numpy",
            "pathlib",
            "argparse",
            "torchvision",
            "builtins",
            "distillkit",
        }, name
    for forbidden in (
        "posix.system",
        "os.system",
        "builtins.exec",
        "builtins.eval",
        "subprocess.Popen",
        "pathlib.Path",
        "builtins.__import__",
        "torch.load",
        "numpy.load",
        "pickle.loads",
    ):
        assert table.get(forbidden) is None, forbidden
    assert table.get("builtins.getattr") is not None and table.get("ultralytics.nn.tasks.DetectionModel")


# --------------------------------------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.test_train_student import make_shapes

    root = tmp_path_factory.mktemp("shapes")
    return make_shapes(root / "train", 8, 0), make_shapes(root / "val", 4, 1)


def test_infer_evaluate_optimize_label_refuse(tmp_path: Path, shapes: tuple[Path, Path]) -> None:
    marker = tmp_path / "MARKER"
    evil = malicious_checkpoint(tmp_path / "models" / "best.pt", marker)
    images = make_images(tmp_path / "images", count=2)
    assert_refused(*run("infer", "-m", str(evil), str(images[0]), "-o", str(tmp_path / "out"))[::2], marker, path=evil)
    assert_refused(*run("evaluate", "-d", str(shapes[1]), "-m", str(evil))[::2], marker, path=evil)
    assert_refused(*run("optimize", "-m", str(evil), "-o", str(tmp_path / "opt"))[::2], marker, path=evil)
    code, _, stderr = run("optimize", "-m", str(evil), "--prune", "0.2", "-o", str(tmp_path / "pruned"))
    assert_refused(code, stderr, marker, path=evil)
    code, _, stderr = run("label", str(images[0]), "--teacher", str(evil), "-o", str(tmp_path / "labels.json"))
    assert_refused(code, stderr, marker, path=evil)
    # files naming only allowlisted globals pass every scan; the restricted unpickler stops them while loading
    for payload in (BoundTouch, ModelConstructor):
        other = malicious_checkpoint(tmp_path / payload.__name__ / "best.pt", marker, payload)
        code, _, stderr = run("infer", "-m", str(other), str(images[0]), "-o", str(tmp_path / "out"))
        assert_refused(code, stderr, marker, PAYLOADS[payload], path=other)
        code, _, stderr = run("evaluate", "-d", str(shapes[1]), "-m", str(other))
        assert_refused(
            code, stderr, marker, PAYLOADS[payload], path=other
        )  # the flag lifts the refusal: the file is then read as plain torch.load does, payload included
    run("infer", "-m", str(evil), str(images[0]), "-o", str(tmp_path / "out"), "--trust-model-file")
    assert marker.exists()
    marker.unlink()
    assert_refused(*run("infer", "-m", str(evil), str(images[0]), "-o", str(tmp_path / "out2"))[::2], marker)


def test_train_student_refuses_student_teacher_and_replaced_last_pt(tmp_path: Path, shapes: tuple[Path, Path]) -> None:
    train, val = shapes
    marker = tmp_path / "MARKER"
    evil = malicious_checkpoint(tmp_path / "models" / "yolo.pt", marker)
    common = ["train-student", "-d", str(train), "-v", str(val), "--epochs", "1", "--imgsz", "64"]
    code, _, stderr = run(*common, "-o", str(tmp_path / "a"), "--student", str(evil))
    assert_refused(code, stderr, marker)
    code, _, stderr = run(*common, "-o", str(tmp_path / "b"), "--student", "yolov8n", "--teacher", str(evil))
    assert_refused(code, stderr, marker, path=evil)
    resumed = tmp_path / "c"
    malicious_checkpoint(resumed / "train" / "weights" / "last.pt", marker)
    code, _, stderr = run(*common, "-o", str(resumed), "--resume")
    assert_refused(code, stderr, marker, path=resumed / "train" / "weights" / "last.pt")


def test_train_classifier_refuses_resume_state_teacher_and_start(tmp_path: Path) -> None:
    from tests.test_classify_train import FAST, make_tree

    data = make_tree(tmp_path / "data", 3)
    marker = tmp_path / "MARKER"
    evil = malicious_checkpoint(tmp_path / "models" / "cls.pt", marker)
    sets = [part for setting in (*FAST, "training_dynamics.epochs=1") for part in ("--set", setting)]
    code, _, stderr = run("train-classifier", "-d", str(data), "-o", str(tmp_path / "a"), "--teacher", str(evil), *sets)
    assert_refused(code, stderr, marker)
    code, _, stderr = run("train-classifier", "-d", str(data), "-o", str(tmp_path / "b"), "--model", str(evil), *sets)
    assert_refused(code, stderr, marker)
    exp = tmp_path / "c"
    malicious_checkpoint(exp / "checkpoints" / "last.pt", marker)
    code, _, stderr = run("train-classifier", "-d", str(data), "-o", str(exp), "--resume", *sets)
    assert_refused(code, stderr, marker)
    assert not json.dumps(sorted(p.name for p in exp.iterdir())).count("best.pt")


def test_train_teacher_refuses_a_replaced_resume_state(tmp_path: Path) -> None:
    from tests.test_teachers import TINY_SETS
    from tests.tiny_teachers import write_shapes_dataset, write_tiny_grounding_dino

    weights = write_tiny_grounding_dino(tmp_path / "weights")
    train = write_shapes_dataset(tmp_path / "data", 2, "boxes", seed=0, name="train.json")
    val = write_shapes_dataset(tmp_path / "data", 2, "boxes", seed=1, name="val.json")
    exp = tmp_path / "exp"
    marker = tmp_path / "MARKER"
    last = malicious_checkpoint(exp / "teachers" / "grounding_dino_lora" / "checkpoints" / "last.pt", marker)
    code, _, stderr = run(
        "train-teacher", "-d", str(train), "-v", str(val), "-o", str(exp), "--dino-weights", str(weights),
        "--epochs", "1", "--device", "cpu", "--resume", *TINY_SETS,
    )  # fmt: skip
    assert_refused(code, stderr, marker, path=last)


def test_only_marked_distillkit_classes_are_allowed(tmp_path: Path) -> None:
    """A pickle may name distillkit's own classes only when their module marked them ``@checkpoint_class``."""
    table = allowlist()
    assert table.get("distillkit.export.prune.C2fTwoConv") is not None  # imported by name, marked
    for refused in (
        "distillkit.errors.UsageError",  # a distillkit class, not marked
        "distillkit.safe_load._CreateOnly",
        "distillkit.export.prune.prune_model",  # a function of the marking module
        "distillkit.__main__.main",
        "distillkit.no_such_module.Thing",
    ):
        assert table.get(refused) is None, refused
