import math

import pytest
import torch

from polytask.balancers import (
    BALANCERS,
    BilevelBalancer,
    DynamicWeightAverage,
    EqualWeights,
    FixedWeights,
    GramianBalancer,
    JacobianBalancer,
    UncertaintyWeighting,
    make_balancer,
)

NAMES = ("a", "b", "c")


def _setup(balancer):
    balancer.setup(NAMES)
    return balancer


def test_equal_weights_sum_losses():
    b = _setup(EqualWeights())
    losses = torch.tensor([1.0, 2.0, 4.0])
    assert b.weights(losses).tolist() == [1.0, 1.0, 1.0]
    assert b.combine(losses).item() == pytest.approx(7.0)


def test_fixed_weights_by_name_and_default():
    b = _setup(FixedWeights({"a": 2.0, "c": 0.5}, default=1.0))
    losses = torch.tensor([1.0, 2.0, 4.0])
    assert b.combine(losses).item() == pytest.approx(2 * 1 + 1 * 2 + 0.5 * 4)


def test_fixed_weights_errors():
    with pytest.raises(ValueError, match="missing for tasks"):
        _setup(FixedWeights({"a": 1.0}))
    with pytest.raises(ValueError, match="unknown tasks"):
        _setup(FixedWeights({"a": 1.0, "b": 1, "c": 1, "zzz": 1}))
    with pytest.raises(ValueError, match=">= 0"):
        FixedWeights({"a": -1.0})


def test_uncertainty_weighting_formula_and_gradient():
    b = _setup(UncertaintyWeighting())
    with torch.no_grad():
        b.log_vars.copy_(torch.tensor([0.0, math.log(2.0), -1.0]))
    losses = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    total = b.combine(losses)
    expected = 1.0 + 0.0 + (2.0 / 2.0 + math.log(2.0)) + (3.0 * math.e - 1.0)
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    # d/ds [exp(-s) L + s] = 1 - exp(-s) L ; d/dL = exp(-s)
    assert b.log_vars.grad.tolist() == pytest.approx([0.0, 0.0, 1 - 3.0 * math.e], rel=1e-6)
    assert losses.grad.tolist() == pytest.approx([1.0, 0.5, math.e], rel=1e-6)


def test_uncertainty_minimiser_is_log_loss():
    b = _setup(UncertaintyWeighting())
    opt = torch.optim.SGD(b.parameters(), lr=0.1)
    losses = torch.tensor([0.5, 2.0, 8.0])
    for _ in range(2000):
        opt.zero_grad()
        b.combine(losses).backward()
        opt.step()
    assert b.log_vars.detach().tolist() == pytest.approx(torch.log(losses).tolist(), abs=1e-3)


def test_dwa_weights_follow_loss_ratios():
    b = _setup(DynamicWeightAverage(temperature=2.0))
    windows = [torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.5, 1.0, 2.0])]
    for mean in windows:
        # two steps per window averaging to `mean`
        assert b.combine(mean * 0.5).item() == pytest.approx(float((mean * 0.5).sum()))
        assert b.combine(mean * 1.5).item() == pytest.approx(float((mean * 1.5).sum()))
        b.epoch_end()
    w = b.weights(torch.zeros(3))
    ratios = [0.5, 1.0, 2.0]
    exps = [math.exp(r / 2.0) for r in ratios]
    assert w.tolist() == pytest.approx([3 * e / sum(exps) for e in exps], rel=1e-6)
    assert float(w.sum()) == pytest.approx(3.0)


def test_dwa_equal_weights_until_two_windows_and_state_round_trip():
    b = _setup(DynamicWeightAverage())
    assert b.weights(torch.ones(3)).tolist() == [1.0, 1.0, 1.0]
    b.combine(torch.tensor([1.0, 2.0, 3.0]))
    b.epoch_end()
    assert b.weights(torch.ones(3)).tolist() == [1.0, 1.0, 1.0]
    b.combine(torch.tensor([1.0, 1.0, 6.0]))
    b.epoch_end()
    restored = _setup(DynamicWeightAverage())
    restored.load_state_dict(b.state_dict())
    assert restored.weights(torch.ones(3)).tolist() == pytest.approx(
        b.weights(torch.ones(3)).tolist()
    )
    assert b.weights(torch.ones(3))[2] > b.weights(torch.ones(3))[0]


def test_balancers_check_task_count():
    b = _setup(EqualWeights())
    with pytest.raises(ValueError, match="expected 3 task losses"):
        b.combine(torch.ones(2))


def test_make_balancer_validates_names_and_params():
    assert isinstance(make_balancer("dwa", temperature=3), DynamicWeightAverage)
    with pytest.raises(ValueError, match=r"unknown balancer 'foo'.*allowed: .*dwa, ew, .*fixed"):
        make_balancer("foo")
    with pytest.raises(ValueError, match=r"temprature.*its parameters: temperature"):
        make_balancer("dwa", temprature=2)
    with pytest.raises(ValueError, match="temperature"):
        make_balancer("dwa", temperature="hot")
    with pytest.raises(ValueError, match="weights"):
        make_balancer("fixed")


def test_needs_follow_from_the_base_class_alone():
    """One discriminator: the base class; `needs` is derived from it, never declared."""
    for name, cls in BALANCERS.items():
        assert "needs" not in vars(cls), f"{name} declares needs; subclass the right base"
        balancer = make_balancer(name, **({"weights": {"a": 1.0}} if name == "fixed" else {}))
        expected = (
            {"gramian", "val_gradient"} if isinstance(balancer, BilevelBalancer)
            else {"gramian"} if isinstance(balancer, GramianBalancer)
            else {"jacobian"} if isinstance(balancer, JacobianBalancer)
            else {"losses"}
        )  # fmt: skip
        assert balancer.needs == expected, name
        assert balancer.uses_gradients == (expected != {"losses"}), name
