"""Per-task dropout: a task's own rate acts on its tower only, and is off in evaluation."""

import pytest
import torch

from polytask import Task
from polytask.models import PLE, CrossStitch, MMoE, hard_sharing_mlp
from polytask.models._esmm import ESMM

TASKS = [Task("a", "regression"), Task("b", "regression")]
BUILDERS = {
    "hard": lambda td: hard_sharing_mlp(6, TASKS, hidden=(16,), tower=(8,), task_dropout=td),
    "hard_linear_heads": lambda td: hard_sharing_mlp(6, TASKS, hidden=(16,), task_dropout=td),
    "mmoe": lambda td: MMoE(6, TASKS, num_experts=2, expert_hidden=(16,), task_dropout=td),
    "ple": lambda td: PLE(6, TASKS, expert_hidden=(16,), task_dropout=td),
    "cross_stitch": lambda td: CrossStitch(6, TASKS, hidden=(16, 8), task_dropout=td),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_only_the_listed_task_is_stochastic_in_training(name):
    torch.manual_seed(0)
    model = BUILDERS[name]({"b": 0.5})
    x = torch.randn(32, 6)
    model.train()
    first, second = model(x), model(x)
    assert torch.equal(first["a"], second["a"])
    assert not torch.allclose(first["b"], second["b"])
    model.eval()
    assert torch.equal(model(x)["b"], model(x)["b"])


def test_evaluation_output_equals_the_model_without_task_dropout():
    torch.manual_seed(0)
    with_rate = hard_sharing_mlp(6, TASKS, hidden=(16,), tower=(8,), task_dropout={"a": 0.4})
    plain = hard_sharing_mlp(6, TASKS, hidden=(16,), tower=(8,))
    # same parameters in the same order: the dropout layer holds none
    for p, q in zip(plain.parameters(), with_rate.parameters(), strict=True):
        p.data.copy_(q.data)
    x = torch.randn(10, 6)
    with_rate.eval(), plain.eval()
    for task in ("a", "b"):
        assert torch.equal(with_rate(x)[task], plain(x)[task])


def test_input_dropout_turns_off_factored_heads():
    assert hard_sharing_mlp(6, TASKS, task_dropout={"a": 0.0}).head_entry_layers() is not None
    assert hard_sharing_mlp(6, TASKS, task_dropout={"a": 0.1}).head_entry_layers() is None


def test_esmm_and_bad_rates_or_names():
    funnel = [Task("click", "binary"), Task("buy", "binary")]
    ESMM(4, funnel, task_dropout={"buy": 0.2})
    with pytest.raises(ValueError, match=r"task_dropout names unknown tasks \['c'\]"):
        hard_sharing_mlp(6, TASKS, task_dropout={"c": 0.1})
    with pytest.raises(ValueError, match=r"rates must be in \[0, 1\)"):
        CrossStitch(6, TASKS, task_dropout={"a": 1.5})
