"""Experiment-folder integrity under concurrent runs, SIGKILL and Ctrl-C (a script, not a pytest test).

    PYTHONPATH=$PWD .venv/bin/python tests/bench/bench_folder_integrity.py --trials 3

(a) two train-student runs started together into one folder: exactly one is refused (exit 2, "in use
    ... (PID n)"), the other finishes, and the folder's checkpoints and metadata load;
(b) SIGKILL of train-student at a random instant (every other trial: the moment a checkpoint is being
    staged): last.pt is loadable or absent, and --resume (or, with no last.pt, a fresh run) finishes;
(c) SIGINT at a random instant of train-student and train-classifier (to the process, or to its
    whole process group as a terminal's Ctrl-C, in turn; output piped): the process exits 130 within
    5 s, --resume finishes, and the final weights equal those of an uninterrupted run bit for bit.
Every run is a subprocess on tiny data (12 shapes images at 64 px, yolov8n from scratch; the timm
test_resnet at 32 px). Exit code 1 when any trial breaks a rule.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.test_classify_train import FAST as CLASSIFIER_FAST  # noqa: E402
from tests.test_classify_train import make_tree  # noqa: E402
from tests.test_train_student import make_shapes  # noqa: E402

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
    "student.epochs=4",
    "augmentation.mosaic=1.0",
    "augmentation.close_mosaic=1",
]
CLASSIFIER = [*CLASSIFIER_FAST, "training_dynamics.epochs=6"]
STOP_LIMIT_S = 5.0
MUST_ALL = {  # figures that must equal the number of trials
    "exactly one refused",
    "folder intact",
    "then finished",
    "exit 130 (or done)",
    f"stopped < {STOP_LIMIT_S:g} s",
    "resume finished",
    "weights == uninterrupted",
}


def options(settings: list[str]) -> list[str]:
    return [part for setting in settings for part in ("--set", setting)]


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": "1",
            "DISTILLKIT_CACHE": str(root / "cache"),
        }
        self.train = make_shapes(root / "data" / "train", 12, 0)
        self.val = make_shapes(root / "data" / "val", 4, 1)
        self.tree = make_tree(root / "data" / "tree", 5)

    def student_command(self, folder: Path, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "distillkit", "train-student", "-d", str(self.train), "-v", str(self.val),
            "-o", str(folder), *options(STUDENT), *extra,
        ]  # fmt: skip

    def classifier_command(self, folder: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "distillkit", "train-classifier", "-d", str(self.tree), "-o", str(folder),
                *options(CLASSIFIER), *extra]  # fmt: skip

    def start(self, command: list[str]) -> subprocess.Popen[str]:
        # its own process group: a group signal then reaches it and its workers as a terminal's Ctrl-C does
        return subprocess.Popen(
            command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )

    def run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        # generous: on a shared, loaded machine a 5 s run has been seen to take 12 minutes
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=3600)


def marker(name: str, folder: Path) -> Path:
    """A file that appears when the training loop is about to start (after imports and data checks)."""
    return folder / "train" / "args.yaml" if name == "train-student" else folder / "metadata.json"


def wait_for(path: Path, child: subprocess.Popen[str], limit: float = 600) -> None:
    deadline = time.monotonic() + limit
    while not path.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def timed_reference(bench: Bench, name: str, folder: Path) -> float:
    """Seconds an uninterrupted run spends from its marker to its end (what a signal may land in)."""
    command = bench.student_command if name == "train-student" else bench.classifier_command
    child = bench.start(command(folder))
    wait_for(marker(name, folder), child)
    started = time.monotonic()
    _, err = child.communicate()
    assert child.returncode == 0, err
    return time.monotonic() - started


def student_weights(folder: Path) -> dict[str, Any]:
    from distillkit.safe_load import safe_torch_load

    return safe_torch_load(folder / "last.pt")["model"].state_dict()


def classifier_weights(folder: Path) -> dict[str, Any]:
    import torch

    return torch.load(folder / "last.pt", map_location="cpu", weights_only=True)["model"]


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def checkpoint_kind(folder: Path) -> str:
    from distillkit.students.checkpoints import inspect_checkpoint

    return inspect_checkpoint(folder / "train" / "weights" / "last.pt").kind


def concurrent(bench: Bench, trials: int) -> dict[str, Any]:
    refused_once = intact = 0
    for trial in range(trials):
        folder = bench.root / f"concurrent{trial}"
        first, second = bench.start(bench.student_command(folder)), bench.start(bench.student_command(folder))
        results = [(p.wait(), p.communicate()[1]) for p in (first, second)]
        codes = sorted(code for code, _ in results)
        refused = [err for code, err in results if code == 2 and "in use by another distillkit run (PID" in err]
        refused_once += codes == [0, 2] and len(refused) == 1
        metadata_ok = json.loads((folder / "metadata.json").read_text()) is not None
        intact += checkpoint_kind(folder) == "finished" and metadata_ok and bool(student_weights(folder))
        if codes != [0, 2]:
            print(f"  concurrent trial {trial}: exit codes {codes}: {[err[-300:] for _, err in results]}")
    return {"trials": trials, "exactly one refused": refused_once, "folder intact": intact}


def sigkill(bench: Bench, trials: int, duration: float, rng: random.Random) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    finished = 0
    at_checkpoint = 0
    for trial in range(trials):
        folder = bench.root / f"kill{trial}"
        child = bench.start(bench.student_command(folder))
        if trial % 2:  # the moment ultralytics stages a checkpoint (the writes that used to land in place)
            staging = folder / "train" / "weights" / ".saving"
            deadline = time.monotonic() + duration * 3 + 120
            while not staging.exists() and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.001)
            at_checkpoint += staging.exists()
        else:
            wait_for(marker("train-student", folder), child)
            time.sleep(rng.uniform(0.0, duration))
        child.send_signal(signal.SIGKILL)
        child.wait()
        kind = checkpoint_kind(folder)
        outcomes[kind] = outcomes.get(kind, 0) + 1
        if kind == "damaged":
            print(f"  kill trial {trial}: damaged last.pt")
            continue
        # the way forward: --resume a checkpoint (a finished run says so), else start the same run afresh
        follow = bench.run(bench.student_command(folder, *(["--resume"] if kind != "missing" else [])))
        finished += follow.returncode == 0 and checkpoint_kind(folder) == "finished"
        if follow.returncode != 0:
            print(f"  kill trial {trial} ({kind}): follow-up exit {follow.returncode}: {follow.stderr[-400:]}")
    return {"trials": trials, "killed while staging": at_checkpoint, **outcomes, "then finished": finished}


def sigint(bench: Bench, name: str, trials: int, duration: float, rng: random.Random, reference: Any) -> dict[str, Any]:
    command = bench.student_command if name == "train-student" else bench.classifier_command
    weights = student_weights if name == "train-student" else classifier_weights
    stops: list[float] = []
    code_130 = finished = equal = done_before = 0
    for trial in range(trials):
        folder = bench.root / f"{name}-int{trial}"
        child = bench.start(command(folder))
        wait_for(marker(name, folder), child)
        time.sleep(rng.uniform(0.0, duration * 0.9))
        sent = time.monotonic()
        if trial % 2:
            os.killpg(child.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole foreground group
        else:
            child.send_signal(signal.SIGINT)  # `kill -INT PID`: the main process alone
        _, err = child.communicate()
        if child.returncode == 0:
            done_before += 1  # it finished before the signal: no stop time to count
        else:
            stops.append(time.monotonic() - sent)
        code_130 += child.returncode == 130 or child.returncode == 0  # 0: it had finished before the signal
        if child.returncode not in (0, 130):
            print(f"  {name} trial {trial}: exit {child.returncode}: {err[-400:]}")
        last = (
            folder / "train" / "weights" / "last.pt" if name == "train-student" else folder / "checkpoints" / "last.pt"
        )
        follow = bench.run(command(folder, *(["--resume"] if last.exists() else [])))
        finished += follow.returncode == 0
        if follow.returncode != 0:
            print(f"  {name} trial {trial}: follow-up exit {follow.returncode}: {follow.stderr[-400:]}")
            continue
        equal += same(weights(folder), reference)
    return {
        "trials": trials,
        "done before signal": done_before,
        "exit 130 (or done)": code_130,
        f"stopped < {STOP_LIMIT_S:g} s": sum(s < STOP_LIMIT_S for s in stops) + done_before,
        "stop median s": round(statistics.median(stops), 2) if stops else None,
        "stop max s": round(max(stops), 2) if stops else None,
        "resume finished": finished,
        "weights == uninterrupted": equal,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="trials for SIGINT (and, capped at 10, a and b)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="distillkit-bench-integrity-"))
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    bench = Bench(root)

    student_s = timed_reference(bench, "train-student", root / "reference-student")
    classifier_s = timed_reference(bench, "train-classifier", root / "reference-classifier")
    print(f"uninterrupted, training phase: train-student {student_s:.1f} s, train-classifier {classifier_s:.1f} s")

    few = min(args.trials, 10)
    cases = {  # the most telling first: a run cut short by the load of a shared machine still says something
        "c) SIGINT train-student": lambda: sigint(
            bench, "train-student", args.trials, student_s, rng, student_weights(root / "reference-student")
        ),
        "b) SIGKILL train-student": lambda: sigkill(bench, few, student_s, rng),
        "a) two runs, one folder": lambda: concurrent(bench, few),
        "c) SIGINT train-classifier": lambda: sigint(
            bench, "train-classifier", args.trials, classifier_s, rng, classifier_weights(root / "reference-classifier")
        ),
    }
    failed = False
    for title, case in cases.items():
        row = case()
        print(f"{title:28s} " + ", ".join(f"{key}: {value}" for key, value in row.items()), flush=True)
        failed |= row.get("damaged", 0) > 0 or any(row[key] != row["trials"] for key in row if key in MUST_ALL)
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
