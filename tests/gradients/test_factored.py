"""Factored representation gradients (heads that start with a linear layer) against split leaves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polytask.gradients import backward, linear_task_features, record_segments, split_features
from tests.balancers.helpers import GRADIENT_METHODS, make

K = 4
TASKS = [f"t{i}" for i in range(K)]
BILEVEL_OR_STATEFUL = ("auto_lambda", "moml", "forum", "moco", "excess_mtl", "db_mtl")


class MixedHeads(nn.Module):
    """A trunk and heads of three shapes: one output, two outputs, and a small MLP."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.trunk = nn.Sequential(nn.Linear(5, 9), nn.Tanh(), nn.Linear(9, 7), nn.Tanh())
        self.heads = nn.ModuleList(
            [
                nn.Linear(7, 1),
                nn.Linear(7, 2),
                nn.Sequential(nn.Linear(7, 3), nn.Tanh(), nn.Linear(3, 1)),
                nn.Linear(7, 1),
            ]
        )

    def rest(self, i: int) -> nn.Module:
        head = self.heads[i]
        return head[1:] if isinstance(head, nn.Sequential) else nn.Identity()

    def first(self, i: int) -> nn.Linear:
        head = self.heads[i]
        return head[0] if isinstance(head, nn.Sequential) else head  # type: ignore[return-value]


def _step(model: MixedHeads, name: str, mode: str, factored: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(11, 5, generator=g)
    ys = [torch.randn(11, 2 if i == 1 else 1, generator=g) * (i + 1) for i in range(K)]
    model.zero_grad(set_to_none=True)
    segments = None
    if mode in ("gramian", "sketch"):
        z, segments = record_segments(model.trunk, x)
    else:
        z = model.trunk(x)
    if factored:
        task_z, maps = linear_task_features(z, [model.first(i) for i in range(K)])
        outputs = [model.rest(i)(u) for i, u in enumerate(task_z)]
    else:
        task_z, maps = split_features(z, K), None
        outputs = [head(u) for head, u in zip(model.heads, task_z, strict=True)]
    losses = torch.stack([((o - y) ** 2).mean() for o, y in zip(outputs, ys, strict=True)])
    torch.manual_seed(7)
    backward(
        losses,
        model.trunk.parameters(),
        make(name, TASKS),
        mode=mode,  # type: ignore[arg-type]
        features=z,
        task_features=task_z,
        task_maps=maps,
        task_params=model.heads.parameters(),
        segments=segments,
    )
    return [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]


def _assert_same(fast: list[torch.Tensor], slow: list[torch.Tensor]) -> None:
    scale = max(float(s.abs().max()) for s in slow)
    for f, s in zip(fast, slow, strict=True):
        torch.testing.assert_close(f, s, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("name", [n for n in GRADIENT_METHODS if n not in BILEVEL_OR_STATEFUL])
def test_factored_representation_equals_split_leaves(name):
    model = MixedHeads()
    _assert_same(
        _step(model, name, "representation", True), _step(model, name, "representation", False)
    )


@pytest.mark.parametrize("mode", ["jacobian", "gramian", "last_layer", "sketch"])
@pytest.mark.parametrize("name", ["upgrad", "mgda", "pcgrad"])
def test_factored_gradients_feed_the_exact_modes(name, mode):
    model = MixedHeads()
    _assert_same(_step(model, name, mode, True), _step(model, name, mode, False))


def test_factored_path_holds_the_factors_not_k_copies_of_dz():
    model = MixedHeads()
    x = torch.randn(11, 5)
    z = model.trunk(x)
    task_z, maps = linear_task_features(z, [model.first(i) for i in range(K)])
    losses = torch.stack([model.rest(i)(u).pow(2).mean() for i, u in enumerate(task_z)])
    result = backward(
        losses, model.trunk.parameters(), make("upgrad", TASKS), mode="representation",
        features=z, task_features=task_z, task_maps=maps,
    )  # fmt: skip
    width = 1 + 2 + 3 + 1
    assert result.held_floats == 11 * width + width * 7
    assert result.held_floats < K * z.numel()


@pytest.mark.parametrize(
    ("maps", "message"),
    [
        (lambda m: [m.first(i).weight for i in range(K - 1)], "one map and one task feature"),
        (lambda m: [m.first(i).weight.T for i in range(K)], "does not take z"),
    ],
)
def test_bad_task_maps_are_clear_errors(maps, message):
    model = MixedHeads()
    z = model.trunk(torch.randn(3, 5))
    task_z, _ = linear_task_features(z, [model.first(i) for i in range(K)])
    losses = torch.stack([u.pow(2).mean() for u in task_z])
    with pytest.raises(ValueError, match=message):
        backward(
            losses, model.trunk.parameters(), make("upgrad", TASKS), mode="representation",
            features=z, task_features=task_z, task_maps=maps(model),
        )  # fmt: skip
