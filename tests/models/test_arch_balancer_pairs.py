"""Every architecture trains with every balancer (a representative subset by default, all pairs
under the `slow` marker); pairs that cannot work are refused up front with a clear message."""

import math

import pytest
import torch

from polytask import Task, TaskData, TrainConfig, Trainer
from polytask.balancers import BALANCERS
from polytask.data._synthetic import make_funnel, make_related_regression
from polytask.models import (
    AITM,
    ESMM,
    PLE,
    CrossStitch,
    LearningToBranch,
    MeanRegularised,
    MMoE,
    MultiInput,
    SoftSharing,
    hard_sharing_mlp,
    mtan_mlp,
)
from tests.balancers.helpers import make

NAMES = ["a", "b", "c", "d"]
TASKS = [Task(n, "regression") for n in NAMES]
ARCHS = {
    "hard_sharing": lambda: hard_sharing_mlp(20, TASKS, hidden=(16,)),
    "towers": lambda: hard_sharing_mlp(20, TASKS, hidden=(16,), tower=(8,)),
    "mmoe": lambda: MMoE(20, TASKS, num_experts=3, expert_hidden=(16,)),
    "cgc": lambda: PLE(20, TASKS, levels=1, expert_hidden=(16,)),
    "ple": lambda: PLE(20, TASKS, levels=2, expert_hidden=(16,)),
    "mtan": lambda: mtan_mlp(20, TASKS, hidden=(16, 8)),
    "ltb": lambda: LearningToBranch(20, TASKS, hidden=(16, 8), branches=2),
    "cross_stitch": lambda: CrossStitch(20, TASKS, hidden=(16, 8)),
    "soft_sharing": lambda: SoftSharing(20, TASKS, hidden=(16,), coupling=1e-2),
    "mean_regularised": lambda: MeanRegularised(20, TASKS, hidden=(16,), coupling=1e-2),
    "multi_input": lambda: MultiInput(
        20, TASKS, {"a": range(10), "b": range(10, 20)}, hidden=(16,)
    ),
}
FUNNEL = [Task("click", "binary"), Task("conversion", "binary")]
FUNNEL_ARCHS = {  # sequentially dependent binary tasks, trained on a generated funnel
    "esmm": lambda: ESMM(8, FUNNEL, hidden=(16,), tower=(8,)),
    "aitm": lambda: AITM(8, FUNNEL, hidden=(16,), tower=(8,)),
}
SUBSET = ["ew", "uncertainty", "famo", "upgrad", "pcgrad", "nash_mtl"]


def _data(n: int, seed: int) -> TaskData:
    x, ya, yb = make_related_regression(n=n, seed=seed)
    targets = {"a": ya, "b": yb, "c": ya + yb, "d": ya - 0.5 * yb}
    return TaskData(
        torch.tensor(x, dtype=torch.float32),
        {k: torch.tensor(v, dtype=torch.float32) for k, v in targets.items()},
    )


def _funnel(n: int, seed: int) -> TaskData:
    x, click, conv = make_funnel(n, seed=seed)
    targets = {"click": click, "conversion": conv}
    return TaskData(
        torch.tensor(x, dtype=torch.float32),
        {k: torch.tensor(v, dtype=torch.float32) for k, v in targets.items()},
    )


def _run(arch: str, balancer: str) -> None:
    torch.manual_seed(0)
    funnel = arch in FUNNEL_ARCHS
    model = FUNNEL_ARCHS[arch]() if funnel else ARCHS[arch]()
    data = _funnel if funnel else _data
    config = TrainConfig(epochs=2, batch_size=32, lr=3e-3, progress=False)
    too_few = {"krum": "Krum with n_byzantine=1, n_selected=2 needs at least 4 tasks",
               "trimmed_mean": "trimmed mean with trim=1 needs > 2 tasks, got 2"}  # fmt: skip
    if balancer in too_few and len(model.task_names) < 3:  # refused before training
        with pytest.raises(ValueError, match=too_few[balancer]):
            make(balancer, list(model.task_names))
        return
    b = make(balancer, list(model.task_names))
    if b.uses_gradients and not list(model.shared_parameters()):
        with pytest.raises(ValueError, match="no parameters shared by all tasks"):
            Trainer(model, b, config)
        return
    trainer = Trainer(model, b, config)
    history = trainer.fit(data(96, 0), data(48, 1))
    assert all(math.isfinite(v) for v in history[-1].values())
    assert history[-1]["val/loss"] < history[0]["val/loss"] * 1.5


@pytest.mark.parametrize("balancer", SUBSET)
@pytest.mark.parametrize("arch", [*ARCHS, *FUNNEL_ARCHS])
def test_architecture_with_balancer(arch, balancer):
    _run(arch, balancer)


@pytest.mark.slow
@pytest.mark.parametrize("balancer", sorted(set(BALANCERS) - set(SUBSET)))
@pytest.mark.parametrize("arch", [*ARCHS, *FUNNEL_ARCHS])
def test_every_architecture_with_every_balancer(arch, balancer):
    _run(arch, balancer)
