import pytest
import torch
from torch import nn

from polytask import MLP, MultiTaskModel, Task, hard_sharing_mlp

TASKS = [
    Task("b", "binary"),
    Task("c", "multiclass", num_classes=4),
    Task("m", "multilabel", target=("u", "v", "w")),
    Task("r", "regression"),
]


def test_outputs_by_task_with_kind_shapes():
    model = hard_sharing_mlp(5, TASKS, hidden=(8, 6))
    out = model(torch.randn(7, 5))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "b": (7,),
        "c": (7, 4),
        "m": (7, 3),
        "r": (7,),
    }
    assert model.representation(torch.randn(2, 5)).shape == (2, 6)


def test_shared_and_task_parameters_partition_the_model():
    model = hard_sharing_mlp(5, TASKS)
    shared = {id(p) for p in model.shared_parameters()}
    per_task = [{id(p) for p in model.task_parameters(t.name)} for t in TASKS]
    everything = {id(p) for p in model.parameters()}
    assert shared | set().union(*per_task) == everything
    assert all(not (shared & s) for s in per_task)


def test_custom_trunk_needs_out_dim():
    trunk = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    with pytest.raises(ValueError, match="trunk_out_dim"):
        MultiTaskModel(trunk, TASKS)
    model = MultiTaskModel(trunk, TASKS, trunk_out_dim=4)
    assert model(torch.randn(2, 3))["c"].shape == (2, 4)


def test_custom_head_factory_is_used():
    def tower(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Linear(i, 3), nn.Tanh(), nn.Linear(3, o))

    model = hard_sharing_mlp(4, [Task("r", "regression", head=tower)], hidden=(5,))
    assert isinstance(model.heads["r"], nn.Sequential)


def test_model_errors():
    with pytest.raises(ValueError, match="unique"):
        hard_sharing_mlp(3, [Task("a", "binary"), Task("a", "regression")])
    with pytest.raises(ValueError, match="at least one"):
        MLP(3, hidden=())
    with pytest.raises(ValueError, match="num_classes is unknown"):
        hard_sharing_mlp(3, [Task("c", "multiclass")])


def test_head_entries_split_each_head_at_its_first_linear_layer():
    def tower(d: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Linear(d, 3), nn.Tanh(), nn.Linear(3, o))

    mlp_head = Task("r", "regression", head=tower)
    model = hard_sharing_mlp(5, [*TASKS[:3], mlp_head], hidden=(8, 6))
    entries = model.head_entry_layers()
    assert entries is not None and [e.out_features for e in entries] == [1, 4, 3, 3]
    z = model.representation(torch.randn(7, 5))
    via_entries = model.heads_forward_from_entries([e(z) for e in entries])
    for name, out in model.heads_forward(z).items():
        torch.testing.assert_close(via_entries[name], out)
    odd = Task("o", "regression", head=lambda d, o: nn.Sequential(nn.Tanh(), nn.Linear(d, o)))
    assert hard_sharing_mlp(5, [odd]).head_entry_layers() is None


def test_seed_gives_the_same_weights_and_leaves_the_global_generator_alone():
    from polytask import seeded
    from polytask.models import build_model

    tasks = [Task("a", "binary"), Task("b", "regression")]
    torch.manual_seed(1)
    first = hard_sharing_mlp(5, tasks, hidden=(8,), seed=3).state_dict()
    after_first = torch.rand(1)
    torch.manual_seed(1)
    second = build_model("hard_sharing", 5, tasks, seed=3, hidden=(8,)).state_dict()
    assert torch.equal(torch.rand(1), after_first)  # the global stream did not move
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = hard_sharing_mlp(5, tasks, hidden=(8,), seed=4).state_dict()
    assert not all(torch.equal(first[k], other[k]) for k in first)
    with seeded(3):
        third = hard_sharing_mlp(5, tasks, hidden=(8,)).state_dict()
    assert all(torch.equal(first[k], third[k]) for k in first)
