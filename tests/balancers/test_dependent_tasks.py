"""Linearly dependent task gradients (duplicate or combined tasks, more tasks than the rank)
give a singular Gramian, which rounding can leave slightly indefinite: every gradient method
still returns a finite update through the engine, never a solver error."""

import pytest
import torch

from polytask.gradients import backward
from tests.balancers.helpers import GRADIENT_METHODS, make

NEEDS_VALIDATION = {"auto_lambda", "moml", "forum"}


@pytest.mark.parametrize("name", sorted(set(GRADIENT_METHODS) - NEEDS_VALIDATION))
def test_dependent_task_gradients_give_a_finite_update(name):
    torch.manual_seed(0)
    trunk = torch.nn.Linear(6, 3)
    x, y = torch.randn(32, 6), torch.randn(32, 2)
    z = trunk(x).sum(1)
    a, b = ((z - y[:, 0]) ** 2).mean(), ((z - y[:, 1]) ** 2).mean()
    # c = a + b and d = a − b/2, and a duplicate of a: rank 2 for 5 tasks
    losses = torch.stack([a, b, a + b, a - 0.5 * b, a])
    tasks = [f"t{i}" for i in range(5)]
    backward(losses, trunk.parameters(), make(name, tasks))
    for p in trunk.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
