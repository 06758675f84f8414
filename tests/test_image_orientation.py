"""One EXIF-orientation rule in every path that reads images (``distillkit.images``).

The test image is a phone-style JPEG: its pixels are stored sideways and its EXIF ``Orientation=6``
says "turn me 90° clockwise to display". The COCO annotations are drawn on the displayed picture
(as CVAT and Label Studio show it), where a bright square sits on a dark background. In every path
— the shared reader, both teachers' data, the classifier dataset, the YOLO conversion as ultralytics
loads it, infer, validate — the annotated box must land on the square.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from distillkit.errors import DataError
from distillkit.images import image_header, image_size, read_bgr, read_pil, read_rgb

WIDTH, HEIGHT = 48, 64  # displayed: portrait
BOX = (6, 40, 14, 16)  # x, y, w, h of the bright square in the displayed picture
ORIENTATION = 6
BRIGHT = 200  # the square is 240 on a background of 20


def displayed_pixels() -> np.ndarray:
    pixels = np.full((HEIGHT, WIDTH, 3), 20, np.uint8)
    x, y, w, h = BOX
    pixels[y : y + h, x : x + w] = 240
    return pixels


def save_oriented(path: Path, pixels: np.ndarray, orientation: int = ORIENTATION, **options: Any) -> Path:
    """Save ``pixels`` (the displayed picture) stored sideways with an EXIF orientation that undoes it."""
    # Orientation 6 is displayed by turning the stored pixels 90° clockwise: store them 90° counter-clockwise.
    stored = Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif.tobytes(), **options)
    return path


def box_brightness(pixels: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Mean brightness inside an ``x, y, w, h`` box, a pixel in from its edges (JPEG blurs them)."""
    x, y, w, h = (round(float(v)) for v in box)
    return float(np.asarray(pixels)[y + 1 : y + h - 1, x + 1 : x + w - 1].mean())


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An oriented JPEG, its COCO file (box + polygon on the displayed picture), and the paths."""
    root = tmp_path_factory.mktemp("orientation")
    (root / "images").mkdir()
    image = save_oriented(root / "images" / "phone.jpg", displayed_pixels(), quality=95)
    x, y, w, h = BOX
    coco = {
        "images": [{"id": 1, "file_name": "phone.jpg", "width": WIDTH, "height": HEIGHT}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "bbox": [float(v) for v in BOX],
                "area": float(w * h),
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
            }
        ],
        "categories": [{"id": 1, "name": "square"}],
    }
    annotations = root / "data.json"
    annotations.write_text(json.dumps(coco))
    return {"root": root, "image": image, "coco": coco, "annotations": annotations}


def test_the_test_image_really_is_stored_sideways(data: dict[str, Any]) -> None:
    with Image.open(data["image"]) as stored:
        assert stored.size == (HEIGHT, WIDTH) and stored.getexif()[0x0112] == ORIENTATION
        assert box_brightness(np.asarray(stored), BOX) < 100  # read raw, the box misses the square


def test_the_shared_reader_applies_the_orientation(data: dict[str, Any]) -> None:
    path = data["image"]
    pixels = read_rgb(path)
    assert pixels.shape == (HEIGHT, WIDTH, 3) and pixels.dtype == np.uint8 and pixels.flags.writeable
    assert box_brightness(pixels, BOX) > BRIGHT
    assert read_pil(path).size == (WIDTH, HEIGHT) and read_pil(path).mode == "RGB"
    assert np.array_equal(read_bgr(path), pixels[:, :, ::-1])
    assert image_size(path) == (WIDTH, HEIGHT)
    header = image_header(path)
    assert header.stored_size == (HEIGHT, WIDTH) and header.orientation == ORIENTATION
    assert read_rgb(path, expect_size=(WIDTH, HEIGHT)).shape == pixels.shape
    with pytest.raises(DataError, match=r"phone\.jpg is 48x64 as displayed .* annotations say 64x48"):
        read_rgb(path, expect_size=(HEIGHT, WIDTH))


def test_opencv_and_ultralytics_read_the_same_orientation(data: dict[str, Any]) -> None:
    """The rule is the one the students' loader follows: cv2 and ultralytics' imread rotate too."""
    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics.utils.patches import imread

    ours = read_rgb(data["image"])
    for theirs in (cv2.imread(str(data["image"])), imread(data["image"])):
        assert theirs.shape == ours.shape
        assert np.abs(theirs[:, :, ::-1].astype(int) - ours).mean() < 2  # same decoder family, BGR order


@pytest.mark.parametrize("suffix", [".png", ".webp", ".tiff"])
def test_other_formats_follow_the_same_rule_as_ultralytics(tmp_path: Path, suffix: str) -> None:
    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics.utils.patches import imread

    options = {"lossless": True} if suffix == ".webp" else {}
    path = save_oriented(tmp_path / f"phone{suffix}", displayed_pixels(), **options)
    assert image_size(path) == (WIDTH, HEIGHT)  # Pillow's TIFF reader reports the turned size itself
    ours = read_rgb(path)
    assert box_brightness(ours, BOX) > BRIGHT
    assert np.array_equal(imread(path)[:, :, ::-1], ours)


def test_sixteen_bit_images_keep_their_high_byte_as_ultralytics_reads_them(tmp_path: Path) -> None:
    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics.utils.patches import imread

    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), (np.arange(32 * 40, dtype=np.uint16).reshape(32, 40) * 50))
    ours = read_rgb(path)
    assert ours.dtype == np.uint8 and ours.max() > 200  # Pillow's own conversion would clip nearly all to 255
    assert np.array_equal(imread(path)[:, :, ::-1], ours)


def test_unreadable_files_are_one_line_errors_naming_the_file(tmp_path: Path, data: dict[str, Any]) -> None:
    whole = data["image"].read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(whole[: len(whole) // 2])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    for path in (truncated, text, tmp_path / "missing.jpg"):
        with pytest.raises(DataError, match=rf"cannot read image .*{path.name}") as raised:
            read_rgb(path)
        assert "\n" not in str(raised.value)
    with pytest.raises(DataError, match=r"notes\.jpg"):
        image_size(text)


# ------------------------------------------------------------------------------------------------
# every path


def test_validate_compares_the_displayed_size(data: dict[str, Any], tmp_path: Path) -> None:
    from distillkit.data.validate import validate_dataset

    images_dir = data["root"] / "images"
    report = validate_dataset(data["coco"], images_dir=images_dir).report
    assert report.valid and report.images_checked
    assert not [issue for issue in report.errors if issue.code == "image_size_mismatch"]

    raw_size = copy.deepcopy(data["coco"])
    raw_size["images"][0].update(width=HEIGHT, height=WIDTH)  # the stored size, not the displayed one
    raw_size["annotations"][0].pop("segmentation")  # a box-only annotation, inside both frames' bounds
    report = validate_dataset(raw_size, images_dir=images_dir).report
    [issue] = [issue for issue in report.errors if issue.code == "image_size_mismatch"]
    assert "file 48x64 as displayed (stored 64x48, EXIF orientation 6), JSON 64x48" in issue.message

    unsized = copy.deepcopy(data["coco"])
    del unsized["images"][0]["width"], unsized["images"][0]["height"]
    result = validate_dataset(unsized, images_dir=images_dir)
    assert result.report.generated["image_size"] == 1
    assert result.dataset is not None
    assert (result.dataset["images"][0]["width"], result.dataset["images"][0]["height"]) == (WIDTH, HEIGHT)


def test_grounding_dino_data_puts_the_box_on_the_object(data: dict[str, Any]) -> None:
    from distillkit.data.validate import load_valid_dataset
    from distillkit.teachers.grounding_dino.data import GroundingDinoDataset, detection_samples, locate_images

    valid = load_valid_dataset(data["annotations"])
    assert valid.dataset is not None
    paths = locate_images(valid.dataset, data["annotations"], None)
    item = GroundingDinoDataset(detection_samples(valid.dataset, valid.info.class_mapping, paths))[0]
    image = item["image"]
    assert image.shape == (HEIGHT, WIDTH, 3)
    cx, cy, w, h = item["labels"]["boxes"][0].tolist()  # normalised centre box, as the model learns it
    box = ((cx - w / 2) * WIDTH, (cy - h / 2) * HEIGHT, w * WIDTH, h * HEIGHT)
    assert box_brightness(image, box) > BRIGHT


def test_sam_data_puts_box_and_mask_on_the_object(data: dict[str, Any]) -> None:
    from distillkit.teachers.sam.data import load_split, mask_records
    from distillkit.teachers.sam.data import read_rgb as sam_read_rgb

    result, roots = load_split(data["annotations"])
    [record] = mask_records(result, roots)
    image = sam_read_rgb(record.path, record.width, record.height)
    assert image.shape == (HEIGHT, WIDTH, 3)
    x0, y0, x1, y1 = record.prompt_boxes()[0].tolist()
    assert box_brightness(image, (x0, y0, x1 - x0, y1 - y0)) > BRIGHT
    mask = record.masks()[0].astype(bool)
    assert mask.shape == (HEIGHT, WIDTH) and image[mask].mean() > BRIGHT - 20  # polygon edges blur a little


def test_labelling_reads_with_the_shared_reader() -> None:
    import distillkit.images
    from distillkit.teachers import labeller

    # Unlabelled images have no annotated size to check: the teachers label them as displayed.
    assert labeller.read_rgb is distillkit.images.read_rgb


def test_classifier_dataset_reads_the_displayed_picture(data: dict[str, Any]) -> None:
    from distillkit.classify.dataset import ClassificationDataset, common_image_size

    dataset = ClassificationDataset([data["image"]], np.ones((1, 1)), None, [0.0] * 3, [1.0] * 3)
    assert box_brightness(dataset.load(0), BOX) > BRIGHT
    assert common_image_size([data["image"]]) == (HEIGHT, WIDTH)  # (height, width), as displayed
    resized = ClassificationDataset([data["image"]], np.ones((1, 1)), (HEIGHT * 2, WIDTH * 2), [0.0] * 3, [1.0] * 3)
    assert box_brightness(resized.load(0), tuple(2 * v for v in BOX)) > BRIGHT


def test_yolo_conversion_as_ultralytics_loads_it(data: dict[str, Any], tmp_path: Path) -> None:
    """Labels written from the COCO boxes land on the object in the image ultralytics loads."""
    from distillkit.data.images import default_image_roots
    from distillkit.data.validate import load_valid_dataset
    from distillkit.data.yolo_format import SplitSource, prepare_yolo_dataset
    from distillkit.ultralytics_env import import_ultralytics

    valid = load_valid_dataset(data["annotations"])
    source = SplitSource(valid.dataset, default_image_roots(data["annotations"]))  # type: ignore[arg-type]
    info = valid.info
    yolo = prepare_yolo_dataset(
        {"train": source, "val": source}, tmp_path / "yolo", "segment", info.class_mapping, info.class_names
    )
    import_ultralytics()
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    cfg = get_cfg(overrides={"task": "segment", "imgsz": 64, "rect": False})
    described = check_det_dataset(str(yolo.yaml_path))
    dataset = build_yolo_dataset(cfg, described["val"], 1, described, mode="val")
    assert tuple(dataset.labels[0]["shape"]) == (HEIGHT, WIDTH)  # ultralytics' exif_size: the displayed size
    image, _, _ = dataset.load_image(0)
    assert image.shape == (HEIGHT, WIDTH, 3)
    cx, cy, w, h = dataset.labels[0]["bboxes"][0].tolist()  # normalised xywh, from the polygon
    assert box_brightness(image, ((cx - w / 2) * WIDTH, (cy - h / 2) * HEIGHT, w * WIDTH, h * HEIGHT)) > BRIGHT
    polygon = dataset.labels[0]["segments"][0] * np.array([WIDTH, HEIGHT])
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    assert image[mask.astype(bool)].mean() > BRIGHT - 20


def test_infer_reads_the_displayed_picture(data: dict[str, Any], tmp_path: Path) -> None:
    from distillkit.inference.predictor import load_model, predict_images
    from distillkit.ultralytics_env import import_ultralytics
    from tests.optimize_helpers import make_checkpoint

    import_ultralytics()
    from ultralytics.data.loaders import LoadImagesAndVideos

    [(_, [pixels], _)] = list(LoadImagesAndVideos(str(data["image"])))  # what the predictor is fed
    assert pixels.shape == (HEIGHT, WIDTH, 3) and box_brightness(pixels, BOX) > BRIGHT

    model = load_model(make_checkpoint(tmp_path / "seg.pt", task="segment", imgsz=64))
    entries = list(predict_images(model, [data["image"]], imgsz=64, conf=0.01, device="cpu"))
    assert entries, "the random model was made to detect something"
    assert all(entry["segmentation"]["size"] == [HEIGHT, WIDTH] for entry in entries)
