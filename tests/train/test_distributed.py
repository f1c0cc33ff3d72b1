"""A real two-process gloo run under torchrun equals one process on the same global batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.train.ddp_worker import RUNS, checkpointed, train

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(
    args: list[str], processes: int = 2, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}",
               "--master-addr=127.0.0.1", f"--master-port={_free_port()}", *args]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun([str(WORKER), str(out)])
    assert done.returncode == 0, done.stderr[-4000:]
    return out


@pytest.mark.parametrize("name", list(RUNS))
def test_two_processes_train_like_one(two_processes: Path, name: str, tmp_path: Path):
    """EW, a loss-based (uncertainty) and Jacobian-based balancers (exact and Gramian paths,
    and MGDA with accumulation; UPGrad with accumulation where a short batch leaves one
    process two micro-batches and the other one, which ran other collectives and crashed;
    MMoE's diagnostics where one process has no rows, which read NaN): after 6 steps the
    weights equal one process's within 1e-5,
    every process holds the same weights, and the validation metrics (computed on the
    processes' gathered predictions) equal one process's."""
    record = json.loads((two_processes / f"{name}.json").read_text())
    assert record["agree"] and record["world"] == 2
    spread = torch.load(two_processes / f"{name}.pt")
    alone = train(name, tmp_path / "alone")
    for key, value in alone.model.state_dict().items():
        torch.testing.assert_close(spread[key], value, rtol=1e-5, atol=1e-5, msg=key)
    for theirs, ours in zip(record["history"], alone.history, strict=True):
        for key in ("val/loss", "val/a/loss", "val/b/loss", "val/c/loss", "train/loss"):
            assert theirs[key] == pytest.approx(ours[key], rel=1e-5), key
        experts = [k for k in ours if k.startswith("experts/")]  # the processes' mean
        assert [theirs[k] for k in experts] == pytest.approx([ours[k] for k in experts], rel=1e-5)
        assert bool(experts) == name.startswith("mmoe")
    # run files only from the main process
    assert (two_processes / f"run_{name}" / "checkpoints").is_dir()


def test_a_resumed_distributed_run_equals_the_uninterrupted_one(two_processes: Path):
    """Two processes resuming from a checkpoint continue bit for bit (same process count)."""
    assert json.loads((two_processes / "resumed.json").read_text())["equal"]


def test_a_dying_process_stops_the_job_and_leaves_a_loadable_checkpoint(tmp_path: Path):
    done = torchrun([str(WORKER), str(tmp_path), "die"], timeout=300)
    assert done.returncode != 0
    assert "process 1 dies at step 5" in done.stderr
    trainer = checkpointed(tmp_path / "again", [])  # the same run, in this process
    path = trainer.resume(tmp_path)
    assert path is not None and trainer.step == 3


CONFIG = """
data: {builtin: customers, options: {n: 900, seed: 0}}
tasks:
  - {name: churn, kind: binary}
  - {name: ltv, kind: regression}
  - {name: plan, kind: multiclass}
model: {hidden: [16, 16]}
balancer: {name: upgrad}
training: {epochs: 2, batch_size: 96, seed: 0}
"""


def test_polytask_train_runs_unchanged_under_torchrun(tmp_path: Path):
    """`torchrun -m polytask train CONFIG`: the main process writes the run folder, and its
    test metrics equal a one-process run's."""
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG)
    done = torchrun(["-m", "polytask", "train", str(config), "--out", str(tmp_path / "two"),
                     "--no-report"])  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("Test metrics") == 1  # printed once, by the main process
    from polytask.cli import main

    one_process = ["train", str(config), "--out", str(tmp_path / "one"), "--no-report", "-q"]
    assert main(one_process) == 0
    again = torchrun(["-m", "polytask", "train", str(config), "--out", str(tmp_path / "two")])
    assert again.returncode != 0  # the folder holds a run: every process stops, one says why
    assert again.stderr.count("already holds a run") == 1, again.stderr[-3000:]
    assert "Connection closed" not in again.stderr
    two = json.loads((tmp_path / "two" / "test_metrics.json").read_text())
    one = json.loads((tmp_path / "one" / "test_metrics.json").read_text())
    for task, metrics in one.items():
        for name, value in metrics.items():
            assert two[task][name] == pytest.approx(value, rel=1e-4, abs=1e-6), (task, name)
