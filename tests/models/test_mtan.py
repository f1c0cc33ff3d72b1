"""MTAN: per-task attention masks over a shared encoder, for maps, sequences and vectors."""

import torch
from torch import nn

from polytask import Task, TaskData, TrainConfig, Trainer, make_balancer
from polytask.balancers._base import GradientInfo
from polytask.gradients import backward
from polytask.models import MTAN, mtan_mlp
from polytask.models._mtan import ChannelLinear, GlobalPool

TASKS = [Task("kind", "multiclass", num_classes=3), Task("size", "regression")]


def _cnn(heads=None) -> MTAN:
    blocks = [
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU()),
    ]
    return MTAN(blocks, [8, 16], TASKS, heads=heads)


def test_channel_linear_is_a_1x1_convolution():
    torch.manual_seed(0)
    lin, conv = ChannelLinear(4, 5), nn.Conv2d(4, 5, 1)
    conv.weight.data.copy_(lin.weight.data[:, :, None, None])
    conv.bias.data.copy_(lin.bias.data)
    x = torch.randn(2, 4, 6, 7)
    torch.testing.assert_close(lin(x), conv(x))


def _open_masks(model: MTAN) -> None:
    """Every mask to σ(50) ≈ 1: each task then reads the shared features unchanged."""
    for stages in model.attention.values():
        for stage in stages:
            last = stage.mask[2]
            nn.init.zeros_(last.weight)
            nn.init.constant_(last.bias, 50.0)


def test_open_masks_reduce_to_hard_sharing():
    torch.manual_seed(0)
    model = _cnn()
    _open_masks(model)
    x = torch.randn(4, 3, 8, 8)
    out = model(x)
    shared = model.blocks[1](model.blocks[0](x))
    for t in TASKS:
        expected = t.shape_output(model.heads[t.name][1](shared.mean((2, 3))))
        torch.testing.assert_close(out[t.name], expected)
    assert all(m > 0.999 for m in model.diagnostics().values())


def test_masks_are_per_task_and_parameters_follow_reach():
    torch.manual_seed(0)
    model = _cnn()
    out = model(torch.randn(4, 3, 8, 8))
    assert set(model.diagnostics()) == {"mtan/kind/0", "mtan/kind/1", "mtan/size/0", "mtan/size/1"}
    assert all(0 < m < 1 for m in model.diagnostics().values())
    other = list(model.task_parameters("size"))
    grads = torch.autograd.grad(out["kind"].sum(), other, allow_unused=True)
    assert all(g is None for g in grads)
    ids = {id(p) for p in model.shared_parameters()}
    for t in TASKS:
        ids |= {id(p) for p in model.task_parameters(t.name)}
    assert ids == {id(p) for p in model.parameters()}


def test_dense_heads_and_sequences():
    torch.manual_seed(0)
    dense = Task("mask", "regression")
    head = nn.Conv2d(16, 1, 1)
    model = MTAN(_cnn().blocks, [8, 16], [dense], heads={"mask": head})
    assert model(torch.randn(2, 3, 8, 8))["mask"].shape == (2, 1, 4, 4)
    seq = MTAN([nn.Conv1d(5, 6, 3, padding=1), nn.Conv1d(6, 6, 3, stride=3)], [6, 6], TASKS)
    out = seq(torch.randn(3, 5, 12))
    assert out["kind"].shape == (3, 3) and out["size"].shape == (3,)
    assert GlobalPool()(torch.ones(2, 4)).shape == (2, 4)


def test_engine_jacobian_equals_separate_backwards():
    torch.manual_seed(0)
    model = _cnn()
    x = torch.randn(6, 3, 8, 8)
    y = {"kind": torch.tensor([0, 1, 2, 0, 1, 2]), "size": torch.randn(6)}

    def losses():
        out = model(x)
        return torch.stack([t.compute_loss(out[t.name], y[t.name]) for t in TASKS])

    shared = list(model.shared_parameters())
    own = [p for t in TASKS for p in model.task_parameters(t.name)]
    balancer = make_balancer("upgrad")
    balancer.setup([t.name for t in TASKS])
    backward(losses(), shared, balancer, task_params=own)
    fast = [p.grad.clone() for p in shared]
    again = losses()
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, shared, retain_graph=True)])
            for loss in again]  # fmt: skip
    reference = make_balancer("upgrad")
    reference.setup([t.name for t in TASKS])
    expected = reference.aggregate(GradientInfo(again.detach(), jacobian=torch.stack(rows)))
    got = torch.cat([g.reshape(-1) for g in fast])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_mtan_mlp_trains_and_builds_from_config():
    from polytask.models import build_model

    model = build_model("mtan", 5, TASKS, hidden=(8, 8), tower=(4,))
    assert isinstance(model, MTAN) and len(model.blocks) == 2
    torch.manual_seed(0)
    x = torch.randn(300, 6)
    data = TaskData(x, {"kind": (x[:, 0] > 0).long() + (x[:, 1] > 0).long(), "size": x[:, 2]})
    model = mtan_mlp(6, TASKS, hidden=(16, 16))
    trainer = Trainer(model, make_balancer("ew"), TrainConfig(epochs=40, lr=3e-3, progress=False))
    history = trainer.fit(data, data)
    assert history[-1]["val/loss"] < 0.5 * history[0]["val/loss"]
