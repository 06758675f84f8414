"""Labelling on a Ray cluster (``label --backend ray``): the same cache, filled by a pool of teacher actors.

Ray Data streams the images that the teacher-output cache lacks through two stages: CPU tasks
decode them (distillkit's one image reader: EXIF orientation applied, RGB), and an actor pool runs
the teacher — each actor builds it once from a ``TeacherRecipe`` (the arguments the driver built
its own with), on one GPU per actor when the cluster has GPUs, on CPUs otherwise. Each actor
writes every prediction into the content-keyed cache as soon as its batch is done and hands back
only the keys; the driver counts them for the progress bar and never holds the predictions. The
COCO file is then written from the cache exactly as after local labelling, so both backends give
the same file, and a killed job started again computes only the images still missing.

On a cluster the cache folder must be on storage every node sees (NFS, a shared volume), as the
images must be. Ray itself is an optional extra: ``pip install "distillkit[ray]"``. Ray's usage
statistics are switched off, and nothing else leaves the cluster.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from distillkit.errors import UsageError
from distillkit.labelling.cache import LabellingStats, TeacherOutputCache
from distillkit.labelling.types import Teacher, TeacherPrediction
from distillkit.progress import NULL_PROGRESS, Progress

INSTALL_HINT = 'install the extra: pip install "distillkit[ray]"'
WorkT = TypeVar("WorkT")
BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: a Ray started here for this run; "auto" or HOST:PORT: join that cluster
    actors: int | None = None  # teacher actors [default: one per GPU, else one per CPU]
    gpus_per_actor: float | None = None  # [default: 1 when the cluster has GPUs, else 0]
    num_cpus: int | None = None  # CPUs of a Ray started here [default: all]


@dataclass(frozen=True)
class TeacherRecipe:
    """How a worker builds the teacher the driver built (picklable): a factory named by import path, its arguments.

    ``factory`` is ``"module:function"``, called with ``arguments`` plus ``device``; a result with a
    ``teacher`` attribute (``LabellingTeacher``) gives that teacher. The default is `label`'s factory.
    """

    arguments: dict[str, Any] = field(default_factory=dict)
    trust_model_files: bool = False  # --trust-model-file, which each worker process must be told too
    factory: str = "distillkit.labelling.factory:load_labelling_teacher"

    def build(self, device: str | None) -> Teacher:
        import importlib

        from distillkit.safe_load import trust_model_files

        trust_model_files(self.trust_model_files)
        module, _, name = self.factory.partition(":")
        built = getattr(importlib.import_module(module), name)(**{**self.arguments, "device": device})
        return built.teacher if hasattr(built, "teacher") else built


@dataclass(frozen=True)
class RayLabelling:
    """Everything a caller needs to have a cache filled on Ray: how to build the teacher, where Ray is."""

    recipe: TeacherRecipe
    options: RayOptions

    def filler(self, teacher: Teacher) -> Any:
        """A ``CacheFiller`` (``label_to_coco(filler=...)``, ``label_images(filler=...)``) for ``teacher``."""

        def fill(
            images: Sequence[Path], keys: Sequence[str], cache_dir: Path, batch_size: int, progress: Progress
        ) -> LabellingStats:
            return fill_cache_ray(
                self.recipe, teacher, images, keys, cache_dir, self.options, batch_size=batch_size, progress=progress
            )

        return fill


def import_ray() -> Any:
    # Ray reports usage statistics to its authors by default: off, before it is imported
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
        import ray.data  # the Data library is part of the extra
    except ImportError as exc:
        raise UsageError("label --backend ray needs Ray, which is not installed", INSTALL_HINT) from exc
    return ray


def require_ray() -> None:
    """Fail before any work when the extra is missing."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise UsageError("label --backend ray needs Ray, which is not installed", INSTALL_HINT)


def predict_decoded(teacher: Teacher, paths: Sequence[Path], pixels: Sequence[np.ndarray]) -> list[TeacherPrediction]:
    """The teacher on already decoded images when it can take them, else on the files."""
    method = getattr(teacher, "predict_decoded", None)
    return method(list(paths), list(pixels)) if method is not None else teacher.predict(list(paths))


def _decode(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    from distillkit.images import read_rgb

    return {"key": batch["key"], "path": batch["path"], "pixels": [read_rgb(Path(str(p))) for p in batch["path"]]}


class _TeacherActor:
    """One teacher, built once per actor; predicts a batch, writes its cache entries, returns their keys."""

    def __init__(
        self, recipe: TeacherRecipe, identity: str, cache_dir: str, device: str | None, threads: int | None = None
    ) -> None:
        if threads:  # Ray pins a 1-CPU actor to one thread; on CPUs give it its share of the machine
            import torch

            torch.set_num_threads(threads)
        self.teacher = recipe.build(device)
        if self.teacher.identity != identity:  # e.g. other weights under the same path on this node
            raise RuntimeError(
                f"the teacher built on this worker ({self.teacher.identity[:12]}) is not the driver's "
                f"({identity[:12]}): give every node the same weights and adapters"
            )
        self.cache = TeacherOutputCache(Path(cache_dir), identity)

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        paths = [Path(str(p)) for p in batch["path"]]
        if "pixels" in batch:
            predictions = predict_decoded(self.teacher, paths, [np.asarray(p) for p in batch["pixels"]])
        else:
            predictions = self.teacher.predict(paths)
        keys = [str(key) for key in batch["key"]]
        for key, prediction in zip(keys, predictions, strict=True):
            self.cache.put(key, prediction)
        return {"key": np.asarray(keys)}


def fill_cache_ray(
    recipe: TeacherRecipe,
    teacher: Teacher,
    images: Sequence[Path],
    keys: Sequence[str],
    cache_dir: Path,
    options: RayOptions = RayOptions(),
    *,
    batch_size: int = 8,
    progress: Progress = NULL_PROGRESS,
) -> LabellingStats:
    """``fill_cache`` on Ray: the images whose cache entry is missing, predicted by a pool of teacher actors."""
    cache = TeacherOutputCache(Path(cache_dir), teacher.identity)
    pending: dict[str, Path] = {}
    for path, key in zip(images, keys, strict=True):  # the same content twice is predicted once
        if not cache.entry_path(key).is_file():
            pending.setdefault(key, Path(path))
    stats = LabellingStats(hits=len(images) - sum(1 for k in keys if k in pending), computed=0)
    if not pending:
        return stats
    ray = import_ray()
    started_here = _connect(ray, options)
    try:
        gpus_per_actor, actors = _pool(ray, options)
        items = ray.data.from_items([{"key": key, "path": str(path)} for key, path in pending.items()])
        decodes = callable(getattr(teacher, "predict_decoded", None))
        stream = items.map_batches(_decode, batch_size=batch_size, num_cpus=1) if decodes else items
        results = stream.map_batches(
            _TeacherActor,
            fn_constructor_kwargs={
                "recipe": recipe,
                "identity": teacher.identity,
                "cache_dir": str(Path(cache_dir).resolve()),
                "device": "cuda:0" if gpus_per_actor else "cpu",  # Ray shows each actor its own GPU(s) only
                "threads": None if gpus_per_actor else _cpu_threads(ray, actors),
            },
            batch_size=batch_size,
            concurrency=actors,
            num_gpus=gpus_per_actor,
            num_cpus=1 if not gpus_per_actor else None,
        )
        with progress.task(f"Teacher labelling (ray, {actors} actors)", total=len(images)) as task:
            task.advance(stats.hits + (len(images) - stats.hits - len(pending)))
            for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
                done = len(batch["key"])
                stats.computed += done
                task.advance(done)
    finally:
        if started_here:
            ray.shutdown()
    return stats


def connect_while(options: RayOptions, work: Callable[[], WorkT]) -> tuple[WorkT, Callable[[], None]]:
    """Start (or join) Ray on this thread while ``work`` runs on another; ``work``'s result and a closer.

    Starting Ray is seconds of waiting for its own processes, and a driver has seconds of importing
    and reading to do before it labels anything: done side by side they overlap (on 2 CPUs, where both
    compete for the cores, about 1 s of the 6.5 s they take one after the other; more with more cores).
    ``ray.init`` stays on the main thread (Ray ties the processes it
    starts to the thread that started them). Call the closer when labelling is done: it shuts down a
    Ray started here; ``fill_cache_ray`` then finds Ray running and leaves it be.
    """
    ray = import_ray()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="distillkit-prepare") as pool:
        pending = pool.submit(work)
        try:
            started_here = _connect(ray, options)
        except BaseException:
            pending.cancel()
            raise
        try:
            result = pending.result()
        except BaseException:
            if started_here:
                ray.shutdown()
            raise
    return result, (ray.shutdown if started_here else _nothing)


def _nothing() -> None:
    return None


def _connect(ray: Any, options: RayOptions) -> bool:
    """Join the named cluster, or start a Ray for this run; True when it was started here (shut it down after)."""
    if ray.is_initialized():
        return False
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # distillkit draws its own bar; Ray's would interleave with it
    common: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if options.address:
            ray.init(address=options.address, **common)
            return True  # a connection only: shutting it down leaves the cluster running
        ray.init(num_cpus=options.num_cpus, **common)
    except ConnectionError as exc:
        raise UsageError(
            f"no Ray cluster at {options.address} ({exc})",
            "start one with Ray's own `ray start` command, or leave out --ray-address",
        ) from exc
    return True


def _cpu_threads(ray: Any, actors: int) -> int:
    """Torch threads per CPU actor: the cluster's CPUs shared among the actors (one each by default)."""
    return max(1, int(float(ray.cluster_resources().get("CPU", 1)) // actors))


def _pool(ray: Any, options: RayOptions) -> tuple[float, int]:
    resources = ray.cluster_resources()
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 1))
    gpus_per_actor = options.gpus_per_actor if options.gpus_per_actor is not None else (1.0 if gpus else 0.0)
    if options.actors is not None:
        actors = options.actors
    elif gpus_per_actor:
        actors = max(1, int(gpus // gpus_per_actor))
    else:
        # One single-threaded teacher per CPU, decoding its own images (Ray fuses the decode stage into
        # the actor when both need only CPUs). A small model's forward does not keep two threads busy:
        # measured here (2 CPUs, tiny Grounding DINO), 2 actors x 1 thread label ~1.2x faster than
        # 1 actor x 2 threads, and faster than the local backend's one process with 2 threads.
        actors = max(1, int(cpus))
    return gpus_per_actor, actors
