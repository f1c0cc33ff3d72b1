"""`Balancer.updates_state` is true exactly when a call changes the balancer's running state.

The flag tells callers (the training step, logging, a user's own loop) whether calling
`combine` / `coefficients` / `aggregate` more than once per optimizer step would corrupt the
method: it is checked here against what a call actually does, for every registered balancer.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from polytask.balancers import (
    BALANCERS,
    Balancer,
    GradientInfo,
    GramianBalancer,
    JacobianBalancer,
)
from tests.balancers.helpers import make

TASKS = ["a", "b", "c", "d"]  # four tasks: Krum and the trimmed mean need more than two
N = 24  # shared-parameter count of the random Jacobians


def snapshot(balancer: Balancer) -> dict[str, Tensor]:
    """Every tensor the balancer holds: its state_dict plus plain tensor attributes."""
    state = {k: v.detach().clone() for k, v in balancer.state_dict().items()}
    for module_name, module in balancer.named_modules():
        for key, value in vars(module).items():
            if isinstance(value, Tensor) and key not in getattr(module, "records", ()):
                state[f"{module_name}.{key}:attr"] = value.detach().clone()
    return state


def changed(before: dict[str, Tensor], after: dict[str, Tensor]) -> list[str]:
    """The entries that differ in shape, dtype or any value (exactly: no tolerance)."""
    keys = sorted(set(before) | set(after))
    return [
        k
        for k in keys
        if k not in before
        or k not in after
        or before[k].shape != after[k].shape
        or before[k].dtype != after[k].dtype
        or not torch.equal(before[k], after[k])
    ]


def inputs(seed: int) -> tuple[Tensor, GradientInfo]:
    """Positive losses (K,) and a GradientInfo with J, G = J Jᵀ, g_val and J g_val."""
    g = torch.Generator().manual_seed(seed)
    losses = torch.rand(len(TASKS), generator=g, dtype=torch.float64) + 0.5
    jac = torch.randn(len(TASKS), N, generator=g, dtype=torch.float64)
    # a small validation gradient keeps FORUM's multiplier ν > 0, so its α moves
    val = 0.01 * torch.randn(N, generator=g, dtype=torch.float64)
    info = GradientInfo(
        losses, gramian=jac @ jac.T, jacobian=jac, val_products=jac @ val, val_gradient=val
    )
    return losses, info


def call(balancer: Balancer, seed: int) -> None:
    """One call of the method a training step makes on this kind of balancer."""
    losses, info = inputs(seed)
    if isinstance(balancer, GramianBalancer):
        balancer.coefficients(info)
    elif isinstance(balancer, JacobianBalancer):
        balancer.aggregate(info)
    else:
        balancer.combine(losses.float().requires_grad_(True))


def state_change(name: str) -> list[str]:
    """What the second call changes. The first call does one-time initialisation (GradNorm's
    initial losses, MetaBalance's first norms); the second gets different inputs, because on
    the first call's inputs an EMA can sit at its fixed point (MetaBalance, FAMO) and hide."""
    torch.manual_seed(0)
    balancer = make(name, TASKS)
    call(balancer, seed=1)
    before = snapshot(balancer)
    call(balancer, seed=2)
    return changed(before, snapshot(balancer))


@pytest.mark.parametrize("name", sorted(BALANCERS))
def test_updates_state_flag_matches_what_a_call_changes(name: str) -> None:
    diff = state_change(name)
    flag = BALANCERS[name].updates_state
    if flag:
        assert diff, f"{name} says updates_state=True but a call changed none of its state"
    else:
        assert not diff, f"{name} changed {diff} on a call: set updates_state = True"


LOSS_METHODS = sorted(
    n for n, c in BALANCERS.items() if not issubclass(c, GramianBalancer | JacobianBalancer)
)


@pytest.mark.parametrize("name", LOSS_METHODS)
def test_weights_never_change_state(name: str) -> None:
    """`weights(losses)` (logged after every step) must not count as a call."""
    b = make(name, TASKS)
    call(b, seed=1)
    before = snapshot(b)
    b.weights(inputs(2)[0].float())
    assert not changed(before, snapshot(b))


@pytest.mark.parametrize("name", sorted(n for n, c in BALANCERS.items() if c.updates_state))
def test_stateful_balancers_say_what_changes_per_step(name: str) -> None:
    """Each flagged class's docstring says what changes on a call."""
    doc = BALANCERS[name].__doc__ or ""
    assert "Per step" in doc, f"{name}: say in the class docstring what changes per step"


def test_repeated_call_changes_stateful_results() -> None:
    """Why the flag matters: a second call on the same step's inputs gives another answer."""
    b = make("modo", TASKS)
    _, info = inputs(3)
    first = b.coefficients(info)
    assert not torch.equal(first, b.coefficients(info))


def test_learned_weights_are_not_running_state() -> None:
    """Uncertainty weighting's s only moves under the optimizer, never inside `combine`."""
    b = make("uncertainty", TASKS)
    losses, _ = inputs(5)
    before = b.log_vars.detach().clone()
    b.combine(losses.float()).backward()
    assert torch.equal(b.log_vars.detach(), before) and b.log_vars.grad is not None
    assert not type(b).updates_state


def test_rlw_reports_the_weights_it_drew_each_step():
    """Before: `BackwardResult.weights` and metrics.csv gave the expectation 1/K, not the
    weights applied."""
    from torch import nn

    from polytask.balancers import make_balancer
    from polytask.gradients import backward

    w = nn.Parameter(torch.zeros(3))
    balancer = make_balancer("rlw")
    balancer.setup(["a", "b", "c"])
    for seed in range(3):  # task k's gradient is e_k, so w.grad holds the weights applied
        w.grad = None
        torch.manual_seed(seed)
        result = backward(torch.stack([w[k] + 1.0 for k in range(3)]), [w], balancer)
        assert result.weights is not None and torch.allclose(result.weights, w.grad)
        torch.manual_seed(seed)
        assert torch.allclose(w.grad, torch.softmax(torch.randn(3), 0))  # the draw, by hand
    assert torch.equal(balancer.weights(torch.ones(3)), torch.full((3,), 1 / 3))


def test_an_own_loop_that_leaves_learnt_weights_out_of_the_optimizer_is_warned():
    import warnings

    from torch import nn

    from polytask.balancers import make_balancer
    from polytask.gradients import backward
    from polytask.gradients._backward import STILL_CALLS

    def run(with_balancer: bool) -> list[str]:
        torch.manual_seed(0)
        trunk, heads = nn.Linear(4, 8), nn.ModuleList([nn.Linear(8, 1), nn.Linear(8, 1)])
        balancer = make_balancer("uncertainty")
        balancer.setup(["a", "b"])
        params = [*trunk.parameters(), *heads.parameters()]
        optimizer = torch.optim.SGD(params + [*balancer.parameters()] * with_balancer, lr=0.01)
        x, y = torch.randn(16, 4), torch.randn(16, 2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(STILL_CALLS + 2):
                optimizer.zero_grad()
                z = trunk(x)
                losses = torch.stack([(h(z).squeeze(1) - y[:, k]).pow(2).mean()
                                      for k, h in enumerate(heads)])  # fmt: skip
                backward(losses, trunk.parameters(), balancer)
                optimizer.step()
        return [str(w.message) for w in caught]

    (left_out,) = run(with_balancer=False)
    assert "learnt weights have not moved in 10 calls" in left_out
    assert "balancer.parameters() to your optimizer" in left_out
    assert run(with_balancer=True) == []


def test_a_stateful_loss_weighting_with_combine_only_is_probed_on_a_copy() -> None:
    """docs/extending.md allows `combine` alone; logging its weights re-ran it on the live
    balancer, so an EMA moved twice a step (a plugin's, which the repo's tests never see)."""
    from polytask.balancers import Balancer

    class Ema(Balancer):
        """Per step: the EMA of each loss, and a count of calls."""

        updates_state = True

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("ema", torch.zeros(0))
            self.calls = 0

        def setup(self, task_names) -> None:
            super().setup(task_names)
            self.ema = torch.zeros(len(task_names))

        def combine(self, losses: Tensor) -> Tensor:
            self.calls += 1
            d = losses.detach()
            self.ema = torch.where(self.ema == 0, d, 0.5 * self.ema + 0.5 * d)
            return (losses / self.ema + 0.1 * torch.rand(())).sum()

    b = Ema()
    b.setup(["a", "b"])
    losses = torch.tensor([1.0, 4.0])
    b.combine(losses)
    before, rng = b.ema.clone(), torch.get_rng_state()
    w = b.weights(torch.tensor([2.0, 2.0]))
    assert b.calls == 1 and torch.equal(b.ema, before) and torch.equal(torch.get_rng_state(), rng)
    torch.testing.assert_close(w, 1 / (0.5 * before + 1.0))  # ∂/∂L of L / ema after the probe
