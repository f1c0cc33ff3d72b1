"""Auxiliary-aware gradients (Du et al. 2018): golden coefficients on a hand-made Gramian, the
projection's guarantee against the main direction, and every kind of balancer wrapped."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from polytask.balancers import BALANCERS, GradientInfo, make_balancer
from polytask.balancers._base import BilevelBalancer, GramianBalancer, JacobianBalancer
from polytask.gradients import (
    AuxiliaryAwareBilevel,
    AuxiliaryAwareGramian,
    AuxiliaryAwareJacobian,
    auxiliary_aware,
    backward,
)

NAMES = ["m1", "m2", "aux"]
MAIN = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # g_main = (1, 1) under EW
CONFLICT = torch.tensor([-1.0, 0.5], dtype=torch.float64)  # g_aux · g_main = −0.5
AGREE = torch.tensor([1.0, 0.5], dtype=torch.float64)  # g_aux · g_main = 1.5


def _wrapped(rule: str, name: str = "ew", **params: float):
    balancer = auxiliary_aware(make_balancer(name, **params), ["aux"], rule)
    balancer.setup(NAMES)
    return balancer


def _coefficients(rule: str, aux: torch.Tensor, name: str = "ew") -> torch.Tensor:
    jac = torch.cat([MAIN, aux[None]])
    info = GradientInfo(torch.ones(3, dtype=torch.float64), gramian=jac @ jac.T)
    return _wrapped(rule, name).coefficients(info)


@pytest.mark.parametrize(
    ("rule", "aux", "expected"),
    [
        # conflict: cos < 0 gates the auxiliary gradient out; the projection removes
        # (−0.5 / 2) g_main from it, i.e. adds 0.25 to each main coefficient
        ("gated", CONFLICT, [1.0, 1.0, 0.0]),
        ("projected", CONFLICT, [1.25, 1.25, 1.0]),
        # agreement: scaled by cos = 1.5 / (√1.25 · √2); kept whole by the projection
        ("gated", AGREE, [1.0, 1.0, 1.5 / math.sqrt(1.25 * 2)]),
        ("projected", AGREE, [1.0, 1.0, 1.0]),
    ],
)
def test_golden_coefficients_on_a_hand_made_gramian(rule, aux, expected):
    c = _coefficients(rule, aux)
    torch.testing.assert_close(c, torch.tensor(expected, dtype=torch.float64))


def test_the_projected_auxiliary_gradient_is_orthogonal_to_the_main_direction():
    c = _coefficients("projected", CONFLICT)
    update = c @ torch.cat([MAIN, CONFLICT[None]])
    g_main = MAIN.sum(0)
    projected = update - g_main  # what the auxiliary task added
    assert float(projected @ g_main) == pytest.approx(0.0, abs=1e-12)
    assert float(update @ g_main) == pytest.approx(float(g_main @ g_main))  # nothing taken away


def test_the_main_tasks_are_combined_by_the_wrapped_balancer_alone():
    """MGDA on the main rows: its min-norm point of g1, g2 is (0.5, 0.5), whatever the
    auxiliary gradient; the auxiliary row never enters its solve."""
    for aux in (CONFLICT, AGREE, torch.tensor([50.0, -3.0], dtype=torch.float64)):
        c = _coefficients("projected", aux, name="mgda")
        alone = make_balancer("mgda")
        alone.setup(["m1", "m2"])
        main = alone.coefficients(GradientInfo(torch.ones(2, dtype=torch.float64), MAIN @ MAIN.T))
        g_main = main @ MAIN
        removed = min(0.0, float(aux @ g_main)) / float(g_main @ g_main)
        torch.testing.assert_close(c[:2], main * (1 - removed))


def test_a_main_direction_of_zero_keeps_every_auxiliary_gradient():
    """A batch labelling no main task: nothing to conflict with."""
    jac = torch.cat([torch.zeros(2, 2, dtype=torch.float64), CONFLICT[None]])
    info = GradientInfo(torch.zeros(3, dtype=torch.float64), gramian=jac @ jac.T)
    for rule in ("gated", "projected"):
        assert _wrapped(rule).coefficients(info)[2] == 1.0


SOME = ["ew", "mgda", "upgrad", "pcgrad", "cagrad", "graddrop", "db_mtl", "dwa"]


@given(
    name=st.sampled_from(SOME),
    k=st.integers(2, 4),
    n=st.integers(2, 6),
    seed=st.integers(0, 10_000),
)
def test_projected_never_points_against_the_main_direction(name, k, n, seed):
    """Whatever the balancer and gradients: update · g_main ≥ 0 under "projected", with g_main
    the wrapped balancer's own combination of the main tasks."""
    g = torch.Generator().manual_seed(seed)
    jac = torch.randn(k + 1, n, generator=g, dtype=torch.float64)
    names = [f"t{i}" for i in range(k)] + ["aux"]
    losses = torch.rand(k + 1, generator=g, dtype=torch.float64) + 0.1
    wrapped = auxiliary_aware(make_balancer(name), ["aux"], "projected")
    wrapped.setup(names)
    inner = make_balancer(name)
    inner.setup(names[:k])
    with torch.random.fork_rng():  # graddrop draws: the same for the wrapped and the inner one
        torch.manual_seed(seed)
        if isinstance(wrapped, JacobianBalancer):
            update = wrapped.aggregate(GradientInfo(losses, jacobian=jac))
        else:
            c = wrapped.coefficients(GradientInfo(losses, gramian=jac @ jac.T))
            update = c @ jac
        torch.manual_seed(seed)
        main_info = GradientInfo(losses[:k], gramian=jac[:k] @ jac[:k].T, jacobian=jac[:k])
        if isinstance(inner, JacobianBalancer):
            g_main = inner.aggregate(main_info)
        elif isinstance(inner, GramianBalancer):
            g_main = inner.coefficients(main_info) @ jac[:k]
        else:
            g_main = inner.weights(losses[:k]).double() @ jac[:k]
    assert float(update @ g_main) >= -1e-9 * (1 + float(g_main @ g_main))


@pytest.mark.parametrize(
    "name", sorted(n for n in BALANCERS if not getattr(BALANCERS[n], "steps_on_validation", False))
)  # a balancer whose update may be the validation gradient alone is refused (test_auxiliary_tasks)
def test_every_balancer_can_be_wrapped_and_steps(name):
    """The wrapper's class matches what the balancer needs, so the gradient modes serve it;
    one exact step fills every shared gradient."""
    main = ["m1", "m2", "m3", "m4"]  # enough for krum and trimmed_mean
    weights = {t: float(i + 1) for i, t in enumerate(main)}
    params: dict[str, object] = {"fixed": {"weights": weights}}.get(name, {})
    balancer = make_balancer(name, **params)
    wrapped = auxiliary_aware(balancer, ["aux"], "gated")
    expected = (
        AuxiliaryAwareJacobian
        if isinstance(balancer, JacobianBalancer)
        else AuxiliaryAwareBilevel
        if isinstance(balancer, BilevelBalancer)
        else AuxiliaryAwareGramian
    )
    assert isinstance(wrapped, expected) and wrapped.inner is balancer
    assert wrapped.preferred_mode == balancer.preferred_mode
    wrapped.setup([*main, "aux"])
    assert balancer.task_names == tuple(main)
    torch.manual_seed(0)
    x, w = torch.randn(16, 3), torch.nn.Parameter(torch.randn(3, 5))
    z = x @ w
    losses = ((z - torch.arange(5.0)) ** 2).mean(0)
    val = (z.sum(1) - 1).pow(2).mean() if isinstance(balancer, BilevelBalancer) else None
    result = backward(losses, [w], wrapped, mode="jacobian", val_loss=val)
    assert w.grad is not None and bool(torch.isfinite(w.grad).all())
    assert result.weights is not None and result.weights.shape == (5,)


def test_the_wrapped_balancers_window_closes_with_the_wrappers():
    """DWA's weights come from its loss ratios over windows: the wrapper passes epoch_end on."""
    wrapped = _wrapped("projected", "dwa")
    reference = make_balancer("dwa")
    reference.setup(["m1", "m2"])
    jac = torch.cat([MAIN, CONFLICT[None]])
    for losses in ([1.0, 1.0, 1.0], [0.5, 1.0, 1.0], [0.25, 1.0, 1.0]):
        loss = torch.tensor(losses, dtype=torch.float64)
        c = wrapped.coefficients(GradientInfo(loss, gramian=jac @ jac.T))
        expected = reference.weights(loss[:2].float())
        reference.combine(loss[:2].float())
        g_main = expected.double() @ MAIN
        removed = min(0.0, float(CONFLICT @ g_main)) / float(g_main @ g_main)
        torch.testing.assert_close(c[:2], expected.double() * (1 - removed))
        wrapped.epoch_end()
        reference.epoch_end()


def test_plain_or_no_auxiliary_task_leaves_the_balancer_as_it_is():
    balancer = make_balancer("upgrad")
    assert auxiliary_aware(balancer, ["aux"], "plain") is balancer
    assert auxiliary_aware(balancer, [], "projected") is balancer
    with pytest.raises(ValueError, match="one of plain, gated, projected"):
        auxiliary_aware(balancer, ["aux"], "gate")
    with pytest.raises(ValueError, match="every task is auxiliary"):
        auxiliary_aware(make_balancer("ew"), ["a", "b"], "gated").setup(["a", "b"])


def test_a_loss_weighting_balancer_keeps_learning_its_weights_when_wrapped():
    """Uncertainty weighting's log-variances get the gradient a backward of its combine gives."""
    x = torch.linspace(-1, 1, 8)[:, None]
    w = torch.nn.Parameter(torch.tensor([[0.5]]))
    losses = torch.stack([((x @ w) ** 2).mean(), ((x @ w - 1) ** 2).mean(), (x @ w).abs().mean()])
    wrapped = auxiliary_aware(make_balancer("uncertainty"), ["aux"], "projected")
    wrapped.setup(NAMES)
    backward(losses, [w], wrapped, mode="jacobian")
    reference = make_balancer("uncertainty")
    reference.setup(["m1", "m2"])
    reference.combine(losses[:2].detach()).backward()
    for mine, theirs in zip(wrapped.inner.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad)


@pytest.mark.parametrize("mode", ["jacobian", "gramian", "last_layer", "sketch"])  # not on rows
@pytest.mark.parametrize("name", ["upgrad", "uncertainty"])
def test_every_gradient_mode_trains_with_the_wrapper_and_self_supervised_tasks(mode, name):
    """A Gramian method and a loss weighting (which then takes per-task gradients), wrapped,
    with a reconstruction and a contrastive task, in each mode that serves them."""
    from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp

    torch.manual_seed(0)
    x = torch.randn(48, 6)
    y = torch.where(torch.arange(48) < 12, x[:, 0], torch.tensor(float("nan")))
    tasks = [
        Task("y", "regression"),
        Task("rec", "reconstruction", kind_params={"features": 6}),
        Task("con", "contrastive", kind_params={"projection": 4}),
    ]
    model = hard_sharing_mlp(6, tasks, hidden=(8, 8), seed=0)
    config = TrainConfig(epochs=2, batch_size=16, progress=False, gradient_mode=mode,
                         auxiliary_gradients="projected")  # fmt: skip
    history = Trainer(model, make_balancer(name), config).fit(TaskData(x, {"y": y}))
    assert math.isfinite(history[-1]["auxiliary/con/loss"])
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
