"""Ultralytics checkpoints that survive a kill at any instant, and a resume that continues exactly.

Atomic writes are the ultralytics guard's job (``distillkit.ultralytics_checkpoints``); the resume
state below is written through its ``checkpoint_hooks`` in the same atomic step.

Exact resume. Ultralytics' checkpoint is made for deployment as much as for resuming: it keeps the
EMA in fp16 (loaded back as the training weights too), the optimizer state in fp16, and no random
number generator state, so a resumed run drifts from an uninterrupted one. ``ExactResume`` saves,
with every checkpoint, what the next epoch depends on (the fp32 training weights, EMA and optimizer
state; Python, numpy and torch RNG states; the shuffling generator of the training loader; the
mosaic buffer of recently loaded images) as ``weights/resume_state_<epoch>.pt``, written in the same
atomic step just before ``last.pt``; on resume it puts all of it back at the start of the first
epoch. With data loading in the main process (``workers=0``, what ultralytics uses on CPU) and an
optimizer step at every epoch end (``nbs`` a multiple of ``batch`` times the batches per epoch, e.g.
``nbs == batch``), the resumed run ends with the same weights, bit for bit, as the uninterrupted
one. Loader worker processes (GPU) seed their augmentations from a per-iterator seed, so there the
resumed run is a statistically equivalent continuation, not an identical one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillkit.ultralytics_checkpoints import RESUME_STATE_PREFIX


@dataclass
class CheckpointState:
    """What ``last.pt`` holds: ``missing``, ``damaged`` (unreadable), ``finished`` or ``resumable``."""

    kind: str
    epoch: int = -1  # the last finished epoch, 0-based (resumable only)
    problem: str = ""


def inspect_checkpoint(path: Path) -> CheckpointState:
    """Read ``last.pt`` as data and say whether it can be resumed."""
    from distillkit.safe_load import UnsafeModelFileError, safe_torch_load

    if not path.is_file():
        return CheckpointState("missing")
    size = path.stat().st_size
    if size == 0:
        return CheckpointState("damaged", problem="it is empty (0 bytes)")
    try:
        checkpoint = safe_torch_load(path)
    except UnsafeModelFileError:
        raise  # a trust question, answered by its own message
    except Exception as exc:  # truncated zip, damaged pickle: any reader's failure means the same here
        return CheckpointState("damaged", problem=f"it cannot be read: {type(exc).__name__}: {exc}"[:200])
    if not isinstance(checkpoint, dict) or "epoch" not in checkpoint:
        return CheckpointState("damaged", problem="it is not an ultralytics training checkpoint")
    epoch = int(checkpoint.get("epoch", -1))
    if epoch < 0 or checkpoint.get("optimizer") is None:
        return CheckpointState("finished")  # strip_optimizer marks the end of training this way
    epochs = int((checkpoint.get("train_args") or {}).get("epochs") or 0)
    if epochs and epoch + 1 >= epochs:
        # every epoch trained, killed before the final strip/validation: ultralytics refuses to resume it
        # ("training to N epochs is finished"), so it is a finished run whose exports are still to be made
        return CheckpointState("finished", epoch=epoch)
    return CheckpointState("resumable", epoch=epoch)


class ExactResume:
    """Callbacks saving the full training state with every checkpoint and putting it back on resume."""

    def __init__(self) -> None:
        self.notices: list[str] = []
        self.restored = False

    def attach(self, model: Any) -> None:
        model.add_callback("on_pretrain_routine_start", self._register)
        model.add_callback("on_train_epoch_start", self._restore)
        model.add_callback("on_train_end", self._discard)

    def _register(self, trainer: Any) -> None:
        trainer.checkpoint_hooks = [*getattr(trainer, "checkpoint_hooks", ()), self._save]

    def _save(self, trainer: Any, staging: Path) -> None:
        import torch
        from ultralytics.utils.torch_utils import unwrap_model

        from distillkit.training.rng import capture_rng_state

        loader = trainer.train_loader
        generator = getattr(loader, "generator", None)
        projectors = getattr(trainer, "kd_projectors", None)
        state = {
            "epoch": int(trainer.epoch),
            "model": unwrap_model(trainer.model).state_dict(),
            "ema": trainer.ema.ema.state_dict(),
            "updates": int(trainer.ema.updates),
            "optimizer": trainer.optimizer.state_dict(),
            # distillkit's KD projectors train with the student; kd_projectors.pt is written after last.pt
            "kd_projectors": projectors.state_dict() if projectors is not None else None,
            "rng": capture_rng_state(),
            "loader_generator": generator.get_state() if generator is not None else None,
            "buffer": [int(i) for i in getattr(loader.dataset, "buffer", [])],
            "albumentations": [_generator_state(owner) for owner in _albumentations_generators(loader.dataset)],
        }
        torch.save(state, staging / f"{RESUME_STATE_PREFIX}{trainer.epoch}.pt")

    def _restore(self, trainer: Any) -> None:
        if self.restored or not trainer.resume or trainer.epoch != trainer.start_epoch:
            return
        self.restored = True
        import torch
        from ultralytics.utils.torch_utils import unwrap_model

        from distillkit.training.rng import restore_rng_state

        path = Path(trainer.wdir) / f"{RESUME_STATE_PREFIX}{trainer.start_epoch - 1}.pt"
        if not path.is_file():
            self.notices.append(
                f"resumed from last.pt alone ({path.name} is missing, e.g. a run started by an older distillkit): "
                "the continuation is close to, not identical with, an uninterrupted run"
            )
            return
        state = torch.load(path, map_location="cpu", weights_only=True)
        unwrap_model(trainer.model).load_state_dict(state["model"])
        trainer.ema.ema.load_state_dict(state["ema"])
        trainer.ema.updates = state["updates"]
        for saved, group in zip(state["optimizer"]["param_groups"], trainer.optimizer.param_groups, strict=False):
            if "fused" in group:
                saved["fused"] = group["fused"]  # the device of this run picks the kernel, as ultralytics does
        trainer.optimizer.load_state_dict(state["optimizer"])
        projectors = getattr(trainer, "kd_projectors", None)
        if projectors is not None and state.get("kd_projectors") is not None:
            projectors.load_state_dict(state["kd_projectors"])
        loader = trainer.train_loader
        if not hasattr(loader, "_get_iterator") or not hasattr(loader, "iterator"):
            restore_rng_state(state["rng"])
            return
        # The data-side state goes back when this epoch's first batch is fetched: by then ultralytics has
        # closed mosaic if this is a close_mosaic epoch (new transforms, a new loader iterator); restored
        # now it would be replaced.
        args = trainer.args
        closes_at = max(0, trainer.epochs - args.close_mosaic) if args.close_mosaic else None
        make_iterator = loader._get_iterator

        def restored_iterator() -> Any:
            del loader._get_iterator  # back to the class's own method
            generator = getattr(loader, "generator", None)
            closing_now = closes_at == trainer.start_epoch
            if closing_now:
                # The uninterrupted run closed mosaic here too: it drew the new iterator's seed after the state.
                if generator is not None and state["loader_generator"] is not None:
                    generator.set_state(state["loader_generator"])
                iterator = make_iterator()
            else:
                # The uninterrupted run went on with its iterator: only the sampler's pending draw lies ahead.
                iterator = make_iterator()
                if generator is not None and state["loader_generator"] is not None:
                    generator.set_state(state["loader_generator"])
                    _draw_pending_permutation(loader)
            _replay_image_buffer(loader.dataset, state["buffer"])
            owners = _albumentations_generators(loader.dataset)
            # Closing mosaic built new transforms in both runs, fresh generators included: nothing to restore.
            if not closing_now and len(owners) == len(state["albumentations"]):
                for owner, saved in zip(owners, state["albumentations"], strict=True):
                    _set_generator_state(owner, saved)
            restore_rng_state(state["rng"])
            return iterator

        loader.reset()  # a fresh iterator is made, through restored_iterator, at the first batch
        loader._get_iterator = restored_iterator

    def _discard(self, trainer: Any) -> None:
        """A finished run cannot be resumed: its resume state is dead weight."""
        for path in Path(trainer.wdir).glob(f"{RESUME_STATE_PREFIX}*.pt"):
            path.unlink(missing_ok=True)


def _draw_pending_permutation(loader: Any) -> None:
    """Make the fresh sampler draw what the uninterrupted one still had to at this epoch's first batch.

    torch's ``RandomSampler`` draws one extra (empty) permutation when it runs out, and ``BatchSampler``
    only notices it ran out when asked for the batch after the last one: with full batches only
    (or ``drop_last``) that happens at the next epoch's first batch, after the state was saved. The
    fresh iterator of a resumed run has no such draw ahead of it; doing it here keeps the shuffles equal.
    """
    import torch
    from torch.utils.data import RandomSampler

    batches = getattr(getattr(loader, "batch_sampler", None), "sampler", None)  # ultralytics' repeat wrapper
    sampler = getattr(batches, "sampler", None)
    if not isinstance(sampler, RandomSampler) or sampler.replacement or sampler.generator is not loader.generator:
        return
    if batches.drop_last or len(sampler) % batches.batch_size == 0:
        torch.randperm(len(sampler.data_source), generator=loader.generator)


def _albumentations_generators(dataset: Any) -> list[Any]:
    """The albumentations objects (composes, transforms) of the training pipeline that carry their own RNGs.

    albumentations >= 1.4.21 draws from generators of its own, seeded once by ultralytics and then
    advancing with every image: they are training state like the global RNGs.
    """
    found: list[Any] = []

    def walk(node: Any, depth: int) -> None:
        if node is None or depth > 8:
            return
        if hasattr(node, "random_generator") and hasattr(node, "py_random"):
            found.append(node)
        children = getattr(node, "transforms", None)
        if isinstance(children, (list, tuple)):
            for child in children:
                walk(child, depth + 1)
        inner = getattr(node, "transform", None)  # ultralytics' Albumentations step wraps an A.Compose
        if inner is not None and not isinstance(inner, (list, tuple)):
            walk(inner, depth + 1)

    walk(getattr(dataset, "transforms", None), 0)
    return found


def _generator_state(owner: Any) -> list[Any]:
    numpy_state = owner.random_generator.bit_generator.state
    version, internal, gauss = owner.py_random.getstate()
    return [getattr(owner, "seed", None), repr(numpy_state), [version, list(internal), gauss]]


def _set_generator_state(owner: Any, saved: list[Any]) -> None:
    import ast

    seed, numpy_state, python_state = saved
    if hasattr(owner, "seed"):
        owner.seed = seed  # ultralytics reseeds a compose whose seed is not its own: this one already was
    owner.random_generator.bit_generator.state = ast.literal_eval(numpy_state)  # a repr: ints beyond 64 bits
    version, internal, gauss = python_state
    owner.py_random.setstate((version, tuple(internal), gauss))


def _replay_image_buffer(dataset: Any, indices: list[int]) -> None:
    """Rebuild the dataset's buffer of recently loaded images (mosaic draws its partners from it)."""
    if not hasattr(dataset, "buffer") or not hasattr(dataset, "load_image"):
        return
    for index in list(dataset.buffer):
        if getattr(dataset, "cache", None) != "ram":
            dataset.ims[index] = None
    dataset.buffer.clear()
    for index in indices:
        if dataset.ims[index] is None:
            dataset.load_image(index)  # loads, caches and appends to the buffer as the original run did
        else:
            dataset.buffer.append(index)
