"""Learning to branch: one branch is hard sharing; evaluation follows the argmax tree; the
branch logits learn through the straight-through Gumbel-softmax."""

import pytest
import torch

from polytask import Task, TaskData, TrainConfig, Trainer, make_balancer
from polytask.models import LearningToBranch, hard_sharing_mlp

TASKS = [Task(n, "regression") for n in "abc"]


def test_one_branch_is_hard_sharing():
    torch.manual_seed(0)
    ltb = LearningToBranch(5, TASKS, hidden=(8, 6, 4), branches=1)
    hard = hard_sharing_mlp(5, TASKS, hidden=(8, 6, 4))
    trunk = [ltb.root[0], ltb.layers[0][0][0], ltb.layers[1][0][0]]
    linears = [m for m in hard.trunk.net if isinstance(m, torch.nn.Linear)]
    for src, dst in zip(trunk, linears, strict=True):
        dst.load_state_dict(src.state_dict())
    for t in TASKS:
        hard.heads[t.name].load_state_dict(ltb.heads[t.name].state_dict())
    x = torch.randn(7, 5)
    for mode in (True, False):
        ltb.train(mode), hard.train(mode)
        out, expected = ltb(x), hard(x)
        for t in TASKS:
            torch.testing.assert_close(out[t.name], expected[t.name])


def _set_tree(model: LearningToBranch) -> None:
    """Layer-1 nodes both read the root; layer-2 node 0 reads node 1, node 1 reads node 0;
    task a reads node 0, tasks b and c node 1."""
    with torch.no_grad():
        for logits in model.logits:
            logits.fill_(0.0)
        model.logits[1][0, 1] = model.logits[1][1, 0] = 5.0
        model.logits[2][0, 0] = model.logits[2][1, 1] = model.logits[2][2, 1] = 5.0


def test_evaluation_follows_the_argmax_tree():
    torch.manual_seed(0)
    model = LearningToBranch(5, TASKS, hidden=(8, 6, 4), branches=2).eval()
    _set_tree(model)
    assert model.tree() == {"a": [1, 0], "b": [0, 1], "c": [0, 1]}
    out = model(torch.randn(4, 5))
    unused = list(model.layers[1][1].parameters()) + list(model.layers[0][0].parameters())
    grads = torch.autograd.grad(out["a"].sum(), unused, allow_unused=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)
    probs = model.diagnostics()
    # path of a: p(task a → node 0) · p(node 0 → node 1) (the root choice has one option)
    p = torch.softmax(torch.tensor([5.0, 0.0]), 0)[0]
    assert probs["ltb/a/path_probability"] == pytest.approx(float(p * p))


def test_training_samples_one_parent_and_the_logits_learn():
    torch.manual_seed(0)
    model = LearningToBranch(5, TASKS, hidden=(8, 6), branches=3)
    out = model(torch.randn(4, 5))
    loss = sum(o.pow(2).mean() for o in out.values())
    loss.backward()
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in model.logits[1:])
    assert {id(p) for p in model.logits} <= {id(p) for p in model.shared_parameters()}


def test_learns_and_settles_a_tree():
    torch.manual_seed(0)
    x = torch.randn(600, 6)
    y = {"a": x[:, 0] + x[:, 1], "b": x[:, 0] + x[:, 1] + 0.1 * x[:, 2], "c": -x[:, 3] * x[:, 4]}
    model = LearningToBranch(6, TASKS, hidden=(32, 16), branches=2)
    start = model.diagnostics()
    config = TrainConfig(epochs=30, lr=1e-2, batch_size=64, progress=False, patience=None)
    history = Trainer(model, make_balancer("ew"), config).fit(TaskData(x, y), TaskData(x, y))
    assert history[-1]["val/loss"] < 0.5 * history[0]["val/loss"]
    settled = model.diagnostics()
    assert all(settled[k] > start[k] for k in start)


def test_bad_settings_and_config():
    from polytask.app import ModelConfig

    with pytest.raises(ValueError, match="at least two positive hidden sizes"):
        LearningToBranch(5, TASKS, hidden=(8,))
    with pytest.raises(ValueError, match="temperature: Input should be greater than 0"):
        ModelConfig(architecture="ltb", temperature=0.0)
    with pytest.raises(ValueError, match="branches applies to architecture ltb"):
        ModelConfig(branches=3)
    spec = ModelConfig(architecture="ltb", hidden=(8, 8, 4), branches=3, temperature=0.5)
    model = spec.build(5, TASKS)
    assert isinstance(model, LearningToBranch) and model.temperature == 0.5
    assert [tuple(p.shape) for p in model.logits] == [(3, 1), (3, 3), (3, 3)]
