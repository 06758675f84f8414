"""Fuzz campaign: ``distillkit validate`` on mutated real COCO files must never crash, hang or trace back.

Not a pytest test (``tests/test_validate_fuzz.py`` runs a few seeded cases of it in the default suite).
Run from the repository root::

    nice -n 19 python tests/bench/fuzz_validate.py --cases 1000 --jobs 2 --seed 0

Each case starts from one of the real COCO files in ``../shared/data`` (bccd, fruits_nuts, brain_tumor,
coco_quirks; a random subset of their images unless the case keeps the whole file), applies seeded
mutations (wrong types everywhere, missing keys, huge polygons up to 1M vertices, bad RLEs, NaN/Infinity,
huge and negative numbers, 100k-deep nesting) and sometimes byte-level damage (truncation, non-UTF-8
bytes, binary garbage, BOM/UTF-16), then runs ``validate FILE --json`` with a random mix of
``--skip-images``, ``--images-dir``, ``--split --output-dir``, ``--output`` and ``--drop-invalid``.

Every case runs in its own process so a crash is visible: by default a child forked from this
process, which imported distillkit once (the CLI's import takes seconds; forking makes 1000 cases
affordable); ``--exec-share`` of the cases instead run the real ``python -m distillkit``. Counted per
case: crashes (killed by a signal), tracebacks on stderr, "internal error" lines, hangs (over
``--timeout`` s of CPU time, or 20x that in wall time: killed), exit codes outside {0, 1, 2}, stdout
that is not exactly one JSON object
under ``--json`` (strict JSON: no NaN; 15 % of the cases print the human report instead), and memory
over ``--max-rss-mb`` (2000 by default: the case is killed, it would starve the machine). The first
failing cases are saved under ``--failures`` (input file, command, stdout, stderr) for reproduction;
exit code 1 when any case failed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("DISTILLKIT_SHARED_DATA", REPO.parent / "shared" / "data"))

SOURCES = [
    "bccd/annotations.json",
    "fruits_nuts/trainval.json",
    "brain_tumor/train/_annotations.coco.json",
    "brain_tumor/valid/_annotations.coco.json",
    "brain_tumor/test/_annotations.coco.json",
    "coco_quirks/01_coco_val2014_100img_gt.json",
    "coco_quirks/02_panopticapi_detection_format_rle_strings.json",
    "coco_quirks/03_cvat_logseg_instances_extra_rle_lists.json",
    "coco_quirks/04_cvat_cardash_instances_default_polygons_attributes.json",
    "coco_quirks/05_labelme2coco_annotations.json",
    "coco_quirks/06_labelstudio_input_tasks.json",
    "coco_quirks/06_labelstudio_sdk_2.1.2_export_result.json",
    "coco_quirks/07_coco_annotator_style_export.json",
    "coco_quirks/08_roboflow_facade_valid_dup_category_names.json",
]
IMAGE_FOLDERS = {
    "bccd/annotations.json": "bccd/images",
    "fruits_nuts/trainval.json": "fruits_nuts/images",
    "brain_tumor/train/_annotations.coco.json": "brain_tumor/train",
    "brain_tumor/valid/_annotations.coco.json": "brain_tumor/valid",
    "brain_tumor/test/_annotations.coco.json": "brain_tumor/test",
    "coco_quirks/02_panopticapi_detection_format_rle_strings.json": "coco_quirks/02_panopticapi_images",
    "coco_quirks/04_cvat_cardash_instances_default_polygons_attributes.json": "coco_quirks/04_cvat_cardash_images",
    "coco_quirks/05_labelme2coco_annotations.json": "coco_quirks/05_labelme2coco_images",
}
FAILURE_KINDS = ("crash", "traceback", "internal_error", "hang", "bad_exit", "bad_json", "memory", "fuzzer_error")
_DEEP = "\u0000DEEP:"  # a string replaced by deeply nested brackets after serialisation
_HUGE = "\u0000HUGEPOLY:"  # a string replaced by a huge polygon written directly as text


# ---------------------------------------------------------------------------------------------
# case generation


@dataclass
class Case:
    number: int
    source: str
    mutations: list[str]
    payload: bytes
    options: list[str]  # the arguments after FILE; "{dir}" is the case's folder
    use_exec: bool


def load_sources() -> dict[str, Any]:
    loaded = {}
    for name in SOURCES:
        path = DATA / name
        if path.is_file():
            loaded[name] = json.loads(path.read_text(encoding="utf-8"))
    if not loaded:
        sys.exit(f"no source files under {DATA}")
    return loaded


def _subset(doc: Any, rng: random.Random) -> Any:
    """A smaller copy: a few random images and their annotations (cases stay fast), or the whole file."""
    if type(doc) is not dict or rng.random() < 0.1:
        return copy.deepcopy(doc)
    images = doc.get("images")
    annotations = doc.get("annotations")
    if type(images) is not list or type(annotations) is not list or len(images) <= 12:
        return copy.deepcopy(doc)
    chosen = rng.sample(images, rng.randint(2, 12))
    ids = {image.get("id") for image in chosen if type(image) is dict}
    out = {key: value for key, value in doc.items() if key not in ("images", "annotations")}
    out["images"] = chosen
    out["annotations"] = [a for a in annotations if type(a) is dict and a.get("image_id") in ids]
    return copy.deepcopy(out)


def _weird(rng: random.Random) -> Any:
    choices: list[Any] = [
        None,
        "",
        "12",
        "abc",
        "1e400",
        "-3",
        "nan",
        "Infinity",
        -1,
        0,
        1,
        -(2**31),
        2**32,
        2**63,
        2**70,
        -(2**70),
        10**400,
        1e308,
        -1e308,
        5e-324,
        float("nan"),
        float("inf"),
        float("-inf"),
        -0.0,
        0.5,
        True,
        False,
        [],
        {},
        [[]],
        [None],
        {"a": 1},
        {"counts": None},
        "\x00\x01",
        "\ud800",
        "é" * 3,
        [1, 2, 3],
        [[1, 2], [3]],
        {"1": [1, {"2": None}]},
    ]
    roll = rng.random()
    if roll < 0.05:
        return _DEEP + str(rng.choice([300, 1100, 5000, 100_000]))
    if roll < 0.08:
        return "x" * rng.choice([10_000, 1_000_000])
    if roll < 0.10:
        return [rng.random() for _ in range(rng.choice([100, 10_000]))]
    return copy.deepcopy(rng.choice(choices))


def _random_path(doc: Any, rng: random.Random) -> list[Any]:
    """Keys/indexes from the root to a random node (biased towards going deep)."""
    path: list[Any] = []
    node = doc
    while True:
        if type(node) is dict and node and rng.random() < 0.85:
            key = rng.choice(list(node))
        elif type(node) is list and node and rng.random() < 0.85:
            key = rng.randrange(len(node))
        else:
            return path
        path.append(key)
        node = node[key]


def _set(doc: Any, path: list[Any], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return doc


def _random_entry(doc: Any, key: str, rng: random.Random) -> dict[str, Any] | None:
    if type(doc) is not dict:
        return None
    entries = doc.get(key)
    if type(entries) is not list:
        return None
    dicts = [entry for entry in entries if type(entry) is dict]
    return rng.choice(dicts) if dicts else None


def _image_of(doc: Any, ann: dict[str, Any]) -> tuple[int, int]:
    images = doc.get("images")
    for image in images if type(images) is list else []:
        if type(image) is dict and image.get("id") == ann.get("image_id"):
            width, height = image.get("width"), image.get("height")
            if type(width) is int and type(height) is int and 0 < width < 10_000 and 0 < height < 10_000:
                return width, height
    return 640, 480


def _polygon(rng: random.Random, vertices: int, width: int, height: int, scale: float = 1.0) -> list[float]:
    out: list[float] = []
    for _ in range(vertices):
        out += [round(rng.uniform(0, width * scale), 2), round(rng.uniform(0, height * scale), 2)]
    return out


def _rle_string(rng: random.Random, length: int) -> str:
    return "".join(chr(rng.randint(40, 120)) for _ in range(length))


def _mutate_segmentation(doc: Any, rng: random.Random) -> str:
    ann = _random_entry(doc, "annotations", rng)
    if ann is None:
        return "segmentation:none"
    width, height = _image_of(doc, ann)
    kind = rng.choice(
        [
            "huge_polygon",
            "many_vertices",
            "many_parts",
            "odd",
            "short",
            "nan",
            "strings",
            "far",
            "flat",
            "nested",
            "rle_list",
            "rle_list_bad",
            "rle_string",
            "rle_size",
            "rle_types",
            "zigzag",
            "empty",
            "rle_other_size",
            "huge_image",
        ]
    )
    seg: Any
    if kind == "huge_polygon":
        seg = [_HUGE + str(rng.choice([150_000, 400_000, 1_000_000])) + f":{width}:{height}"]
    elif kind == "many_vertices":
        seg = [_polygon(rng, rng.choice([5_000, 60_000]), width, height)]
    elif kind == "many_parts":
        seg = [_polygon(rng, 3, width, height) for _ in range(rng.choice([1_000, 20_000]))]
    elif kind == "zigzag":  # few vertices, enormous boundary: what makes pycocotools' rasteriser explode
        seg = [[v for i in range(rng.choice([2_000, 30_000])) for v in ((0, i % height), (width, i % height))[i % 2]]]
    elif kind == "odd":
        seg = [_polygon(rng, 4, width, height)[:-1]]
    elif kind == "short":
        seg = [[1.0, 2.0]]
    elif kind == "nan":
        poly: list[Any] = _polygon(rng, 5, width, height)
        poly[rng.randrange(len(poly))] = rng.choice([float("nan"), float("inf"), float("-inf"), 1e308, -1e308])
        seg = [poly]
    elif kind == "strings":
        poly = _polygon(rng, 5, width, height)
        poly[rng.randrange(len(poly))] = rng.choice(["12", "x", None, [], {}, True])
        seg = [poly]
    elif kind == "far":
        seg = [_polygon(rng, 5, width, height, scale=rng.choice([10.0, 1e6, 1e12, -1e9]))]
    elif kind == "flat":
        seg = _polygon(rng, 5, width, height)
    elif kind == "nested":
        seg = [[_polygon(rng, 3, width, height)]]
    elif kind == "rle_list":
        total = width * height
        cut = rng.randint(0, total)
        seg = {"size": [height, width], "counts": [cut, total - cut]}
    elif kind == "rle_list_bad":
        seg = {
            "size": [height, width],
            "counts": rng.choice(
                [[-1, width * height + 1], [2**40, 3], [width * height * 2], ["1", 2], [1.5, 2.5], [None], []]
            ),
        }
    elif kind == "rle_string":
        seg = {"size": [height, width], "counts": _rle_string(rng, rng.choice([1, 5, 40, 400, 100_000]))}
    elif kind == "rle_size":
        seg = {
            "size": rng.choice([[-height, width], [0, 0], [2**31, 2**31], [height], [height, width, 3], ["1", "2"]]),
            "counts": rng.choice([[0, 1], "PPZ8"]),
        }
    elif kind == "rle_types":
        seg = {"size": _weird(rng), "counts": _weird(rng)}
    elif kind == "rle_other_size":  # a well-formed compressed string whose counts cover another size
        other = rng.choice([(height + 1, width), (max(1, height // 2), width), (3, 3)])
        encoded = mask_utils.encode(np.ones(other, dtype=np.uint8, order="F"))
        seg = {"size": [height, width], "counts": encoded["counts"].decode()}
    elif kind == "huge_image":  # the largest image pycocotools can hold, with a mask covering it
        images = doc.get("images")
        for image in images if type(images) is list else []:
            if type(image) is dict and image.get("id") == ann.get("image_id"):
                image["width"] = image["height"] = 65_535
        seg = rng.choice(
            [[[0, 0, 65_535, 0, 65_535, 65_535, 0, 65_535]], {"size": [65_535, 65_535], "counts": [1, 65_535**2 - 1]}]
        )
    else:
        seg = rng.choice([[], {}, [[]], [[], []], None, "", 0])
    ann["segmentation"] = seg
    if rng.random() < 0.5:
        ann.pop("bbox", None)
        ann.pop("area", None)
    return f"segmentation:{kind}"


def _mutate_field(doc: Any, rng: random.Random) -> str:
    key = rng.choice(["annotations", "annotations", "images", "categories"])
    entry = _random_entry(doc, key, rng)
    if entry is None:
        return f"field:{key}:none"
    fields = {
        "annotations": ["id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"],
        "images": ["id", "width", "height", "file_name"],
        "categories": ["id", "name", "supercategory"],
    }[key]
    name = rng.choice(fields)
    roll = rng.random()
    if roll < 0.15:
        entry.pop(name, None)
        return f"field:{key}.{name}:deleted"
    if name == "bbox" and roll < 0.5:
        entry[name] = [rng.choice([0, -5, 1e308, float("nan"), float("inf"), "3", 1e-300, 10**30]) for _ in range(4)]
        return f"field:{key}.{name}:numbers"
    if name in ("width", "height") and roll < 0.6:
        entry[name] = rng.choice([0, -1, -600, 65_535, 65_536, 10**9, 2**31, 2**63, 1.5, "600", 1e308, float("nan")])
        return f"field:{key}.{name}:size"
    entry[name] = _weird(rng)
    return f"field:{key}.{name}:weird"


def _mutate_anywhere(doc: Any, rng: random.Random) -> tuple[Any, str]:
    path = _random_path(doc, rng)
    roll = rng.random()
    if roll < 0.2 and path:
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if type(parent) is dict:
            parent.pop(path[-1], None)
        else:
            parent.pop(path[-1])
        return doc, "anywhere:delete"
    if roll < 0.3 and path:
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if type(parent) is list:
            parent.append(copy.deepcopy(parent[path[-1]]))  # a duplicate entry (same ids)
            return doc, "anywhere:duplicate"
    return _set(doc, path, _weird(rng)), f"anywhere:depth{len(path)}"


def _mutate_bulk(doc: Any, rng: random.Random) -> str:
    """Size and nesting: many annotations, deep extra fields (written back by --output / --split)."""
    if type(doc) is not dict:
        return "bulk:none"
    if rng.random() < 0.5:
        doc[rng.choice(["info", "licenses", "extra"])] = _DEEP + str(rng.choice([200, 260, 1000, 1023]))
        return "bulk:deep_extra"
    ann = _random_entry(doc, "annotations", rng)
    if ann is None:
        return "bulk:none"
    count = rng.choice([1_000, 10_000])
    doc["annotations"] = list(doc["annotations"]) + [dict(ann, id=10**7 + i) for i in range(count)]
    return f"bulk:annotations{count}"


_NUMBER = re.compile(rb"(?<=[\[,: ])-?\d+(\.\d+)?(?=[,\]}])")


def _damage_numbers(payload: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Numbers only Python's json reads (or nobody does): 1e400, 30-digit and 5000-digit integers, NaN."""
    matches = list(_NUMBER.finditer(payload[:2_000_000]))
    if not matches:
        return payload, "numbers:none"
    token = rng.choice(
        [
            b"1e400",
            b"-1e400",
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b"123456789012345678901234567890",
            b"9" * 5000,
            b"-0",
            b"1E-400",
            b"0.0000000000000000000000000001",
            b"18446744073709551616",
        ]
    )
    out = bytearray(payload)
    for match in sorted(rng.sample(matches, min(len(matches), rng.randint(1, 5))), key=lambda m: -m.start()):
        out[match.start() : match.end()] = token
    return bytes(out), f"numbers:{token[:12].decode()}"


def _mutate_top(doc: Any, rng: random.Random) -> tuple[Any, str]:
    if type(doc) is dict and rng.random() < 0.7:
        key = rng.choice(["images", "annotations", "categories"])
        doc[key] = _weird(rng) if rng.random() < 0.7 else None
        if doc[key] is None:
            del doc[key]
        return doc, f"top:{key}"
    return _weird(rng), "top:replaced"


def _serialise(doc: Any, rng: random.Random) -> bytes:
    text = json.dumps(doc, allow_nan=True, ensure_ascii=rng.random() < 0.5)
    if "\\u0000" in text or "\x00" in text:
        for marker in (_DEEP, _HUGE):
            escaped = json.dumps(marker)[1:-1]
            while escaped in text:
                start = text.index(escaped) - 1
                end = text.index('"', start + 1 + len(escaped))
                body = text[start + 1 + len(escaped) : end].split(":")
                if marker == _DEEP:
                    depth = int(body[0])
                    replacement = "[" * depth + "]" * depth
                else:  # full float precision, like the 39 MB reproduction
                    vertices, width, height = (int(v) for v in body)
                    points = np.random.default_rng(rng.getrandbits(32)).uniform(0, 1, size=(vertices, 2))
                    replacement = json.dumps((points * [width, height]).ravel().tolist())
                text = text[:start] + replacement + text[end + 1 :]
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate with ensure_ascii off: write it as Python would not
        return text.encode("utf-8", "surrogatepass")


def _damage_bytes(payload: bytes, rng: random.Random) -> tuple[bytes, str]:
    kind = rng.choice(["truncate", "flip", "non_utf8", "garbage", "empty", "bom", "utf16", "deep_raw", "nan_raw"])
    if kind == "truncate":
        return payload[: rng.randrange(max(1, len(payload)))], kind
    if kind == "flip":
        data = bytearray(payload)
        for _ in range(rng.randint(1, 20)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data), kind
    if kind == "non_utf8":
        position = rng.randrange(max(1, len(payload)))
        return payload[:position] + rng.choice([b"\xff\xfe", b"\xc3\x28", b"\x80", b"\xed\xa0\x80"]) + payload[
            position:
        ], kind
    if kind == "garbage":
        return rng.randbytes(rng.choice([1, 100, 100_000])), kind
    if kind == "empty":
        return b"", kind
    if kind == "bom":
        return b"\xef\xbb\xbf" + payload, kind
    if kind == "utf16":
        return payload.decode("utf-8", "replace").encode("utf-16"), kind
    if kind == "deep_raw":
        depth = rng.choice([1_000, 100_000, 1_000_000])
        return b"[" * depth + b"]" * depth, kind
    return payload.replace(b"0.", b"NaN", 1).replace(b"1", b"Infinity", 1), kind


def make_case(number: int, seed: int, sources: dict[str, Any]) -> Case:
    rng = random.Random(seed * 1_000_003 + number)
    source = rng.choice(list(sources))
    doc = _subset(sources[source], rng)
    mutations: list[str] = []
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4])):
        roll = rng.random()
        if roll < 0.35:
            mutations.append(_mutate_segmentation(doc, rng))
        elif roll < 0.65:
            mutations.append(_mutate_field(doc, rng))
        elif roll < 0.7:
            mutations.append(_mutate_bulk(doc, rng))
        elif roll < 0.93:
            doc, what = _mutate_anywhere(doc, rng)
            mutations.append(what)
        else:
            doc, what = _mutate_top(doc, rng)
            mutations.append(what)
    payload = _serialise(doc, rng)
    if rng.random() < 0.1:
        payload, what = _damage_numbers(payload, rng)
        mutations.append(what)
    if rng.random() < 0.15:
        payload, what = _damage_bytes(payload, rng)
        mutations.append(f"bytes:{what}")
    # Mostly --json (stdout must be one JSON document); some with the human report, which prints file
    # content (file names, class names) through rich.
    options = ["--json"] if rng.random() < 0.85 else rng.choice([[], ["--quiet"]])
    roll = rng.random()
    if roll < 0.4:
        options.append("--skip-images")
    elif roll < 0.8 and source in IMAGE_FOLDERS:
        options += ["--images-dir", str(DATA / IMAGE_FOLDERS[source])]
    if rng.random() < 0.25:
        options += [
            "--split",
            rng.choice(["0.7,0.3", "0.8,0.1,0.1", "train:0.5,val:0.5"]),
            "--output-dir",
            "{dir}/split",
        ]
    if rng.random() < 0.2:
        options += ["--output", "{dir}/repaired.json"]
    if rng.random() < 0.2:
        options.append("--drop-invalid")
    if rng.random() < 0.05:
        options += ["--min-per-class", str(rng.choice([0, 5, 1000]))]
    return Case(number, source, mutations, payload, options, use_exec=False)


# ---------------------------------------------------------------------------------------------
# running


@dataclass
class Outcome:
    case: Case
    exit_code: int | None
    signal: int | None
    seconds: float
    max_rss_mb: float
    stdout: bytes
    stderr: bytes
    failures: list[str] = field(default_factory=list)


def _strict_json(text: bytes) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"non-standard constant {name}")

    return json.loads(text.decode("utf-8"), parse_constant=refuse)


def classify(outcome: Outcome, timed_out: bool, over_memory: bool) -> list[str]:
    failures = []
    err = outcome.stderr.decode("utf-8", "replace")
    if timed_out:
        failures.append("hang")
    elif over_memory:
        failures.append("memory")
    elif outcome.signal is not None:
        failures.append("crash")
    if "Traceback (most recent call last)" in err:
        failures.append("traceback")
    if "internal error" in err:
        failures.append("internal_error")
    if outcome.exit_code is not None and outcome.exit_code not in (0, 1, 2):
        failures.append("bad_exit")
    if "--json" in outcome.case.options and not (timed_out or over_memory or outcome.signal is not None):
        try:
            document = _strict_json(outcome.stdout)
            if type(document) is not dict:
                raise ValueError("not an object")
        except ValueError:
            failures.append("bad_json")
    return failures


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (validate may fork mask workers)."""
    total = 0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            pids += [int(p) for p in handle.read().split()]
    except OSError:
        pass
    for one in pids:
        try:
            with open(f"/proc/{one}/statm") as handle:
                total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
    return total / 2**20


class Runner:
    """Up to ``jobs`` cases at a time, each in a process of its own (forked, or exec'ed when asked).

    The forked child also generates its case (in parallel, like the cases themselves); the timeout
    counts from when the case's file is written.
    """

    def __init__(self, workdir: Path, timeout: float, max_rss_mb: float, seed: int, sources: dict[str, Any]) -> None:
        self.workdir = workdir
        self.timeout = timeout
        self.max_rss_mb = max_rss_mb
        self.seed = seed
        self.sources = sources
        self.running: dict[int, dict[str, Any]] = {}

    def start(self, number: int, use_exec: bool) -> None:
        folder = self.workdir / f"case_{number:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        stdout = os.open(folder / "stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        stderr = os.open(folder / "stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        pid = os.fork()
        if pid == 0:  # the child: generate the case, then run it with its output in files
            code = 99
            try:
                os.setpgid(0, 0)
                try:
                    args = _write_case(folder, make_case(number, self.seed, self.sources), use_exec)
                except Exception:
                    import traceback

                    (folder / "generator_error").write_text(traceback.format_exc())
                    os._exit(98)
                os.dup2(stdout, 1)
                os.dup2(stderr, 2)
                # Under pytest sys.stdout/err are capture objects, not file descriptors 1 and 2.
                sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
                if use_exec:
                    env = dict(os.environ, PYTHONPATH=str(REPO))
                    os.execve(sys.executable, [sys.executable, "-m", "distillkit", *args], env)
                code = _run_in_child(args)
            finally:  # whatever happens, the parent's loop must not run on in a child
                os._exit(code)
        os.close(stdout)
        os.close(stderr)
        self.running[pid] = {"number": number, "folder": folder, "forked": time.monotonic(), "ready": None}

    def poll(self) -> list[Outcome]:
        finished = []
        for pid, state in list(self.running.items()):
            folder: Path = state["folder"]
            waited, status, usage = os.wait4(pid, os.WNOHANG)
            now = time.monotonic()
            if state["ready"] is None and (folder / "meta.json").exists():
                state["ready"] = now
            timed_out = over_memory = starved = False
            if waited == 0:
                # CPU time, not wall time: on a machine shared with higher-priority work a niced case can
                # wait for a core far longer than it computes. Wall time still bounds it (20x); a case
                # stopped there with less CPU time than --timeout is "starved", not a hang.
                cpu = _cpu_seconds(pid)
                if state["ready"] is not None and cpu > self.timeout:
                    timed_out = True
                elif state["ready"] is not None and now - state["ready"] > 20 * self.timeout:
                    starved = True
                elif state["ready"] is None and now - state["forked"] > 10 * self.timeout:
                    timed_out = True  # the generator itself hung: reported as a fuzzer error below
                elif _rss_mb(pid) > self.max_rss_mb:
                    over_memory = True
                else:
                    continue
                _kill_group(pid)
                waited, status, usage = os.wait4(pid, 0)
            del self.running[pid]
            _kill_group(pid)  # mask workers a dying case left behind
            meta = json.loads((folder / "meta.json").read_text()) if (folder / "meta.json").exists() else {}
            case = Case(
                number=state["number"],
                source=meta.get("source", "?"),
                mutations=meta.get("mutations", []),
                payload=b"",
                options=meta.get("options", []),
                use_exec=meta.get("use_exec", False),
            )
            outcome = Outcome(
                case=case,
                exit_code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                seconds=now - (state["ready"] or state["forked"]),
                max_rss_mb=usage.ru_maxrss / 1024,
                stdout=(folder / "stdout").read_bytes(),
                stderr=(folder / "stderr").read_bytes(),
            )
            if not meta:
                generator = folder / "generator_error"
                outcome.stderr = generator.read_bytes() if generator.exists() else b"the generator hung"
                outcome.failures = ["fuzzer_error"]
            else:
                outcome.failures = ["starved"] if starved else classify(outcome, timed_out, over_memory)
            finished.append(outcome)
        return finished


def _write_case(folder: Path, case: Case, use_exec: bool) -> list[str]:
    """Write the case's file, command and description; return the CLI arguments."""
    data = folder / "data.json"
    data.write_bytes(case.payload)
    args = ["validate", str(data), *[option.replace("{dir}", str(folder)) for option in case.options]]
    (folder / "cmd.txt").write_text(" ".join(["python", "-m", "distillkit", *args]) + "\n")
    meta = {"source": case.source, "mutations": case.mutations, "options": case.options, "use_exec": use_exec}
    (folder / "meta.json.tmp").write_text(json.dumps(meta))
    os.replace(folder / "meta.json.tmp", folder / "meta.json")  # its appearance starts the timeout
    return args


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _run_in_child(args: list[str]) -> int:
    import traceback

    from distillkit.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # as the interpreter would: a traceback and exit 1
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def run_campaign(
    cases: int,
    seed: int,
    jobs: int,
    timeout: float,
    max_rss_mb: float,
    exec_share: float,
    failures_dir: Path | None,
    keep_failures: int,
    quiet: bool = False,
    max_seconds: float | None = None,
) -> tuple[list[Outcome], float]:
    """Run the cases; with ``max_seconds`` no case starts after that budget (the report says how many ran)."""
    sources = load_sources()
    import distillkit.cli.app  # noqa: F401 - imported once here, inherited by every forked case

    outcomes: list[Outcome] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="distillkit-fuzz-") as tmp:
        runner = Runner(Path(tmp), timeout, max_rss_mb, seed, sources)
        pending = list(range(cases))
        exec_rng = random.Random(seed)
        saved = 0
        reported: set[int] = set()
        try:
            while pending or runner.running:
                if max_seconds is not None and time.monotonic() - started > max_seconds and pending:
                    print(f"  time budget spent: {len(pending)} cases not started", file=sys.stderr)
                    pending = []
                saved = _step(runner, pending, jobs, exec_rng, exec_share, outcomes, failures_dir, keep_failures, saved)
                if not quiet and outcomes and len(outcomes) % 50 == 0 and outcomes[-1].case.number not in reported:
                    reported.add(outcomes[-1].case.number)
                    print(f"  {len(outcomes)}/{cases} cases, {time.monotonic() - started:.0f} s", file=sys.stderr)
                time.sleep(0.02)
        finally:  # interrupted: no case may outlive the campaign
            for pid in list(runner.running):
                _kill_group(pid)
                os.waitpid(pid, 0)
    return sorted(outcomes, key=lambda o: o.case.number), time.monotonic() - started


def _step(
    runner: Runner,
    pending: list[int],
    jobs: int,
    exec_rng: random.Random,
    exec_share: float,
    outcomes: list[Outcome],
    failures_dir: Path | None,
    keep_failures: int,
    saved: int,
) -> int:
    """Start cases up to ``jobs``, collect finished ones (saving the first failing ones); return ``saved``."""
    while pending and len(runner.running) < jobs:
        runner.start(pending.pop(0), use_exec=exec_rng.random() < exec_share)
    for outcome in runner.poll():
        outcomes.append(outcome)
        folder = runner.workdir / f"case_{outcome.case.number:05d}"
        if outcome.failures and failures_dir is not None and saved < keep_failures:
            saved += 1
            target = failures_dir / folder.name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(folder, target, ignore=shutil.ignore_patterns("split", "repaired.json"))
            description = {
                "source": outcome.case.source,
                "mutations": outcome.case.mutations,
                "failures": outcome.failures,
                "exit_code": outcome.exit_code,
                "signal": outcome.signal,
                "seconds": round(outcome.seconds, 2),
            }
            (target / "case.json").write_text(json.dumps(description, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
    return saved


def report(outcomes: list[Outcome], wall: float, show: int) -> int:
    counts = Counter(kind for outcome in outcomes for kind in set(outcome.failures))
    exits = Counter(
        str(outcome.exit_code) if outcome.exit_code is not None else f"signal {outcome.signal}" for outcome in outcomes
    )
    failing = [outcome for outcome in outcomes if outcome.failures and outcome.failures != ["starved"]]
    starved = len(outcomes) - len(failing) - sum(not outcome.failures for outcome in outcomes)
    print(f"\ncases: {len(outcomes)}   wall: {wall:.0f} s   failing cases: {len(failing)}")
    if starved:
        print(f"not finished: {starved} cases got under --timeout s of CPU in 20x that wall time (machine busy)")
    print(f"{'check':<16}{'cases':>8}")
    for kind in FAILURE_KINDS:
        print(f"{kind:<16}{counts.get(kind, 0):>8}")
    print("exit codes: " + ", ".join(f"{code}: {n}" for code, n in sorted(exits.items())))
    slowest = max(outcomes, key=lambda o: o.seconds, default=None)
    biggest = max(outcomes, key=lambda o: o.max_rss_mb, default=None)
    if slowest is not None and biggest is not None:
        print(
            f"slowest case: {slowest.seconds:.1f} s (#{slowest.case.number}); "
            f"largest peak RSS: {biggest.max_rss_mb:.0f} MB (#{biggest.case.number})"
        )
    executed = sum(outcome.case.use_exec for outcome in outcomes)
    print(f"cases run through 'python -m distillkit' (the rest forked): {executed}")
    for outcome in failing[:show]:
        err = outcome.stderr.decode("utf-8", "replace").strip().splitlines()
        print(
            f"\n#{outcome.case.number} {outcome.failures} source={outcome.case.source} "
            f"mutations={outcome.case.mutations} options={outcome.case.options} exit={outcome.exit_code} "
            f"signal={outcome.signal}"
        )
        for line in err[-4:]:
            print(f"    {line[:300]}")
    return 1 if failing else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="cases run at the same time")
    parser.add_argument("--timeout", type=float, default=30.0, help="CPU seconds before a case counts as a hang")
    parser.add_argument("--max-rss-mb", type=float, default=2000.0, help="a case using more memory is killed")
    parser.add_argument("--exec-share", type=float, default=0.03, help="share of cases run as 'python -m distillkit'")
    parser.add_argument("--failures", type=Path, default=Path(tempfile.gettempdir()) / "distillkit-fuzz-failures")
    parser.add_argument("--keep-failures", type=int, default=20, help="failing cases saved for reproduction")
    parser.add_argument("--show", type=int, default=8, help="failing cases printed")
    parser.add_argument("--max-minutes", type=float, default=None, help="start no case after this (report those run)")
    args = parser.parse_args()
    os.nice(19)  # shared machines: the campaign takes what is left
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # killed: stop the running cases too
    args.failures.mkdir(parents=True, exist_ok=True)
    outcomes, wall = run_campaign(
        args.cases,
        args.seed,
        args.jobs,
        args.timeout,
        args.max_rss_mb,
        args.exec_share,
        args.failures,
        args.keep_failures,
        max_seconds=args.max_minutes * 60 if args.max_minutes else None,
    )
    code = report(outcomes, wall, args.show)
    if code:
        print(f"\nfailing cases saved under {args.failures} (data.json, cmd.txt, stdout, stderr, case.json)")
    sys.exit(code)


if __name__ == "__main__":
    main()
