"""`validate` on hostile input (issue 14, "no crash on any input"): a seeded slice of the fuzz campaign
(tests/bench/fuzz_validate.py) plus one regression test per bug class it and the issue found.

Checked before pycocotools' C code sees anything: polygon vertex counts and outline length (a 1M-vertex
polygon took 11.7 GB and died with SIGSEGV), compressed RLE strings (decoded in numpy, counts must cover
the image), non-finite and far-out coordinates; and everything around it answers in one line, never a
traceback: numbers only Python's json reads, nesting deeper than orjson writes, a worker process that dies.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from distillkit.data import masks
from distillkit.data.masks import MaskJob, decode_compressed_counts, mask_boxes_and_areas, polygon_problems
from distillkit.data.validate import MAX_ANNOTATION_VERTICES, validate_dataset
from distillkit.errors import DataError
from tests.conftest import BASE_COCO
from tests.helpers import shared_data, square
from tests.test_cli import run

FUZZER = Path(__file__).resolve().parent / "bench" / "fuzz_validate.py"


def _fuzzer() -> Any:
    spec = importlib.util.spec_from_file_location("fuzz_validate", FUZZER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_validate"] = module
    spec.loader.exec_module(module)
    return module


def _codes(report: Any) -> dict[str, list[Any]]:
    return {issue.code: issue.ids for issue in [*report.errors, *report.warnings]}


def _strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"stdout holds the non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


# --------------------------------------------------------------------------------------------- the campaign


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fuzzer forks one process per case")
def test_seeded_fuzz_cases_never_crash_hang_or_trace_back() -> None:
    shared_data("fruits_nuts", "trainval.json")
    fuzz = _fuzzer()
    outcomes, _ = fuzz.run_campaign(
        cases=30,
        seed=14,
        jobs=2,
        timeout=30.0,
        max_rss_mb=3000.0,
        exec_share=0.0,
        failures_dir=None,
        keep_failures=0,
        quiet=True,
    )
    assert len(outcomes) == 30
    failing = [
        (o.case.number, o.case.mutations, o.failures, o.stderr[-300:])
        for o in outcomes
        if o.failures and o.failures != ["starved"]  # starved: the machine gave it no CPU, not a hang
    ]
    assert not failing, failing


# --------------------------------------------------------------------------------------------- huge polygons


def test_a_million_vertex_polygon_is_refused_naming_the_annotation_and_its_image(tmp_path: Path) -> None:
    source = json.loads(shared_data("fruits_nuts", "trainval.json").read_text())
    ann = source["annotations"][0]
    rng = np.random.default_rng(0)
    polygon = rng.uniform(0, 600, size=2_000_000).round(1).tolist()
    ann["segmentation"] = [polygon]
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(source))

    code, out, err = run("validate", str(path), "--json", "--skip-images")
    assert code == 1, err
    errors = {issue["code"]: issue for issue in _strict(out)["errors"]}
    assert errors["polygon_too_large"]["ids"] == [ann["id"]]
    message = errors["polygon_too_large"]["message"]
    assert f"annotation {ann['id']} (image {ann['image_id']})" in message and "1,000,000 vertices" in message

    # --drop-invalid leaves it out of the repaired file like any other unusable annotation
    code, out, err = run(
        "validate", str(path), "--json", "--skip-images", "--drop-invalid", "-o", str(tmp_path / "o.json")
    )
    assert code == 0, err
    kept = json.loads((tmp_path / "o.json").read_text())["annotations"]
    assert ann["id"] not in {a["id"] for a in kept} and len(kept) == len(source["annotations"]) - 1


def test_vertex_limit_is_per_annotation_over_all_parts(coco: dict[str, Any]) -> None:
    part = square(10, 10, 20) * (MAX_ANNOTATION_VERTICES // 8 + 1)  # > limit / 2 vertices per part
    coco["annotations"][1]["segmentation"] = [part, part]
    report = validate_dataset(coco, check_images=False).report
    assert _codes(report)["polygon_too_large"] == [2]


def test_a_short_polygon_with_an_enormous_outline_is_refused_before_rasterising(coco: dict[str, Any]) -> None:
    # 50k vertices zigzagging across a 100 px image: rleFrPoly would walk 50k x 100 px x 5 points per px.
    zigzag = [v for i in range(50_000) for v in ((0, i % 80), (100, i % 80))[i % 2]]
    coco["annotations"][1]["segmentation"] = [zigzag]
    report = validate_dataset(coco, check_images=False).report
    assert _codes(report)["polygon_too_large"] == [2]
    assert "outline of 5,0" in report.errors[0].message and "(image 1)" in report.errors[0].message


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (float("nan"), "NaN or infinite"),
        (float("inf"), "NaN or infinite"),
        (1e12, "outside the image"),
        ([1], "not numbers"),
        (None, "NaN or infinite"),  # numpy reads None as NaN
    ],
)
def test_polygon_coordinates_are_checked_per_annotation(coco: dict[str, Any], bad: Any, reason: str) -> None:
    polygon: list[Any] = square(50, 20, 10)
    polygon[3] = bad
    coco["annotations"][1]["segmentation"] = [polygon]
    report = validate_dataset(coco, check_images=False).report
    issue = next(issue for issue in report.errors if issue.code == "invalid_polygon")
    assert issue.ids == [2] and reason in issue.message and "annotation 2 (image 1)" in issue.message


def test_polygon_checks_run_in_batches_and_find_each_culprit() -> None:
    part = square(10, 10, 20)
    jobs = [MaskJob(index=i, height=80, width=100, parts=[part]) for i in range(200_000)]  # two check batches
    jobs[7] = MaskJob(index=7, height=80, width=100, parts=[[*part[:5], "x", 1, 2]])
    jobs[150_000] = MaskJob(index=150_000, height=80, width=100, parts=[[*part[:7], float("nan")]])
    assert set(polygon_problems(jobs)) == {7, 150_000}


# --------------------------------------------------------------------------------------------- RLE


def test_compressed_counts_decode_as_pycocotools_does() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        height, width = rng.integers(1, 40, size=2)
        mask = (rng.random((height, width)) < rng.random()).astype(np.uint8)
        encoded = mask_utils.encode(np.asfortranarray(mask))
        runs = decode_compressed_counts(encoded["counts"])
        assert runs is not None and int(runs.sum()) == height * width
        assert int(runs[1::2].sum()) == int(mask_utils.area(encoded)) == int(mask.sum())
    big = np.zeros((3000, 4000), dtype=np.uint8, order="F")
    big[100:2000, 5:3999] = 1
    runs = decode_compressed_counts(mask_utils.encode(big)["counts"])
    assert runs is not None and int(runs.sum()) == 12_000_000


@pytest.mark.parametrize(
    "counts",
    [
        b"0o",  # ends with "more follows": pycocotools' decoder reads past the end
        b"0ooooooooP",  # a count of 9 characters: beyond 32 bits (C shifts past 64)
        b"0 1",  # a character outside 48..111
        b"0\x7f",
        b"",
        b"5P",  # 5, then -16 - 5 + ... : a negative run
    ],
)
def test_malformed_compressed_counts_are_refused(counts: bytes) -> None:
    assert decode_compressed_counts(counts) is None


@pytest.mark.parametrize(
    ("segmentation", "detail"),
    [
        ({"size": [80, 100], "counts": "PPZo"}, "not COCO's RLE encoding"),
        (
            {"size": [80, 100], "counts": mask_utils.encode(np.ones((3, 3), np.uint8, order="F"))["counts"].decode()},
            "covers 9 pixels",
        ),
        ({"size": [80, 100], "counts": [-1, 8001]}, "do not sum"),
        ({"size": [80, 100], "counts": [2**40, 3]}, "do not sum"),
        ({"size": [80, 100], "counts": [1.5, 7998.5]}, "do not sum"),
        ({"size": [80, 100], "counts": {"a": 1}}, "counts of type dict"),
        ({"size": ["80", 100], "counts": [8000]}, "size ['80', 100]"),
        ({"size": [80, 100, 3], "counts": [8000]}, "size"),
    ],
)
def test_bad_rle_is_reported_per_annotation_before_pycocotools(
    coco: dict[str, Any], segmentation: dict[str, Any], detail: str
) -> None:
    coco["annotations"][1]["segmentation"] = segmentation
    report = validate_dataset(coco, check_images=False).report
    issue = next(issue for issue in report.errors if issue.code == "invalid_rle")
    assert issue.ids == [2] and detail in issue.message


# --------------------------------------------------------------------------------------------- numbers, nesting


def test_non_finite_and_out_of_range_numbers_are_reported_per_annotation(tmp_path: Path) -> None:
    coco = copy.deepcopy(BASE_COCO)
    coco["images"].append({"id": 4, "file_name": "d.png", "width": float("nan"), "height": 80})
    coco["annotations"][0]["bbox"] = [10, 10, float("inf"), 20]
    coco["annotations"][2]["area"] = 10**400  # Python's json reads it; orjson refuses the file
    coco["annotations"].append({"id": float("nan"), "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]})
    path = tmp_path / "numbers.json"
    path.write_text(json.dumps(coco))
    code, out, err = run("validate", str(path), "--json", "--skip-images")
    assert code == 1 and "internal error" not in err, err
    report = _strict(out)
    found = {issue["code"]: issue["ids"] for issue in report["errors"] + report["warnings"]}
    assert found["invalid_bbox"] == [1]
    assert found["invalid_area"] == [3]
    assert found["invalid_image"] == [4]
    assert found["invalid_annotation"] == ["nan"]  # shown as text: standard JSON has no NaN


def test_deep_nesting_orjson_cannot_write_is_written_or_refused_in_one_line(tmp_path: Path) -> None:
    coco = copy.deepcopy(BASE_COCO)
    coco["info"] = "@DEEP@"
    text = json.dumps(coco).replace('"@DEEP@"', "[" * 600 + "]" * 600)  # orjson reads 1024 levels, writes 254
    path = tmp_path / "deep.json"
    path.write_text(text)
    out_file = tmp_path / "repaired.json"
    code, out, err = run("validate", str(path), "--json", "--skip-images", "-o", str(out_file))
    assert code == 0, err
    assert _strict(out)["valid"] is True
    assert json.loads(out_file.read_text())["annotations"]  # written by Python's json instead

    coco = copy.deepcopy(BASE_COCO)
    coco["annotations"].append({"id": "@DEEP@", "image_id": 1, "category_id": 1})
    path.write_text(json.dumps(coco).replace('"@DEEP@"', "[" * 900 + "]" * 900))
    code, out, err = run("validate", str(path), "--json", "--skip-images")
    assert code == 1 and "internal error" not in err, err
    ids = next(i["ids"] for i in _strict(out)["errors"] if i["code"] == "invalid_annotation")
    assert ids == ["[[[[...]]]]"]  # a bounded repr, not 900 levels


@pytest.mark.parametrize(
    "payload",
    [
        b"\xef\xbb\xbf" + json.dumps(BASE_COCO).encode(),  # UTF-8 byte-order mark
        json.dumps(BASE_COCO).encode("utf-16"),
        json.dumps(BASE_COCO).replace('"scratch"', '"\\ud800"').encode(),  # a lone surrogate escape
    ],
)
def test_json_that_python_reads_but_orjson_refuses_is_read(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(payload)
    code, out, err = run("validate", str(path), "--json", "--skip-images", "-o", str(tmp_path / "o.json"))
    assert code == 0, err
    assert _strict(out)["num_annotations"] == 3


@pytest.mark.parametrize("payload", [b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe\x00garbage", b'{"images": [1e400'])
def test_unreadable_json_is_one_line(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(payload)
    code, out, err = run("validate", str(path), "--json")
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "not valid JSON" in _strict(out)["error"]


# --------------------------------------------------------------------------------------------- memory, workers


_PARENT = os.getpid()
_COMPUTE_CHUNK = masks._compute_chunk


def _die_in_a_worker(bounds: tuple[int, int]) -> Any:  # module level: the executor sends it by name
    if os.getpid() != _PARENT:
        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's out-of-memory killer does
    return _COMPUTE_CHUNK(bounds)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mask workers are forked on Linux only")
def test_a_dying_mask_worker_is_an_error_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    global _PARENT
    _PARENT = os.getpid()
    monkeypatch.setattr(masks, "_compute_chunk", _die_in_a_worker)
    jobs = [MaskJob(index=i, height=80, width=100, parts=[square(10, 10, 20)]) for i in range(64)]
    with pytest.raises(DataError, match=r"worker process .* died"):
        mask_boxes_and_areas(jobs, workers=2)


def test_running_out_of_memory_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_memory(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(masks, "_compute", no_memory)
    path = tmp_path / "data.json"
    path.write_text(json.dumps(BASE_COCO))
    code, out, err = run("validate", str(path), "--json", "--skip-images")
    assert code == 1 and err.startswith("error: not enough memory") and err.count("\n") == 1, err
    assert _strict(out)["exit_code"] == 1
