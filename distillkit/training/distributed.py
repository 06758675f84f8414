"""Multi-process training under ``torchrun``: process group, rank queries, small collectives.

``torchrun --nproc_per_node N ...`` sets WORLD_SIZE / RANK / LOCAL_RANK (and MASTER_ADDR/PORT) in
each process's environment. Code that is not launched that way sees a world of one and every helper
here degrades to a no-op, so the same code runs in one process and in many.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

_T = TypeVar("_T")


@dataclass(frozen=True)
class WorldInfo:
    """This process's place among the training processes."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip().isdigit() else default


def world_info() -> WorldInfo:
    """Rank, local rank and world size: from the process group when one is up, else the environment."""
    if dist.is_available() and dist.is_initialized():
        return WorldInfo(dist.get_rank(), _env_int("LOCAL_RANK", dist.get_rank()), dist.get_world_size())
    return WorldInfo(_env_int("RANK", 0), _env_int("LOCAL_RANK", 0), _env_int("WORLD_SIZE", 1))


def is_main_process() -> bool:
    """True in the process that writes files and reports progress (rank 0, or the only process)."""
    return world_info().is_main


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


@contextmanager
def distributed_context(device: torch.device | None = None, timeout_s: float = 1800.0) -> Iterator[WorldInfo]:
    """Initialise the process group when launched under torchrun (WORLD_SIZE > 1), tear it down after.

    Backend: nccl when ``device`` is CUDA (or, with no device given, when CUDA is available), gloo
    otherwise. A group that already exists (the caller made it) is used and left alone. In a plain
    single process this yields ``WorldInfo()`` and does nothing else.
    """
    info = world_info()
    created = False
    if info.distributed and not is_initialized():
        use_cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(info.local_rank if device is None or device.index is None else device.index)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
        created = True
    try:
        yield world_info()
    finally:
        if created and is_initialized():
            dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes (in place; returned for chaining); identity in one process."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_tensors(tensors: list[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` (in place) with rank ``src``'s values in every process."""
    if is_initialized():
        for tensor in tensors:
            dist.broadcast(tensor, src=src)


def broadcast_object(obj: _T, src: int = 0) -> _T:
    """Every process gets rank ``src``'s ``obj`` (any picklable object)."""
    if not is_initialized():
        return obj
    holder: list[Any] = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_object(obj: _T) -> list[_T]:
    """The list of every process's ``obj``, ordered by rank."""
    if not is_initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def shard(items: list[_T], info: WorldInfo | None = None) -> list[_T]:
    """This process's share of ``items`` (round-robin by rank), e.g. images for teacher labelling."""
    info = info or world_info()
    return items[info.rank :: info.world_size]


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel (or DataParallel) wrapper; the model itself otherwise."""
    while isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
        model = model.module
    return model
