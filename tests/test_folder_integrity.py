"""Trust in the experiment folder: one run per folder, atomic checkpoints, exact resume, a prompt Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from distillkit.classify.train import train_classifier
from distillkit.errors import UsageError
from distillkit.locking import LOCK_NAME, lock_holder, output_lock
from distillkit.students.checkpoints import CheckpointState, inspect_checkpoint
from distillkit.students.train import train_student
from distillkit.ultralytics_checkpoints import STAGING_DIR
from tests.test_cli import run
from tests.test_train_student import make_shapes

REPO = Path(__file__).resolve().parents[1]


def hold_lock(target: Path, kind: str = "folder") -> subprocess.Popen[str]:
    """A child process holding the lock of ``target`` until killed."""
    code = (
        "import sys, time\n"
        "from distillkit.locking import output_lock\n"
        f"with output_lock({str(target)!r}, kind={kind!r}):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(600)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shapes")
    return make_shapes(root / "train", 8, 0), make_shapes(root / "val", 4, 1)


def test_second_run_into_a_locked_folder_is_refused_naming_the_holder(
    shapes: tuple[Path, Path], tmp_path: Path
) -> None:
    train, val = shapes
    folder = tmp_path / "exp"
    holder = hold_lock(folder)
    try:
        commands = [
            ("train-student", "-d", str(train), "-v", str(val), "-o", str(folder)),
            ("train-teacher", "-d", str(train), "-v", str(val), "-o", str(folder)),
            ("train-classifier", "-d", str(train.parent / "images"), "-o", str(folder)),
        ]
        for command in commands:
            started = time.perf_counter()
            code, _, err = run(*command)
            assert code == 2, (command, err)
            assert f"is in use by another distillkit run (PID {holder.pid})" in err
            assert "choose another --output" in err and len(err.strip().splitlines()) == 1
            assert time.perf_counter() - started < 10  # at once, before any data is read
        with pytest.raises(UsageError, match=f"PID {holder.pid}"), output_lock(folder):
            pass
        assert lock_holder(folder / LOCK_NAME) == holder.pid
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL released the kernel lock: the folder is free at once, nothing stale to clean up
    with output_lock(folder) as lock_file:
        assert lock_holder(lock_file) == os.getpid()
    assert not (folder / LOCK_NAME).exists()  # a clean release removes the lock file


def test_label_output_file_is_locked_too(tmp_path: Path) -> None:
    target = tmp_path / "labels.json"
    holder = hold_lock(target, kind="file")
    try:
        with (
            pytest.raises(UsageError, match=r"labels\.json is in use by another distillkit run"),
            output_lock(target, kind="file"),
        ):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with output_lock(target, kind="file"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_failed_run_leaves_no_folder_behind(tmp_path: Path) -> None:
    folder = tmp_path / "new"
    with pytest.raises(RuntimeError), output_lock(folder):
        raise RuntimeError("failed before writing")
    assert not folder.exists()


# ---------------------------------------------------------------------------------------------------
# train-student: atomic checkpoints, exact resume, damaged and finished runs

# 12 images in batches of 8 (a last partial batch), mosaic on and closed for the last epoch, nbs == batch.
STUDENT = [
    "student.model=yolov8n",
    "student.imgsz=64",
    "student.batch=8",
    "student.nbs=8",
    "student.optimizer=SGD",
    "student.lr0=0.05",
    "student.warmup_epochs=0",
    "student.plots=false",
    "student.workers=0",
    "student.epochs=3",
    "augmentation.mosaic=1.0",
    "augmentation.close_mosaic=1",
]


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLKIT_CACHE", str(tmp_path_factory.getbasetemp() / "distillkit-cache"))


def final_weights(store: dict[str, dict[str, torch.Tensor]], key: str) -> Callable[[Any], None]:
    """An on_train_end callback keeping the fp32 training weights and EMA (the checkpoints hold fp16)."""

    def keep(trainer: Any) -> None:
        from ultralytics.utils.torch_utils import unwrap_model

        store[key] = {k: v.detach().clone() for k, v in unwrap_model(trainer.model).state_dict().items()}
        store[key + "/ema"] = {k: v.detach().clone() for k, v in trainer.ema.ema.state_dict().items()}

    return keep


def as_options(settings: list[str]) -> list[str]:
    return [part for setting in settings for part in ("--set", setting)]


def stop_after_first_epoch(trainer: Any) -> None:
    if trainer.epoch == 0:
        raise KeyboardInterrupt  # after the epoch's checkpoint, as a Ctrl-C at that batch boundary would


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted run, and the same run interrupted after epoch 1 (a copy kept) then resumed."""
    base = tmp_path_factory.mktemp("runs")
    train, val = make_shapes(base / "train", 12, 0), make_shapes(base / "val", 4, 1)
    weights: dict[str, dict[str, torch.Tensor]] = {}
    train_student(
        train, val, base / "full", overrides=STUDENT, callbacks={"on_train_end": final_weights(weights, "full")}
    )
    with pytest.raises(KeyboardInterrupt):
        train_student(
            train, val, base / "cut", overrides=STUDENT, callbacks={"on_fit_epoch_end": stop_after_first_epoch}
        )
    shutil.copytree(base / "cut", base / "cut-copy")
    resumed = train_student(
        train,
        val,
        base / "cut",
        overrides=STUDENT,
        resume=True,
        callbacks={"on_train_end": final_weights(weights, "cut")},
    )
    return {"base": base, "train": train, "val": val, "weights": weights, "resumed": resumed}


def test_resumed_run_ends_with_the_uninterrupted_runs_weights_bit_for_bit(runs: dict[str, Any]) -> None:
    weights = runs["weights"]
    assert runs["resumed"].resumed and runs["resumed"].epochs_run == 3
    assert not any("close to" in notice for notice in runs["resumed"].notices)
    for key in ("", "/ema"):
        full, cut = weights["full" + key], weights["cut" + key]
        assert full.keys() == cut.keys()
        different = [name for name in full if not torch.equal(full[name], cut[name])]
        assert different == [], different[:5]
    # the finished run keeps no resume state, and no staging folder is left anywhere
    for name in ("full", "cut"):
        folder = runs["base"] / name / "train" / "weights"
        assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt"]


def test_interrupted_run_keeps_a_resumable_checkpoint_and_its_state(runs: dict[str, Any]) -> None:
    weights = runs["base"] / "cut-copy" / "train" / "weights"
    assert inspect_checkpoint(weights / "last.pt") == CheckpointState("resumable", epoch=0)
    assert (weights / "resume_state_0.pt").is_file() and not (weights / STAGING_DIR).exists()


def test_a_failure_during_a_checkpoint_write_leaves_the_previous_last_pt(runs: dict[str, Any], tmp_path: Path) -> None:
    folder = tmp_path / "run"
    shutil.copytree(runs["base"] / "cut-copy", folder)
    last = folder / "train" / "weights" / "last.pt"
    before = last.read_bytes()

    def fail_mid_write(trainer: Any) -> None:
        def hook(trainer: Any, staging: Path) -> None:
            assert (staging / "last.pt").is_file()  # the new checkpoint is complete, not yet in place
            raise KeyboardInterrupt

        trainer.checkpoint_hooks = [*getattr(trainer, "checkpoint_hooks", ()), hook]

    with pytest.raises(KeyboardInterrupt):
        train_student(
            runs["train"], runs["val"], folder, overrides=STUDENT, resume=True,
            callbacks={"on_pretrain_routine_start": fail_mid_write},
        )  # fmt: skip
    assert last.read_bytes() == before and not (last.parent / STAGING_DIR).exists()


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_last_pt_says_how_to_go_on(runs: dict[str, Any], tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "run"
    shutil.copytree(runs["base"] / "cut-copy", folder)
    last = folder / "train" / "weights" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    args = ["train-student", "-d", str(runs["train"]), "-v", str(runs["val"]), "-o", str(folder)]
    for extra in (["--resume"], []):
        code, _, err = run(*args, *extra, *as_options(STUDENT))
        assert code == 1, err
        assert f"{last} is damaged" in err and "cannot be resumed" in err
        assert f"delete {folder / 'train'}" in err and "without --resume" in err
        assert len(err.strip().splitlines()) == 1
    shutil.rmtree(folder / "train")  # the way forward the message gives


def test_resume_of_a_finished_run_says_so_and_trains_nothing(
    runs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = runs["base"] / "full"
    monkeypatch.chdir(tmp_path)  # ultralytics' fallback would create ./runs/detect/train here
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    started = time.perf_counter()
    code, out, err = run(
        "train-student", "-d", str(runs["train"]), "-v", str(runs["val"]), "-o", str(folder), "--resume", "--json"
    )
    assert code == 0, err
    document = json.loads(out)
    assert document["already_finished"] is True and document["epochs_run"] == 3
    assert "already finished its training (3 epochs)" in " ".join(document["notices"])
    assert time.perf_counter() - started < 30
    assert list(tmp_path.iterdir()) == []
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before


def stop_after_last_checkpoint(trainer: Any) -> None:
    if trainer.epoch == trainer.epochs - 1:
        raise KeyboardInterrupt  # the last epoch's checkpoint is written; ultralytics' closing strip is not


def test_resume_after_the_last_checkpoint_finishes_the_weights(runs: dict[str, Any], tmp_path: Path) -> None:
    """Stopped between the last epoch's checkpoint and ultralytics' final strip (1 of 20 SIGINT bench trials).

    --resume reports the run finished and exports last.pt as ultralytics would have finished it (the EMA
    as the model, no optimizer): the uninterrupted run's weights. Before, it exported the epoch
    checkpoint as it was, whose ``model`` is None.
    """
    from distillkit.safe_load import safe_torch_load

    folder = tmp_path / "late"
    with pytest.raises(KeyboardInterrupt):
        train_student(
            runs["train"],
            runs["val"],
            folder,
            overrides=STUDENT,
            callbacks={"on_model_save": stop_after_last_checkpoint},
        )
    assert safe_torch_load(folder / "train" / "weights" / "last.pt")["model"] is None
    result = train_student(runs["train"], runs["val"], folder, overrides=STUDENT, resume=True)
    assert result.already_finished
    finished = safe_torch_load(folder / "last.pt")
    reference = safe_torch_load(runs["base"] / "full" / "last.pt")
    assert finished["optimizer"] is None and finished["model"] is not None
    ours, theirs = finished["model"].state_dict(), reference["model"].state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


# ---------------------------------------------------------------------------------------------------
# Ctrl-C


def test_ctrl_c_stops_train_student_promptly_and_resume_finishes(tmp_path: Path) -> None:
    train, val = make_shapes(tmp_path / "train", 12, 0), make_shapes(tmp_path / "val", 4, 1)
    folder = tmp_path / "run"
    command = [sys.executable, "-m", "distillkit", "train-student", "-d", str(train), "-v", str(val), "-o", str(folder)]
    settings = as_options([*(s for s in STUDENT if not s.startswith("student.epochs")), "student.epochs=6"])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([*command, *settings], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = folder / "train" / "weights" / "last.pt"
    deadline = time.monotonic() + 300
    while not last.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert child.poll() is None, child.communicate()
    time.sleep(0.3)  # somewhere inside the next epoch
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    # stopped by the first Ctrl-C, not at the end of training (how fast is bench_folder_integrity's figure:
    # a timing bound here would fail on a busy machine)
    assert time.monotonic() - sent < 120
    finished = folder / "train" / "results.csv"
    assert not finished.exists() or len(finished.read_text().splitlines()) - 1 < 6
    assert "interrupted" in err and "Exception ignored" not in err and "Traceback" not in err
    resumed = subprocess.run([*command, *settings, "--resume", "--json"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["epochs_run"] == 6


def test_a_finished_command_exits_without_the_interpreters_teardown(tmp_path: Path) -> None:
    """The real process ends by os._exit once its threads and exit handlers are done.

    The teardown of torch/transformers modules took seconds (label: "interrupted" at once, exit 9 to
    36 s later on a loaded machine), and a Ctrl-C during it killed a finished infer by the signal
    (exit -2, nothing said), because CPython restores SIGINT's default action before that teardown.
    """
    script = tmp_path / "finish.py"
    script.write_text(
        "import atexit, sys, threading, time\n"
        "from pathlib import Path\n"
        "from distillkit.cli import main\n"
        "out = Path(sys.argv[1])\n"
        "class Teardown:\n"
        "    def __del__(self, out=out):  # a module global: only the interpreter's teardown finalizes it\n"
        "        (out / 'teardown').write_text('ran')\n"
        "keep = Teardown()\n"
        "atexit.register(lambda: (out / 'atexit').write_text('ran'))\n"
        "threading.Thread(target=lambda: (time.sleep(0.5), (out / 'thread').write_text('ran'))).start()\n"
        "sys.argv = ['distillkit', 'validate', str(out / 'missing.json')]\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 2, done.stderr  # the command's own exit code (a missing file)
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert (tmp_path / "thread").is_file() and (tmp_path / "atexit").is_file()
    assert not (tmp_path / "teardown").exists()


# ---------------------------------------------------------------------------------------------------
# train-classifier from a timm name


def test_train_classifier_from_a_timm_name_is_seeded_before_the_model_is_built(tmp_path: Path) -> None:
    from tests.test_classify_train import FAST, make_tree

    data = make_tree(tmp_path / "data", 4)
    settings = [*FAST, "training_dynamics.epochs=1"]
    train_classifier(data, tmp_path / "a", overrides=settings)
    torch.manual_seed(12345)  # whatever the global RNG holds before the run
    train_classifier(data, tmp_path / "b", overrides=settings)
    a = torch.load(tmp_path / "a" / "best.pt", map_location="cpu", weights_only=False)
    b = torch.load(tmp_path / "b" / "best.pt", map_location="cpu", weights_only=False)
    state_a, state_b = a["model"], b["model"]
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


class SigintDisposition(torch.utils.data.Dataset):
    """Each item says whether the worker producing it ignores SIGINT."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)


@pytest.mark.usefixtures("python_sigint")
def test_loader_workers_leave_ctrl_c_to_the_main_process() -> None:
    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics.data import build

    workers = {"num_workers": 2, "worker_init_fn": build.seed_worker, "multiprocessing_context": "fork"}
    loader = torch.utils.data.DataLoader(SigintDisposition(), batch_size=2, **workers)
    assert all(bool(flag) for batch in loader for flag in batch)
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # the main process still takes Ctrl-C


def test_a_checkpoint_of_the_last_epoch_is_a_finished_run(tmp_path: Path) -> None:
    """Killed after the last epoch's checkpoint, before ultralytics' final strip: --resume finishes the folder.

    ultralytics refuses to resume it ("training to 4 epochs is finished, nothing to resume"), which
    surfaced as an internal error in 1 of 10 SIGKILL trials of bench_folder_integrity.
    """
    import torch

    last = tmp_path / "last.pt"
    for epoch, kind in ((2, "resumable"), (3, "finished")):
        torch.save({"epoch": epoch, "optimizer": {"state": {}}, "train_args": {"epochs": 4}, "model": None}, last)
        assert inspect_checkpoint(last).kind == kind
