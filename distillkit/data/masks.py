"""Box and area of COCO masks, computed by pycocotools exactly as COCO tools do, in batches.

The result equals, annotation by annotation, ``toBbox``/``area`` of
``merge(frPyObjects(segmentation, h, w))`` (polygons) or of the RLE itself. Calling pycocotools
once per annotation spends most of its time in Python call overhead; here all polygon parts of
all images of one size are rasterised in one ``frPyObjects`` call, only multi-part annotations
are merged one by one, and ``toBbox``/``area`` run once over the whole list.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

_AREA_CHUNK = 255


@dataclass
class MaskJob:
    """One annotation's mask: ``parts`` (validated polygons) or ``rle`` (a dict pycocotools takes)."""

    index: int  # position of the annotation in the caller's list
    height: int
    width: int
    parts: list[list[float]] | None = None
    rle: dict[str, Any] | None = None


def mask_boxes_and_areas(jobs: Sequence[MaskJob]) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(boxes (N,4) float64 xywh, areas (N,) float64)`` in the order of ``jobs``."""
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
        part_rles = mask_utils.frPyObjects(flat_parts, height, width)
        cursor = 0
        for position in positions:
            n_parts = len(jobs[position].parts or [])
            if n_parts == 1:
                rles[position] = part_rles[cursor]
            else:
                rles[position] = mask_utils.merge(part_rles[cursor : cursor + n_parts])
            cursor += n_parts

    if not rles:
        return np.zeros((0, 4), dtype=np.float64), np.zeros((0,), dtype=np.float64)
    boxes = np.asarray(mask_utils.toBbox(rles), dtype=np.float64).reshape(-1, 4)
    # pycocotools' area() builds np.array((n,), dtype=np.uint8) internally, which numpy 2 rejects
    # for n > 255: call it in chunks that stay below that.
    areas = np.concatenate(
        [
            np.asarray(mask_utils.area(rles[start : start + _AREA_CHUNK]), dtype=np.float64).reshape(-1)
            for start in range(0, len(rles), _AREA_CHUNK)
        ]
    )
    return boxes, areas


def uncompressed_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """Convert an RLE with list counts (CVAT, COCO crowd) into pycocotools' compressed form."""
    height, width = rle["size"]
    return mask_utils.frPyObjects(rle, height, width)
