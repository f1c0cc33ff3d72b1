"""Cross-stitch and soft sharing: at identity / zero coupling they are independent networks."""

import pytest
import torch
from torch import nn

from polytask import Task, TrainConfig, Trainer, make_balancer
from polytask.models import CrossStitch, SoftSharing
from tests.models.helpers import fit_and_check, trunk_data

TASKS = [Task("a", "regression"), Task("b", "binary"), Task("c", "multiclass", num_classes=3)]


def _independent(model, name: str) -> nn.Module:
    """A plain single-task network with the tower and head of `name` copied in."""
    layers: list[nn.Module] = []
    for linear in model.towers[name]:
        layers += [nn.Linear(linear.in_features, linear.out_features), nn.ReLU()]
    net = nn.Sequential(*layers, model.heads[name].__class__(*_shape(model.heads[name])))
    linears = [m for m in net if isinstance(m, nn.Linear)]
    for dst, src in zip(linears, [*model.towers[name], model.heads[name]], strict=True):
        dst.load_state_dict(src.state_dict())
    return net


def _shape(head: nn.Module) -> tuple[int, int]:
    assert isinstance(head, nn.Linear)
    return head.in_features, head.out_features


@pytest.mark.parametrize(
    "build",
    [
        lambda: CrossStitch(5, TASKS, hidden=(8, 6)),
        lambda: SoftSharing(5, TASKS, hidden=(8, 6), coupling=0.0),
    ],
    ids=["cross_stitch", "soft_sharing"],
)
def test_identity_stitch_and_zero_coupling_are_independent_networks(build):
    torch.manual_seed(0)
    model = build()
    x = torch.randn(7, 5)
    out = model(x)
    model_loss = sum(o.pow(2).sum() for o in out.values())
    model_loss.backward()
    for t in TASKS:
        net = _independent(model, t.name)
        single = net(x)
        torch.testing.assert_close(out[t.name], t.shape_output(single))
        t.shape_output(single).pow(2).sum().backward()
        mine = [*model.towers[t.name].parameters(), *model.heads[t.name].parameters()]
        theirs = [p for m in net if isinstance(m, nn.Linear) for p in m.parameters()]
        for a, b in zip(mine, theirs, strict=True):
            torch.testing.assert_close(a.grad, b.grad)


def test_cross_stitch_mixes_once_alpha_leaves_the_identity():
    torch.manual_seed(0)
    model = CrossStitch(5, TASKS, hidden=(8,), init_mix=0.2)
    torch.testing.assert_close(model.alphas[0].sum(1), torch.ones(3))
    out = model(torch.randn(4, 5))
    grads = torch.autograd.grad(out["a"].sum(), list(model.towers["b"].parameters()))
    assert any(bool(g.abs().sum() > 0) for g in grads)


def test_soft_sharing_penalty_is_zero_for_identical_towers_and_grows_with_distance():
    torch.manual_seed(0)
    for kind in ("l2", "trace"):
        model = SoftSharing(5, TASKS, hidden=(8, 6), coupling=1.0, penalty=kind)  # type: ignore[arg-type]
        for name in ("b", "c"):
            model.towers[name].load_state_dict(model.towers["a"].state_dict())
        base = [p.detach().clone() for p in model.towers["b"].parameters()]
        if kind == "l2":
            assert float(model.penalty().detach()) == pytest.approx(0.0, abs=1e-10)
        direction = [torch.randn_like(p) for p in base]
        values = []
        for scale in (0.0, 0.5, 1.0, 2.0):
            with torch.no_grad():
                for p, b0, d in zip(model.towers["b"].parameters(), base, direction, strict=True):
                    p.copy_(b0 + scale * d)
            values.append(float(model.penalty().detach()))
        assert values == sorted(values) and values[-1] > values[0]
    l2 = SoftSharing(5, TASKS, hidden=(4,), coupling=2.0)
    rows = torch.stack([l2.towers[n][0].weight.reshape(-1) for n in "abc"])
    expected = 2.0 * (rows - rows.mean(0)).pow(2).sum()
    torch.testing.assert_close(l2.penalty(), expected)


def test_soft_sharing_trains_and_refuses_gradient_balancers():
    tasks = [Task("a", "regression"), Task("b", "regression")]
    config = TrainConfig(epochs=6, batch_size=64, lr=3e-3, progress=False)
    with pytest.raises(ValueError, match="no parameters shared by all tasks"):
        Trainer(SoftSharing(20, tasks), make_balancer("upgrad"), config)
    train, val = trunk_data(400, 0, ["a", "b"]), trunk_data(200, 1, ["a", "b"])
    build = lambda: SoftSharing(20, tasks, hidden=(32,), coupling=1e-2)  # noqa: E731
    fit_and_check(build, make_balancer("ew"), train, val, config)  # towers frozen: heads alone


def test_cross_stitch_trains_with_a_gradient_balancer():
    tasks = [Task("a", "regression"), Task("b", "regression")]
    config = TrainConfig(epochs=6, batch_size=64, lr=3e-3, progress=False)
    train, val = trunk_data(400, 0, ["a", "b"]), trunk_data(200, 1, ["a", "b"])
    build = lambda: CrossStitch(20, tasks, hidden=(32,))  # noqa: E731
    trainer, _ = fit_and_check(build, make_balancer("mgda"), train, val, config)
    assert trainer.plan.mode == "jacobian"
