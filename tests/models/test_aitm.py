"""AITM: attention carries each funnel stage into the next; the calibrator keeps later stages
below earlier ones; parameters follow reach; the penalty reaches the step's gradients."""

import copy

import numpy as np
import pytest
import torch

from polytask import Task, TaskData, TrainConfig, Trainer, make_balancer
from polytask.data._synthetic import make_funnel
from polytask.data._tensors import Batch
from polytask.gradients import backward
from polytask.models import AITM
from polytask.train._config import TrainConfig as _TC
from polytask.train._step import plan_gradients, task_losses, train_step

FUNNEL = [Task("click", "binary"), Task("conversion", "binary"), Task("repeat", "binary")]


def test_calibrator_golden_value():
    model = AITM(4, FUNNEL, hidden=(4,), tower=(4,), calibration=0.5)
    model._probs = [torch.tensor([0.5, 0.2]), torch.tensor([0.7, 0.1]), torch.tensor([0.1, 0.4])]
    # row 0: max(0.7-0.5,0) + max(0.1-0.7,0) = 0.2; row 1: 0 + max(0.4-0.1,0) = 0.3
    torch.testing.assert_close(model.penalty(), torch.tensor(0.5 * (0.2 + 0.3) / 2))
    assert AITM(4, FUNNEL, hidden=(4,), tower=(4,), calibration=0).penalty() is None


def test_penalty_matches_the_forward_outputs_and_attention_is_a_distribution():
    torch.manual_seed(0)
    model = AITM(5, FUNNEL, hidden=(8,), tower=(6,))
    out = model(torch.randn(30, 5))
    p = [torch.sigmoid(out[t.name]) for t in FUNNEL]
    expected = 0.6 * (torch.relu(p[1] - p[0]) + torch.relu(p[2] - p[1])).mean()
    torch.testing.assert_close(model.penalty(), expected)
    carried = model.diagnostics()
    assert set(carried) == {"aitm/conversion/transfer", "aitm/repeat/transfer"}
    assert all(0 < w < 1 for w in carried.values())
    transfer = model.transfers["conversion"]
    _, weights = transfer(torch.randn(7, 6), torch.randn(7, 6))
    torch.testing.assert_close(weights.sum(1), torch.ones(7))


def test_parameters_follow_reach():
    model = AITM(5, FUNNEL[:2], hidden=(8,), tower=(4,))
    out = model(torch.randn(6, 5))
    own = list(model.task_parameters("conversion"))
    grads = torch.autograd.grad(out["click"].sum(), own, allow_unused=True)
    assert all(g is None for g in grads)
    click_own = {id(p) for p in model.task_parameters("click")}
    assert click_own == {id(p) for p in model.heads["click"].parameters()}
    shared = {id(p) for p in model.shared_parameters()}
    assert shared.isdisjoint(click_own | {id(p) for p in own})
    assert shared | click_own | {id(p) for p in own} == {id(p) for p in model.parameters()}


def _batch(n: int, seed: int) -> Batch:
    x, click, conv = make_funnel(n, seed=seed)
    targets = {"click": torch.tensor(click, dtype=torch.float32),
               "conversion": torch.tensor(conv, dtype=torch.float32)}  # fmt: skip
    return Batch(torch.tensor(x, dtype=torch.float32), targets)


@pytest.mark.parametrize("method", ["ew", "upgrad"])
def test_step_gradient_is_the_balanced_one_plus_the_calibrator(method):
    torch.manual_seed(0)
    model = AITM(8, FUNNEL[:2], hidden=(8,), tower=(6,), calibration=2.0)
    with torch.no_grad():  # conversion starts out above click on some rows: the calibrator acts
        model.heads["conversion"].bias.fill_(0.5)
    reference = copy.deepcopy(model)
    batch, tasks = _batch(64, 0), FUNNEL[:2]
    balancer = make_balancer(method)
    balancer.setup(model.task_names)
    plan = plan_gradients(model, balancer, _TC(batch_size=64))
    train_step(model, balancer, torch.optim.SGD(model.parameters(), lr=0.0), batch, tasks, plan)

    ref_balancer = make_balancer(method)
    ref_balancer.setup(reference.task_names)
    losses = task_losses(reference(batch.x), batch, tasks)
    penalty = reference.penalty()
    assert penalty is not None and penalty.item() > 0
    if method == "ew":
        (ref_balancer.combine(losses) + penalty).backward()
    else:
        penalty.backward(retain_graph=True)
        own = [p for n in reference.task_names for p in reference.task_parameters(n)]
        backward(losses, list(reference.shared_parameters()), ref_balancer, task_params=own)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)


def _data(n: int, seed: int) -> TaskData:
    b = _batch(n, seed)
    return TaskData(b.x, b.targets)


def _violations(model: AITM, data: TaskData) -> float:
    model.eval()
    with torch.no_grad():
        out = model(data.x)
    return float((torch.sigmoid(out["conversion"]) > torch.sigmoid(out["click"])).float().mean())


def test_aitm_learns_the_funnel_and_the_calibrator_orders_it():
    results = {}
    for calibration in (0.0, 5.0):
        torch.manual_seed(0)
        model = AITM(8, FUNNEL[:2], hidden=(32,), tower=(16,), calibration=calibration)
        config = TrainConfig(epochs=15, batch_size=128, lr=3e-3, progress=False)
        trainer = Trainer(model, make_balancer("ew"), config)
        trainer.fit(_data(3000, 0), _data(1000, 1))
        test = _data(2000, 2)
        metrics = trainer.evaluate(test)
        results[calibration] = (metrics, _violations(model, test))
    for metrics, _ in results.values():
        assert metrics["click"]["auc"] > 0.8 and metrics["conversion"]["auc"] > 0.8
        assert np.isfinite(metrics["conversion"]["loss"])
    assert results[5.0][1] < results[0.0][1]


def test_aitm_refuses_non_binary_stages_and_builds_from_config():
    from polytask.app import ModelConfig

    with pytest.raises(ValueError, match="binary tasks"):
        AITM(5, [Task("click", "binary"), Task("amount", "regression")])
    spec = ModelConfig(architecture="aitm", hidden=(8,), tower=(4,), calibration=0.2)
    model = spec.build(5, FUNNEL)
    assert isinstance(model, AITM) and model.calibration == 0.2 and len(model.transfers) == 2


def test_a_model_after_a_training_forward_can_be_copied_and_pickled():
    """The penalty keeps the last forward's probabilities with their graph; a deepcopy (the
    best-model pattern of a user's own loop) crashed on them."""
    import pickle

    model = AITM(4, FUNNEL, hidden=(8,), tower=(4,), calibration=0.5)
    x = torch.randn(5, 4)
    model(x)
    twin = copy.deepcopy(model)
    again = pickle.loads(pickle.dumps(model))
    for other in (twin, again):
        assert other.penalty() is None  # no forward of its own yet
        torch.testing.assert_close(other(x), model(x))
        assert other.penalty() is not None
    assert model.penalty() is not None and model.penalty().requires_grad
