"""A training run killed with SIGKILL at a random step and resumed from its last checkpoint
ends with parameters bit-identical to an uninterrupted run (dropout, DWA state, a sampled
schedule and early-stopping state included)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPT = """
import sys, time, torch
from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer
from polytask.train._callbacks import Callback

run_dir, resume, out = sys.argv[1], sys.argv[2] == "1", sys.argv[3]

class Slow(Callback):
    def on_step_end(self, trainer, result):
        time.sleep(0.03)

g = torch.Generator().manual_seed(0)
def part(n, task):
    x = torch.randn(n, 6, generator=g)
    y = x[:, 0] * (1 if task == "a" else -2) + 0.1 * torch.randn(n, generator=g)
    return TaskData(x, {task: y})
train = {"a": part(300, "a"), "b": part(40, "b")}
val = {"a": part(60, "a"), "b": part(20, "b")}
torch.manual_seed(0)
tasks = [Task("a", "regression"), Task("b", "regression")]
model = hard_sharing_mlp(6, tasks, hidden=(16,), dropout=0.2)
config = TrainConfig(epochs=None, steps=80, eval_every=5, batch_size=16, progress=False,
                     patience=None, keep_last=2, schedule="temperature")
trainer = Trainer(model, make_balancer("dwa"), config, callbacks=[Slow()], run_dir=run_dir)
if resume:
    trainer.resume(run_dir)
trainer.fit(train, val)
torch.save(trainer.model.state_dict(), out)
"""


def _run(script: Path, run_dir: Path, resume: bool, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), str(run_dir), str(int(resume)), str(out)],
                            env=env, stderr=subprocess.PIPE)  # fmt: skip


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_is_bit_identical(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    whole = _run(script, tmp_path / "whole", False, tmp_path / "whole.pt")
    assert whole.wait(timeout=120) == 0, whole.stderr.read().decode()[-2000:]

    kill_after = random.Random().randint(15, 60)  # a random step, mid-run
    run_dir = tmp_path / "killed"
    killed = _run(script, run_dir, False, tmp_path / "never.pt")
    deadline = time.time() + 120
    while time.time() < deadline:
        found = sorted((run_dir / "checkpoints").glob("step-*.pt"))
        if found and int(found[-1].stem.split("-")[1]) >= kill_after:
            break
        time.sleep(0.01)
    time.sleep(random.Random().uniform(0, 0.1))  # possibly mid-write of the next checkpoint
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL
    assert not (tmp_path / "never.pt").exists()

    resumed = _run(script, run_dir, True, tmp_path / "resumed.pt")
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read().decode()[-2000:]
    a = torch.load(tmp_path / "whole.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs (killed after step {kill_after})"
