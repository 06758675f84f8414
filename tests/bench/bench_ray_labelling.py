"""Benchmark: `label --backend ray` against the local backend on one machine — speed, memory, kill and resume.

A Grounding DINO teacher (tiny random base weights, one epoch of LoRA at 96 px: no downloads) on
generated 64-px images,
each run a fresh `distillkit label` process with its own cache (Ray started by the run, all CPUs):

1. images/s of `--backend ray` vs `local` on ``--images`` images (goal: ray >= 0.8x local on one
   machine), runs alternated ``--repeats`` times, the spread reported. ``--ray-cluster`` starts one
   local cluster (``ray start --head --num-cpus 2``) that every timed Ray run joins with
   ``--ray-address auto``, as jobs join a running cluster; without it each run starts its own Ray;
2. peak memory of the whole process tree (driver, and for Ray its raylet and workers) and of the
   driver alone, labelling ``--small`` and ``--large`` images (goal: large within 10 % of small);
3. a run killed (SIGKILL to its process group) at about half way, then started again: the images the
   second run computes plus the cache entries the first left equal the image count (no repeats).

    .venv/bin/python tests/bench/bench_ray_labelling.py [--images 5000] [--small 1000] [--large 20000]
        [--repeats 2] [--ray-cluster] [--parts speed,memory,kill] [--workdir /tmp/distillkit-bench-ray]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.tiny_teachers import write_tiny_grounding_dino  # noqa: E402


def make_images(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` distinct 64-px PNGs (coloured squares on grey), made once per folder."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = len(list(folder.glob("*.png")))
    rng = np.random.default_rng(seed + existing)
    colours = np.array([[220, 40, 40], [40, 200, 60], [40, 60, 220]], dtype=np.uint8)
    for index in range(existing, count):
        pixels = np.full((64, 64, 3), 128, np.uint8)
        for _ in range(2):
            x, y, size = (int(v) for v in rng.integers(0, 40, 3))
            pixels[y : y + 8 + size // 2, x : x + 8 + size // 2] = colours[rng.integers(0, 3)]
        pixels[0, 0] = [index % 256, (index // 256) % 256, index // 65536]  # every image's content differs
        Image.fromarray(pixels).save(folder / f"img_{index:06d}.png")
    return folder


def command(images: Path, output: Path, cache: Path, teacher: Path, backend: str, extra: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "distillkit", "label", str(images), "-o", str(output), "--teacher-dir", str(teacher),
        "--conf", "0", "--batch", "16", "--cache-dir", str(cache), "--device", "cpu", "--json",
        "--backend", backend, *extra,
    ]  # fmt: skip


def tiny_teacher(work: Path, env: dict[str, str]) -> Path:
    """A Grounding DINO teacher trained for one epoch from tiny random weights, at 96 px (the tests' settings)."""
    from tests.test_teachers import TINY_SETS
    from tests.tiny_teachers import write_shapes_dataset

    exp = work / "teacher"
    if (exp / "teachers" / "grounding_dino_lora" / "adapter_model.safetensors").is_file():
        return exp
    weights = write_tiny_grounding_dino(work / "weights")
    train = write_shapes_dataset(work / "data", 4, "boxes", seed=0, name="train.json")
    val = write_shapes_dataset(work / "data", 2, "boxes", seed=1, name="val.json")
    subprocess.run(
        [sys.executable, "-m", "distillkit", "train-teacher", "-d", str(train), "-v", str(val), "-o", str(exp),
         "--dino-weights", str(weights), "--epochs", "1", "--batch", "2", "--device", "cpu", "--quiet", *TINY_SETS],
        env=env, check=True,
    )  # fmt: skip
    return exp


def tree_rss(pid: int) -> tuple[int, int]:
    """(bytes of the process and all its descendants, bytes of the process alone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total = own = 0
    for process in processes:
        try:
            rss = process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
        total += rss
        own = rss if process.pid == pid else own
    return total, own


def run(
    argv: list[str],
    env: dict[str, str],
    kill_at: tuple[Path, int] | None = None,
    cache: Path | None = None,
    sample_memory: bool = True,
) -> dict[str, Any]:
    """Run one label process; sample memory; optionally SIGKILL it when ``kill_at`` has that many cache entries.

    ``sample_memory=False`` for timed runs: walking Ray's dozen processes five times a second costs CPU
    that a 2-core machine takes from the run being timed.
    """
    started = time.monotonic()
    child = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    peak_tree = peak_driver = 0
    killed = False
    first_entry = None  # seconds to the first cache entry: what Ray's start-up adds before any labelling
    while child.poll() is None:
        if sample_memory:
            tree, own = tree_rss(child.pid)
            peak_tree, peak_driver = max(peak_tree, tree), max(peak_driver, own)
        if first_entry is None and cache is not None and entries(cache) > 0:
            first_entry = time.monotonic() - started
        if kill_at is not None and sum(1 for _ in kill_at[0].rglob("*.json")) >= kill_at[1]:
            os.killpg(child.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.2)
    stdout, stderr = child.communicate()
    seconds = time.monotonic() - started
    if not killed and child.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... failed ({child.returncode}): {stderr[-2000:]}")
    summary = json.loads(stdout) if stdout.strip() and not killed else {}
    return {
        "seconds": seconds,
        "first_entry_s": first_entry,
        "peak_tree_mb": peak_tree / 1e6,
        "peak_driver_mb": peak_driver / 1e6,
        **summary,
    }


def entries(cache: Path) -> int:
    return sum(1 for path in cache.rglob("*.json") if path.parent != cache)


def settled_entries(cache: Path, quiet_s: float = 5.0) -> int:
    """The cache's entry count once nothing has written to it for ``quiet_s`` seconds."""
    count, since = entries(cache), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.5)
        now = entries(cache)
        if now != count:
            count, since = now, time.monotonic()
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ray-actors", type=int, default=None)
    parser.add_argument("--parts", default="speed,memory,kill", help="comma-separated: speed, memory, kill")
    parser.add_argument("--backends", default="local,ray", help="backends of the memory and kill parts")
    parser.add_argument(
        "--ray-cluster",
        action="store_true",
        help="speed part: start one local Ray cluster (ray start --head) that every Ray run joins",
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "distillkit-bench-ray")
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    weights = tiny_teacher(work, env)
    ray_extra = ["--ray-actors", str(args.ray_actors)] if args.ray_actors else []
    extras = {"local": [], "ray": ray_extra}

    parts = {part.strip() for part in args.parts.split(",")}
    images = make_images(work / f"images_{args.images}", args.images)
    if "speed" in parts:
        if args.ray_cluster:
            with local_cluster() as address:
                speed(args, work, images, weights, env, {**extras, "ray": [*extras["ray"], "--ray-address", address]})
        else:
            speed(args, work, images, weights, env, extras)
    if "memory" in parts:
        memory(args, work, weights, env, extras)
    if "kill" in parts:
        kill_and_resume(args, work, images, weights, env, extras)
    return 0


@contextlib.contextmanager
def local_cluster(num_cpus: int = 2) -> Iterator[str]:
    """A Ray cluster started here with Ray's own ``ray start --head``, as jobs find a running cluster.

    ``ray start`` rather than ``ray.init`` in this process: since Ray 2.59 a cluster ``ray.init``
    starts authenticates with a token of its own, which other processes are not given.
    """
    ray_cli = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run(
        [ray_cli, "start", "--head", f"--num-cpus={num_cpus}", "--include-dashboard=false", "--disable-usage-stats"],
        check=True,
        env=env,
        capture_output=True,
    )
    try:
        yield "auto"
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True)


def speed(
    args: Any, work: Path, images: Path, weights: Path, env: dict[str, str], extras: dict[str, list[str]]
) -> None:
    """1. throughput, alternated: end to end (process start to exit) and after the first cache entry."""
    rates: dict[str, list[float]] = {"local": [], "ray": []}
    steady: dict[str, list[float]] = {"local": [], "ray": []}
    starts: dict[str, list[float]] = {"local": [], "ray": []}
    for repeat in range(args.repeats):
        for backend in ("local", "ray"):
            cache = work / f"cache_speed_{backend}_{repeat}"
            shutil.rmtree(cache, ignore_errors=True)
            argv = command(images, work / f"speed_{backend}.json", cache, weights, backend, extras[backend])
            result = run(argv, env, cache=cache, sample_memory=False)
            assert result["computed"] == args.images, result
            rates[backend].append(args.images / result["seconds"])
            first = result["first_entry_s"] or 0.0
            starts[backend].append(first)
            steady[backend].append(args.images / max(result["seconds"] - first, 1e-9))
            print(
                f"{backend:5s} run {repeat}: {rates[backend][-1]:7.1f} images/s end to end ({result['seconds']:.1f} s; "
                f"first entry after {first:.1f} s, {steady[backend][-1]:.1f} images/s after it)",
                flush=True,
            )
    for label, table in (("end to end", rates), ("after the first entry", steady)):
        local, ray = statistics.median(table["local"]), statistics.median(table["ray"])
        ratios = [r / l_ for r, l_ in zip(table["ray"], table["local"], strict=True)]
        verdict = "OK" if ray / local >= 0.8 else "under"
        print(f"\n{args.images} images, {label}: local {local:.1f} images/s, ray {ray:.1f} images/s")
        print(f"ray / local: {ray / local:.2f} (per pair {min(ratios):.2f}-{max(ratios):.2f}; goal >= 0.8: {verdict})")
    start_gap = statistics.median(starts["ray"]) - statistics.median(starts["local"])
    print(
        "Ray's start-up (Ray itself, then actors that import torch/transformers and build the teacher): "
        f"+{start_gap:.1f} s"
    )


def memory(args: Any, work: Path, weights: Path, env: dict[str, str], extras: dict[str, list[str]]) -> None:
    """2. memory against the number of images."""
    print()
    for backend in [b.strip() for b in args.backends.split(",")]:
        peaks = {}
        for count in (args.small, args.large):
            folder = make_images(work / f"images_{count}", count)
            shutil.rmtree(work / f"cache_mem_{backend}_{count}", ignore_errors=True)  # every image computed
            result = run(
                command(folder, work / f"mem_{backend}.json", work / f"cache_mem_{backend}_{count}", weights,
                        backend, extras[backend]),
                env,
            )  # fmt: skip
            peaks[count] = result
            print(
                f"{backend:5s} {count:6d} images: peak tree {result['peak_tree_mb']:7.0f} MB, "
                f"driver {result['peak_driver_mb']:7.0f} MB, {result['seconds']:.0f} s"
            )
        growth = peaks[args.large]["peak_tree_mb"] / peaks[args.small]["peak_tree_mb"] - 1
        driver = peaks[args.large]["peak_driver_mb"] / peaks[args.small]["peak_driver_mb"] - 1
        verdict = "OK" if growth < 0.10 else "over"
        goal = f"goal < 10 %: {verdict}"
        print(f"{backend:5s} {args.small} -> {args.large}: tree {growth:+.1%}, driver {driver:+.1%} ({goal})")


def kill_and_resume(
    args: Any, work: Path, images: Path, weights: Path, env: dict[str, str], extras: dict[str, list[str]]
) -> None:
    """3. killed at about half way, then started again."""
    print()
    for backend in [b.strip() for b in args.backends.split(",")]:
        cache = work / f"cache_kill_{backend}"
        shutil.rmtree(cache, ignore_errors=True)  # a fresh cache: the counts below are this run's
        argv = command(images, work / f"kill_{backend}.json", cache, weights, backend, extras[backend])
        run(argv, env, kill_at=(cache, args.images // 2))
        left = settled_entries(cache)  # Ray's workers may finish the batch in hand before they notice
        second = run(argv, env)
        total = left + second["computed"]
        verdict = "OK" if total == args.images and second["cached"] == left else "repeats"
        print(
            f"{backend:5s}: killed with {left} entries written, the second run computed {second['computed']} "
            f"and took {second['cached']} from the cache: {total} computed of {args.images} ({verdict})"
        )


if __name__ == "__main__":
    sys.exit(main())
