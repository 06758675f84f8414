"""Shared fixtures: small COCO dicts built in code."""

from __future__ import annotations

import copy
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import square

BASE_COCO: dict[str, Any] = {
    "info": {"description": "unit test"},
    "licenses": [{"id": 1, "name": "test"}],
    "images": [
        {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
        {"id": 2, "file_name": "b.png", "width": 100, "height": 80},
        {"id": 3, "file_name": "c.png", "width": 100, "height": 80},
    ],
    "categories": [{"id": 1, "name": "scratch"}, {"id": 2, "name": "dent"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [square(50, 20, 10)], "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0},
    ],
}


@pytest.fixture
def coco() -> dict[str, Any]:
    return copy.deepcopy(BASE_COCO)


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    """One torch thread for a module of tiny-model tests.

    Tiny models gain nothing from intra-op threads, and on a shared, loaded 2-core machine two
    threads spin against each other and make each step many times slower than one.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def python_sigint() -> Iterator[None]:
    """Python's own Ctrl-C handler for the test, whatever the test run inherited.

    A process started in the background by a non-interactive shell (``cmd &``, as CI scripts and
    ``nohup`` do) begins with SIGINT ignored; tests of Ctrl-C handling start from what a terminal gives.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
