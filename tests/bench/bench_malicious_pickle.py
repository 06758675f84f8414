"""Benchmark: does any command execute a malicious model file? Goal: 0 executions.

Writes ``.pt`` files whose pickle creates a marker file when unpickled (``posix.system``, ``pathlib.Path.touch``,
a bound ``PosixPath.touch`` built only from allowlisted globals, a *call* of an allowlisted model class whose
config ultralytics would ``eval``, ``builtins.exec``), each inside a dict that otherwise looks like an ultralytics
checkpoint. Then runs every command that takes a model file as a real subprocess (``python -m distillkit``)
against one: ``infer -m``, ``evaluate -m``, ``optimize -m`` (with and without ``--prune``), ``label --teacher``,
``train-student --student`` / ``--teacher`` / ``--resume`` of a run whose ``train/weights/last.pt`` was replaced,
``train-classifier --teacher`` / ``--model`` / ``--resume`` (replaced ``checkpoints/last.pt``), ``train-teacher
--resume`` (replaced teacher ``last.pt``), and the same ``infer`` with every payload. A row is *refused* when the
command exits 2 with the one-line refusal naming what the file needs; *executed* when the marker exists afterwards.

A control row runs ``infer --trust-model-file`` (not counted): the payload must execute there, which shows the
files are live and the flag works.

    .venv/bin/python tests/bench/bench_malicious_pickle.py [--workdir DIR] [--only infer,evaluate]

Exit code 0 when no command executed a payload and every command refused, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.malicious_payloads import (  # noqa: E402
    BoundTouch,
    Exec,
    ModelConstructor,
    PathTouch,
    ShellCommand,
    malicious_checkpoint,
)

PAYLOADS = {
    "posix.system": ShellCommand,
    "pathlib.Path.touch": PathTouch,
    "PosixPath(...).touch": BoundTouch,
    "DetectionModel(cfg) eval": ModelConstructor,
    "builtins.exec": Exec,
}


def build(work: Path, marker: Path) -> list[tuple[str, list[str]]]:
    """The inputs every command needs, and the command lines (one malicious file each)."""
    from distillkit.ultralytics_env import import_ultralytics

    import_ultralytics()
    from tests.optimize_helpers import make_images
    from tests.test_classify_train import FAST as CLASSIFIER_FAST
    from tests.test_classify_train import make_tree
    from tests.test_teachers import TINY_SETS
    from tests.test_train_student import make_shapes
    from tests.tiny_teachers import write_shapes_dataset, write_tiny_grounding_dino

    evil = malicious_checkpoint(work / "models" / "best.pt", marker)
    images = make_images(work / "images", count=2)
    train, val = make_shapes(work / "shapes" / "train", 8, 0), make_shapes(work / "shapes" / "val", 4, 1)
    tree = make_tree(work / "tree", 3)
    weights = write_tiny_grounding_dino(work / "dino")
    dino_train = write_shapes_dataset(work / "dino_data", 2, "boxes", seed=0, name="train.json")
    dino_val = write_shapes_dataset(work / "dino_data", 2, "boxes", seed=1, name="val.json")
    malicious_checkpoint(work / "student_run" / "train" / "weights" / "last.pt", marker)
    malicious_checkpoint(work / "classifier_run" / "checkpoints" / "last.pt", marker)
    malicious_checkpoint(work / "teacher_run" / "teachers" / "grounding_dino_lora" / "checkpoints" / "last.pt", marker)
    student = ["train-student", "-d", str(train), "-v", str(val), "--epochs", "1", "--imgsz", "64"]
    classifier = ["train-classifier", "-d", str(tree), *[p for s in CLASSIFIER_FAST for p in ("--set", s)]]
    cases = [
        ("infer -m", ["infer", "-m", str(evil), str(images[0]), "-o", str(work / "out" / "infer")]),
        ("evaluate -m", ["evaluate", "-d", str(val), "-m", str(evil)]),
        ("optimize -m", ["optimize", "-m", str(evil), "-o", str(work / "out" / "optimize")]),
        ("optimize -m --prune", ["optimize", "-m", str(evil), "--prune", "0.2", "-o", str(work / "out" / "prune")]),
        ("label --teacher", ["label", str(images[0]), "--teacher", str(evil), "-o", str(work / "out" / "l.json")]),
        ("train-student --student", [*student, "-o", str(work / "out" / "s1"), "--student", str(evil)]),
        ("train-student --teacher", [*student, "-o", str(work / "out" / "s2"), "--student", "yolov8n",
                                     "--teacher", str(evil)]),
        ("train-student --resume (last.pt replaced)", [*student, "-o", str(work / "student_run"), "--resume"]),
        ("train-classifier --teacher", [*classifier, "-o", str(work / "out" / "c1"), "--teacher", str(evil)]),
        ("train-classifier --model", [*classifier, "-o", str(work / "out" / "c2"), "--model", str(evil)]),
        ("train-classifier --resume (last.pt replaced)", [*classifier, "-o", str(work / "classifier_run"),
                                                          "--resume"]),
        ("train-teacher --resume (last.pt replaced)", [
            "train-teacher", "-d", str(dino_train), "-v", str(dino_val), "-o", str(work / "teacher_run"),
            "--dino-weights", str(weights), "--epochs", "1", "--device", "cpu", "--resume", *TINY_SETS,
        ]),
    ]  # fmt: skip
    for label, payload in PAYLOADS.items():
        if payload is not ShellCommand:
            path = malicious_checkpoint(work / "payloads" / f"{payload.__name__}.pt", marker, payload)
            cases.append((f"infer -m ({label})", ["infer", "-m", str(path), str(images[0]), "-o", str(work / "o")]))
    return cases


def run_case(args: list[str], marker: Path, env: dict[str, str]) -> tuple[int, str, bool, float]:
    marker.unlink(missing_ok=True)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "distillkit", *args], capture_output=True, text=True, env=env, timeout=600, cwd=REPO
    )
    seconds = time.perf_counter() - started
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    executed = marker.exists()
    marker.unlink(missing_ok=True)
    return done.returncode, lines[-1] if lines else "", executed, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None, help="Where the files go [default: a temporary one].")
    parser.add_argument("--only", default="", help="Comma-separated prefixes of the commands to run.")
    options = parser.parse_args()
    work = options.workdir or Path(tempfile.mkdtemp(prefix="distillkit-bench-pickle-"))
    work.mkdir(parents=True, exist_ok=True)
    marker = work / "MARKER"
    env = {**os.environ, "DISTILLKIT_CACHE": str(work / "cache"), "PYTHONPATH": str(REPO)}
    env.pop("DISTILLKIT_TRUST_MODEL_FILES", None)
    os.environ["DISTILLKIT_CACHE"] = env["DISTILLKIT_CACHE"]
    cases = build(work, marker)
    wanted = [p.strip() for p in options.only.split(",") if p.strip()]
    if wanted:
        cases = [case for case in cases if any(case[0].startswith(p) for p in wanted)]
    rows = []
    for label, args in cases:
        code, line, executed, seconds = run_case(args, marker, env)
        refused = code == 2 and " to load" in line and "--trust-model-file" in line and line.startswith("error: ")
        refused = refused or (code == 2 and "data-only loader refuses" in line)
        rows.append((label, refused, executed, code, seconds, line))
    control_code, _, control_executed, _ = run_case([*cases[0][1], "--trust-model-file"], marker, env)
    width = max(len(row[0]) for row in rows)
    print(f"{'command'.ljust(width)} | refused | executed | exit | seconds")
    print(f"{'-' * width}-|---------|----------|------|--------")
    for label, refused, executed, code, seconds, _ in rows:
        print(f"{label.ljust(width)} | {'yes' if refused else 'NO':7} | {'YES' if executed else 'no':8} | "
              f"{code:4} | {seconds:6.1f}")  # fmt: skip
    executions = sum(1 for row in rows if row[2])
    refusals = sum(1 for row in rows if row[1])
    print(f"\ntotal: {len(rows)} commands, {refusals} refused, {executions} executions (goal 0)")
    print(f"control: {cases[0][0]} --trust-model-file -> payload {'executed' if control_executed else 'NOT executed'}"
          f" (exit {control_code}; the files are live and the flag lifts the refusal)")  # fmt: skip
    for label, refused, _, _, _, line in rows:
        if not refused:
            print(f"  {label}: {line}")
    return 0 if executions == 0 and refusals == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
