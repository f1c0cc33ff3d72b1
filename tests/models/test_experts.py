"""Mixture-of-experts architectures: gates, expert usage, the parameter partition, training."""

import pytest
import torch

from polytask import Task, TrainConfig, Trainer, make_balancer
from polytask.models import MLP, PLE, MMoE, MultiTaskModel, hard_sharing_mlp
from tests.models.helpers import fit_and_check, trunk_data

TASKS = [Task("a", "regression"), Task("b", "binary"), Task("c", "multiclass", num_classes=3)]
MODELS = {
    "mmoe": lambda: MMoE(5, TASKS, num_experts=3, expert_hidden=(8,), tower=(4,)),
    "cgc": lambda: PLE(5, TASKS, levels=1, shared_experts=2, task_experts=2, expert_hidden=(8,)),
    "ple": lambda: PLE(5, TASKS, levels=3, expert_hidden=(8, 6), tower=(4,)),
    "towers": lambda: hard_sharing_mlp(5, TASKS, hidden=(8,), tower=(6, 4)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_shared_and_task_parameters_partition_the_model(name):
    model = MODELS[name]()
    shared = {id(p) for p in model.shared_parameters()}
    own = [{id(p) for p in model.task_parameters(t.name)} for t in TASKS]
    assert shared | set().union(*own) == {id(p) for p in model.parameters()}
    assert all(not (shared & s) for s in own)
    assert all(not (a & b) for i, a in enumerate(own) for b in own[i + 1 :])


@pytest.mark.parametrize("name", list(MODELS))
def test_a_tasks_own_parameters_reach_only_its_own_output(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    out = model(torch.randn(9, 5))
    for t in TASKS:
        own = list(model.task_parameters(t.name))
        for other in TASKS:
            grads = torch.autograd.grad(
                out[other.name].sum(), own, retain_graph=True, allow_unused=True
            )
            reached = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
            assert reached == (other.name == t.name), (t.name, other.name)
        shared = list(model.shared_parameters())
        grads = torch.autograd.grad(out[t.name].sum(), shared, retain_graph=True, allow_unused=True)
        assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)


@pytest.mark.parametrize("name", ["mmoe", "cgc", "ple"])
def test_gates_are_distributions_and_usage_is_reported(name):
    model = MODELS[name]()
    model(torch.randn(11, 5))
    usage = model.expert_usage()
    assert set(usage) == {"a", "b", "c"}
    for weights in usage.values():
        assert (weights >= 0).all()
        torch.testing.assert_close(weights.sum(), torch.tensor(1.0))
    logged = model.diagnostics()
    assert logged[f"experts/a/{len(usage['a']) - 1}"] == pytest.approx(float(usage["a"][-1]))


def test_mmoe_with_one_expert_is_hard_sharing_with_towers():
    torch.manual_seed(0)
    mmoe = MMoE(5, TASKS, num_experts=1, expert_hidden=(8, 6), tower=(4,))
    hard = MultiTaskModel(MLP(5, (8, 6)), TASKS, tower=(4,))
    hard.trunk.load_state_dict(mmoe.experts[0].state_dict())
    hard.heads.load_state_dict(mmoe.towers.state_dict())
    x = torch.randn(7, 5)
    for name, out in mmoe(x).items():
        torch.testing.assert_close(out, hard(x)[name])


def test_invalid_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="at least one expert"):
        MMoE(5, TASKS, num_experts=0)
    with pytest.raises(ValueError, match="at least one level"):
        PLE(5, TASKS, levels=0)
    with pytest.raises(ValueError, match="tower must list positive"):
        hard_sharing_mlp(5, TASKS, tower=(0,))
    with pytest.raises(KeyError, match="unknown task 'z'"):
        list(MMoE(5, TASKS).task_parameters("z"))


@pytest.mark.parametrize("arch", ["mmoe", "ple"])
@pytest.mark.parametrize("balancer", ["ew", "upgrad"])
def test_expert_models_train_with_loss_and_gradient_balancers(arch, balancer):
    torch.manual_seed(0)
    tasks = [Task("a", "regression"), Task("b", "regression")]
    build = {
        "mmoe": lambda: MMoE(20, tasks, num_experts=3, expert_hidden=(32,)),
        "ple": lambda: PLE(20, tasks, levels=2, expert_hidden=(32,)),
    }[arch]
    config = TrainConfig(epochs=6, batch_size=64, lr=3e-3, progress=False)
    train, val = trunk_data(400, 0, ["a", "b"]), trunk_data(200, 1, ["a", "b"])
    trainer, history = fit_and_check(build, make_balancer(balancer), train, val, config)
    assert trainer.plan.mode == ("losses" if balancer == "ew" else "jacobian")
    assert "experts/a/0" in history[-1]


def test_modes_that_need_one_shared_representation_are_refused():
    config = TrainConfig(gradient_mode="representation", progress=False)
    with pytest.raises(ValueError, match=r"no single shared representation.*gradient_mode"):
        Trainer(MMoE(20, TASKS[:2]), make_balancer("upgrad"), config)
