"""Experiment-folder integrity under concurrent runs, SIGKILL and Ctrl-C (a script, not a pytest test).

    PYTHONPATH=$PWD .venv/bin/python tests/bench/bench_folder_integrity.py --trials 3
    PYTHONPATH=$PWD .venv/bin/python tests/bench/bench_folder_integrity.py --trials 2 --cases sigint-label,sigint-infer

(a) two train-student runs started together into one folder: exactly one is refused (exit 2, "in use
    ... (PID n)"), the other finishes, and the folder's checkpoints and metadata load;
(b) SIGKILL of train-student at a random instant (every other trial: the moment a checkpoint is being
    staged): last.pt is loadable or absent, and --resume (or, with no last.pt, a fresh run) finishes;
(c) SIGINT at a random instant after the command's work began (to the process, or to its whole
    process group as a terminal's Ctrl-C, in turn; output piped), for
    - train-student, train-classifier and train-teacher (tiny Grounding DINO, LoRA): exit 130 within
      5 s, --resume finishes, and the final weights equal those of an uninterrupted run bit for bit
      (train-teacher: checkpoints/last.pt's weights and adapter_model.safetensors);
    - label (tiny Grounding DINO zero-shot over 300 images, its own cache): exit 130 within 5 s, the
      same command again finishes (finished images come from the cache) and writes the COCO file of
      an uninterrupted run (same images, categories and annotations; boxes and scores within 1e-6);
    - infer (a tiny YOLO checkpoint over 300 images): the first Ctrl-C ends the run after the image in
      hand, within 5 s, with exit 0 and `interrupted: true` in its --json summary; predictions.json is
      complete JSON holding exactly the uninterrupted run's records of a prefix of the images, and the
      same command again writes the uninterrupted predictions.
    Every case also counts the trials whose stderr (interrupted run and follow-up) has no traceback.
A run that ends by itself before the signal lands counts as "done before signal" (and is compared as
usual). Every run is a subprocess on tiny data (12 shapes images at 64 px, yolov8n from scratch; the
timm test_resnet at 32 px; the 0.5 M-parameter random Grounding DINO of tests/tiny_teachers.py on 16
images at 96 px). `--cases` picks cases (default: all). Exit code 1 when any trial breaks a rule.
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
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
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
TEACHER = [  # tests/test_teachers.py's TINY_SETS; 16 images in batches of 2, 6 epochs
    "teacher_grounding_dino_lora.shortest_edge=96",
    "teacher_grounding_dino_lora.longest_edge=96",
    "teacher_grounding_dino_lora.lr=0.01",
    "training_dynamics.num_workers=0",
    "training_dynamics.warmup_epochs=0",
    "training_dynamics.ema.enabled=false",
    "augmentation.intensity=none",
    "checkpointing.monitor=train/loss",  # the random teacher's val mAP stays 0: best.pt would stay epoch 1
    "checkpointing.mode=min",
]
RAW_IMAGES = 300  # label / infer: long enough for a random signal to land mid-run
LABEL_TOLERANCE = 1e-6
STOP_LIMIT_S = 5.0
MUST_ALL = {  # figures that must equal the number of trials
    "exactly one refused",
    "folder intact",
    "then finished",
    "exit 130 (or done)",
    "exit 0 + interrupted (or done)",
    f"stopped < {STOP_LIMIT_S:g} s",
    "no traceback",
    "prefix written",
    "resume finished",
    "rerun finished",
    "weights == uninterrupted",
    "labels == uninterrupted",
    "predictions == uninterrupted",
}
CASES = [
    "sigint-student",
    "sigkill",
    "concurrent",
    "sigint-classifier",
    "sigint-teacher",
    "sigint-label",
    "sigint-infer",
]


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

    # the data, made on first use (only what the chosen cases need)

    @cached_property
    def train(self) -> Path:
        return make_shapes(self.root / "data" / "train", 12, 0)

    @cached_property
    def val(self) -> Path:
        return make_shapes(self.root / "data" / "val", 4, 1)

    @cached_property
    def tree(self) -> Path:
        return make_tree(self.root / "data" / "tree", 5)

    @cached_property
    def dino(self) -> Path:
        from tests.tiny_teachers import write_tiny_grounding_dino

        return write_tiny_grounding_dino(self.root / "weights" / "dino")

    @cached_property
    def boxes(self) -> tuple[Path, Path]:
        from tests.tiny_teachers import write_shapes_dataset

        data = self.root / "data" / "boxes"
        return (
            write_shapes_dataset(data, 16, "boxes", seed=0, name="train.json"),
            write_shapes_dataset(data, 4, "boxes", seed=1, name="val.json"),
        )

    @cached_property
    def raw(self) -> Path:
        from tests.tiny_teachers import write_shapes_dataset

        return write_shapes_dataset(self.root / "data" / "raw", RAW_IMAGES, "boxes", seed=7).parent / "images"

    @cached_property
    def yolo(self) -> Path:
        from tests.optimize_helpers import make_checkpoint

        return make_checkpoint(self.root / "weights" / "yolo.pt")

    # the commands; for label and infer ``folder`` holds the output (and label's own cache)

    def student_command(self, folder: Path, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "distillkit", "train-student", "-d", str(self.train), "-v", str(self.val),
            "-o", str(folder), *options(STUDENT), *extra,
        ]  # fmt: skip

    def classifier_command(self, folder: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "distillkit", "train-classifier", "-d", str(self.tree), "-o", str(folder),
                *options(CLASSIFIER), *extra]  # fmt: skip

    def teacher_command(self, folder: Path, *extra: str) -> list[str]:
        train, val = self.boxes
        return [
            sys.executable, "-m", "distillkit", "train-teacher", "-d", str(train), "-v", str(val), "-o", str(folder),
            "--dino-weights", str(self.dino), "--epochs", "6", "--batch", "2", "--device", "cpu", *options(TEACHER),
            *extra,
        ]  # fmt: skip

    def label_command(self, folder: Path, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "distillkit", "label", str(self.raw), "-o", str(folder / "labels.json"),
            "--classes", "red, green, blue", "--dino-weights", str(self.dino), "--conf", "0", "--batch", "2",
            "--device", "cpu", "--cache-dir", str(folder / "cache"), "--json", *extra,
        ]  # fmt: skip

    def infer_command(self, folder: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "distillkit", "infer", "-m", str(self.yolo), str(self.raw), "-o", str(folder),
                "--device", "cpu", "--json", *extra]  # fmt: skip

    def start(self, command: list[str]) -> subprocess.Popen[str]:
        # its own process group: a group signal then reaches it and its workers as a terminal's Ctrl-C does
        return subprocess.Popen(
            command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )

    def run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        # generous: on a shared, loaded machine a 5 s run has been seen to take 12 minutes
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=3600)


# ---------------------------------------------------------------------------------------------------
# what each command leaves, and how two results compare


def student_weights(folder: Path) -> dict[str, Any]:
    from distillkit.safe_load import safe_torch_load

    return safe_torch_load(folder / "last.pt")["model"].state_dict()


def classifier_weights(folder: Path) -> dict[str, Any]:
    import torch

    return torch.load(folder / "last.pt", map_location="cpu", weights_only=True)["model"]


TEACHER_FOLDER = Path("teachers") / "grounding_dino_lora"


def teacher_weights(folder: Path) -> dict[str, Any]:
    """The last epoch's LoRA weights (checkpoints/last.pt) and the adapter the run saved (its best epoch)."""
    from safetensors.torch import load_file

    from distillkit.training.checkpoint import read_checkpoint

    teacher = folder / TEACHER_FOLDER
    last = read_checkpoint(teacher / "checkpoints" / "last.pt")["model"]
    adapter = load_file(teacher / "adapter_model.safetensors")
    return {**{f"last.pt/{k}": v for k, v in last.items()}, **{f"adapter/{k}": v for k, v in adapter.items()}}


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def max_abs_diff(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """For the report when weights differ (None: not the same tensors at all)."""
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return None
    return max((float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].numel()), default=0.0)


def coco_labels(folder: Path) -> dict[str, Any]:
    coco = json.loads((folder / "labels.json").read_text())
    return {key: coco[key] for key in ("images", "categories", "annotations")}


def same_labels(a: dict[str, Any], b: dict[str, Any], tolerance: float = LABEL_TOLERANCE) -> bool:
    """Same images and categories; the same annotations in the same order, boxes and scores within ``tolerance``."""
    if (
        a["images"] != b["images"]
        or a["categories"] != b["categories"]
        or len(a["annotations"]) != len(b["annotations"])
    ):
        return False
    for x, y in zip(a["annotations"], b["annotations"], strict=True):
        if {k: v for k, v in x.items() if k not in ("bbox", "score", "area")} != {
            k: v for k, v in y.items() if k not in ("bbox", "score", "area")
        }:
            return False
        numbers = [*zip(x["bbox"], y["bbox"], strict=True), (x["score"], y["score"]), (x["area"], y["area"])]
        if any(abs(p - q) > tolerance * max(1.0, abs(q)) for p, q in numbers):
            return False
    return True


def predictions(folder: Path) -> list[dict[str, Any]]:
    return json.loads((folder / "predictions.json").read_text())


def prefix_of(part: list[dict[str, Any]], full: list[dict[str, Any]]) -> bool:
    """``part`` is ``full``'s records for its first images, every one of those images complete."""
    n = len(part)
    boundary = n == 0 or n == len(full) or full[n]["file_name"] != full[n - 1]["file_name"]
    return n <= len(full) and part == full[:n] and boundary


# ---------------------------------------------------------------------------------------------------
# the cases


def marker(name: str, folder: Path) -> Path:
    """A path that appears when the command's real work is about to start (after imports, loading, checks)."""
    return {
        "train-student": folder / "train" / "args.yaml",
        "train-classifier": folder / "tensorboard",  # opened by the training loop just before epoch 1
        "train-teacher": folder / TEACHER_FOLDER / "tensorboard",  # opened just before the epoch loop
        "label": folder / "cache" / "image_keys.jsonl",  # teacher loaded, images being hashed and labelled
        "infer": folder,  # model loaded; made when predictions.json's temporary file opens, before image 1
    }[name]


@dataclass
class SigintCase:
    """One command under Ctrl-C: how it starts, what says it stopped right, how it goes on, what it leaves."""

    name: str
    command: Callable[..., list[str]]  # (folder, *extra) -> argv
    follow: Callable[[Path], list[str]]  # the command that finishes the work: --resume, or the same again
    result: Callable[[Path], Any]  # the final result in the folder
    equal: Callable[[Any, Any], bool]
    equal_key: str = "weights == uninterrupted"
    follow_key: str = "resume finished"
    stopped_exit: int = 130  # infer ends a Ctrl-C'd run with exit 0 and interrupted: true
    partial: Callable[[Path, Any], bool] | None = None  # what a stopped run leaves, against the reference
    describe: Callable[[Any, Any], str] = lambda a, b: ""  # a failed comparison, for the log

    @property
    def exit_key(self) -> str:
        return "exit 130 (or done)" if self.stopped_exit == 130 else "exit 0 + interrupted (or done)"  # or 130

    def outcome(self, code: int, out: str) -> str:
        """done (ended before the signal), stopped (as it should on Ctrl-C) or wrong."""
        if self.stopped_exit == 0:  # infer: tell a finished run from a stopped one by its summary
            if code == 130:  # the Ctrl-C landed outside the prediction loop (its files are checked next)
                return "stopped"
            if code != 0:
                return "wrong"
            try:
                return "stopped" if json.loads(out)["interrupted"] else "done"
            except (ValueError, KeyError, TypeError):
                return "wrong"
        return "done" if code == 0 else "stopped" if code == self.stopped_exit else "wrong"


def sigint_cases(bench: Bench) -> dict[str, SigintCase]:
    def resume_if(last: Callable[[Path], Path], command: Callable[..., list[str]]) -> Callable[[Path], list[str]]:
        return lambda folder: command(folder, *(["--resume"] if last(folder).exists() else []))

    def weights_diff(a: dict[str, Any], b: dict[str, Any]) -> str:
        return f"max abs diff {max_abs_diff(a, b)}"

    return {
        "sigint-student": SigintCase(
            "train-student",
            bench.student_command,
            resume_if(lambda f: f / "train" / "weights" / "last.pt", bench.student_command),
            student_weights,
            same,
            describe=weights_diff,
        ),
        "sigint-classifier": SigintCase(
            "train-classifier",
            bench.classifier_command,
            resume_if(lambda f: f / "checkpoints" / "last.pt", bench.classifier_command),
            classifier_weights,
            same,
            describe=weights_diff,
        ),
        "sigint-teacher": SigintCase(
            "train-teacher",
            bench.teacher_command,
            lambda folder: bench.teacher_command(folder, "--resume"),  # a teacher with no last.pt starts afresh
            teacher_weights,
            same,
            describe=weights_diff,
        ),
        "sigint-label": SigintCase(
            "label",
            bench.label_command,
            bench.label_command,
            coco_labels,
            same_labels,
            equal_key="labels == uninterrupted",
            follow_key="rerun finished",
        ),
        "sigint-infer": SigintCase(
            "infer",
            bench.infer_command,
            bench.infer_command,
            predictions,
            lambda a, b: a == b,
            equal_key="predictions == uninterrupted",
            follow_key="rerun finished",
            stopped_exit=0,
            partial=lambda folder, reference: prefix_of(predictions(folder), reference),
        ),
    }


def wait_for(path: Path, child: subprocess.Popen[str], limit: float = 600) -> None:
    deadline = time.monotonic() + limit
    while not path.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def timed_reference(bench: Bench, case: SigintCase, folder: Path) -> float:
    """Seconds an uninterrupted run spends from its marker to its end (what a signal may land in)."""
    child = bench.start(case.command(folder))
    wait_for(marker(case.name, folder), child)
    started = time.monotonic()
    _, err = child.communicate()
    assert child.returncode == 0, err
    return time.monotonic() - started


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


def clean(err: str) -> bool:
    return "Traceback" not in err and "Exception ignored" not in err


def sigint(
    bench: Bench, case: SigintCase, trials: int, duration: float, rng: random.Random, reference: Any
) -> dict[str, Any]:
    name = case.name
    stops: list[float] = []
    exit_ok = finished = equal = done_before = no_traceback = partial_ok = 0
    for trial in range(trials):
        folder = bench.root / f"{name}-int{trial}"
        child = bench.start(case.command(folder))
        wait_for(marker(name, folder), child)
        time.sleep(rng.uniform(0.0, duration * 0.9))
        sent = time.monotonic()
        if trial % 2:
            os.killpg(child.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole foreground group
        else:
            child.send_signal(signal.SIGINT)  # `kill -INT PID`: the main process alone
        out, err = child.communicate()
        outcome = case.outcome(child.returncode, out)
        if outcome == "done":
            done_before += 1  # it finished before the signal: no stop time to count
        else:
            stops.append(time.monotonic() - sent)
        exit_ok += outcome != "wrong"
        if outcome == "wrong":
            print(f"  {name} trial {trial}: exit {child.returncode}: {err[-400:]}")
        if case.partial is not None:
            # what a stopped (or finished) run left must be right before anything else touches it
            try:
                ok = outcome != "wrong" and case.partial(folder, reference)
            except (OSError, ValueError) as exc:
                ok = False
                print(f"  {name} trial {trial}: what the stopped run left: {type(exc).__name__}: {exc}")
            partial_ok += ok
            if not ok:
                print(f"  {name} trial {trial}: what the stopped run left is not a prefix of the uninterrupted result")
        follow = bench.run(case.follow(folder))
        no_traceback += clean(err) and clean(follow.stderr)
        if not clean(err) or not clean(follow.stderr):
            print(f"  {name} trial {trial}: traceback in stderr: {(err + follow.stderr)[-600:]}")
        finished += follow.returncode == 0
        if follow.returncode != 0:
            print(f"  {name} trial {trial}: follow-up exit {follow.returncode}: {follow.stderr[-400:]}")
            continue
        result = case.result(folder)
        equal += (same_now := case.equal(result, reference))
        if not same_now:
            difference = case.describe(result, reference)
            print(f"  {name} trial {trial} ({outcome}): differs from the uninterrupted run {difference}")
    row: dict[str, Any] = {
        "trials": trials,
        "done before signal": done_before,
        case.exit_key: exit_ok,
        f"stopped < {STOP_LIMIT_S:g} s": sum(s < STOP_LIMIT_S for s in stops) + done_before,
        "stop median s": round(statistics.median(stops), 2) if stops else None,
        "stop max s": round(max(stops), 2) if stops else None,
        "no traceback": no_traceback,
    }
    if case.partial is not None:
        row["prefix written"] = partial_ok
    return {**row, case.follow_key: finished, case.equal_key: equal}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="trials for SIGINT (and, capped at 10, a and b)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated, in this order when all: {','.join(CASES)}"
    )
    args = parser.parse_args()
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose among {', '.join(CASES)}")
    rng = random.Random(args.seed)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="distillkit-bench-integrity-"))
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    bench = Bench(root)
    sigints = sigint_cases(bench)

    # uninterrupted references, for the cases chosen (SIGKILL times its signals by train-student's)
    needed = {c for c in chosen if c in sigints} | ({"sigint-student"} if "sigkill" in chosen else set())
    durations: dict[str, float] = {}
    references: dict[str, Any] = {}
    for key in [c for c in sigints if c in needed]:
        folder = root / f"reference-{sigints[key].name}"
        durations[key] = timed_reference(bench, sigints[key], folder)
        references[key] = sigints[key].result(folder)
    timings = ", ".join(f"{sigints[key].name} {seconds:.1f} s" for key, seconds in durations.items())
    print(f"uninterrupted, from the start of the work to the end: {timings}")

    few = min(args.trials, 10)

    def run_sigint(key: str) -> dict[str, Any]:
        return sigint(bench, sigints[key], args.trials, durations[key], rng, references[key])

    cases: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
        # the most telling first: a run cut short by the load of a shared machine still says something
        "sigint-student": ("c) SIGINT train-student", lambda: run_sigint("sigint-student")),
        "sigkill": ("b) SIGKILL train-student", lambda: sigkill(bench, few, durations["sigint-student"], rng)),
        "concurrent": ("a) two runs, one folder", lambda: concurrent(bench, few)),
        "sigint-classifier": ("c) SIGINT train-classifier", lambda: run_sigint("sigint-classifier")),
        "sigint-teacher": ("c) SIGINT train-teacher", lambda: run_sigint("sigint-teacher")),
        "sigint-label": ("c) SIGINT label", lambda: run_sigint("sigint-label")),
        "sigint-infer": ("c) SIGINT infer", lambda: run_sigint("sigint-infer")),
    }
    failed = False
    for chosen_case in [c for c in CASES if c in chosen]:
        title, case = cases[chosen_case]
        row = case()
        print(f"{title:28s} " + ", ".join(f"{key}: {value}" for key, value in row.items()), flush=True)
        failed |= row.get("damaged", 0) > 0 or any(row[key] != row["trials"] for key in row if key in MUST_ALL)
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
