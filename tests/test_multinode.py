"""Teacher training across processes and nodes under torchrun (gloo, CPU): every rank ends with the same weights.

Two layouts on this one machine: 2 processes of one torchrun (``--nproc_per_node 2``), and two
torchrun invocations that simulate two nodes (``--nnodes 2 --node_rank 0|1``, one process each,
rendezvous on localhost). Each rank runs ``train-teacher``'s library entry on the tiny random-weight
Grounding DINO and prints a hash of its own in-memory model at the end of ``Trainer.fit``; the
hashes must agree, and rank 0 alone writes the experiment folder.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_teachers import TINY_SETS
from tests.tiny_teachers import write_shapes_dataset, write_tiny_grounding_dino

REPO = Path(__file__).resolve().parents[1]

RANK_SCRIPT = """
import hashlib, os, sys
import torch
from distillkit.training.trainer import Trainer
from distillkit.teachers.pipeline import train_teachers

fit = Trainer.fit

def fit_and_report(self, *args, **kwargs):
    result = fit(self, *args, **kwargs)
    digest = hashlib.sha256()
    for name, tensor in sorted(self.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    print(f"rank {os.environ['RANK']} weights {digest.hexdigest()}", flush=True)
    return result

Trainer.fit = fit_and_report
train, val, out, weights, *settings = sys.argv[1:]
overrides = [settings[i + 1] for i in range(0, len(settings), 2)]
train_teachers(train, val, out, overrides=[f"teacher_grounding_dino_lora.weights={weights}", *overrides,
               "teacher_grounding_dino_lora.epochs=2", "teacher_grounding_dino_lora.batch_size=2"],
               only="dino", device="cpu")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("multinode")
    script = root / "rank.py"
    script.write_text(RANK_SCRIPT)
    return {
        "root": root,
        "script": script,
        "weights": write_tiny_grounding_dino(root / "weights"),
        "train": write_shapes_dataset(root / "data", 4, "boxes", seed=0, name="train.json"),
        "val": write_shapes_dataset(root / "data", 2, "boxes", seed=1, name="val.json"),
    }


def _arguments(world: dict[str, Path], out: Path) -> list[str]:
    return [str(world["script"]), str(world["train"]), str(world["val"]), str(out), str(world["weights"]), *TINY_SETS]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _digests(outputs: list[str]) -> dict[str, str]:
    found = {}
    for text in outputs:
        found.update(dict(re.findall(r"rank (\d+) weights ([0-9a-f]{64})", text)))
    return found


@pytest.mark.slow  # two torchrun launches of a tiny teacher: about a minute each on 2 busy cores
def test_two_processes_end_with_the_same_weights(world: dict[str, Path]) -> None:
    out = world["root"] / "two_processes"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*command, *_arguments(world, out)], env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    digests = _digests([done.stdout])
    assert set(digests) == {"0", "1"} and len(set(digests.values())) == 1, digests
    assert (out / "teachers" / "grounding_dino_lora" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_two_simulated_nodes_end_with_the_same_weights(world: dict[str, Path]) -> None:
    """``--nnodes 2`` on localhost: the commands the README gives for two machines, node by node."""
    out = world["root"] / "two_nodes"
    port = _free_port()

    def node(rank: int) -> list[str]:
        return [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank),
            "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
            *_arguments(world, out),
        ]  # fmt: skip

    nodes = [
        subprocess.Popen(
            node(rank),
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    results = [node.communicate(timeout=900) for node in nodes]
    for node, (_, err) in zip(nodes, results, strict=True):
        assert node.returncode == 0, err[-3000:]
    digests = _digests([stdout for stdout, _ in results])
    assert set(digests) == {"0", "1"} and len(set(digests.values())) == 1, digests
    assert (out / "teachers" / "grounding_dino_lora" / "adapter_model.safetensors").is_file()
