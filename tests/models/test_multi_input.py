"""Multi-input MTL: per-task encoders of per-task columns in front of one shared trunk."""

import pytest
import torch

from polytask import Task, TrainConfig, make_balancer
from polytask.models import MultiInput
from tests.models.helpers import fit_and_check, trunk_data

TASKS = [Task("a", "regression"), Task("b", "binary")]
INPUTS = {"a": [0, 1, 2], "b": [2, 3, 4, 5]}


def test_a_task_sees_only_its_own_columns():
    torch.manual_seed(0)
    model = MultiInput(6, TASKS, INPUTS, encoder_dim=4, hidden=(8,))
    x = torch.randn(5, 6)
    changed = x.clone()
    changed[:, [3, 4, 5]] += 10.0  # not read by task a
    torch.testing.assert_close(model(x)["a"], model(changed)["a"])
    assert not torch.allclose(model(x)["b"], model(changed)["b"])


def test_trunk_is_shared_and_encoders_are_each_tasks_own():
    model = MultiInput(6, TASKS, INPUTS, encoder_dim=4, hidden=(8,), tower=(3,))
    out = model(torch.randn(5, 6))
    for t in TASKS:
        own = list(model.task_parameters(t.name))
        for other in TASKS:
            grads = torch.autograd.grad(out[other.name].sum(), own, retain_graph=True,
                                        allow_unused=True)  # fmt: skip
            reached = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
            assert reached == (other.name == t.name)
    shared = {id(p) for p in model.shared_parameters()}
    own = {id(p) for t in TASKS for p in model.task_parameters(t.name)}
    assert not shared & own and shared | own == {id(p) for p in model.parameters()}


def test_stacked_trunk_equals_one_trunk_call_per_task():
    torch.manual_seed(0)
    model = MultiInput(6, TASKS, INPUTS, encoder_dim=4, hidden=(8,))
    x = torch.randn(5, 6)
    for t in TASKS:
        z = model.trunk(model.encoders[t.name](x[:, INPUTS[t.name]]))
        torch.testing.assert_close(model(x)[t.name], t.shape_output(model.heads[t.name](z)))


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"c": [0]}, "unknown tasks"),
        ({"a": [6]}, r"column indices in \[0, 6\)"),
        ({"a": []}, r"inputs\['a'\] must list"),
    ],
)
def test_bad_inputs_are_clear_errors(inputs, message):
    with pytest.raises(ValueError, match=message):
        MultiInput(6, TASKS, inputs)


@pytest.mark.parametrize("balancer", ["ew", "upgrad"])
def test_multi_input_trains(balancer):
    tasks = [Task("a", "regression"), Task("b", "regression")]
    config = TrainConfig(epochs=3, batch_size=64, lr=5e-3, progress=False)
    train, val = trunk_data(600, 0, ["a", "b"]), trunk_data(200, 1, ["a", "b"])
    # the encoders are each task's own trainable layers in front of the trunk: with the trunk
    # frozen they learn much of what it would, so the margin over them is smaller
    fit_and_check(
        lambda: MultiInput(20, tasks, {"a": range(12), "b": range(8, 20)}, hidden=(32,)),
        make_balancer(balancer), train, val, config, gain=1.15,
    )  # fmt: skip


def test_input_columns_by_feature_name():
    from polytask.models import input_columns

    features = ["age", "usage", "region=north", "region=south", "plan=a"]
    got = input_columns({"t": ["region", "age"], "u": ["plan"]}, features)
    assert got == {"t": [2, 3, 0], "u": [4]}
    with pytest.raises(ValueError, match=r"feature 'regio' is not an input column"):
        input_columns({"t": ["regio"]}, features)
