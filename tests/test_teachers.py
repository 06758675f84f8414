"""train-teacher orchestration: the data decides the teachers; CLI; labelling with a cache; evaluation; DDP.

Uses the tiny random-weight Grounding DINO of ``tests/tiny_teachers.py`` (no downloads). The SAM
side has its own tests; here SAM appears only in the data-driven decision.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from distillkit.cli import main
from distillkit.data.validate import load_valid_dataset
from distillkit.errors import DataError, UsageError
from distillkit.progress import NULL_PROGRESS
from tests.tiny_teachers import write_shapes_dataset, write_tiny_grounding_dino

TINY_SETS = [
    "--set",
    "teacher_grounding_dino_lora.shortest_edge=96",
    "--set",
    "teacher_grounding_dino_lora.longest_edge=96",
    "--set",
    "teacher_grounding_dino_lora.lr=0.01",
    "--set",
    "training_dynamics.num_workers=0",
    "--set",
    "training_dynamics.warmup_epochs=0",
    "--set",
    "training_dynamics.ema.enabled=false",
    "--set",
    "augmentation.intensity=none",
]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teachers")
    data = root / "data"
    return {
        "root": root,
        "weights": write_tiny_grounding_dino(root / "weights"),
        "train": write_shapes_dataset(data, 4, "boxes", seed=0, name="train.json"),
        "val": write_shapes_dataset(data, 2, "boxes", seed=1, name="val.json"),
        "masks": write_shapes_dataset(data, 3, "masks", seed=2, name="masks.json"),
        "masks_val": write_shapes_dataset(data, 2, "masks", seed=5, name="masks_val.json"),
        "both": write_shapes_dataset(data, 4, "both", seed=3, name="both.json"),
        "both_val": write_shapes_dataset(data, 2, "both", seed=4, name="both_val.json"),
    }


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: Any) -> CliResult:
    """The CLI in-process through its real entry point (errors become one line + exit code)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="module")
def experiment(world: dict[str, Path]) -> Path:
    """A boxes dataset trained through the CLI: the experiment the labelling tests use."""
    exp = world["root"] / "exp"
    result = run_cli(
        "train-teacher",
        "-d",
        world["train"],
        "-v",
        world["val"],
        "-o",
        exp,
        "--dino-weights",
        world["weights"],
        "--epochs",
        "2",
        "--batch",
        "4",
        "--device",
        "cpu",
        "--json",
        *TINY_SETS,
    )
    assert result.exit_code == 0, result.output
    (exp / "cli.json").write_text(result.stdout)
    return exp


# ------------------------------------------------------------------------------------------------
# the data decides


@pytest.mark.parametrize(
    ("name", "teachers"),
    # masks-only data holds boxes too once validate derived them from the masks (issue 13): both teachers
    [("train", ["grounding_dino"]), ("masks", ["grounding_dino", "sam"]), ("both", ["grounding_dino", "sam"])],
)
def test_the_data_decides_the_teachers(world: dict[str, Path], name: str, teachers: list[str]) -> None:
    from distillkit.teachers.pipeline import choose_teachers, teacher_config

    data = load_valid_dataset(world[name])
    config = teacher_config(data, world[name])
    assert config.data.teachers == teachers
    assert config.data.class_names == ["red", "green", "blue"]
    assert choose_teachers(config.data.teachers, None) == (teachers, {})


def test_only_narrows_the_decision_and_refuses_what_the_data_lacks() -> None:
    from distillkit.teachers.pipeline import choose_teachers

    assert choose_teachers(["grounding_dino", "sam"], "dino") == (["grounding_dino"], {"sam": "--only dino"})
    assert choose_teachers(["grounding_dino", "sam"], "sam") == (["sam"], {"grounding_dino": "--only sam"})
    with pytest.raises(UsageError, match="only masks"):
        choose_teachers(["sam"], "dino")
    with pytest.raises(UsageError, match="not one of"):
        choose_teachers(["sam"], "yolo")
    with pytest.raises(DataError):
        choose_teachers([], None)


def test_a_folder_as_data_is_named_as_such(tmp_path: Path) -> None:
    # used to read "training file not found" for a folder that exists (e.g. a classifier's class tree)
    from distillkit.experiment.coco import _load

    with pytest.raises(UsageError, match="is a folder, not a COCO JSON file"):
        _load(tmp_path, "training", NULL_PROGRESS)


def test_cli_trains_dino_and_records_the_decision(experiment: Path) -> None:
    document = json.loads((experiment / "cli.json").read_text())
    assert document["decision"] == ["grounding_dino"]
    [teacher] = document["teachers"]
    assert teacher["name"] == "grounding_dino" and teacher["epochs_run"] == 2
    assert 0 < teacher["trainable_share"] < 0.1
    config = yaml.safe_load((experiment / "teacher_config.yaml").read_text())
    assert config["data"]["teachers"] == ["grounding_dino"]
    assert config["data"]["class_names"] == ["red", "green", "blue"]
    assert config["teacher_grounding_dino_lora"]["epochs"] == 2
    metadata = json.loads((experiment / "metadata.json").read_text())
    assert metadata["extra"]["teachers_trained"] == ["grounding_dino"]
    folder = experiment / "teachers" / "grounding_dino_lora"
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "metrics.csv").is_file()


def test_both_with_only_dino_records_both_and_trains_one(world: dict[str, Path]) -> None:
    exp = world["root"] / "exp_both"
    result = run_cli(
        "train-teacher",
        "-d",
        world["both"],
        "-v",
        world["both_val"],
        "-o",
        exp,
        "--dino-weights",
        world["weights"],
        "--only",
        "dino",
        "--epochs",
        "1",
        "--device",
        "cpu",
        *TINY_SETS,
    )
    assert result.exit_code == 0, result.output
    assert "SAM not trained (--only dino)" in result.output
    config = yaml.safe_load((exp / "teacher_config.yaml").read_text())
    assert config["data"]["teachers"] == ["grounding_dino", "sam"]
    assert not (exp / "teachers" / "sam_lora").exists()
    # a second run over it is refused unless --resume
    again = run_cli(
        "train-teacher", "-d", world["both"], "-v", world["both_val"], "-o", exp, "--dino-weights", world["weights"],
        "--only", "dino", *TINY_SETS,
    )  # fmt: skip
    assert again.exit_code == 2 and "pass --resume" in again.output


def test_offline_missing_weights_cli_message(
    world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    result = run_cli("train-teacher", "-d", world["train"], "-v", world["val"], "-o", tmp_path / "exp", *TINY_SETS)
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: Grounding DINO weights 'IDEA-Research/grounding-dino-tiny'")
    assert "offline" in lines[0] and "pass --dino-weights DIR" in lines[0]


def test_both_trains_both_teachers_and_labels_boxes_with_masks(world: dict[str, Path]) -> None:
    from distillkit.teachers import load_teacher
    from tests.tiny_sam import write_tiny_sam

    exp = world["root"] / "exp_full"
    sam_weights = write_tiny_sam(world["root"] / "sam_weights")
    result = run_cli(
        "train-teacher", "-d", world["both"], "-v", world["both_val"], "-o", exp, "--dino-weights", world["weights"],
        "--sam-weights", sam_weights, "--epochs", "1", "--batch", "2", "--device", "cpu", "--json", *TINY_SETS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [t["name"] for t in document["teachers"]] == ["grounding_dino", "sam"]
    assert (exp / "teachers" / "sam_lora" / "adapter_model.safetensors").is_file()

    teacher = load_teacher(exp, device="cpu", batch_size=2, box_threshold=0.0)
    images = sorted((world["both"].parent / "images").glob("img_3_*.png"))[:2]
    predictions = teacher.predict(images)
    for prediction in predictions:
        assert prediction.masks is not None and len(prediction.masks) == len(prediction) > 0
        assert prediction.masks[0]["size"] == [64, 64]
    # a Ray driver's copy: the same identity and classes from the files, the models built only when predicting
    deferred = load_teacher(exp, device="cpu", batch_size=2, box_threshold=0.0, defer_models=True)
    assert not deferred.models_built and deferred.has_masks
    assert deferred.identity == teacher.identity and deferred.class_names == teacher.class_names
    again = deferred.predict(images)
    assert deferred.models_built
    for a, b in zip(predictions, again, strict=True):
        assert np.allclose(a.boxes, b.boxes, atol=1e-5) and a.masks == b.masks
    evaluated = run_cli("evaluate", "--teacher-dir", exp, "--data", world["both_val"], "--device", "cpu", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    teachers = json.loads(evaluated.stdout)["teachers"]
    assert set(teachers) == {"grounding_dino", "sam"} and "segm" in teachers["sam"]


def test_masks_only_data_trains_both_teachers_and_labels_without_ground_truth(world: dict[str, Path]) -> None:
    """Polygons without boxes (labelme / CVAT): DINO learns the derived boxes, SAM the masks (issue 13)."""
    from distillkit.data.validate import validate_dataset
    from distillkit.teachers import load_teacher
    from tests.tiny_sam import write_tiny_sam

    raw = json.loads(world["masks"].read_text())
    assert not any("bbox" in ann for ann in raw["annotations"])
    report = validate_dataset(world["masks"]).report
    assert report.info.has_boxes and report.info.has_masks and report.info.mode == "both"
    assert report.generated["bbox"] == len(raw["annotations"])  # the report still says where the boxes came from

    exp = world["root"] / "exp_masks_only"
    sam_weights = write_tiny_sam(world["root"] / "sam_weights_masks_only")
    result = run_cli(
        "train-teacher", "-d", world["masks"], "-v", world["masks_val"], "-o", exp, "--dino-weights", world["weights"],
        "--sam-weights", sam_weights, "--epochs", "1", "--batch", "2", "--device", "cpu", "--json", *TINY_SETS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["decision"] == ["grounding_dino", "sam"] and document["skipped"] == {}
    assert [t["name"] for t in document["teachers"]] == ["grounding_dino", "sam"]
    config = yaml.safe_load((exp / "teacher_config.yaml").read_text())
    assert config["data"]["teachers"] == ["grounding_dino", "sam"]
    assert config["data"]["has_boxes"] and config["data"]["has_masks"]
    for folder in ("grounding_dino_lora", "sam_lora"):
        assert (exp / "teachers" / folder / "adapter_model.safetensors").is_file()

    # Unlabelled images: boxes from Grounding DINO, masks from SAM prompted with them; no ground truth needed.
    teacher = load_teacher(exp, device="cpu", batch_size=2, box_threshold=0.0, text_threshold=0.0)
    assert teacher.ground_truth is None and teacher.dino is not None and teacher.sam is not None
    images = sorted((world["masks_val"].parent / "images").glob("img_5_*.png"))
    for prediction in teacher.predict(images):
        assert prediction.extra["box_source"] == "grounding_dino"
        assert len(prediction) > 0 and prediction.masks is not None and len(prediction.masks) == len(prediction)
        assert prediction.masks[0]["size"] == [64, 64]


def test_masks_only_data_with_only_sam_trains_sam_alone(world: dict[str, Path]) -> None:
    from tests.tiny_sam import write_tiny_sam

    exp = world["root"] / "exp_masks_only_sam"
    sam_weights = write_tiny_sam(world["root"] / "sam_weights_only_sam")
    result = run_cli(
        "train-teacher", "-d", world["masks"], "-v", world["masks_val"], "-o", exp, "--sam-weights", sam_weights,
        "--only", "sam", "--epochs", "1", "--batch", "2", "--device", "cpu", *TINY_SETS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Grounding DINO not trained (--only sam)" in result.output
    assert (exp / "teachers" / "sam_lora" / "adapter_model.safetensors").is_file()
    assert not (exp / "teachers" / "grounding_dino_lora").exists()


# ------------------------------------------------------------------------------------------------
# labelling


def test_labelling_uses_one_pass_and_the_cache_on_the_second_run(world: dict[str, Path], experiment: Path) -> None:
    from distillkit.labelling import label_images
    from distillkit.labelling.cache import LabellingStats
    from distillkit.teachers import load_teacher
    from distillkit.teachers.labeller import teacher_cache_dir

    teacher = load_teacher(experiment, device="cpu", batch_size=4, box_threshold=0.0, text_threshold=0.0)
    assert teacher.class_names == ["red", "green", "blue"]
    images = sorted((world["train"].parent / "images").glob("img_0_*.png"))
    cache = teacher_cache_dir(experiment)
    calls: list[int] = []
    handle = teacher.dino.model.get_base_model().register_forward_hook(lambda *args: calls.append(1))
    first_stats = LabellingStats()
    first = dict(label_images(teacher, images, cache, batch_size=4, stats=first_stats))
    assert first_stats.computed == 4 and len(calls) == 1  # 4 images, 3 classes: one forward pass
    second_stats = LabellingStats()
    second = dict(label_images(teacher, images, cache, batch_size=4, stats=second_stats))
    handle.remove()
    assert second_stats.hits == 4 and second_stats.computed == 0 and len(calls) == 1
    for path in images:
        a, b = first[path], second[path]
        assert np.allclose(a.boxes, b.boxes) and np.allclose(a.scores, b.scores)
        assert a.class_scores is not None and a.class_scores.shape == (len(a), 3)
        assert a.width == 64 and a.height == 64 and a.masks is None
    stricter = load_teacher(experiment, device="cpu", box_threshold=0.5)
    assert stricter.identity != teacher.identity  # thresholds change the labels, so the cache key


def test_sharded_labelling_in_one_process_fills_the_same_cache(
    world: dict[str, Path], experiment: Path, tmp_path: Path
) -> None:
    from distillkit.labelling import TeacherOutputCache, image_content_key
    from distillkit.teachers import load_teacher
    from distillkit.teachers.labeller import label_images_sharded

    teacher = load_teacher(experiment, device="cpu", batch_size=2)
    images = sorted((world["train"].parent / "images").glob("img_0_*.png"))
    stats = label_images_sharded(teacher, images, tmp_path / "cache", batch_size=2)
    assert stats.computed == 4
    cache = TeacherOutputCache(tmp_path / "cache", teacher.identity)
    expected = teacher.predict(images[:1])[0]
    cached = cache.get(image_content_key(images[0]))
    assert cached is not None and np.allclose(cached.boxes, expected.boxes)
    assert label_images_sharded(teacher, images, tmp_path / "cache", batch_size=2).hits == 4


def test_ground_truth_prompts_replace_dino_boxes(world: dict[str, Path], experiment: Path) -> None:
    from distillkit.teachers import load_teacher

    teacher = load_teacher(experiment, device="cpu", ground_truth=world["train"])
    images = sorted((world["train"].parent / "images").glob("img_0_*.png"))
    [prediction] = teacher.predict(images[:1])
    truth = load_valid_dataset(world["train"]).dataset
    boxes = [a["bbox"] for a in truth["annotations"] if a["image_id"] == 1]
    expected = np.asarray([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=np.float32)
    assert np.allclose(prediction.boxes, expected)
    assert prediction.extra["box_source"] == "ground_truth"


# ------------------------------------------------------------------------------------------------
# evaluation


def test_evaluate_teacher_dir_reports_dino_map(world: dict[str, Path], experiment: Path) -> None:
    result = run_cli("evaluate", "--teacher-dir", experiment, "--data", world["val"], "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    bbox = document["teachers"]["grounding_dino"]["bbox"]
    assert 0.0 <= bbox["AP50"] <= 1.0 and len(bbox["per_class"]) == 3


# ------------------------------------------------------------------------------------------------
# scale


@pytest.mark.slow
def test_torchrun_two_processes_train_and_label(world: dict[str, Path], tmp_path: Path) -> None:
    """`train-teacher` and sharded labelling under torchrun with 2 CPU processes (gloo)."""
    exp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
        "-m", "distillkit", "train-teacher", "-d", str(world["train"]), "-v", str(world["val"]), "-o", str(exp),
        "--dino-weights", str(world["weights"]), "--epochs", "2", "--batch", "2", "--device", "cpu", *TINY_SETS,
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = exp / "teachers" / "grounding_dino_lora"
    assert (folder / "adapter_model.safetensors").is_file()
    rows = (folder / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + one row per epoch, written once (rank 0)

    script = tmp_path / "label.py"
    script.write_text(
        "import sys\nfrom pathlib import Path\n"
        "from distillkit.teachers import load_teacher\n"
        "from distillkit.teachers.labeller import label_images_sharded, teacher_cache_dir\n"
        "teacher = load_teacher(sys.argv[1], device='cpu', batch_size=1, box_threshold=0.0)\n"
        "images = sorted(Path(sys.argv[2]).glob('img_0_*.png'))\n"
        "stats = label_images_sharded(teacher, images, teacher_cache_dir(sys.argv[1]), batch_size=1)\n"
        "print('computed', stats.computed)\n"
    )
    label = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534",
             str(script), str(exp), str(world["train"].parent / "images")]  # fmt: skip
    done = subprocess.run(label, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    entries = list((exp / "cache" / "teacher_outputs").rglob("*.json"))
    assert len(entries) == 4
