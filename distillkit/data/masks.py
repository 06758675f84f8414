"""Box and area of COCO masks, computed by pycocotools exactly as COCO tools do, in batches.

The result equals, annotation by annotation, ``toBbox``/``area`` of
``merge(frPyObjects(segmentation, h, w))`` (polygons) or of the RLE itself. Calling pycocotools
once per annotation spends much of its time in Python call overhead; here all polygon parts of
all images of one size are rasterised in one ``frPyObjects`` call, only multi-part annotations
are merged one by one, and ``toBbox``/``area`` run once per batch. Large inputs are split across
forked worker processes (Linux), since pycocotools holds the GIL.

pycocotools is C that trusts its input: a polygon's outline is upsampled into arrays of ``int``
(16 bytes per outline point, five points per pixel of edge length) and a compressed RLE string is
decoded without bounds checks. ``polygon_problems`` and ``decode_compressed_counts`` check, in numpy,
everything it would otherwise crash or exhaust memory on; only what passes reaches it.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from distillkit.errors import DataError
from distillkit.progress import NULL_PROGRESS, Progress

# pycocotools' area() builds np.array((n,), dtype=np.uint8) internally, which numpy 2 rejects for
# n > 255: it is called in chunks that stay below that.
_AREA_CHUNK = 255
# Below this many polygon parts, starting worker processes costs more than it saves.
_PARALLEL_MIN_PARTS = 40_000
_MAX_WORKERS = 8
# Polygon coordinates this far outside the image are corrupt (and would make rasterisation explode).
POLYGON_FAR_FACTOR = 4.0
# pycocotools rasterises a polygon by walking its outline at 5 points per pixel (rleFrPoly's scale) and
# holds about 24 bytes per point at once (four int arrays, then the sorted uint crossings). A mask
# traced pixel by pixel around a whole 8K image has ~25k px of outline; 4M px (20M points, ~0.5 GB) is
# far beyond any real annotation and keeps one annotation's rasterisation well inside 2 GB.
RLE_POLY_SCALE = 5
MAX_OUTLINE_POINTS = 20_000_000
# Polygon coordinates checked per numpy batch: bounds the temporary arrays (~10 float64 per value).
_CHECK_BATCH_VALUES = 2_000_000
_CHECK_BATCH_JOBS = 50_000
# A compressed RLE count is at most 2**32 (pycocotools stores uint); its signed 5-bit groups need 7 chars.
_MAX_RLE_GROUP_CHARS = 7


@dataclass(slots=True)
class MaskJob:
    """One annotation's mask: ``parts`` (validated polygons) or ``rle`` (a dict pycocotools takes)."""

    index: int  # position of the annotation in the caller's list; -1 marks a job to skip
    height: int
    width: int
    parts: list[list[float]] | None = None
    rle: dict[str, Any] | None = None


def mask_boxes_and_areas(
    jobs: Sequence[MaskJob], workers: int | None = None, progress: Progress = NULL_PROGRESS, checked: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(boxes (N,4) float64 xywh, areas (N,) float64)`` in the order of ``jobs``.

    Polygons that ``polygon_problems`` refuses are not rasterised: their box and area are NaN, for the
    caller to report. ``checked=True`` says the caller already ran ``polygon_problems`` and left the
    refused ones out (the check is not repeated). RLEs must come from ``uncompressed_rle`` or have
    passed ``decode_compressed_counts``.
    ``workers`` None picks the number of usable cores for large inputs on Linux (override with the
    ``DISTILLKIT_WORKERS`` environment variable); 1 computes in this process.
    Raises ``DataError`` when memory runs out or a worker process dies (killed, out of memory).
    """
    if not checked:
        refused = polygon_problems(jobs)
        if refused:
            kept = [position for position in range(len(jobs)) if position not in refused]
            boxes = np.full((len(jobs), 4), np.nan)
            areas = np.full(len(jobs), np.nan)
            if kept:
                boxes[kept], areas[kept] = mask_boxes_and_areas(
                    [jobs[p] for p in kept], workers=workers, progress=progress, checked=True
                )
            return boxes, areas
    if workers is None:
        workers = _default_workers(jobs)
    try:
        if workers <= 1 or len(jobs) < 2 * workers:
            with progress.task("computing mask boxes and areas", total=None):
                return _compute(jobs)
        return _compute_forked(jobs, workers, progress)
    except MemoryError as exc:
        raise DataError(
            f"not enough memory to compute the boxes and areas of {len(jobs)} masks",
            "free memory, or validate the file in parts",
        ) from exc


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
        # process that has other threads running is what makes fork unsafe. An executor rather than
        # multiprocessing.Pool: a Pool whose worker is killed (out of memory, a signal) waits forever
        # for its result; the executor fails every pending result with BrokenProcessPool.
        with ProcessPoolExecutor(workers - 1, mp_context=multiprocessing.get_context("fork")) as pool:
            pending = [pool.submit(_compute_chunk, chunk) for chunk in chunks[1:]]
            with progress.task("computing mask boxes and areas", total=len(jobs)) as task:
                results = [_compute_chunk(chunks[0])]
                try:
                    results += [future.result() for future in pending]
                except BrokenProcessPool as exc:
                    raise DataError(
                        f"a worker process computing mask boxes and areas died ({len(chunks) - 1} workers)",
                        "it was probably out of memory or killed; retry with DISTILLKIT_WORKERS=1 "
                        "(one process) or with more memory",
                    ) from exc
                for start, chunk_boxes, chunk_areas in results:
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
    """Boxes and areas of jobs that passed ``polygon_problems`` (only such input may reach pycocotools)."""
    rles: list[Any] = [None] * len(jobs)

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
    done = [position for position, rle in enumerate(rles) if rle is not None]
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


def polygon_problems(jobs: Sequence[MaskJob]) -> dict[int, str]:
    """Why pycocotools must not rasterise a polygon job: ``{position in jobs: reason}`` (RLE jobs are skipped).

    Refused: parts with fewer than 3 points or an odd number of values, coordinates that are not
    numbers (lists, dicts, text), NaN or infinite (None reads as NaN), further than ``POLYGON_FAR_FACTOR``
    image sides outside the image (rleFrPoly's ``int`` casts overflow), or an outline longer than
    ``MAX_OUTLINE_POINTS`` as rleFrPoly counts it (what it allocates). Vectorised over batches of jobs;
    a batch with a non-number is halved until the culprits are found.
    """
    positions = [position for position, job in enumerate(jobs) if job.parts is not None]
    problems: dict[int, str] = {}
    for start in range(0, len(positions), _CHECK_BATCH_JOBS):
        problems.update(_check_batch(jobs, positions[start : start + _CHECK_BATCH_JOBS]))
    return problems


def _check_batch(jobs: Sequence[MaskJob], positions: list[int]) -> dict[int, str]:
    if not positions:
        return {}
    parts = [part for position in positions for part in jobs[position].parts or []]
    lengths = np.fromiter((len(part) for part in parts), dtype=np.int64, count=len(parts))
    parts_per_job = np.array([len(jobs[position].parts or []) for position in positions], dtype=np.int64)
    if not parts_per_job.all() or not (lengths >= 6).all() or (lengths % 2).any():
        malformed = {
            position
            for position in positions
            if not jobs[position].parts or any(len(part) < 6 or len(part) % 2 for part in jobs[position].parts or [])
        }
        found = dict.fromkeys(malformed, "a part with fewer than 3 points or an odd number of values")
        return {**found, **_check_batch(jobs, [p for p in positions if p not in malformed])}
    total = int(lengths.sum())
    if total > _CHECK_BATCH_VALUES and len(positions) > 1:  # bounds the temporary arrays below
        middle = len(positions) // 2
        return {**_check_batch(jobs, positions[:middle]), **_check_batch(jobs, positions[middle:])}
    values = _numbers(parts, total)
    if values is None:  # halve until the culprits are found: a few batches, not one per job
        if len(positions) == 1:
            return {positions[0]: "coordinates that are not numbers"}
        middle = len(positions) // 2
        return {**_check_batch(jobs, positions[:middle]), **_check_batch(jobs, positions[middle:])}
    part_vertices = lengths // 2
    part_starts = np.cumsum(part_vertices) - part_vertices
    parts_per_job = np.array([len(jobs[position].parts or []) for position in positions], dtype=np.int64)
    job_part_starts = np.cumsum(parts_per_job) - parts_per_job
    sides = np.array([max(jobs[p].height, jobs[p].width) for p in positions], dtype=np.float64)
    limits = POLYGON_FAR_FACTOR * sides + 16

    # The common case costs two passes: every value finite and within the smallest image's margin.
    bad_jobs: dict[int, str] = {}
    if not (np.isfinite(values).all() and np.abs(values).max() <= limits.min()):
        # Every part has an even length, so x and y alternate across the whole batch.
        per_vertex = np.repeat(np.repeat(limits, parts_per_job), part_vertices)
        finite = np.isfinite(values[0::2]) & np.isfinite(values[1::2])
        with np.errstate(invalid="ignore"):
            far = finite & ((np.abs(values[0::2]) > per_vertex) | (np.abs(values[1::2]) > per_vertex))
        for flags, reason in (
            (~finite, "NaN or infinite coordinates"),
            (far, f"coordinates more than {POLYGON_FAR_FACTOR:g} image sides outside the image"),
        ):
            per_job = np.add.reduceat(np.add.reduceat(flags, part_starts), job_part_starts) > 0
            for row in np.flatnonzero(per_job).tolist():
                bad_jobs.setdefault(row, reason)
        values = np.where(np.repeat(finite & ~far, 2), values, 0.0)  # refused coordinates count as 0 below

    # Coordinates are now within +-limit, so no edge has more than 2 * 5 * limit + 2 points: most batches
    # (polygons of a few hundred vertices) cannot reach the outline limit and need no count.
    job_vertices = np.add.reduceat(part_vertices, job_part_starts)
    if not (job_vertices * (2 * RLE_POLY_SCALE * limits + 2) > MAX_OUTLINE_POINTS).any():
        return {positions[row]: reason for row, reason in bad_jobs.items()}

    # rleFrPoly's own count: x = (int)(5 * x + .5) per vertex (C truncates towards zero), then for each
    # edge of the closed ring max(|dx|, |dy|) + 1 points.
    scaled = np.trunc(RLE_POLY_SCALE * values + 0.5).astype(np.int64)
    sx, sy = scaled[0::2], scaled[1::2]
    dx = np.empty_like(sx)
    dy = np.empty_like(sy)
    dx[:-1] = sx[1:] - sx[:-1]
    dy[:-1] = sy[1:] - sy[:-1]
    last = part_starts + part_vertices - 1  # each part's closing edge goes back to its first vertex
    dx[last] = sx[part_starts] - sx[last]
    dy[last] = sy[part_starts] - sy[last]
    edge_points = np.maximum(np.abs(dx), np.abs(dy)) + 1
    outline = np.add.reduceat(np.add.reduceat(edge_points, part_starts), job_part_starts)
    for row in np.flatnonzero(outline > MAX_OUTLINE_POINTS).tolist():
        bad_jobs.setdefault(
            row,
            f"an outline of {int(outline[row]) // RLE_POLY_SCALE:,} px, over the limit of "
            f"{MAX_OUTLINE_POINTS // RLE_POLY_SCALE:,} px that can be rasterised",
        )
    return {positions[row]: reason for row, reason in bad_jobs.items()}


def _numbers(parts: list[list[Any]], count: int) -> np.ndarray | None:
    """All coordinates as float64 (numeric strings and booleans convert, as pycocotools' own numpy
    conversion does); None when one is not a number at all (a list, a dict, text, a huge int)."""
    try:
        return np.fromiter(itertools.chain.from_iterable(parts), dtype=np.float64, count=count)
    except (TypeError, ValueError, OverflowError):
        return None


def decode_compressed_counts(counts: bytes) -> np.ndarray | None:
    """The run lengths of a COCO compressed RLE string, decoded in numpy as pycocotools' rleFrString does;
    None when the string is not that encoding (pycocotools' C decoder trusts it and reads past its end).

    COCO's counts use characters 48..111: 5 bits of value each, bit 0x20 = "more follows", bit 0x10 of a
    group's last character = negative; from the fourth count on, each is stored as the difference to the
    count two places before. A count outside 0..2**32-1 is refused (pycocotools would wrap it).
    """
    if not counts:
        return None
    chars = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if chars.min() < 0 or chars.max() > 63 or chars[-1] & 0x20:
        return None
    ends = np.flatnonzero((chars & 0x20) == 0)  # the last character of each count
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > _MAX_RLE_GROUP_CHARS:
        return None
    shift = 5 * (np.arange(len(chars)) - np.repeat(starts, lengths))
    values = np.add.reduceat((chars & 0x1F) << shift, starts)
    negative = (chars[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * lengths[negative])
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])  # count i (i >= 3) = stored value + count i-2
    runs[2::2] = np.cumsum(values[2::2])
    if runs.min() < 0 or runs.max() > 0xFFFFFFFF:
        return None
    return runs


def compressed_counts_ok(counts: bytes) -> bool:
    """Cheap guard before pycocotools' C decoder when the image size is unknown (see ``decode_compressed_counts``)."""
    return decode_compressed_counts(counts) is not None


def uncompressed_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """Convert an RLE with list counts (CVAT, COCO crowd) into pycocotools' compressed form."""
    height, width = rle["size"]
    return mask_utils.frPyObjects(rle, height, width)
