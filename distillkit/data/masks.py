"""Box and area of COCO masks, computed by pycocotools exactly as COCO tools do, in batches.

The result equals, annotation by annotation, ``toBbox``/``area`` of
``merge(frPyObjects(segmentation, h, w))`` (polygons) or of the RLE itself. Calling pycocotools
once per annotation spends much of its time in Python call overhead; here all polygon parts of
all images of one size are rasterised in one ``frPyObjects`` call, only multi-part annotations
are merged one by one, and ``toBbox``/``area`` run once per batch. Large inputs are split across
forked worker processes (Linux), since pycocotools holds the GIL.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from distillkit.progress import NULL_PROGRESS, Progress

# pycocotools' area() builds np.array((n,), dtype=np.uint8) internally, which numpy 2 rejects for
# n > 255: it is called in chunks that stay below that.
_AREA_CHUNK = 255
# Below this many polygon parts, starting worker processes costs more than it saves.
_PARALLEL_MIN_PARTS = 40_000
_MAX_WORKERS = 8
# Polygon coordinates this far outside the image are corrupt (and would make rasterisation explode).
POLYGON_FAR_FACTOR = 4.0


@dataclass(slots=True)
class MaskJob:
    """One annotation's mask: ``parts`` (validated polygons) or ``rle`` (a dict pycocotools takes)."""

    index: int  # position of the annotation in the caller's list; -1 marks a job to skip
    height: int
    width: int
    parts: list[list[float]] | None = None
    rle: dict[str, Any] | None = None


def mask_boxes_and_areas(
    jobs: Sequence[MaskJob], workers: int | None = None, progress: Progress = NULL_PROGRESS
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(boxes (N,4) float64 xywh, areas (N,) float64)`` in the order of ``jobs``.

    Polygons with non-numeric, NaN or absurdly far coordinates are not rasterised: their box and
    area are NaN, for the caller to report.
    ``workers`` None picks the number of usable cores for large inputs on Linux (override with the
    ``DISTILLKIT_WORKERS`` environment variable); 1 computes in this process.
    """
    if workers is None:
        workers = _default_workers(jobs)
    if workers <= 1 or len(jobs) < 2 * workers:
        with progress.task("computing mask boxes and areas", total=None):
            return _compute(jobs)
    return _compute_forked(jobs, workers, progress)


def _default_workers(jobs: Sequence[MaskJob]) -> int:
    requested = os.environ.get("DISTILLKIT_WORKERS", "").strip()
    if requested.isdigit():
        return max(1, int(requested))
    if not sys.platform.startswith("linux"):
        return 1  # fork is the cheap way to share the polygons; elsewhere it is unsafe or absent
    if sum(len(job.parts) for job in jobs if job.parts is not None) < _PARALLEL_MIN_PARTS:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, _MAX_WORKERS))


# The jobs handed to forked workers: set just before the fork, read (copy-on-write) in the children.
_FORKED_JOBS: Sequence[MaskJob] = ()


def _compute_chunk(bounds: tuple[int, int]) -> tuple[int, np.ndarray, np.ndarray]:
    start, end = bounds
    boxes, areas = _compute(_FORKED_JOBS[start:end])
    return start, boxes, areas


def _compute_forked(jobs: Sequence[MaskJob], workers: int, progress: Progress) -> tuple[np.ndarray, np.ndarray]:
    """This process computes the first share while ``workers - 1`` forked children compute the rest."""
    global _FORKED_JOBS
    chunks = _balanced_chunks(jobs, workers)
    boxes = np.zeros((len(jobs), 4), dtype=np.float64)
    areas = np.zeros(len(jobs), dtype=np.float64)
    _FORKED_JOBS = jobs
    # Frozen objects are left alone by the children's garbage collector, so it does not touch (and
    # copy) every page of the parent's heap.
    gc.freeze()
    try:
        # The pool is forked before the progress display starts its refresh thread: forking a
        # process that has other threads running is what makes fork unsafe.
        with multiprocessing.get_context("fork").Pool(workers - 1) as pool:
            pending = pool.map_async(_compute_chunk, chunks[1:])
            with progress.task("computing mask boxes and areas", total=len(jobs)) as task:
                for start, chunk_boxes, chunk_areas in [_compute_chunk(chunks[0]), *pending.get()]:
                    boxes[start : start + len(chunk_areas)] = chunk_boxes
                    areas[start : start + len(chunk_areas)] = chunk_areas
                    task.advance(len(chunk_areas))
    finally:
        gc.unfreeze()
        _FORKED_JOBS = ()
    return boxes, areas


def _balanced_chunks(jobs: Sequence[MaskJob], count: int) -> list[tuple[int, int]]:
    """Contiguous (start, end) ranges with about the same number of polygon parts each."""
    weights = np.fromiter((len(job.parts) if job.parts is not None else 1 for job in jobs), dtype=np.int64)
    cumulative = np.cumsum(weights)
    targets = cumulative[-1] * np.arange(1, count) / count
    cuts = np.unique(np.searchsorted(cumulative, targets, side="right"))
    edges = [0, *[int(c) for c in cuts if 0 < c < len(jobs)], len(jobs)]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def _compute(jobs: Sequence[MaskJob]) -> tuple[np.ndarray, np.ndarray]:
    rles: list[Any] = [None] * len(jobs)
    refused: list[int] = []

    polygon_jobs: dict[tuple[int, int], list[int]] = defaultdict(list)
    for position, job in enumerate(jobs):
        if job.parts is not None:
            polygon_jobs[(job.height, job.width)].append(position)
        else:
            rles[position] = job.rle

    for (height, width), positions in polygon_jobs.items():
        flat_parts: list[list[float]] = []
        for position in positions:
            flat_parts.extend(jobs[position].parts or [])
        if not _coordinates_ok(flat_parts, height, width):
            # Rare: find the culprits one by one and leave them out of the batch.
            bad = {p for p in positions if not _coordinates_ok(jobs[p].parts or [], height, width)}
            refused.extend(bad)
            positions = [p for p in positions if p not in bad]
            flat_parts = [part for p in positions for part in jobs[p].parts or []]
        if not flat_parts:
            continue
        part_rles = mask_utils.frPyObjects(flat_parts, height, width)
        cursor = 0
        for position in positions:
            n_parts = len(jobs[position].parts or [])
            if n_parts == 1:
                rles[position] = part_rles[cursor]
            else:
                rles[position] = mask_utils.merge(part_rles[cursor : cursor + n_parts])
            cursor += n_parts

    boxes = np.full((len(jobs), 4), np.nan)
    areas = np.full(len(jobs), np.nan)
    done = [position for position, rle in enumerate(rles) if rle is not None] if refused else range(len(jobs))
    present = [rles[position] for position in done]
    if present:
        boxes[done] = np.asarray(mask_utils.toBbox(present), dtype=np.float64).reshape(-1, 4)
        areas[done] = np.concatenate(
            [
                np.asarray(mask_utils.area(present[start : start + _AREA_CHUNK]), dtype=np.float64).reshape(-1)
                for start in range(0, len(present), _AREA_CHUNK)
            ]
        )
    return boxes, areas


def _coordinates_ok(parts: list[list[Any]], height: int, width: int) -> bool:
    """All coordinates are finite numbers within a generous margin around the image."""
    if not parts:
        return True
    try:
        values = np.fromiter(itertools.chain.from_iterable(parts), dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return False
    if not np.isfinite(values).all():
        return False
    limit = POLYGON_FAR_FACTOR * max(height, width) + 16
    return bool(values.min() >= -limit and values.max() <= limit)


def compressed_counts_ok(counts: bytes) -> bool:
    """Cheap guard before pycocotools' C decoder, which trusts its input.

    COCO's compressed counts use characters 48..111 (6 bits each, bit 0x20 = "more follows"); a
    string whose last character still says "more follows" makes the decoder read past its end.
    """
    return bool(counts) and min(counts) >= 48 and max(counts) <= 111 and not (counts[-1] - 48) & 0x20


def uncompressed_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """Convert an RLE with list counts (CVAT, COCO crowd) into pycocotools' compressed form."""
    height, width = rle["size"]
    return mask_utils.frPyObjects(rle, height, width)
