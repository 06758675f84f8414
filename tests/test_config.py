"""The configuration system: shipped defaults → data → overrides, schema errors, experiment files."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from distillkit.cli import main
from distillkit.config import (
    ALL_SCHEMAS,
    SECTIONS,
    build_config,
    defaults_dir,
    load_defaults,
    load_experiment_config,
    parse_override,
    section_defaults,
    validate_section,
    write_experiment_config,
)
from distillkit.config.overrides import parse_value
from distillkit.data.validate import dataset_info_from_coco
from distillkit.errors import ConfigError, UsageError
from distillkit.io import sha256_file

REPO_ROOT = Path(__file__).resolve().parents[1]

BOXES_COCO: dict[str, Any] = {
    "images": [
        {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
        {"id": 2, "file_name": "b.png", "width": 100, "height": 80},
        {"id": 3, "file_name": "c.png", "width": 100, "height": 80},
    ],
    "categories": [{"id": 7, "name": "scratch"}, {"id": 2, "name": "dent"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 20, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0},
    ],
}


def masks_only_coco() -> dict[str, Any]:
    coco = copy.deepcopy(BOXES_COCO)
    for ann in coco["annotations"]:
        x, y, w, h = ann.pop("bbox")
        ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return coco


@pytest.fixture
def coco_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.json"
    path.write_text(json.dumps(BOXES_COCO))
    return path


# --------------------------------------------------------------------------------------------------
# shipped defaults and schema


def test_defaults_dir_holds_one_yaml_per_section() -> None:
    folder = defaults_dir()
    assert folder == REPO_ROOT / "defaults"  # source checkout layout
    assert sorted(p.stem for p in folder.glob("*.yaml")) == sorted(SECTIONS)


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_default_yaml_validates_and_is_complete(section: str) -> None:
    raw = load_defaults(section)
    model = validate_section(section, raw)
    # Every key of the YAML is in the schema and the schema has no key the YAML lacks.
    assert model.model_dump() == raw
    assert section_defaults(section) == model


def test_load_defaults_returns_a_fresh_copy() -> None:
    first = load_defaults("augmentation")
    first["environment"]["lighting"] = "poor"
    assert load_defaults("augmentation")["environment"]["lighting"] == "stable"


def test_unknown_key_names_full_key_and_suggests_nearest() -> None:
    with pytest.raises(ConfigError) as err:
        build_config(["student"], overrides=["student.bach=8"])
    assert str(err.value) == "unknown config key 'student.bach' — did you mean 'student.batch'?"
    assert err.value.exit_code == 2


def test_unknown_nested_key_and_unknown_section_suggest() -> None:
    with pytest.raises(ConfigError, match=r"'teacher_sam_lora\.lora\.rr' — did you mean 'teacher_sam_lora\.lora\.r'"):
        build_config(overrides=["teacher_sam_lora.lora.rr=4"])
    with pytest.raises(ConfigError, match=r"'studnet\.batch' — did you mean 'student\.batch'"):
        build_config(overrides=["studnet.batch=4"])
    with pytest.raises(ConfigError, match=r"unknown config section 'studnt' — did you mean 'student'"):
        build_config(["studnt"])


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    with pytest.raises(ConfigError) as err:
        validate_section("checkpointing", {**load_defaults("checkpointing"), "zzzzzz": 1})
    assert "unknown config key 'checkpointing.zzzzzz'" in str(err.value)
    assert "save_best" in str(err.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("student.batch=abc", "invalid value for 'student.batch': 'abc' (expected an integer >= 1)"),
        ("student.batch=true", "invalid value for 'student.batch': true (expected an integer >= 1)"),
        ("student.conf=1.5", "invalid value for 'student.conf': 1.5 (expected a number in [0, 1])"),
        ("training_dynamics.deterministic=3", "'training_dynamics.deterministic': 3 (expected true or false)"),
        ("training_dynamics.optimizer=adam", "'training_dynamics.optimizer': 'adam' (expected one of 'adamw', 'sgd')"),
        ("training_dynamics.ema.decay=2", "'training_dynamics.ema.decay': 2"),
        ("classifier.topk=[1, x]", "'classifier.topk': [1,\"x\"] (expected a list of integers >= 1"),
        ("classifier.focal_alpha=x", "'classifier.focal_alpha': 'x' (expected 'dynamic' or a number in [0, 1] or"),
    ],
)
def test_wrong_type_names_key_value_and_expected_type(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(overrides=[override])
    message = str(err.value)
    assert expected in message
    assert "\n" not in message
    assert "pydantic" not in message.lower()


def test_cross_key_checks_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match=r"invalid configuration in 'checkpointing'.*mode must be 'min'"):
        build_config(overrides=["checkpointing.monitor=val/loss"])
    with pytest.raises(ConfigError, match="needs loss bce or focal"):
        build_config(overrides=["classifier.multi_label=true"])
    with pytest.raises(ConfigError, match="cache_image_embeddings needs freeze_image_encoder"):
        build_config(overrides=["teacher_sam_lora.freeze_image_encoder=false"])


def test_several_problems_are_counted_in_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        build_config(["student"], overrides=["student.bach=3", "student.epochs=x"])
    assert str(err.value).startswith("unknown config key 'student.bach'")  # the typo comes first
    assert "(and 1 more problem in 'student')" in str(err.value)


def test_models_validate_assignment() -> None:
    config = build_config(["student"])
    config.student.batch = 4
    assert config.to_dict()["student"]["batch"] == 4
    with pytest.raises(ValueError):
        config.student.batch = 0


# --------------------------------------------------------------------------------------------------
# overrides


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("16", 16),
        ("0.5", 0.5),
        ("1e-4", 1e-4),
        ("-3.5E2", -350.0),
        ("true", True),
        ("false", False),
        ("null", None),
        ("[3,4]", [3, 4]),
        ("[a, b]", ["a", "b"]),
        ("{lighting: variable}", {"lighting": "variable"}),
        ("yolov8n-seg", "yolov8n-seg"),
        ("'16'", "16"),
        ("", ""),
        ("a=b", "a=b"),
        ("2024-01-01", "2024-01-01"),
    ],
)
def test_override_values_are_parsed_as_yaml(text: str, value: Any) -> None:
    override = parse_override(f"student.model={text}")
    assert override.value == value
    assert type(override.value) is type(value)


def test_override_nested_key() -> None:
    override = parse_override("teacher_sam_lora.lora.r=8")
    assert override.path == ("teacher_sam_lora", "lora", "r")
    assert override.section == "teacher_sam_lora"
    config = build_config(overrides=["teacher_sam_lora.lora.r=8", "augmentation.environment.lighting=poor"])
    assert config.teacher_sam_lora.lora.r == 8
    assert config.augmentation.environment.lighting == "poor"


def test_dict_override_merges_into_group() -> None:
    config = build_config(overrides=["augmentation.environment={lighting: variable}"])
    assert config.augmentation.environment.lighting == "variable"
    assert config.augmentation.environment.camera == "fixed"  # untouched keys keep their defaults


def test_later_override_wins() -> None:
    config = build_config(["student"], overrides=["student.batch=8", "student.batch=32"])
    assert config.student.batch == 32


@pytest.mark.parametrize("text", ["student.batch", "=3", " =3", "batch=3", "student..batch=3", "student.ba tch=1"])
def test_malformed_overrides_are_usage_errors_with_a_hint(text: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_override(text)
    assert err.value.exit_code == 2
    assert "SECTION.KEY=VALUE" in str(err.value)


def test_unparsable_value_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="cannot parse the value"):
        parse_override("student.batch=[1")


def test_setting_below_a_scalar_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"'student\.batch' is a single value"):
        build_config(["student"], overrides=["student.batch.x=1"])


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_integers_round_trip(number: int) -> None:
    assert parse_value(str(number)) == number


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip(number: float) -> None:
    assert parse_value(repr(number)) == pytest.approx(number)


# --------------------------------------------------------------------------------------------------
# the data layer


def test_dataset_info_from_coco_boxes_only() -> None:
    info = dataset_info_from_coco(BOXES_COCO)
    assert info.has_boxes and not info.has_masks
    assert info.class_names == ["dent", "scratch"]  # COCO id order
    assert info.class_mapping == {2: 0, 7: 1}
    assert info.teachers == ["grounding_dino"]
    assert info.num_images == 3 and info.num_annotations == 3 and info.num_empty_images == 1
    counts = {c.name: (c.annotations, c.images) for c in info.categories}
    assert counts == {"scratch": (2, 2), "dent": (1, 1)}


def test_dataset_info_from_coco_masks_and_rle() -> None:
    # Masks without boxes: validate derives the boxes, so the repaired data holds both (issue 13).
    info = dataset_info_from_coco(masks_only_coco())
    assert info.has_masks and info.has_boxes and info.mode == "both"
    assert info.teachers == ["grounding_dino", "sam"]

    coco = masks_only_coco()
    for ann in coco["annotations"]:
        ann["bbox"] = []  # empty boxes do not count
    binary = np.zeros((80, 100), dtype=np.uint8, order="F")
    binary[10:20, 10:30] = 1
    rle = mask_utils.encode(binary)  # compressed string counts
    coco["annotations"][0]["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
    info = dataset_info_from_coco(coco)
    assert info.has_masks and info.has_boxes  # the empty boxes are filled from the masks


def test_dataset_info_tolerates_junk() -> None:
    coco = {"images": [None, {"id": [1]}], "annotations": ["x", {"bbox": [0, 0, True, 1]}], "categories": [5]}
    info = dataset_info_from_coco(coco)
    assert info.num_classes == 0 and not info.has_boxes


def test_data_layer_boxes_only() -> None:
    config = build_config(["student", "classifier"], dataset_info=dataset_info_from_coco(BOXES_COCO))
    assert config.names == ["data", "student", "classifier"]
    assert config.data.student == "yolov8s"
    assert config.data.teachers == ["grounding_dino"]
    assert config.data.num_classes == 2
    assert config.data.class_mapping == {2: 0, 7: 1}
    assert config.student.model == "yolov8s"
    assert config.classifier.num_classes == 2


def test_data_layer_masks() -> None:
    config = build_config(["student"], dataset_info=dataset_info_from_coco(masks_only_coco()))
    assert config.data.student == "yolov8s-seg"
    assert config.data.teachers == ["grounding_dino", "sam"]  # boxes derived from the masks (issue 13)
    assert config.student.model == "yolov8s-seg"

    both = copy.deepcopy(BOXES_COCO)
    both["annotations"][0]["segmentation"] = [[10, 10, 30, 10, 30, 30]]
    config = build_config(["student"], dataset_info=dataset_info_from_coco(both))
    assert config.data.teachers == ["grounding_dino", "sam"]
    assert config.student.model == "yolov8s-seg"


def test_layering_order_override_beats_data_beats_defaults() -> None:
    info = dataset_info_from_coco(BOXES_COCO)
    assert build_config(["student"]).student.model is None  # shipped default: decided by the data
    assert build_config(["student"], dataset_info=info).student.model == "yolov8s"  # data
    config = build_config(["student"], dataset_info=info, overrides=["student.model=yolov8n"])
    assert config.student.model == "yolov8n"  # override
    assert config.data.student == "yolov8s"  # the data section still says what the data calls for
    # Overriding the data section changes what "from the data" means.
    config = build_config(["student"], dataset_info=info, overrides=["data.student=yolov8m"])
    assert config.student.model == "yolov8m"


def test_data_section_needs_a_dataset() -> None:
    with pytest.raises(ConfigError, match="none was given"):
        build_config(["data"])
    with pytest.raises(ConfigError, match="none was given"):
        build_config(["student"], overrides=["data.num_classes=3"])


def test_inconsistent_data_override_is_rejected() -> None:
    with pytest.raises(ConfigError, match="invalid configuration in 'data'"):
        build_config(dataset_info=dataset_info_from_coco(BOXES_COCO), overrides=["data.num_classes=5"])


def test_prompts_must_name_dataset_classes() -> None:
    info = dataset_info_from_coco(BOXES_COCO)
    sections = ["teacher_grounding_dino_lora"]
    ok = build_config(sections, info, overrides=["teacher_grounding_dino_lora.prompts={dent: dented metal}"])
    assert ok.teacher_grounding_dino_lora.prompts == {"dent": "dented metal"}
    with pytest.raises(ConfigError, match="did you mean 'scratch'"):
        build_config(sections, info, overrides=["teacher_grounding_dino_lora.prompts={scrach: x}"])


def test_override_of_section_not_requested_is_explained() -> None:
    with pytest.raises(ConfigError, match="section 'student' is not part of this configuration"):
        build_config(["classifier"], overrides=["student.batch=4"])


# --------------------------------------------------------------------------------------------------
# LoRA target patterns (peft full-matches a string target_modules against module names)


def test_grounding_dino_lora_targets_attention_but_not_backbones() -> None:
    pattern = section_defaults("teacher_grounding_dino_lora").lora.target_modules  # type: ignore[attr-defined]
    assert isinstance(pattern, str)
    hits = [
        "model.encoder.layers.0.text_enhancer_layer.self_attn.query",
        "model.encoder.layers.5.fusion_layer.attn.vision_proj",
        "model.encoder.layers.2.deformable_layer.self_attn.sampling_offsets",
        "model.encoder.layers.2.deformable_layer.self_attn.value_proj",
        "model.decoder.layers.0.self_attn.out_proj",
        "model.decoder.layers.3.encoder_attn_text.key",
        "model.decoder.layers.3.encoder_attn.output_proj",
    ]
    misses = [
        "model.text_backbone.encoder.layer.0.attention.self.query",  # BERT
        "model.text_backbone.encoder.layer.11.attention.output.dense",
        "model.backbone.conv_encoder.model.encoder.layers.0.blocks.0.attention.self.query",  # Swin
        "model.encoder.layers.0.deformable_layer.fc1",
        "model.decoder.layers.0.self_attn",
        "model.decoder.bbox_embed.0.layers.0",
    ]
    assert all(re.fullmatch(pattern, name) for name in hits)
    assert not any(re.fullmatch(pattern, name) for name in misses)


def test_sam_lora_targets_mask_decoder_attention_only() -> None:
    pattern = section_defaults("teacher_sam_lora").lora.target_modules  # type: ignore[attr-defined]
    assert isinstance(pattern, str)
    hits = [
        "mask_decoder.transformer.layers.0.self_attn.q_proj",
        "mask_decoder.transformer.layers.1.cross_attn_token_to_image.v_proj",
        "mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj",
        "mask_decoder.transformer.final_attn_token_to_image.k_proj",
    ]
    misses = ["vision_encoder.layers.0.attn.qkv", "mask_decoder.iou_prediction_head.proj_in", "prompt_encoder.x"]
    assert all(re.fullmatch(pattern, name) for name in hits)
    assert not any(re.fullmatch(pattern, name) for name in misses)


def test_bad_regex_is_rejected() -> None:
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        build_config(overrides=["teacher_sam_lora.lora.target_modules='(unclosed'"])


# --------------------------------------------------------------------------------------------------
# reproducibility and experiment files


def test_two_builds_give_identical_yaml_bytes(coco_file: Path) -> None:
    info = dataset_info_from_coco(BOXES_COCO)
    sets = ["student.batch=8", "training_dynamics.lr=3e-4"]
    first = build_config(None, info, coco_file, sets)
    second = build_config(None, info, coco_file, sets)
    assert first.to_dict() == second.to_dict()
    assert first.to_yaml().encode() == second.to_yaml().encode()
    assert yaml.safe_load(first.to_yaml()) == first.to_dict()
    # Section order is canonical whatever order they were asked in.
    assert build_config(["student", "preprocessing"]).names == ["preprocessing", "student"]


def test_written_config_is_reproducible_and_loads_back(tmp_path: Path, coco_file: Path) -> None:
    info = dataset_info_from_coco(BOXES_COCO)
    config = build_config(None, info, coco_file, ["student.batch=8"])
    a = write_experiment_config(tmp_path / "a", config)
    b = write_experiment_config(tmp_path / "b", build_config(None, info, coco_file, ["student.batch=8"]))
    assert a.read_bytes() == b.read_bytes()
    loaded = load_experiment_config(a)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.dataset_path == coco_file


def test_metadata_json(tmp_path: Path, coco_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # outside any git work tree
    info = dataset_info_from_coco(BOXES_COCO)
    config = build_config(["student"], info, coco_file, ["student.batch=8"])
    path = write_experiment_config(tmp_path / "exp", config, filename="teacher_config.yaml", extra_metadata={"k": 1})
    assert path == tmp_path / "exp" / "teacher_config.yaml"
    meta = json.loads((tmp_path / "exp" / "metadata.json").read_text())
    assert meta["dataset"]["sha256"] == sha256_file(coco_file)
    assert meta["dataset"]["path"] == coco_file.as_posix()
    assert (meta["dataset"]["images"], meta["dataset"]["annotations"], meta["dataset"]["classes"]) == (3, 3, 2)
    for name in ("distillkit", "torch", "torchvision", "transformers", "peft", "ultralytics", "timm", "onnxruntime"):
        assert name in meta["versions"]
    assert meta["versions"]["distillkit"]
    assert meta["git"]["commit"] is None and meta["git"]["dirty"] is None
    assert meta["overrides"] == ["student.batch=8"]
    assert meta["config_file"] == "teacher_config.yaml"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["created"])
    assert meta["python"] and meta["platform"]
    assert meta["extra"] == {"k": 1}

    # A second config in the same folder keeps the first one's entry.
    write_experiment_config(tmp_path / "exp", build_config(["distillation"]), filename="distillation_config.yaml")
    meta = json.loads((tmp_path / "exp" / "metadata.json").read_text())
    assert set(meta["configs"]) == {"teacher_config.yaml", "distillation_config.yaml"}
    assert meta["config_file"] == "distillation_config.yaml"


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_metadata_records_git_commit_inside_a_work_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    data = repo / "train.json"
    data.write_text(json.dumps(BOXES_COCO))
    monkeypatch.chdir(tmp_path)  # the working folder is not a repository, the dataset's is
    config = build_config(["student"], dataset_info_from_coco(BOXES_COCO), data)
    write_experiment_config(tmp_path / "exp", config)
    git = json.loads((tmp_path / "exp" / "metadata.json").read_text())["git"]
    assert re.fullmatch(r"[0-9a-f]{40}", git["commit"])
    assert git["source"] == "dataset"
    assert git["dirty"] is False  # untracked files do not make a tree dirty


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    config = build_config()
    for _ in range(3):
        write_experiment_config(tmp_path, config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "metadata.json"]


def test_write_refuses_bad_targets(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        write_experiment_config(file, build_config(["student"]))
    with pytest.raises(UsageError, match="invalid config file name"):
        write_experiment_config(tmp_path / "exp", build_config(["student"]), filename="../x.yaml")


# --------------------------------------------------------------------------------------------------
# the `distillkit config` command


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "NO_COLOR": "1"}
    env.pop("DISTILLKIT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "distillkit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_json_is_a_single_document(tmp_path: Path, coco_file: Path) -> None:
    result = _run_cli("config", "--json", "--data", str(coco_file), "--set", "student.batch=8", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # raises if stdout holds anything else
    assert set(document) == {"data", *SECTIONS}
    assert document["student"]["batch"] == 8
    assert document["student"]["model"] == "yolov8s"


def test_cli_bad_set_key_exits_2_with_one_line(tmp_path: Path) -> None:
    result = _run_cli("config", "-s", "student", "--set", "student.bach=8", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "did you mean 'student.batch'" in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_malformed_set_and_bad_section_exit_2(tmp_path: Path) -> None:
    for args in (["--set", "student"], ["-s", "studnt"]):
        result = _run_cli("config", *args, cwd=tmp_path)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr


def test_cli_prints_yaml(capsys: pytest.CaptureFixture[str], coco_file: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["config", "-s", "student", "--data", str(coco_file)])
    assert exit_info.value.code == 0
    document = yaml.safe_load(capsys.readouterr().out)
    assert list(document) == ["data", "student"]
    assert document["student"]["model"] == "yolov8s"


def test_cli_output_writes_experiment_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, coco_file: Path
) -> None:
    exp = tmp_path / "exp" / "run1"
    with pytest.raises(SystemExit) as exit_info:
        main(["config", "--data", str(coco_file), "--output", str(exp), "--set", "student.epochs=3"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "config.yaml" in out and "metadata.json" in out
    written = yaml.safe_load((exp / "config.yaml").read_text())
    assert written["student"]["epochs"] == 3
    assert json.loads((exp / "metadata.json").read_text())["overrides"] == ["student.epochs=3"]


def test_cli_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["config", "--list", "--json", "-s", "student"])
    assert exit_info.value.code == 0
    rows = json.loads(capsys.readouterr().out)["keys"]
    batch = next(row for row in rows if row["key"] == "batch")
    assert batch == {
        "section": "student",
        "key": "batch",
        "type": "int >= 1",
        "expected": "an integer >= 1",
        "default": 16,
        "from_data": False,
        "description": "images per batch",
    }


def test_cli_list_table_covers_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["config", "--list"])
    out = capsys.readouterr().out
    for section in SECTIONS:
        assert section in out
    assert "target_modules" in out


def test_every_schema_is_strict_and_closed() -> None:
    for model in ALL_SCHEMAS.values():
        assert model.model_config.get("extra") == "forbid"
        assert model.model_config.get("validate_assignment") is True


def test_defaults_dir_prefers_the_installed_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import distillkit

    package = tmp_path / "site" / "distillkit"
    (package / "defaults").mkdir(parents=True)
    (package / "defaults" / "student.yaml").write_text("batch: 1\n")
    monkeypatch.setattr(distillkit, "__file__", str(package / "__init__.py"))
    assert defaults_dir() == package / "defaults"

    shutil.rmtree(package / "defaults")
    with pytest.raises(ConfigError, match="shipped configuration defaults were not found"):
        defaults_dir()


def test_small_conveniences() -> None:
    assert build_config("student").names == ["student"]
    assert build_config(["student"], overrides="student.batch=2").student.batch == 2
    assert build_config(["student"], overrides=["student.cache=true"]).student.cache == "ram"
    assert build_config(["training_dynamics"], overrides=["training_dynamics.amp=false"]).training_dynamics.amp == "off"
    assert build_config(["training_dynamics"], overrides=["training_dynamics.device=0"]).training_dynamics.device == "0"


def test_a_config_written_before_a_key_existed_reads_back_with_that_keys_default(tmp_path: Path) -> None:
    import yaml

    from distillkit.config import build_config, load_experiment_config, write_experiment_config

    config = build_config(["distillation"], overrides=["distillation.merge_iou=0.7"])
    write_experiment_config(tmp_path, config, filename="old.yaml")
    document = yaml.safe_load((tmp_path / "old.yaml").read_text())
    del document["distillation"]["soft_targets"]  # as an earlier distillkit wrote it
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(document))
    loaded = load_experiment_config(tmp_path / "old.yaml").sections["distillation"]
    assert loaded.soft_targets is True and loaded.merge_iou == 0.7  # shipped default filled, saved value kept


def test_a_config_holding_removed_preprocessing_keys_reads_back_without_them(tmp_path: Path) -> None:
    import yaml

    from distillkit.config import build_config, load_experiment_config, write_experiment_config

    config = build_config(["preprocessing", "student"], overrides=["preprocessing.interpolation=bicubic"])
    write_experiment_config(tmp_path, config, filename="old.yaml")
    document = yaml.safe_load((tmp_path / "old.yaml").read_text())
    # As an earlier distillkit wrote it: these four were typed and documented but read by nothing.
    document["preprocessing"].update({"imgsz": 640, "resize_mode": "letterbox", "keep_ratio": True, "pad_value": 114})
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(document))
    with pytest.warns(DeprecationWarning, match=r"removed since it was written are ignored \(preprocessing\.imgsz: "):
        loaded = load_experiment_config(tmp_path / "old.yaml")
    assert loaded.to_dict() == config.to_dict()  # the saved values kept, the removed keys gone
    # Only a saved config is forgiven: a new run naming one gets the unknown-key error.
    with pytest.raises(ConfigError, match=r"unknown config key 'preprocessing\.imgsz'"):
        build_config(["preprocessing"], overrides=["preprocessing.imgsz=320"])
