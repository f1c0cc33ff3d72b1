"""Run by `torchrun` in tests/train/test_distributed.py: trains the same model on the same data
with several balancers and saves rank 0's weights and history (and checks every rank agrees)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer
from polytask.models import MMoE, MultiTaskNet
from polytask.train import Callback
from polytask.train._distributed import is_main_process

TASKS = [Task("a", "regression"), Task("b", "multiclass", num_classes=3), Task("c", "binary")]
RUNS = {  # name: (balancer, training settings)
    "ew": ("ew", {}),
    "uncertainty": ("uncertainty", {}),
    "upgrad": ("upgrad", {"gradient_mode": "jacobian"}),
    "upgrad_gramian": ("upgrad", {"gradient_mode": "gramian"}),
    "mgda_accumulate": ("mgda", {"accumulate": 2}),
    "mmoe": ("ew", {}),  # its expert usage: a diagnostic of every process's rows
    # 131 rows: each epoch's third batch has 3, split 2 and 1, which one process's
    # accumulate: 2 cuts in two micro-batches and the other's leaves whole
    "upgrad_accumulate_short": ("upgrad", {"accumulate": 2}),
    # 129 rows: the third batch has 1, so one process has no rows at the evaluation's step
    "mmoe_short": ("ew", {}),
}
ROWS = {"upgrad_accumulate_short": 131, "mmoe_short": 129}


def data(n: int = 300, seed: int = 0) -> TaskData:
    """Three related tasks with missing labels, so processes' shares label different counts."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = x @ torch.randn(6, generator=g)
    a = y + 0.1 * torch.randn(n, generator=g)
    a[::3] = float("nan")
    b = (y > 0.5).long() + (y > -0.5).long()
    b[1::4] = -100
    c = (x[:, 0] > 0).float()
    c[n // 2 :][::2] = float("nan")
    return TaskData(x, {"a": a, "b": b, "c": c})


def train(name: str, run_dir: Path | None = None) -> Trainer:
    balancer, settings = RUNS[name]
    torch.manual_seed(0)
    if name.startswith("mmoe"):
        model: MultiTaskNet = MMoE(6, TASKS, num_experts=3, expert_hidden=(8,))
    else:
        model = hard_sharing_mlp(6, TASKS, hidden=(16, 16))
    config = TrainConfig(epochs=None, steps=6, eval_every=3, batch_size=64, lr=1e-2,
                         keep_last=2, progress=False, **settings)  # fmt: skip
    trainer = Trainer(model, make_balancer(balancer), config, run_dir=run_dir)
    trainer.fit(data(ROWS.get(name, 300)), data(120, seed=1))
    return trainer


class DieAt(Callback):
    """Kills process 1 at a step (a rank dying mid-run)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer, result: object) -> None:
        if trainer.step == self.step and trainer.processes and trainer.processes.rank == 1:
            raise RuntimeError(f"process 1 dies at step {self.step}")


def checkpointed(out: Path, callbacks: list[Callback]) -> Trainer:
    """A run with a checkpoint every 3 steps."""
    torch.manual_seed(0)
    model = hard_sharing_mlp(6, TASKS, hidden=(16, 16))
    config = TrainConfig(epochs=None, steps=9, eval_every=3, batch_size=64, progress=False)
    return Trainer(model, make_balancer("upgrad"), config, callbacks, run_dir=out)


def die(out: Path) -> None:
    """Process 1 dies at step 5, after the checkpoint of step 3."""
    checkpointed(out, [DieAt(5)]).fit(data(), data(120, seed=1))


def resumed_equals_uninterrupted(out: Path) -> bool:
    """Resume the "upgrad" run of `out` from its step-3 checkpoint: the same weights at step 6."""
    whole = out / "run_upgrad"
    again = out / "resumed"
    trainer = train("upgrad")
    processes = trainer.processes
    assert processes is not None
    if processes.main:
        (again / "checkpoints").mkdir(parents=True)
        (again / "checkpoints" / "step-00000003.pt").write_bytes(
            (whole / "checkpoints" / "step-00000003.pt").read_bytes()
        )
    processes.barrier()
    torch.manual_seed(0)
    resumed = Trainer(
        hard_sharing_mlp(6, TASKS, hidden=(16, 16)),
        make_balancer("upgrad"),
        trainer.config,
        run_dir=again,
    )
    assert resumed.resume(again) is not None and resumed.step == 3
    resumed.fit(data(), data(120, seed=1))
    return all(
        torch.equal(a, b)
        for a, b in zip(resumed.model.state_dict().values(),
                        trainer.model.state_dict().values(), strict=True)
    )  # fmt: skip


def main(out: Path) -> None:
    for name in RUNS:
        trainer = train(name, out / f"run_{name}")
        state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        processes = trainer.processes
        assert processes is not None, "run me under torchrun"
        everyone = processes.gather(state)
        agree = all(
            torch.equal(other[k], state[k])
            for other in everyone
            for k in state  # type: ignore[index]
        )
        if processes.main:
            torch.save(state, out / f"{name}.pt")
            record = {"agree": agree, "history": trainer.history, "world": processes.world_size}
            (out / f"{name}.json").write_text(json.dumps(record))
    resumed = resumed_equals_uninterrupted(out)
    if is_main_process():
        (out / "resumed.json").write_text(json.dumps({"equal": resumed}))


if __name__ == "__main__":
    (die if sys.argv[2:] == ["die"] else main)(Path(sys.argv[1]))
