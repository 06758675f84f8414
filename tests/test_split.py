"""Tests for distillkit.data.split: ratio parsing, stratified seeded splitting, writing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distillkit.data.split import SplitResult, parse_ratios, split_dataset, split_sizes, write_splits
from distillkit.errors import DataError, UsageError
from distillkit.io import dumps_json

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared/data"
RATIOS = {"train": 0.7, "val": 0.15, "test": 0.15}
RARE_CLASS = 5


def make_coco(seed: int = 0, n_images: int = 300, n_empty: int = 40) -> dict[str, Any]:
    """Imbalanced multi-label COCO dict: class 1 common … class 5 in exactly 6 images, some empty images."""
    rng = np.random.default_rng(seed)
    labelled = rng.permutation(n_images)[: n_images - n_empty]
    presence = {1: 0.8, 2: 0.35, 3: 0.15, 4: 0.12}
    rare = set(rng.choice(labelled, size=6, replace=False).tolist())
    annotations = []
    for index in sorted(labelled.tolist()):
        classes = [c for c, p in presence.items() if rng.random() < p]
        if index in rare:
            classes.append(RARE_CLASS)
        if not classes:
            classes = [1]
        for category_id in classes:
            for _ in range(int(rng.integers(1, 4))):
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": 1000 + index,
                        "category_id": category_id,
                        "bbox": [1.0, 2.0, 3.0, 4.0],
                        "area": 12.0,
                        "iscrowd": int(rng.random() < 0.05),
                    }
                )
    rng.shuffle(annotations)  # file order of annotations is not grouped by image
    return {
        "info": {"description": "synthetic", "version": "1"},
        "licenses": [{"id": 1, "name": "CC0"}],
        "images": [
            {"id": 1000 + i, "file_name": f"img_{i:04d}.jpg", "width": 64, "height": 48} for i in range(n_images)
        ],
        "annotations": annotations,
        "categories": [{"id": c, "name": f"class_{c}", "supercategory": "x"} for c in range(1, 6)],
        "custom_key": {"kept": True},
    }


@pytest.fixture(scope="module")
def coco() -> dict[str, Any]:
    return make_coco()


@pytest.fixture(scope="module")
def result(coco: dict[str, Any]) -> SplitResult:
    return split_dataset(coco, RATIOS, seed=7)


def images_per_class(coco: dict[str, Any]) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {c["id"]: set() for c in coco["categories"]}
    for ann in coco["annotations"]:
        out[ann["category_id"]].add(ann["image_id"])
    return out


def share_deviation(coco: dict[str, Any], res: SplitResult, class_ids: list[int]) -> float:
    per_class = images_per_class(coco)
    total = 0.0
    for name, ratio in res.ratios.items():
        ids = set(res.image_ids[name])
        for c in class_ids:
            total += abs(len(per_class[c] & ids) / len(per_class[c]) - ratio)
    return total


# --------------------------------------------------------------------------------------------- ratios


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.7,0.15,0.15", {"train": 0.7, "val": 0.15, "test": 0.15}),
        (" 0.8 , 0.2 ", {"train": 0.8, "val": 0.2}),
        ("train:0.7,val:0.15,test:0.15", {"train": 0.7, "val": 0.15, "test": 0.15}),
        ("test:0.2,train:0.8", {"test": 0.2, "train": 0.8}),
        ("70,15,15", {"train": 0.7, "val": 0.15, "test": 0.15}),
        ("train:80,val:20", {"train": 0.8, "val": 0.2}),
        ("a:0.25,b:0.25,c:0.25,d:0.25", {"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}),
        ("0.3333333,0.3333333,0.3333334", {"train": 0.3333333, "val": 0.3333333, "test": 0.3333334}),
    ],
)
def test_parse_ratios_valid(text: str, expected: dict[str, float]) -> None:
    parsed = parse_ratios(text)
    assert list(parsed) == list(expected)
    assert parsed == pytest.approx(expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0.7",
        "0.25,0.25,0.25,0.25",
        "0.7,-0.15,0.45",
        "0.7,abc,0.15",
        "0.7,0.2,0.2",
        "0.7,0,0.3",
        "0.7,,0.3",
        "nan,0.5,0.5",
        "inf,0.5",
        "train:0.5,train:0.5",
        ":0.5,val:0.5",
        "train:0.7,0.3",
        "train:1.0",
        "tr/ain:0.5,val:0.5",
        "60,30,30",
    ],
)
def test_parse_ratios_invalid(text: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_ratios(text)
    message = str(err.value)
    assert "\n" not in message
    assert err.value.exit_code == 2
    assert "0.7,0.15,0.15" in message or "train:0.8,val:0.2" in message or "name" in message


def test_split_sizes_largest_remainder() -> None:
    assert split_sizes(300, [0.7, 0.15, 0.15]) == [210, 45, 45]
    assert split_sizes(10, [0.7, 0.15, 0.15]) == [7, 2, 1]
    assert split_sizes(7, [1 / 3, 1 / 3, 1 / 3]) == [3, 2, 2]
    assert split_sizes(10, [0.96, 0.02, 0.02]) == [10, 0, 0]
    for n in range(1, 50):
        assert sum(split_sizes(n, [0.5, 0.3, 0.2])) == n


# --------------------------------------------------------------------------------------------- splitting


def assert_disjoint_and_complete(coco: dict[str, Any], res: SplitResult) -> None:
    all_ids = [image["id"] for image in coco["images"]]
    seen: list[int] = []
    for name, dataset in res.datasets.items():
        ids = [image["id"] for image in dataset["images"]]
        assert ids == res.image_ids[name]
        # stable: the split keeps the input order of images and annotations
        assert ids == [i for i in all_ids if i in set(ids)]
        id_set = set(ids)
        expected_anns = [a for a in coco["annotations"] if a["image_id"] in id_set]
        assert dataset["annotations"] == expected_anns
        assert dataset["categories"] == coco["categories"]
        for key, value in coco.items():
            if key not in ("images", "annotations"):
                assert dataset[key] == value
        seen.extend(ids)
    assert sorted(seen) == sorted(all_ids)
    assert len(seen) == len(set(seen))
    n_anns = sum(len(d["annotations"]) for d in res.datasets.values())
    assert n_anns == len(coco["annotations"])


def test_splits_are_disjoint_complete_and_keep_other_keys(coco: dict[str, Any], result: SplitResult) -> None:
    assert list(result.datasets) == ["train", "val", "test"]
    assert_disjoint_and_complete(coco, result)
    for dataset in result.datasets.values():
        assert list(dataset) == list(coco)  # key order kept
        assert dataset["info"] == coco["info"]
        assert dataset["licenses"] == coco["licenses"]
        assert dataset["custom_key"] == {"kept": True}


@pytest.mark.parametrize("stratify", [True, False])
def test_split_sizes_match_ratios(coco: dict[str, Any], stratify: bool) -> None:
    res = split_dataset(coco, RATIOS, seed=3, stratify=stratify)
    n = len(coco["images"])
    sizes = [len(res.image_ids[name]) for name in RATIOS]
    assert sizes == split_sizes(n, list(RATIOS.values()))
    for size, ratio in zip(sizes, RATIOS.values(), strict=True):
        assert abs(size - ratio * n) <= 1


def test_per_class_shares_follow_ratios(coco: dict[str, Any]) -> None:
    per_class = images_per_class(coco)
    for seed in range(3):
        res = split_dataset(coco, RATIOS, seed=seed)
        for name, ratio in RATIOS.items():
            ids = set(res.image_ids[name])
            for c, images in per_class.items():
                share = len(images & ids) / len(images)
                if len(images) >= 30:
                    assert abs(share - ratio) <= 0.05, (seed, name, c, share)
                if c == RARE_CLASS:
                    assert images & ids, f"rare class missing from {name} (seed {seed})"


def test_rare_class_reaches_every_split_for_many_seeds(coco: dict[str, Any]) -> None:
    assert len(images_per_class(coco)[RARE_CLASS]) == 6
    for seed in range(10):
        res = split_dataset(coco, RATIOS, seed=seed)
        for split in res.stats.values():
            rare = next(c for c in split.categories if c.id == RARE_CLASS)
            assert rare.images >= 1, (seed, split.name)
        assert res.warnings == []


def test_empty_images_are_proportional(coco: dict[str, Any]) -> None:
    n_empty = len({i["id"] for i in coco["images"]} - {a["image_id"] for a in coco["annotations"]})
    assert n_empty == 40
    for seed in range(3):
        res = split_dataset(coco, RATIOS, seed=seed)
        for name, ratio in RATIOS.items():
            assert abs(res.stats[name].empty_images - ratio * n_empty) <= 1.5


def test_same_seed_identical_other_seed_different(coco: dict[str, Any]) -> None:
    first = split_dataset(coco, RATIOS, seed=11)
    again = split_dataset(coco, RATIOS, seed=11)
    other = split_dataset(coco, RATIOS, seed=12)
    for name in RATIOS:
        assert dumps_json(first.datasets[name]) == dumps_json(again.datasets[name])
    assert dumps_json(first.summary()) == dumps_json(again.summary())
    assert first.image_ids != other.image_ids
    plain = split_dataset(coco, RATIOS, seed=11, stratify=False)
    assert plain.image_ids == split_dataset(coco, RATIOS, seed=11, stratify=False).image_ids
    assert plain.image_ids != split_dataset(coco, RATIOS, seed=12, stratify=False).image_ids


def test_stratified_beats_random_on_imbalanced_classes(coco: dict[str, Any]) -> None:
    classes = [3, 4, RARE_CLASS]
    seeds = range(5)
    stratified = sum(share_deviation(coco, split_dataset(coco, RATIOS, seed=s), classes) for s in seeds)
    shuffled = sum(share_deviation(coco, split_dataset(coco, RATIOS, seed=s, stratify=False), classes) for s in seeds)
    assert stratified < 0.5 * shuffled


def test_crowd_annotations_count_as_presence() -> None:
    coco = {
        "images": [{"id": i} for i in range(1, 11)],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1},
            {"id": 2, "image_id": 2, "category_id": 1, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "a"}],
    }
    res = split_dataset(coco, {"train": 0.5, "val": 0.5}, seed=0)
    assert sum(s.empty_images for s in res.stats.values()) == 8
    # two images of class a, one per split
    assert [next(iter(s.categories)).images for s in res.stats.values()] == [1, 1]


def test_stats_and_summary(coco: dict[str, Any], result: SplitResult) -> None:
    per_class = images_per_class(coco)
    summary = orjson.loads(dumps_json(result.summary()))
    assert summary["seed"] == 7 and summary["stratified"] is True
    assert summary["total_images"] == len(coco["images"])
    assert list(summary["splits"]) == ["train", "val", "test"]
    for name, split in summary["splits"].items():
        dataset = result.datasets[name]
        assert split["images"] == len(dataset["images"])
        assert split["annotations"] == len(dataset["annotations"])
        with_anns = {a["image_id"] for a in dataset["annotations"]}
        assert split["empty_images"] == len(dataset["images"]) - len(with_anns)
        assert [c["id"] for c in split["categories"]] == [1, 2, 3, 4, 5]
        for c in split["categories"]:
            assert c["annotations"] == sum(a["category_id"] == c["id"] for a in dataset["annotations"])
            images = {a["image_id"] for a in dataset["annotations"] if a["category_id"] == c["id"]}
            assert c["images"] == len(images)
            assert c["image_share"] == pytest.approx(len(images) / len(per_class[c["id"]]))
            assert c["name"] == f"class_{c['id']}"
    for c in range(5):
        assert sum(s["categories"][c]["image_share"] for s in summary["splits"].values()) == pytest.approx(1)


def test_min_per_class_warnings(coco: dict[str, Any]) -> None:
    res = split_dataset(coco, RATIOS, seed=7, min_per_class=3)
    by_split = {w["split"]: w for w in res.warnings}
    assert set(by_split) == {"val", "test"}  # the rare class has 6 images: ~1 lands in val and test
    for warning in res.warnings:
        assert warning["code"] == "class_below_min_in_split"
        assert RARE_CLASS in warning["category_ids"]
        assert "class_5" in warning["message"] and "\n" not in warning["message"]
    assert split_dataset(coco, RATIOS, seed=7, min_per_class=0).warnings == []


def test_category_without_images_is_not_warned() -> None:
    coco = make_coco(n_images=60, n_empty=5)
    coco["categories"].append({"id": 99, "name": "unused"})
    res = split_dataset(coco, RATIOS, seed=1)
    assert all(99 not in w["category_ids"] for w in res.warnings)
    unused = [c for s in res.stats.values() for c in s.categories if c.id == 99]
    assert all(c.images == 0 and c.image_share is None for c in unused)


@pytest.mark.parametrize("stratify", [True, False])
def test_empty_split_is_produced_and_warned(stratify: bool) -> None:
    coco = make_coco(n_images=10, n_empty=2)
    res = split_dataset(coco, {"train": 0.96, "val": 0.02, "test": 0.02}, seed=0, stratify=stratify)
    assert [len(res.image_ids[n]) for n in ("train", "val", "test")] == [10, 0, 0]
    assert res.datasets["val"]["images"] == [] and res.datasets["val"]["annotations"] == []
    assert res.datasets["val"]["categories"] == coco["categories"]
    codes = {(w["code"], w["split"]) for w in res.warnings}
    assert codes == {("empty_split", "val"), ("empty_split", "test")}


def test_too_few_images_is_a_data_error() -> None:
    with pytest.raises(DataError, match="no images"):
        split_dataset({"images": [], "annotations": [], "categories": []}, RATIOS)
    coco = {"images": [{"id": 1}, {"id": 2}], "annotations": [], "categories": []}
    with pytest.raises(DataError, match="at least 3 images"):
        split_dataset(coco, RATIOS)
    two = split_dataset(coco, {"a": 0.5, "b": 0.5}).image_ids
    assert sorted(two["a"] + two["b"]) == [1, 2]


@pytest.mark.parametrize(
    ("ratios", "kwargs"),
    [
        ({"train": 0.7, "val": 0.2}, {}),
        ({"train": 1.0}, {}),
        ({"train": 0.5, "val": -0.5, "test": 1.0}, {}),
        (RATIOS, {"seed": -1}),
        (RATIOS, {"seed": 2**40}),
        (RATIOS, {"min_per_class": -1}),
    ],
)
def test_bad_arguments_are_usage_errors(coco: dict[str, Any], ratios: dict[str, float], kwargs: Any) -> None:
    with pytest.raises(UsageError):
        split_dataset(coco, ratios, **kwargs)


def test_progress_is_reported(coco: dict[str, Any]) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.descriptions: list[str] = []

        def task(self, description: str, total: float | None = None) -> Any:
            from contextlib import nullcontext

            self.descriptions.append(description)
            return nullcontext(type("T", (), {"advance": lambda self, amount=1: None})())

    recorder = Recorder()
    split_dataset(coco, RATIOS, seed=1, progress=recorder)
    assert recorder.descriptions


# --------------------------------------------------------------------------------------------- writing


def test_write_splits_names_and_content(tmp_path: Path, result: SplitResult) -> None:
    paths = write_splits(result, tmp_path / "out", "")
    assert {n: p.name for n, p in paths.items()} == {
        "train": "train.json",
        "val": "val.json",
        "test": "test.json",
    }
    for name, path in paths.items():
        raw = path.read_bytes()
        assert b"\n  " not in raw  # compact
        assert orjson.loads(raw) == orjson.loads(dumps_json(result.datasets[name]))
    stemmed = write_splits(result, tmp_path / "out", "coco")
    assert sorted(p.name for p in stemmed.values()) == ["coco_test.json", "coco_train.json", "coco_val.json"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [p.name for p in paths.values()] + [p.name for p in stemmed.values()]
    )  # no temporary files left behind


def test_write_splits_is_byte_deterministic(tmp_path: Path, coco: dict[str, Any]) -> None:
    a = write_splits(split_dataset(coco, RATIOS, seed=5), tmp_path / "a", "")
    b = write_splits(split_dataset(coco, RATIOS, seed=5), tmp_path / "b", "")
    assert all(a[n].read_bytes() == b[n].read_bytes() for n in RATIOS)


def test_write_splits_refuses_to_overwrite_input(tmp_path: Path, result: SplitResult) -> None:
    source = tmp_path / "train.json"
    source.write_text("original")
    with pytest.raises(UsageError, match="--output-dir"):
        write_splits(result, tmp_path, "", protect=[source])
    assert source.read_text() == "original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.json"]  # nothing written at all
    nested = tmp_path / "sub" / ".." / "data_val.json"
    with pytest.raises(UsageError):
        write_splits(result, tmp_path, "data", protect=[nested])


# --------------------------------------------------------------------------------------------- properties


@st.composite
def small_datasets(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, float], int]:
    n_images = draw(st.integers(1, 60))
    n_classes = draw(st.integers(1, 5))
    image_ids = draw(st.lists(st.integers(0, 10_000), min_size=n_images, max_size=n_images, unique=True))
    annotations = []
    for image_id in image_ids:
        for category_id in draw(st.lists(st.integers(1, n_classes), max_size=3)):
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id, "iscrowd": 0}
            )
    parts = draw(st.lists(st.integers(1, 20), min_size=2, max_size=3))
    names = ["train", "val", "test"][: len(parts)]
    ratios = {name: part / sum(parts) for name, part in zip(names, parts, strict=True)}
    coco = {
        "info": {},
        "images": [{"id": i} for i in image_ids],
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c)} for c in range(1, n_classes + 1)],
    }
    return coco, ratios, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=60, deadline=None)
@given(small_datasets(), st.booleans())
def test_property_disjoint_complete_deterministic(
    case: tuple[dict[str, Any], dict[str, float], int], stratify: bool
) -> None:
    coco, ratios, seed = case
    if len(coco["images"]) < len(ratios):
        with pytest.raises(DataError):
            split_dataset(coco, ratios, seed=seed, stratify=stratify)
        return
    res = split_dataset(coco, ratios, seed=seed, stratify=stratify)
    assert_disjoint_and_complete(coco, res)
    sizes = [len(res.image_ids[n]) for n in ratios]
    assert sizes == split_sizes(len(coco["images"]), list(ratios.values()))
    again = split_dataset(coco, ratios, seed=seed, stratify=stratify)
    assert [dumps_json(d) for d in again.datasets.values()] == [dumps_json(d) for d in res.datasets.values()]
    empty = {w["split"] for w in res.warnings if w["code"] == "empty_split"}
    assert empty == {n for n, size in zip(ratios, sizes, strict=True) if size == 0}


# --------------------------------------------------------------------------------------------- real data


def test_bccd_split_is_stratified() -> None:
    path = SHARED_DATA / "bccd" / "annotations.json"
    if not path.exists():
        pytest.skip(f"{path} not present")
    coco = orjson.loads(path.read_bytes())
    res = split_dataset(coco, parse_ratios("0.7,0.15,0.15"), seed=42)
    assert_disjoint_and_complete(coco, res)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert set(names.values()) >= {"RBC", "WBC", "Platelets"}
    for name, ratio in res.ratios.items():
        for c in res.stats[name].categories:
            if names[c.id] in ("RBC", "WBC", "Platelets"):
                assert c.image_share is not None
                assert abs(c.image_share - ratio) <= 0.05, (name, c)
