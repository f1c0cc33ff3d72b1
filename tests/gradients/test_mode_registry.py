"""A new gradient mode from this file alone: one `GradientMode` subclass and one registry entry.

The toy mode balances on the batch-mean of each task's gradient with respect to the shared
representation (K × d floats instead of K × B × d), then applies the combination through one
ordinary trunk backward. With a batch of one row it is the representation mode exactly.
"""

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import Tensor

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer
from polytask.balancers import Balancer, GradientInfo
from polytask.data._synthetic import make_related_regression
from polytask.gradients import (
    MODES,
    BackwardResult,
    GradientMode,
    GradientStep,
    apply_cotangent,
    backward,
    head_gradients,
    make_mode,
    split_features,
)
from polytask.models import MultiTaskNet


class MeanRepresentationMode(GradientMode):
    """c from the Gramian of the batch-mean representation gradients."""

    name = "mean_representation"
    exact = False

    def held_floats(
        self, model: MultiTaskNet, balancer: Balancer, shared: Sequence[Tensor], batch_size: int
    ) -> int:
        return len(model.task_names) * model.representation_dim

    def backward(self, step: GradientStep) -> BackwardResult:
        rec = step.recorded
        z = rec.features
        assert z is not None
        dz, _ = head_gradients(step.losses, z, rec.task_features, rec.task_maps, step.heads)
        assert dz is not None
        means = dz.mean(1)
        gramian = (means @ means.T).double()
        c = step.balancer.coefficients(GradientInfo(step.detached, gramian=gramian))
        apply_cotangent(z, step.shared, (c.to(dz.dtype)[:, None, None] * dz).sum(0))
        return BackwardResult(c.detach().float(), self.name, means.numel())


@pytest.fixture
def toy_mode(monkeypatch):
    monkeypatch.setitem(MODES, "mean_representation", MeanRepresentationMode)


TASKS = [Task("a", "regression"), Task("b", "regression")]


def _data(n: int, seed: int) -> TaskData:
    x, ya, yb = make_related_regression(n=n, seed=seed)
    as_t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return TaskData(as_t(x), {"a": as_t(ya), "b": as_t(yb)})


def test_the_registered_mode_trains_through_the_trainer(toy_mode):
    torch.manual_seed(0)
    model = hard_sharing_mlp(20, TASKS, hidden=(32,))
    start = [p.detach().clone() for p in model.shared_parameters()]
    config = TrainConfig(
        epochs=8, batch_size=64, lr=3e-3, progress=False, gradient_mode="mean_representation"
    )
    trainer = Trainer(model, make_balancer("upgrad"), config)
    assert trainer.plan.mode == "mean_representation"
    assert trainer.plan.held_floats == 2 * 32
    history = trainer.fit(_data(400, 0), _data(200, 1))
    assert history[-1]["val/loss"] < 0.5 * history[0]["val/loss"]
    moved = [
        float((p.detach() - s).abs().max())
        for p, s in zip(model.shared_parameters(), start, strict=True)
    ]
    assert min(moved) > 1e-3  # the trunk learned, not only the heads


def test_an_unregistered_mode_is_refused_with_the_registered_ones(toy_mode):
    with pytest.raises(
        ValueError,
        match=r"unknown gradient mode 'mean_representaton'.*did you mean 'mean_representation'",
    ):
        TrainConfig(gradient_mode="mean_representaton")
    assert isinstance(make_mode("mean_representation"), MeanRepresentationMode)


def test_on_one_row_it_is_the_representation_mode(toy_mode):
    torch.manual_seed(1)
    model = hard_sharing_mlp(6, TASKS, hidden=(8,))
    x = torch.randn(1, 6)
    y = torch.randn(1, 2)
    grads = {}
    for mode in ("mean_representation", "representation"):
        model.zero_grad()
        z = model.representation(x)
        task_z = split_features(z, 2)
        out = model.heads_forward(task_z)
        losses = torch.stack([(out[t.name] - y[:, i]).pow(2).mean() for i, t in enumerate(TASKS)])
        balancer = make_balancer("mgda")
        balancer.setup(["a", "b"])
        result = backward(
            losses, list(model.shared_parameters()), balancer, mode=MODES[mode](),
            features=z, task_features=task_z,
        )  # fmt: skip
        grads[mode] = ([p.grad.clone() for p in model.shared_parameters()], result.weights)
    for got, want in zip(grads["mean_representation"][0], grads["representation"][0], strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(grads["mean_representation"][1], grads["representation"][1])
