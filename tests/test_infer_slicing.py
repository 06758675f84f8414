"""Sliced (tiled) inference: the tile grid, boxes and masks mapped back, duplicates merged; one real tiny run.

The geometry is tested exactly with a fake predictor that "detects" white squares by connected
components: it sees what a perfect model would see in each tile, so every box and mask after
mapping back and merging can be compared to the squares drawn.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from distillkit.errors import UsageError
from distillkit.inference.detections import Detections, MaskPatch
from distillkit.inference.slicing import SliceSpec, greedy_nmm, merge_detections, predict_sliced
from tests.optimize_helpers import make_checkpoint, make_images
from tests.test_cli import run


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLKIT_CACHE", str(tmp_path_factory.getbasetemp() / "distillkit-cache"))


class SquareFinder:
    """A perfect 'model': every white blob of a picture is a detection (class 0, or 1 when wider than tall)."""

    def __init__(self, masks: bool = False) -> None:
        self.masks = masks
        self.shapes: list[tuple[int, int]] = []  # (height, width) of every picture predicted

    def __call__(self, pictures: list[np.ndarray]) -> list[Detections]:
        found = []
        for picture in pictures:
            self.shapes.append(picture.shape[:2])
            white = (picture[:, :, 0] > 200).astype(np.uint8)
            count, labels, stats, _ = cv2.connectedComponentsWithStats(white, connectivity=4)
            boxes, scores, classes, masks = [], [], [], []
            for label in range(1, count):
                x, y, w, h = (int(v) for v in stats[label, :4])
                boxes.append([x, y, x + w, y + h])
                scores.append(0.5 + 0.001 * w * h / (1 + w * h))  # whole objects score a little higher
                classes.append(1 if w > h * 1.5 else 0)
                masks.append(MaskPatch.from_plane(labels == label))
            found.append(
                Detections(
                    np.array(boxes, dtype=np.float64).reshape(-1, 4),
                    np.array(scores, dtype=np.float64),
                    np.array(classes, dtype=np.int64),
                    masks if self.masks else None,
                )
            )
        return found


def picture_with(squares: list[tuple[int, int, int, int]], width: int = 640, height: int = 480) -> np.ndarray:
    """Black BGR picture with white rectangles (x, y, w, h)."""
    picture = np.zeros((height, width, 3), dtype=np.uint8)
    for x, y, w, h in squares:
        picture[y : y + h, x : x + w] = 255
    return picture


def as_boxes(detections: Detections) -> set[tuple[int, int, int, int]]:
    return {tuple(round(float(v)) for v in box) for box in detections.xyxy}  # type: ignore[misc]


def xyxy(squares: list[tuple[int, int, int, int]]) -> set[tuple[int, int, int, int]]:
    return {(x, y, x + w, y + h) for x, y, w, h in squares}


# --- the tile grid ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"),
    [
        (640, 480, (320, 320), 0.2),
        (1000, 333, (256, 128), 0.25),
        (641, 481, (320, 240), 0.0),
        (300, 200, (64, 64), 0.5),
    ],
)
def test_tiles_cover_the_image_with_the_overlap_and_stay_inside(
    width: int, height: int, tile: tuple[int, int], overlap: float
) -> None:
    spec = SliceSpec(tile[0], tile[1], overlap=overlap)
    tiles = spec.tiles(width, height)
    covered = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in tiles:
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert (x2 - x1, y2 - y1) == tile  # every tile full-size: the last row/column moved back inside
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    # neighbours share at least the requested overlap (the last one, moved back, shares more)
    xs = sorted({t[0] for t in tiles})
    ys = sorted({t[1] for t in tiles})
    for starts, size in ((xs, tile[0]), (ys, tile[1])):
        for a, b in itertools.pairwise(starts):
            assert size - (b - a) >= int(overlap * size)


def test_tile_grid_of_bccd_sized_pictures_and_small_ones() -> None:
    spec = SliceSpec(320, 320, overlap=0.2)
    first_row = [(0, 0, 320, 320), (256, 0, 576, 320), (320, 0, 640, 320)]
    second_row = [(0, 160, 320, 480), (256, 160, 576, 480), (320, 160, 640, 480)]
    assert spec.tiles(640, 480) == [*first_row, *second_row]
    assert spec.tiles(200, 100) == [(0, 0, 200, 100)]  # smaller than a tile: one tile, clipped to the picture
    assert spec.tiles(500, 100) == [(0, 0, 320, 100), (180, 0, 500, 100)]  # clipped in height only


def test_slice_spec_parsing_and_bad_values() -> None:
    assert (SliceSpec.parse("320").width, SliceSpec.parse("320").height) == (320, 320)
    assert (SliceSpec.parse("512x384").width, SliceSpec.parse("512X384").height) == (512, 384)
    for text in ("big", "320x", "0", "-5x5"):
        with pytest.raises(UsageError):
            SliceSpec.parse(text)
    with pytest.raises(UsageError, match="slice-overlap"):
        SliceSpec(64, 64, overlap=1.0)
    with pytest.raises(UsageError, match="slice-merge"):
        SliceSpec(64, 64, merge="wbf")


# --- mapping back and merging -------------------------------------------------------------------------------------


def test_boxes_are_shifted_back_and_duplicates_across_tiles_merged() -> None:
    squares = [
        (280, 100, 20, 20),  # inside the overlap of the first two tiles (x 256..320): seen twice, kept once
        (600, 440, 30, 30),  # in the bottom-right corner: only edge tiles see it
        (10, 200, 24, 24),  # in the overlap of the two tile rows (y 160..320)
        (330, 40, 8, 8),  # tiny, in the overlap of tiles 2 and 3
    ]
    finder = SquareFinder()
    found = predict_sliced(picture_with(squares), finder, SliceSpec(320, 320, overlap=0.2))
    assert as_boxes(found) == xyxy(squares)
    assert len(found) == len(squares)  # no duplicate left
    assert all(shape == (320, 320) for shape in finder.shapes) and len(finder.shapes) == 6
    assert list(found.scores) == sorted(found.scores, reverse=True)


def test_objects_cut_by_tile_borders_join_their_whole_with_nmm() -> None:
    # x 300..340 crosses tile 1's right border (320): tile 1 sees a fragment, tile 2 (256..576) the whole
    squares = [(300, 60, 40, 40)]
    nms = predict_sliced(picture_with(squares), SquareFinder(), SliceSpec(320, 320, overlap=0.2))
    assert xyxy(squares) <= as_boxes(nms)  # the whole object is there; NMS keeps the fragment (IoU 0.5)
    assert (300, 60, 320, 100) in as_boxes(nms)
    nmm = predict_sliced(picture_with(squares), SquareFinder(), SliceSpec(320, 320, overlap=0.2, merge="nmm"))
    assert as_boxes(nmm) == xyxy(squares)  # the fragment lies inside the whole: IoS 1, fused


def test_masks_are_mapped_back_and_merged() -> None:
    squares = [(280, 100, 20, 20), (300, 290, 30, 40)]  # the second crosses the first row's bottom border (320)
    found = predict_sliced(
        picture_with(squares), SquareFinder(masks=True), SliceSpec(320, 320, overlap=0.2, merge="nmm")
    )
    assert found.masks is not None and len(found.masks) == len(found) == 2
    for box, mask in zip(found.xyxy, found.masks, strict=True):
        plane = mask.plane(480, 640)
        x1, y1, x2, y2 = (int(v) for v in box)
        assert plane.sum() == (x2 - x1) * (y2 - y1)  # the full square, not a fragment, not shifted
        assert plane[y1:y2, x1:x2].all()
    entries = list(found.entries({0: "square", 1: "bar"}, {0: 5, 1: 9}, 480, 640, {"file_name": "p.png"}))
    from pycocotools import mask as mask_utils

    areas = sorted(
        int(mask_utils.area({"size": e["segmentation"]["size"], "counts": e["segmentation"]["counts"]}))
        for e in entries
    )
    assert areas == [400, 1200]


def test_full_image_pass_adds_objects_larger_than_a_tile() -> None:
    squares = [(100, 50, 500, 400)]  # larger than any tile: only the whole-picture pass sees it whole
    finder = SquareFinder()
    sliced = predict_sliced(picture_with(squares), finder, SliceSpec(320, 320, overlap=0.2))
    assert xyxy(squares).isdisjoint(as_boxes(sliced))
    finder = SquareFinder()
    both = predict_sliced(picture_with(squares), finder, SliceSpec(320, 320, overlap=0.2, full_image=True, merge="nmm"))
    assert as_boxes(both) == xyxy(squares)
    assert finder.shapes[-1] == (480, 640) and len(finder.shapes) == 7  # six tiles, then the whole picture


def test_nms_is_class_wise_and_nmm_fuses_per_class() -> None:
    detections = Detections(
        np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=np.float64),
        np.array([0.9, 0.8, 0.7, 0.6]),
        np.array([0, 0, 1, 0]),
    )
    kept = merge_detections(detections, "nms", 0.5)
    assert kept.classes.tolist() == [0, 1, 0] and kept.scores.tolist() == [0.9, 0.7, 0.6]
    fused = greedy_nmm(detections, 0.5)
    assert fused.xyxy.tolist()[0] == [0, 0, 11, 11] and fused.scores.tolist() == [0.9, 0.7, 0.6]
    assert len(merge_detections(Detections.empty(), "nmm")) == 0


def test_max_det_keeps_the_best() -> None:
    squares = [(20 * i + 5, 20, 8, 8) for i in range(10)]
    found = predict_sliced(picture_with(squares, 640, 480), SquareFinder(), SliceSpec(320, 320), max_det=4)
    assert len(found) == 4


# --- a real model -------------------------------------------------------------------------------------------------


def test_real_tiny_model_sliced_infer_and_evaluate(tmp_path: Path, torch_one_thread: None) -> None:
    checkpoint = make_checkpoint(tmp_path / "best.pt", imgsz=64, score_logit=0.0)
    images = make_images(tmp_path / "images", count=2, size=(160, 128))
    code, stdout, stderr = run(
        "infer", str(images[0].parent), "-m", str(checkpoint), "-o", str(tmp_path / "out"),
        "--slice", "64x64", "--slice-overlap", "0.25", "--slice-full", "--slice-merge", "nmm", "--save-vis", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["images"] == 2 and summary["slicing"].startswith("64x64 tiles, overlap 0.25 + full image, nmm")
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert predictions, "the test model must produce detections"
    for entry in predictions:
        x, y, w, h = entry["bbox"]
        assert min(x, y) >= 0 and x + w <= 160.01 and y + h <= 128.01  # in the picture's frame
    assert len(list((tmp_path / "out" / "vis").glob("*.jpg"))) == 2

    truth = tmp_path / "truth.json"
    from tests.optimize_helpers import ground_truth_from

    ground_truth_from([p for p in predictions if p["score"] >= 0.3][:20], images, (5, 9), truth)
    code, stdout, stderr = run(
        "evaluate", "-d", str(truth), "-m", str(checkpoint), "--images-dir", str(images[0].parent),
        "--slice", "64", "--slice-full", "--slice-merge", "nmm", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["slicing"].startswith("64x64") and document["results"][0]["bbox"]["AP"] > 0.5
    code, _, stderr = run(
        "evaluate", "-d", str(truth), "-p", str(tmp_path / "out" / "predictions.json"), "--slice", "64"
    )
    assert code == 2 and "--slice runs the models given by --model" in stderr


def test_slice_options_without_slice_are_refused(tmp_path: Path) -> None:
    images = make_images(tmp_path / "images", count=1, size=(64, 64))
    code, _, stderr = run(
        "infer", str(images[0]), "-m", str(tmp_path / "none.pt"), "-o", str(tmp_path / "o"), "--slice-full"
    )
    assert code == 2 and "need --slice" in stderr and stderr.count("\n") == 1
    code, _, stderr = run(
        "infer", str(images[0]), "-m", str(tmp_path / "none.pt"), "-o", str(tmp_path / "o"), "--slice", "x"
    )
    assert code == 2 and "is not a tile size" in stderr
