"""Characteristic-based augmentation: registry, merging, intensity, geometry, config, ultralytics hook, preview."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from distillkit.augmentation import (
    CHARACTERISTICS,
    ENVIRONMENT_OPTIONS,
    AugmentationPipeline,
    PipelinePlan,
    TransformStep,
    available_characteristics,
    available_environments,
    build_pipeline,
    describe_pipeline,
    pipeline_from_config,
)
from distillkit.augmentation.names import NEUTRAL_ENVIRONMENT
from distillkit.augmentation.pipeline import import_albumentations
from distillkit.augmentation.ultralytics_hook import ultralytics_augmentation_arguments
from distillkit.config import build_config
from distillkit.errors import ConfigError, UsageError
from tests.test_cli import run

LEVELS = ("low", "medium", "high")
GEOMETRIC = ["changes_shape", "changes_size", "moves_or_vibrates", "multiple_objects", "partially_hidden"]


def every_source() -> list[tuple[list[str], dict[str, str]]]:
    """Each characteristic alone, and each environment option alone."""
    sources: list[tuple[list[str], dict[str, str]]] = [([name], {}) for name in CHARACTERISTICS]
    sources += [([], {factor: option}) for factor, options in ENVIRONMENT_OPTIONS.items() for option in options]
    return sources


def blob_scene(rng: np.random.Generator, height: int = 64, width: int = 80, count: int = 3) -> dict[str, Any]:
    """An image with ``count`` elliptic objects: masks, their tight COCO boxes, labels."""
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    masks, boxes = [], []
    for _ in range(count):
        cy, cx = rng.uniform(8, height - 8), rng.uniform(8, width - 8)
        ry, rx = rng.uniform(3, 12), rng.uniform(3, 12)
        mask = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        masks.append(mask)
        boxes.append([cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]])
    return {"image": image, "masks": masks, "bboxes": np.array(boxes, np.float32), "labels": list(range(count))}


def tight(mask: np.ndarray) -> list[float]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]]


def flat_transforms(transforms: list[Any]) -> list[Any]:
    A = import_albumentations()
    out: list[Any] = []
    for transform in transforms:
        out += flat_transforms(list(transform.transforms)) if isinstance(transform, A.BaseCompose) else [transform]
    return out


# --------------------------------------------------------------------------------------------------
# registry and plans


def test_every_option_yields_a_valid_pipeline_at_every_intensity() -> None:
    scene = blob_scene(np.random.default_rng(0))
    for characteristics, environment in every_source():
        neutral = not characteristics and all(NEUTRAL_ENVIRONMENT[k] == v for k, v in environment.items())
        for level in LEVELS:
            pipe = build_pipeline(characteristics, environment, level, seed=1)
            assert pipe.plan.is_empty == neutral, (characteristics, environment, level)
            names = [type(t).__name__ for t in flat_transforms(pipe.transforms)]
            assert names == [step.name for step in pipe.plan.steps]
            for _ in range(3):
                out = pipe(**scene)
                assert out["image"].shape == scene["image"].shape and out["image"].dtype == np.uint8
                assert len(out["masks"]) == len(out["bboxes"]) == len(out["labels"])


def test_intensity_widens_ranges_and_raises_probabilities_monotonically() -> None:
    sources = [*every_source(), (list(CHARACTERISTICS), {"lighting": "poor", "camera": "shaky", "distance": "close"})]
    for characteristics, environment in sources:
        plans = [describe_pipeline(characteristics, environment, level) for level in LEVELS]
        assert [s.name for s in plans[0].steps] == [s.name for s in plans[1].steps] == [s.name for s in plans[2].steps]
        for low, medium, high in zip(*(plan.steps for plan in plans), strict=True):
            assert low.p <= medium.p <= high.p and low.p < high.p, low.name
            for key in low.params:
                ends = [np.atleast_1d(np.asarray(step.params[key], dtype=object)) for step in (low, medium, high)]
                if not all(isinstance(v, int | float) for v in ends[0]):
                    assert ends[0].tolist() == ends[2].tolist()  # fixed settings do not scale
                    continue
                for a, b, c in zip(*ends, strict=True):  # each end moves one way: low -> medium -> high
                    assert a <= b <= c or a >= b >= c, (low.name, key, a, b, c)


def test_intensity_none_is_the_identity() -> None:
    scene = blob_scene(np.random.default_rng(1))
    pipe = build_pipeline(list(CHARACTERISTICS), {"camera": "shaky"}, "none")
    assert pipe.plan.is_empty and pipe.transforms == []
    out = pipe(**scene)
    assert np.array_equal(out["image"], scene["image"])
    assert np.array_equal(out["bboxes"], scene["bboxes"]) and out["labels"] == scene["labels"]
    assert all(np.array_equal(a, b) for a, b in zip(out["masks"], scene["masks"], strict=True))


def test_overlapping_requests_are_merged_not_duplicated() -> None:
    plan = describe_pipeline(["moves_or_vibrates", "changes_size"], {"camera": "shaky", "distance": "variable"}, "high")
    names = [step.name for step in plan.steps]
    assert len(names) == len(set(names))
    blur = plan.step("MotionBlur")
    affine = plan.step("Affine")
    assert blur is not None and affine is not None
    assert set(blur.sources) == {"moves_or_vibrates", "camera=shaky"}
    assert blur.params["blur_limit"] == (3, 15)  # the envelope of (3, 11) and (3, 15)
    assert blur.p == 0.5  # the larger of 0.45 and 0.5
    assert affine.params["translate_percent"] == (-0.12, 0.12)
    assert affine.params["rotate"] == (-15.0, 15.0) and affine.params["scale"] == (0.6, 1.5)
    assert set(affine.sources) == {"moves_or_vibrates", "changes_size", "camera=shaky", "distance=variable"}
    # the same characteristic twice, or in another order, is the same plan
    assert describe_pipeline(["changes_size", "changes_size"]) == describe_pipeline(["changes_size"])
    assert describe_pipeline(["low_contrast", "changes_size"]) == describe_pipeline(["changes_size", "low_contrast"])
    # alternatives of one group become one OneOf, applied at least as often as its most likely member
    A = import_albumentations()
    pipe = build_pipeline(["moves_or_vibrates", "semi_transparent"], {"distance": "close"}, "medium")
    groups = [t for t in pipe.transforms if isinstance(t, A.OneOf)]
    blurs = [type(t).__name__ for group in groups for t in group.transforms]
    assert len(groups) == 1 and sorted(blurs) == ["Defocus", "GaussianBlur", "MotionBlur"]
    assert all(group.p >= max(t.p for t in group.transforms) for group in groups)


def test_describe_pipeline_lists_types_and_parameters_without_building() -> None:
    plan = describe_pipeline(["partially_hidden"], {"lighting": "variable"}, "low")
    document = json.loads(json.dumps(plan.to_dict()))
    assert document["intensity"] == "low" and document["environment"]["lighting"] == "variable"
    dropout = next(step for step in document["steps"] if step["name"] == "CoarseDropout")
    assert dropout["params"]["num_holes_range"] == [1, 2] and dropout["p"] == 0.2
    assert dropout["sources"] == ["partially_hidden"]


def test_available_names_for_user_interfaces() -> None:
    assert list(available_characteristics()) == list(CHARACTERISTICS) and len(CHARACTERISTICS) == 9
    environments = available_environments()
    assert environments["lighting"].keys() == {"stable", "variable", "poor"}
    assert list(environments["distance"]) == ["fixed", "variable", "close"]
    assert all(isinstance(text, str) and text for text in available_characteristics().values())


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: describe_pipeline(["changes_shap"]), "did you mean 'changes_shape'?"),
        (lambda: describe_pipeline([], {"lightning": "poor"}), "did you mean 'lighting'?"),
        (lambda: describe_pipeline([], {"camera": "shakey"}), "did you mean 'shaky'?"),
        (lambda: build_pipeline([], None, "hihg"), "did you mean 'high'?"),
    ],
)
def test_unknown_names_are_rejected_with_suggestions(call: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        call()
    assert expected in str(err.value) and "Valid: " in str(err.value)


def test_unknown_names_via_set_give_one_line_config_errors() -> None:
    with pytest.raises(ConfigError) as err:
        build_config(["augmentation"], overrides=["augmentation.characteristics=[changes_shape,reflective]"])
    message = str(err.value)
    assert message.startswith("invalid value for 'augmentation.characteristics'")
    assert "did you mean 'reflective_surface'?" in message and "\n" not in message
    with pytest.raises(ConfigError, match="did you mean 'poor'"):
        build_config(["augmentation"], overrides=["augmentation.environment.lighting=por"])
    with pytest.raises(ConfigError, match="did you mean 'medium'"):
        build_config(["augmentation"], overrides=["augmentation.intensity=meduim"])
    config = build_config(["augmentation"], overrides=["augmentation.characteristics=[changes_shape,low_contrast]"])
    assert config.augmentation.characteristics == ["changes_shape", "low_contrast"]


# --------------------------------------------------------------------------------------------------
# applying a pipeline


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    scene_seed=st.integers(0, 2**16),
    characteristics=st.lists(st.sampled_from(GEOMETRIC), min_size=1, max_size=3, unique=True),
    camera=st.sampled_from(["fixed", "moving", "shaky"]),
    distance=st.sampled_from(["fixed", "variable", "close"]),
)
def test_boxes_stay_the_tight_boxes_of_their_masks(
    seed: int, scene_seed: int, characteristics: list[str], camera: str, distance: str
) -> None:
    scene = blob_scene(np.random.default_rng(scene_seed), count=4)
    pipe = build_pipeline(characteristics, {"camera": camera, "distance": distance}, "high", seed=seed)
    out = pipe(**scene)
    assert len(out["masks"]) == len(out["bboxes"]) == len(out["labels"])
    assert out["labels"] == sorted(set(out["labels"])) and set(out["labels"]) <= set(scene["labels"])
    height, width = out["image"].shape[:2]
    for box, mask in zip(out["bboxes"], out["masks"], strict=True):
        assert mask.any()
        assert np.abs(np.asarray(box) - tight(mask)).max() <= 1.0
        x, y, w, h = box
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), scene_seed=st.integers(0, 2**16))
def test_boxes_alone_follow_their_objects_under_scale_and_shift(seed: int, scene_seed: int) -> None:
    """Without masks, albumentations moves the boxes; they must match the moved masks (1 px)."""
    scene = blob_scene(np.random.default_rng(scene_seed), count=3)
    characteristics = ["changes_size", "multiple_objects"]  # Affine scale + translation, no rotation
    with_masks = build_pipeline(characteristics, None, "high", seed=seed)(**scene)
    boxes_only = build_pipeline(characteristics, None, "high", seed=seed)(
        image=scene["image"], bboxes=scene["bboxes"], labels=scene["labels"]
    )
    height, width = scene["image"].shape[:2]
    by_label = dict(zip(boxes_only["labels"], boxes_only["bboxes"], strict=True))
    for label, box in zip(with_masks["labels"], with_masks["bboxes"], strict=True):
        moved = by_label.get(label)
        # an object cut by the border has a clipped box but a tighter visible mask: compare whole ones
        inside = moved is not None and moved[0] > 1 and moved[1] > 1
        if inside and moved[0] + moved[2] < width - 1 and moved[1] + moved[3] < height - 1:
            # the mask is resampled to pixels: each edge of its tight box may move up to a pixel, so a width or
            # height up to two (hypothesis found 1.74 px at seed=29683, scene_seed=4505 with a 1.5 bound)
            assert np.abs(moved - box).max() <= 2.0


def shift_right(fraction: float) -> AugmentationPipeline:
    """A pipeline that always shifts the image right by ``fraction`` of its width."""
    step = TransformStep(
        "Affine", 1.0, {"translate_percent": {"x": (fraction, fraction), "y": (0.0, 0.0)}}, ("test",), None
    )
    return AugmentationPipeline(PipelinePlan((), dict(NEUTRAL_ENVIRONMENT), "high", (step,)), seed=0)


def test_objects_pushed_out_of_frame_are_dropped_with_masks_labels_and_keypoints() -> None:
    image = np.zeros((40, 100, 3), np.uint8)
    left, right = np.zeros((40, 100), bool), np.zeros((40, 100), bool)
    left[10:20, 5:15] = True
    right[10:20, 80:95] = True
    out = shift_right(0.5)(
        image=image,
        masks=[left, right],
        bboxes=[[5, 10, 10, 10], [80, 10, 15, 10]],
        labels=["kept", "gone"],
        keypoints=[[10, 15], [90, 15]],
        keypoint_labels=["in", "out"],
    )
    assert out["labels"] == ["kept"] and out["keypoint_labels"] == ["in"]
    assert len(out["masks"]) == 1 and out["masks"][0].dtype == bool
    assert out["bboxes"].tolist() == [[55.0, 10.0, 10.0, 10.0]]
    assert out["keypoints"].tolist() == [[60.0, 15.0]]
    # boxes alone: the same verdict, objects keep their labels
    alone = shift_right(0.5)(image=image, bboxes=[[5, 10, 10, 10], [80, 10, 15, 10]], labels=[3, 7])
    assert alone["labels"] == [3] and alone["bboxes"].shape == (1, 4)
    # masks alone: objects are the masks
    masks_only = shift_right(0.5)(image=image, masks=[left, right], labels=[3, 7])
    assert masks_only["labels"] == [3] and set(masks_only) == {"image", "masks", "labels"}


def test_same_seed_same_output_other_seed_other_output() -> None:
    scene = blob_scene(np.random.default_rng(3))
    args = (["changes_shape", "partially_hidden", "low_contrast"], {"lighting": "variable", "camera": "moving"}, "high")
    first, second, other = (build_pipeline(*args, seed=seed) for seed in (7, 7, 8))
    outputs = [[pipe(**scene) for _ in range(4)] for pipe in (first, second, other)]
    for a, b in zip(outputs[0], outputs[1], strict=True):
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["bboxes"], b["bboxes"])
        assert all(np.array_equal(m, n) for m, n in zip(a["masks"], b["masks"], strict=True))
    assert any(not np.array_equal(a["image"], c["image"]) for a, c in zip(outputs[0], outputs[2], strict=True))


def test_grey_images_and_bad_inputs() -> None:
    pipe = build_pipeline(["reflective_surface"], {"lighting": "poor"}, "high", seed=0)
    grey = np.random.default_rng(0).integers(0, 255, (32, 48), dtype=np.uint8)
    assert pipe(image=grey)["image"].shape == (32, 48)
    assert pipe(image=grey[..., None])["image"].shape == (32, 48, 1)
    with pytest.raises(UsageError, match="2 labels for 1 objects"):
        pipe(image=grey, bboxes=[[1, 1, 5, 5]], labels=[1, 2])
    with pytest.raises(UsageError, match="masks for"):
        pipe(image=grey, bboxes=[[1, 1, 5, 5]], masks=[])
    with pytest.raises(UsageError, match="mask 0 has shape"):
        pipe(image=grey, masks=[np.zeros((5, 5), np.uint8)])
    with pytest.raises(UsageError, match="image has shape"):
        pipe(image=np.zeros((4, 4, 4), np.uint8))


def test_pipeline_from_config_uses_the_section_and_its_seed() -> None:
    config = build_config(
        ["augmentation"],
        overrides=["augmentation.characteristics=[low_contrast]", "augmentation.intensity=low", "augmentation.seed=5"],
    ).augmentation
    pipe = pipeline_from_config(config)
    assert pipe.seed == 5 and pipe.plan == describe_pipeline(["low_contrast"], None, "low")
    assert pipeline_from_config(config, seed=9).seed == 9
    assert pipeline_from_config(build_config(["augmentation"]).augmentation).plan.is_empty  # shipped default: off


# --------------------------------------------------------------------------------------------------
# the YOLO student


def test_student_arguments_carry_the_pipeline_only_when_asked() -> None:
    from distillkit.students.train import ultralytics_train_arguments

    assert ultralytics_augmentation_arguments(build_config(["augmentation"]).augmentation) == {}
    config = build_config(
        ["student", "distillation", "augmentation", "training_dynamics"],
        overrides=["augmentation.characteristics=[changes_shape,moves_or_vibrates]", "augmentation.mosaic=0.5"],
    )

    class Dataset:
        yaml_path = Path("data.yaml")
        task = "detect"

    arguments = ultralytics_train_arguments(config, Dataset(), Path("exp"))  # type: ignore[arg-type]
    names = [type(t).__name__ for t in flat_transforms(arguments["augmentations"])]
    assert names == [step.name for step in describe_pipeline(["changes_shape", "moves_or_vibrates"]).steps]
    assert arguments["mosaic"] == 0.5
    A = import_albumentations()
    assert all(A.from_dict(A.to_dict(t)) for t in arguments["augmentations"])  # storable in checkpoints


def test_ultralytics_training_dataset_applies_the_pipeline(tmp_path: Path) -> None:
    """The installed transforms run inside a real ultralytics segmentation dataset and labels stay valid."""
    from distillkit.data.images import default_image_roots
    from distillkit.data.synthetic import generate_inspection_dataset
    from distillkit.data.validate import load_valid_dataset
    from distillkit.data.yolo_format import SplitSource, prepare_yolo_dataset
    from distillkit.ultralytics_env import import_ultralytics

    annotations = generate_inspection_dataset(tmp_path / "data", num_images=4, seed=1, image_size=(96, 96))
    valid = load_valid_dataset(annotations)
    source = SplitSource(valid.dataset, default_image_roots(annotations))  # type: ignore[arg-type]
    info = valid.info
    yolo = prepare_yolo_dataset(
        {"train": source, "val": source}, tmp_path / "yolo", "segment", info.class_mapping, info.class_names
    )
    config = build_config(
        ["augmentation"],
        overrides=["augmentation.characteristics=[changes_shape,partially_hidden]", "augmentation.intensity=high"],
    ).augmentation
    transforms = ultralytics_augmentation_arguments(config)["augmentations"]

    import_ultralytics()
    A = import_albumentations()
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    overrides = {"task": "segment", "imgsz": 64, "mosaic": 0.0, "overlap_mask": False, "fliplr": 0.0}
    cfg = get_cfg(overrides={**overrides, "augmentations": [A.to_dict(t) for t in transforms]})
    data = check_det_dataset(str(yolo.yaml_path))
    dataset = build_yolo_dataset(cfg, data["train"], 2, data, mode="train")
    step = next(t for t in dataset.transforms.transforms if type(t).__name__ == "Albumentations")
    assert step.contains_spatial and [type(t).__name__ for t in step.transform.transforms] == [
        type(t).__name__ for t in transforms
    ]
    for index in range(8):
        item = dataset[index % len(dataset)]
        boxes, masks = item["bboxes"].numpy(), item["masks"].numpy()  # normalised xywh; masks at 1/4 size
        assert len(item["cls"]) == len(boxes) == len(masks)
        assert (boxes[:, :2] - boxes[:, 2:] / 2 >= -1e-3).all() and (boxes[:, :2] + boxes[:, 2:] / 2 <= 1 + 1e-3).all()
        for box, mask in zip(boxes, masks, strict=True):
            if mask.any():  # polygon and box moved together: centres agree within ~1.5 pixels of the 1/4-size mask
                x, y, w, h = tight(mask)
                size = mask.shape[1]
                assert abs((x + w / 2) / size - box[0]) < 0.1 and abs((y + h / 2) / size - box[1]) < 0.1


# --------------------------------------------------------------------------------------------------
# the preview


def test_validate_renders_an_augmentation_preview(tmp_path: Path) -> None:
    from distillkit.data.synthetic import generate_inspection_dataset

    annotations = generate_inspection_dataset(tmp_path / "data", num_images=6, seed=3, image_size=(96, 64))
    preview = tmp_path / "out" / "preview.png"
    code, stdout, stderr = run(
        "validate",
        str(annotations),
        "--preview-augmentation",
        str(preview),
        "--preview-count",
        "3",
        "--set",
        "augmentation.characteristics=[changes_shape,partially_hidden]",
        "--set",
        "augmentation.intensity=high",
        "--json",
    )
    assert code == 0, stderr
    document = json.loads(stdout)["augmentation_preview"]
    assert len(document["image_ids"]) == 3 and document["objects_before"] > 0
    assert document["pipeline"]["steps"][0]["name"] == "Affine"
    with Image.open(preview) as picture:
        assert picture.format == "PNG" and picture.width > picture.height > 100
    assert not list(preview.parent.glob("*.tmp*"))


def test_validate_preview_rejects_other_settings(tmp_path: Path) -> None:
    from distillkit.data.synthetic import generate_inspection_dataset

    annotations = generate_inspection_dataset(tmp_path / "data", num_images=2, seed=3, image_size=(64, 64))
    preview = tmp_path / "p.png"
    code, _, stderr = run(
        "validate", str(annotations), "--preview-augmentation", str(preview), "--set", "student.batch=2"
    )
    assert code == 2 and "only takes --set augmentation" in stderr
    code, _, stderr = run(
        "validate", str(annotations), "--preview-augmentation", str(preview), "--set", "augmentation.intensity=hgih"
    )
    assert code == 2 and "did you mean 'high'" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = run("validate", str(annotations), "--set", "augmentation.intensity=high")
    assert code == 2 and "--preview-augmentation" in stderr
    assert not preview.exists()


@pytest.mark.slow
def test_student_trains_one_epoch_with_the_pipeline(tmp_path: Path) -> None:
    """A real (tiny) ultralytics run takes the pipeline and stores it with the run's arguments."""
    import yaml

    from distillkit.students.train import train_student
    from tests.test_train_student import FAST, make_shapes

    train, val = make_shapes(tmp_path / "train", 4, 0), make_shapes(tmp_path / "val", 2, 1)
    settings = [*FAST, "student.epochs=1", "student.imgsz=64", "augmentation.characteristics=[changes_shape]"]
    result = train_student(train, val, tmp_path / "exp", overrides=settings)
    assert result.epochs_run == 1
    stored = yaml.safe_load((tmp_path / "exp" / "train" / "args.yaml").read_text())["augmentations"]
    expected = [step.name for step in describe_pipeline(["changes_shape"]).steps]
    names = [entry["transform"]["__class_fullname__"] for entry in stored]
    assert names == ["Affine", "OneOf"] and expected == ["Affine", "ElasticTransform", "GridDistortion"]


class _AugmentedCopies:
    """The same image, augmented, at every index: what differs between items is only the RNG."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> np.ndarray:
        return self.pipe(image=self.image)["image"]


def test_data_loader_workers_draw_different_augmentations() -> None:
    """Each worker gets a pickled copy of the pipeline; without reseeding they would repeat each other."""
    import torch.utils.data

    pipe = build_pipeline([], {"lighting": "variable"}, "high", seed=3)
    loader = torch.utils.data.DataLoader(
        _AugmentedCopies(pipe), batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(0)
    )
    first, second = (batch[0].numpy() for batch in list(loader)[:2])  # items 0 and 1 come from workers 0 and 1
    assert not np.array_equal(first, second)
    again = [
        batch[0].numpy()
        for batch in torch.utils.data.DataLoader(
            _AugmentedCopies(pipe), batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(0)
        )
    ]
    assert np.array_equal(again[0], first) and np.array_equal(again[1], second)  # reproducible for a seed
