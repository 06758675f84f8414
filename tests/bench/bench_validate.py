"""Speed benchmark: ``distillkit validate`` against plain pycocotools on a large COCO file.

Not a pytest test (pytest collects ``test_*.py`` only). Run from the repository root::

    python tests/bench/bench_validate.py                       # 40,000 images, 300,000 polygons
    python tests/bench/bench_validate.py --images 2000 --annotations 15000 --no-fail   # smoke run

What it does:

1. Generates (seeded, cached in ``--workdir``) a COCO file of polygon annotations *without*
   ``bbox`` and ``area``: 640x480 / 1280x720 / 1920x1080 images, 80 imbalanced categories,
   6-40 vertices per polygon, ~10% multi-part polygons, ~5% empty images. The images themselves
   are not written (only the JSON).
2. Baseline, in a subprocess: ``pycocotools.coco.COCO(path)`` then, for every annotation,
   ``frPyObjects`` + ``merge`` + ``toBbox`` + ``area`` - what a user would write by hand.
3. ``python -m distillkit validate PATH --output OUT.json --json``, in a subprocess.
4. Checks OUT.json: every annotation has ``bbox`` and ``area``; a seeded sample of 1000 equals
   what pycocotools computes from the input polygons.
5. Prints wall time (best of ``--repeat``), peak RSS of each, and the ratio distillkit/baseline;
   exits 1 when the ratio exceeds ``--max-ratio`` (default 1.0) unless ``--no-fail``, 2 when
   distillkit fails or its output is wrong.

Peak RSS: "max process" is ``ru_maxrss`` from ``os.wait4`` (the largest single process in the
tree); "tree" is the largest sum of RSS over the process and its descendants, sampled every
50 ms from /proc (it matters when validate uses worker processes; n/a off Linux).
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[2]
FORMAT_VERSION = 1  # bump when the generated data changes, so cached files are not reused

IMAGE_SIZES = np.array([(640, 480), (1280, 720), (1920, 1080)])
IMAGE_SIZE_SHARE = np.array([0.5, 0.3, 0.2])
EMPTY_IMAGE_SHARE = 0.05
MULTI_PART_SHARE = 0.10
NUM_CATEGORIES = 80


# ---------------------------------------------------------------------------------------------
# Data


def generate_coco(num_images: int, num_annotations: int, seed: int) -> bytes:
    """COCO JSON bytes with polygon segmentations and no bbox/area, built with vectorised numpy."""
    rng = np.random.default_rng(seed)
    size_idx = rng.choice(len(IMAGE_SIZES), num_images, p=IMAGE_SIZE_SHARE)
    widths, heights = IMAGE_SIZES[size_idx, 0], IMAGE_SIZES[size_idx, 1]

    # Objects per image: gamma weights vary the count per image (0 to a few dozen); ~5% forced empty.
    weights = rng.gamma(3.0, 1.0, num_images) * (rng.random(num_images) >= EMPTY_IMAGE_SHARE)
    if weights.sum() == 0:
        weights[:] = 1.0
    ann_image = np.sort(rng.choice(num_images, num_annotations, p=weights / weights.sum()))

    # Categories: Zipf-like frequencies over shuffled ids, so id order says nothing about frequency.
    cat_weights = 1.0 / np.arange(1, NUM_CATEGORIES + 1) ** 1.1
    cat_ids = rng.permutation(NUM_CATEGORIES) + 1
    ann_cat = cat_ids[rng.choice(NUM_CATEGORIES, num_annotations, p=cat_weights / cat_weights.sum())]

    # Object centre and radius, kept inside the image.
    w, h = widths[ann_image].astype(np.float64), heights[ann_image].astype(np.float64)
    short = np.minimum(w, h)
    radius = short * np.clip(rng.lognormal(np.log(0.05), 0.7, num_annotations), 0.006, 0.3)
    cx = radius + rng.random(num_annotations) * (w - 2 * radius)
    cy = radius + rng.random(num_annotations) * (h - 2 * radius)

    # Parts: most objects one polygon, ~10% two or three (an occluded object, a broken scratch).
    num_parts = 1 + (rng.random(num_annotations) < MULTI_PART_SHARE) * rng.integers(1, 3, num_annotations)
    part_ann = np.repeat(np.arange(num_annotations), num_parts)
    total_parts = part_ann.size
    multi = num_parts[part_ann] > 1
    part_r = radius[part_ann] * np.where(multi, rng.uniform(0.3, 0.6, total_parts), 1.0)
    offset = np.where(multi, radius[part_ann] * 0.6, 0.0)
    phi = rng.uniform(0, 2 * np.pi, total_parts)
    part_cx = cx[part_ann] + offset * np.cos(phi)
    part_cy = cy[part_ann] + offset * np.sin(phi)
    aspect = rng.uniform(0.4, 1.0, total_parts)
    rot = rng.uniform(0, np.pi, total_parts)

    # Vertices: star-shaped polygons, angles increasing with jitter, radii jittered.
    num_verts = rng.integers(6, 41, total_parts)
    vert_part = np.repeat(np.arange(total_parts), num_verts)
    starts = np.cumsum(num_verts) - num_verts
    k = np.arange(vert_part.size) - starts[vert_part]
    theta = (k + rng.uniform(-0.35, 0.35, vert_part.size)) * (2 * np.pi / num_verts[vert_part])
    r = part_r[vert_part] * rng.uniform(0.65, 1.0, vert_part.size)
    ex, ey = r * np.cos(theta), r * np.sin(theta) * aspect[vert_part]
    c, s = np.cos(rot[vert_part]), np.sin(rot[vert_part])
    x = np.clip(part_cx[vert_part] + c * ex - s * ey, 0, w[part_ann][vert_part])
    y = np.clip(part_cy[vert_part] + s * ex + c * ey, 0, h[part_ann][vert_part])
    xy = np.empty(2 * vert_part.size)
    xy[0::2], xy[1::2] = np.round(x, 2), np.round(y, 2)
    bounds = (2 * np.concatenate([[0], np.cumsum(num_verts)])).tolist()
    parts = [xy[a:b] for a, b in itertools.pairwise(bounds)]  # contiguous views: orjson writes them fast

    part_start = np.cumsum(num_parts) - num_parts
    ann_image_l, ann_cat_l = (ann_image + 1).tolist(), ann_cat.tolist()
    part_start_l, num_parts_l = part_start.tolist(), num_parts.tolist()
    annotations = [
        {
            "id": i + 1,
            "image_id": ann_image_l[i],
            "category_id": ann_cat_l[i],
            "segmentation": parts[part_start_l[i] : part_start_l[i] + num_parts_l[i]],
            "iscrowd": 0,
        }
        for i in range(num_annotations)
    ]
    widths_l, heights_l = widths.tolist(), heights.tolist()
    images = [
        {"id": i + 1, "file_name": f"{i + 1:06d}.jpg", "width": widths_l[i], "height": heights_l[i]}
        for i in range(num_images)
    ]
    categories = [{"id": i, "name": f"class_{i:02d}", "supercategory": "object"} for i in range(1, NUM_CATEGORIES + 1)]
    coco = {
        "info": {"description": f"distillkit validate benchmark (seed {seed})", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    return orjson.dumps(coco, option=orjson.OPT_SERIALIZE_NUMPY)


def cached_dataset(workdir: Path, num_images: int, num_annotations: int, seed: int) -> tuple[Path, float | None]:
    """The benchmark file (generated when missing) and the generation time (None when cached)."""
    path = workdir / f"coco_{num_images}i_{num_annotations}a_seed{seed}_v{FORMAT_VERSION}.json"
    if path.exists():
        return path, None
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = generate_coco(num_images, num_annotations, seed)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=workdir)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Baseline (runs in its own process: ``bench_validate.py --baseline-only PATH``)


def pycocotools_bbox_area(segmentation: list, height: int, width: int) -> tuple[list[float], float]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    return [float(v) for v in mask_utils.toBbox(rle)], float(mask_utils.area(rle))


def run_baseline(path: Path) -> dict:
    import contextlib
    import io

    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress lines
        coco = COCO(str(path))
    loaded = time.perf_counter()
    total_area = 0.0
    for ann in coco.dataset["annotations"]:
        image = coco.imgs[ann["image_id"]]
        rles = mask_utils.frPyObjects(ann["segmentation"], image["height"], image["width"])
        rle = mask_utils.merge(rles)
        mask_utils.toBbox(rle)
        total_area += float(mask_utils.area(rle))
    done = time.perf_counter()
    return {
        "load_s": loaded - start,
        "compute_s": done - loaded,
        "annotations": len(coco.dataset["annotations"]),
        "total_area": total_area,
    }


# ---------------------------------------------------------------------------------------------
# Measuring a subprocess


@dataclass
class Run:
    wall_s: float
    max_process_rss_mib: float
    tree_rss_mib: float | None
    returncode: int
    stderr: str
    inner: dict | None = None  # the baseline's own timings (COCO() load, bbox/area loop)


def _tree_rss_bytes(root: int) -> int | None:
    """Sum of RSS over ``root`` and its descendants, from /proc; None once ``root`` is gone."""
    page = os.sysconf("SC_PAGE_SIZE")
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            if pid == root:
                return None
            continue
        try:
            for task in os.listdir(f"/proc/{pid}/task"):  # children are listed per thread
                with open(f"/proc/{pid}/task/{task}/children") as handle:
                    stack.extend(int(child) for child in handle.read().split())
        except (OSError, ValueError):
            pass
    return total


def measure(cmd: list[str], stdout_path: Path, env: dict[str, str] | None = None) -> Run:
    """Run ``cmd``: wall time, peak RSS (largest process, and sampled whole tree), exit code, stderr."""
    with tempfile.TemporaryFile() as err, open(stdout_path, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO, env=env)
        peak = [0]
        sampling = sys.platform.startswith("linux")
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                rss = _tree_rss_bytes(proc.pid)
                if rss:
                    peak[0] = max(peak[0], rss)
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        if sampling:
            sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of this child alone, unlike RUSAGE_CHILDREN
        wall = time.perf_counter() - start
        stop.set()
        if sampling:
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    scale = 1024 if sys.platform.startswith("linux") else 1  # ru_maxrss: KiB on Linux, bytes on macOS
    return Run(
        wall_s=wall,
        max_process_rss_mib=usage.ru_maxrss * scale / 2**20,
        tree_rss_mib=peak[0] / 2**20 if sampling and peak[0] else None,
        returncode=proc.returncode,
        stderr=stderr,
    )


def _env_with_repo() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


# ---------------------------------------------------------------------------------------------
# Checking distillkit's output


def check_output(input_path: Path, output_path: Path, seed: int, sample: int = 1000) -> list[str]:
    """Problems found in the repaired file (empty list: fine)."""
    if not output_path.exists():
        return [f"distillkit wrote no output file at {output_path}"]
    try:
        repaired = orjson.loads(output_path.read_bytes())
    except orjson.JSONDecodeError as exc:
        return [f"output is not valid JSON: {exc}"]
    original = orjson.loads(input_path.read_bytes())
    problems: list[str] = []
    out_anns = {a.get("id"): a for a in repaired.get("annotations", [])}
    in_anns = original["annotations"]
    if len(out_anns) != len(in_anns):
        problems.append(f"output has {len(out_anns)} annotations, input {len(in_anns)}")
    missing = [
        a.get("id")
        for a in out_anns.values()
        if not (isinstance(a.get("bbox"), list) and len(a["bbox"]) == 4 and isinstance(a.get("area"), int | float))
    ]
    if missing:
        problems.append(f"{len(missing)} annotations lack a bbox or area (first ids: {missing[:5]})")
    sizes = {im["id"]: (im["height"], im["width"]) for im in original["images"]}
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(in_anns), min(sample, len(in_anns)), replace=False)
    wrong = 0
    for index in picks.tolist():
        ann = in_anns[index]
        got = out_anns.get(ann["id"])
        if got is None or "bbox" not in got or "area" not in got:
            wrong += 1
            continue
        bbox, area = pycocotools_bbox_area(ann["segmentation"], *sizes[ann["image_id"]])
        ok = np.allclose(got["bbox"], bbox, rtol=0, atol=1e-6) and abs(float(got["area"]) - area) <= 1e-6
        if not ok:
            wrong += 1
            if wrong <= 3:
                problems.append(
                    f"annotation {ann['id']}: bbox/area {got['bbox']}/{got['area']}, pycocotools {bbox}/{area}"
                )
    if wrong:
        problems.append(f"{wrong} of {len(picks)} sampled annotations differ from pycocotools")
    return problems


# ---------------------------------------------------------------------------------------------
# Main


def _fmt_mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} MiB"


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=40_000)
    parser.add_argument("--annotations", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "distillkit-bench-validate",
        help="where the generated file is cached and outputs are written",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best wall time counts")
    parser.add_argument("--max-ratio", type=float, default=1.0, help="fail when distillkit/baseline exceeds it")
    parser.add_argument("--no-fail", action="store_true", help="report a slow ratio without failing")
    parser.add_argument("--skip-distillkit", action="store_true", help="generate and time the baseline only")
    parser.add_argument(
        "--validate-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument passed to `distillkit validate` (repeatable), e.g. --validate-arg=--no-images",
    )
    parser.add_argument("--baseline-only", type=Path, metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.baseline_only is not None:  # child mode: time pycocotools, print its own numbers
        sys.stdout.write(orjson.dumps(run_baseline(args.baseline_only)).decode() + "\n")
        return 0
    if args.images < 1 or args.annotations < 1 or args.repeat < 1:
        parser.error("--images, --annotations and --repeat must be at least 1")

    workdir: Path = args.workdir
    data, gen_s = cached_dataset(workdir, args.images, args.annotations, args.seed)
    size_mb = data.stat().st_size / 1e6
    how = "cached" if gen_s is None else f"generated in {gen_s:.1f} s"
    print(f"data: {data} ({args.images:,} images, {args.annotations:,} annotations, {size_mb:,.0f} MB; {how})")

    baseline_cmd = [sys.executable, str(Path(__file__).resolve()), "--baseline-only", str(data)]
    output = workdir / f"{data.stem}.repaired.json"
    report_path = workdir / f"{data.stem}.report.json"
    validate_cmd = [
        sys.executable, "-m", "distillkit", "validate", str(data),
        "--output", str(output), "--json", *args.validate_arg,
    ]  # fmt: skip

    baseline_runs: list[Run] = []
    distill_runs: list[Run] = []
    for attempt in range(args.repeat):  # interleaved, so drift in machine load hits both alike
        run = measure(baseline_cmd, workdir / "baseline.stdout")
        if run.returncode != 0:
            print(f"baseline failed (exit {run.returncode}):\n{_tail(run.stderr)}", file=sys.stderr)
            return 2
        run.inner = orjson.loads((workdir / "baseline.stdout").read_bytes())
        baseline_runs.append(run)
        print(f"  baseline  run {attempt + 1}: {run.wall_s:.2f} s")
        if args.skip_distillkit:
            continue
        output.unlink(missing_ok=True)
        run = measure(validate_cmd, report_path, env=_env_with_repo())
        print(f"  distillkit run {attempt + 1}: {run.wall_s:.2f} s (exit {run.returncode})")
        if run.returncode != 0 and not output.exists():
            print(
                f"`distillkit validate` failed (exit {run.returncode}) and wrote no output.\n"
                f"command: {' '.join(validate_cmd)}\nstderr:\n{_tail(run.stderr) or '(empty)'}",
                file=sys.stderr,
            )
            return 2
        distill_runs.append(run)

    best_base = min(baseline_runs, key=lambda r: r.wall_s)
    inner = best_base.inner
    rows = [("pycocotools baseline", best_base)]
    print()
    print(f"baseline inside: COCO() load {inner['load_s']:.2f} s, bbox/area loop {inner['compute_s']:.2f} s")

    problems: list[str] = []
    ratio = None
    if distill_runs:
        best_dk = min(distill_runs, key=lambda r: r.wall_s)
        rows.append(("distillkit validate", best_dk))
        ratio = best_dk.wall_s / best_base.wall_s
        try:
            report = orjson.loads(report_path.read_bytes())
            keys = {k: report.get(k) for k in ("valid", "num_images", "num_annotations", "generated")}
            print(
                f"distillkit report: {keys}; {len(report.get('errors') or [])} errors, "
                f"{len(report.get('warnings') or [])} warnings"
            )
        except (orjson.JSONDecodeError, AttributeError):
            problems.append(f"stdout of `validate --json` is not a JSON object (see {report_path})")
        if best_dk.returncode != 0:
            print(f"note: validate exited {best_dk.returncode} (data reported invalid?); checking its output anyway")
        problems += check_output(data, output, args.seed)

    print()
    print(f"{'':22} {f'wall (best of {args.repeat})':>18} {'peak RSS max proc':>18} {'peak RSS tree':>14}")
    for name, run in rows:
        print(
            f"{name:22} {run.wall_s:>16.2f} s {_fmt_mib(run.max_process_rss_mib):>18} {_fmt_mib(run.tree_rss_mib):>14}"
        )
    if ratio is not None:
        verdict = "OK" if ratio <= args.max_ratio else "SLOWER THAN TARGET"
        print(f"{'ratio distillkit/base':22} {ratio:>18.2f}   (target <= {args.max_ratio:.2f}: {verdict})")

    if problems:
        print("\noutput check FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if distill_runs:
        print("output check: bbox/area present on every annotation; sample matches pycocotools")
    if ratio is not None and ratio > args.max_ratio and not args.no_fail:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
