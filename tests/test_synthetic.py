"""The shipped synthetic inspection dataset: deterministic, valid COCO, pixels that match polygons."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from distillkit.data.synthetic import (
    CATEGORIES,
    generate_inspection_dataset,
    image_rng,
    synthesize_image,
)
from distillkit.errors import UsageError

REPO = Path(__file__).resolve().parents[1]

# pycocotools <= 2.0.11 under numpy 2 warns on every annToMask/decode; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _image_hashes(root: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(np.asarray(Image.open(p)).tobytes()).hexdigest()
        for p in sorted((root / "images").glob("*.png"))
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_inspection_dataset(tmp_path_factory.mktemp("synthetic"), seed=0)


@pytest.fixture(scope="module")
def coco_json(dataset: Path) -> dict:
    return orjson.loads(dataset.read_bytes())


def test_returns_annotation_path_and_writes_images(dataset: Path, coco_json: dict) -> None:
    assert dataset.name == "annotations.json"
    assert len(coco_json["images"]) == 60
    for image in coco_json["images"]:
        assert image["file_name"].startswith("images/")
        path = dataset.parent / image["file_name"]
        with Image.open(path) as im:
            assert im.format == "PNG"
            assert im.mode == "RGB"
            assert im.size == (320, 240) == (image["width"], image["height"])
    assert not list(dataset.parent.rglob("*.tmp")), "atomic writes left temporary files behind"


def test_same_seed_same_bytes_and_pixels(dataset: Path, tmp_path: Path) -> None:
    again = generate_inspection_dataset(tmp_path / "again", seed=0)
    assert again.read_bytes() == dataset.read_bytes()
    assert _image_hashes(again.parent) == _image_hashes(dataset.parent)


def test_different_seed_different_data(dataset: Path, tmp_path: Path) -> None:
    other = generate_inspection_dataset(tmp_path / "other", seed=1)
    assert other.read_bytes() != dataset.read_bytes()
    theirs, ours = _image_hashes(other.parent), _image_hashes(dataset.parent)
    assert all(theirs[name] != ours[name] for name in ours)


def test_full_coco_structure(dataset: Path, coco_json: dict) -> None:
    assert {"info", "licenses", "images", "annotations", "categories"} <= coco_json.keys()
    assert [c["id"] for c in coco_json["categories"]] == list(range(1, len(CATEGORIES) + 1))
    assert len(coco_json["categories"]) >= 4
    assert all(c["supercategory"] == "defect" for c in coco_json["categories"])
    assert [i["id"] for i in coco_json["images"]] == list(range(1, 61))
    anns = coco_json["annotations"]
    assert [a["id"] for a in anns] == list(range(1, len(anns) + 1))
    assert all(a["iscrowd"] == 0 for a in anns)
    coco = COCO(str(dataset))  # pycocotools accepts it
    assert len(coco.getAnnIds()) == len(anns)
    per_image = Counter(a["image_id"] for a in anns)
    assert max(per_image.values()) <= 6


def test_bbox_and_area_are_what_pycocotools_computes(coco_json: dict) -> None:
    sizes = {i["id"]: (i["height"], i["width"]) for i in coco_json["images"]}
    for ann in coco_json["annotations"]:
        h, w = sizes[ann["image_id"]]
        segm = ann["segmentation"]
        assert isinstance(segm, list) and 1 <= len(segm) <= 2
        assert all(len(part) >= 6 and len(part) % 2 == 0 for part in segm)
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
        assert ann["bbox"] == [float(v) for v in mask_utils.toBbox(rle)]
        assert ann["area"] == float(mask_utils.area(rle)) > 0
        x, y, bw, bh = ann["bbox"]
        assert x >= 0 and y >= 0 and bw > 0 and bh > 0
        assert x + bw <= w and y + bh <= h
        xs, ys = np.asarray(segm[0][0::2]), np.asarray(segm[0][1::2])
        assert xs.min() >= 0 and ys.min() >= 0 and xs.max() <= w and ys.max() <= h


def test_some_objects_have_two_parts(coco_json: dict) -> None:
    multi = [a for a in coco_json["annotations"] if len(a["segmentation"]) == 2]
    assert multi
    assert {a["category_id"] for a in multi} == {1}  # broken scratches


def test_empty_images_and_class_imbalance(coco_json: dict) -> None:
    with_objects = {a["image_id"] for a in coco_json["annotations"]}
    empty = len(coco_json["images"]) - len(with_objects)
    assert empty == round(60 * 0.15)
    counts = Counter(a["category_id"] for a in coco_json["annotations"])
    assert set(counts) == {c.id for c in CATEGORIES}  # every class present at the default size
    assert max(counts.values()) >= 3 * min(counts.values())
    rare = min(counts, key=counts.__getitem__)
    assert {c.id: c.name for c in CATEGORIES}[rare] == "hole"


def test_drawn_pixels_match_polygons(dataset: Path, coco_json: dict) -> None:
    """Rebuild each image with its clean background: objects change exactly their polygons' pixels."""
    coco = COCO(str(dataset))
    for image in coco_json["images"][:20]:
        ann_ids = coco.getAnnIds(imgIds=[image["id"]])
        drawn = synthesize_image(image_rng(0, image["id"] - 1), image["width"], image["height"], empty=not ann_ids)
        on_disk = np.asarray(Image.open(dataset.parent / image["file_name"]))
        assert np.array_equal(on_disk, drawn.pixels)
        changed = (on_disk != drawn.background).any(axis=2)
        union = np.zeros(changed.shape, dtype=bool)
        for ann in coco.loadAnns(ann_ids):
            mask = coco.annToMask(ann).astype(bool)
            assert not (union & mask).any(), "objects overlap"
            union |= mask
            assert changed[mask].mean() > 0.9, f"annotation {ann['id']}: polygon pixels not drawn"
        assert not changed[~union].any(), "pixels changed outside every annotation"


def test_objects_contrast_with_their_surroundings(dataset: Path, coco_json: dict) -> None:
    """A detector needs the defects visible: mean colour inside differs from a ring outside."""
    coco = COCO(str(dataset))
    for image in coco_json["images"][:20]:
        pixels = np.asarray(Image.open(dataset.parent / image["file_name"])).astype(np.float32)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]])):
            mask = coco.annToMask(ann).astype(bool)
            ring = np.zeros_like(mask)
            x, y, w, h = (int(v) for v in ann["bbox"])
            ring[max(0, y - 3) : y + h + 3, max(0, x - 3) : x + w + 3] = True
            ring &= ~mask
            diff = np.abs(pixels[mask].mean(axis=0) - pixels[ring].mean(axis=0)).max()
            assert diff > 12, f"annotation {ann['id']} barely visible ({diff:.1f})"


def test_options_size_count_and_empty_fraction(tmp_path: Path) -> None:
    path = generate_inspection_dataset(tmp_path, num_images=7, seed=5, image_size=(128, 96), empty_fraction=0)
    data = orjson.loads(path.read_bytes())
    assert len(data["images"]) == 7
    assert {(i["width"], i["height"]) for i in data["images"]} == {(128, 96)}
    assert len({a["image_id"] for a in data["annotations"]}) == 7
    with Image.open(tmp_path / data["images"][0]["file_name"]) as im:
        assert im.size == (128, 96)


@pytest.mark.parametrize(
    "kwargs",
    [{"num_images": 0}, {"image_size": (32, 240)}, {"empty_fraction": 1.5}, {"seed": -1}],
)
def test_bad_arguments_are_usage_errors(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(UsageError):
        generate_inspection_dataset(tmp_path, **kwargs)


def test_progress_is_reported(tmp_path: Path) -> None:
    from contextlib import contextmanager

    seen: list[tuple[str, float | None, float]] = []

    class Recorder:
        @contextmanager
        def task(self, description: str, total: float | None = None):
            advanced = [0.0]

            class Task:
                def advance(self, amount: float = 1) -> None:
                    advanced[0] += amount

            yield Task()
            seen.append((description, total, advanced[0]))

    generate_inspection_dataset(tmp_path, num_images=3, progress=Recorder())
    assert len(seen) == 1 and seen[0][1:] == (3, 3)


def test_example_script(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "make_dataset.py"), str(tmp_path / "out"), "--images", "4"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path == tmp_path / "out" / "annotations.json"
    assert len(orjson.loads(path.read_bytes())["images"]) == 4
