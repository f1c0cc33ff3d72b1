"""The untracked Jacobian walk: the same update as autograd's batched backward, by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polytask.gradients import backward, linear_task_features, record_segments, split_features
from polytask.gradients._walk import walk_jacobian, walkable
from tests.balancers.helpers import make

K = 3
TASKS = [f"t{i}" for i in range(K)]
TRUNKS = {
    "relu": lambda: [nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 5), nn.ReLU()],
    "gelu_no_bias": lambda: [nn.Linear(6, 9, bias=False), nn.GELU(), nn.Linear(9, 5)],
    "tanh_identity_dropout_eval": lambda: [
        nn.Linear(6, 9),
        nn.Tanh(),
        nn.Dropout(0.5).eval(),
        nn.Linear(9, 5),
        nn.Identity(),
    ],
    "silu_frozen_first": lambda: [
        nn.Linear(6, 9).requires_grad_(False),
        nn.SiLU(),
        nn.Linear(9, 5),
        nn.Softplus(),
    ],
}


def _grads(blocks, heads, x, y, method: str, track: bool, factored: bool, seq: bool,
           mode: str = "jacobian"):  # fmt: skip
    trunk = nn.Sequential(*blocks)
    for p in [*trunk.parameters(), *heads.parameters()]:
        p.grad = None
    z, segments = record_segments(blocks, x, track=track)
    if factored:
        task_z, maps = linear_task_features(z, list(heads))
        outs = task_z
    else:
        task_z, maps = split_features(z, K), None
        outs = [h(u) for h, u in zip(heads, task_z, strict=True)]
    target = y if not seq else y.unsqueeze(1)
    losses = torch.stack([((o[..., 0] - target[..., i]) ** 2).mean() for i, o in enumerate(outs)])
    result = backward(losses, [p for p in trunk.parameters() if p.requires_grad],
                      make(method, TASKS), mode=mode, features=z, task_features=task_z,
                      task_maps=maps, task_params=list(heads.parameters()),
                      segments=segments)  # fmt: skip
    grads = [p.grad.clone() for p in [*trunk.parameters(), *heads.parameters()] if p.requires_grad]
    return grads, result.weights


@pytest.mark.parametrize("trunk", sorted(TRUNKS))
@pytest.mark.parametrize("method", ["upgrad", "pcgrad", "mgda"])
@pytest.mark.parametrize("factored", [False, True])
@pytest.mark.parametrize("mode", ["jacobian", "gramian"])
def test_walk_equals_batched_backward(trunk: str, method: str, factored: bool, mode: str) -> None:
    """Untracked walks (J by hand; or G by hand, then the update by a hand-walked combined
    cotangent) give autograd's update, in both exact modes."""
    torch.manual_seed(0)
    blocks = [m.double() for m in TRUNKS[trunk]()]
    heads = nn.ModuleList([nn.Linear(5, 1) for _ in range(K)]).double()
    x, y = torch.randn(11, 6, dtype=torch.float64), torch.randn(11, K, dtype=torch.float64)
    torch.manual_seed(1)  # the same draws for random methods (PCGrad's order) on both paths
    tracked, w_tracked = _grads(blocks, heads, x, y, method, True, factored, False, mode)
    torch.manual_seed(1)
    walked, w_walked = _grads(blocks, heads, x, y, method, False, factored, False, mode)
    assert len(tracked) == len(walked)
    for a, b in zip(tracked, walked, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    if w_tracked is not None:
        torch.testing.assert_close(w_walked, w_tracked, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("trunk", sorted(TRUNKS))
def test_gramian_walk_from_the_batch_equals_batched_backward(trunk: str) -> None:
    """With fewer rows than a layer's inputs, the walk forms that layer's G from (a aᵀ)δ."""
    torch.manual_seed(0)
    blocks = [m.double() for m in TRUNKS[trunk]()]
    heads = nn.ModuleList([nn.Linear(5, 1) for _ in range(K)]).double()
    x, y = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, K, dtype=torch.float64)
    tracked, w_tracked = _grads(blocks, heads, x, y, "upgrad", True, True, False, "gramian")
    walked, w_walked = _grads(blocks, heads, x, y, "upgrad", False, True, False, "gramian")
    for a, b in zip(tracked, walked, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(w_walked, w_tracked, rtol=1e-5, atol=1e-7)


def test_walk_on_sequences_of_tokens() -> None:
    """Linear layers on (N, T, d) inputs: the token axis joins the batch axis."""
    torch.manual_seed(0)
    blocks = [m.double() for m in TRUNKS["relu"]()]
    heads = nn.ModuleList([nn.Linear(5, 1) for _ in range(K)]).double()
    x, y = torch.randn(4, 3, 6, dtype=torch.float64), torch.randn(4, K, dtype=torch.float64)
    tracked, _ = _grads(blocks, heads, x, y, "upgrad", True, False, True)
    walked, _ = _grads(blocks, heads, x, y, "upgrad", False, False, True)
    for a, b in zip(tracked, walked, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_walk_blocks_are_the_per_task_gradients() -> None:
    """Each block row is one task's gradient, as K separate backward passes give it."""
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(7, 4, dtype=torch.float64)
    dz = torch.randn(2, 7, 3, dtype=torch.float64)
    z, segments = record_segments(trunk, x, track=False)
    assert z.grad_fn is None
    blocks = walk_jacobian(segments, dz.clone(), list(trunk.parameters()))
    out = trunk(x)
    for k in range(2):
        expected = torch.autograd.grad(out, list(trunk.parameters()), dz[k], retain_graph=True)
        for block, g in zip(blocks, expected, strict=True):
            torch.testing.assert_close(block[k], g.reshape(-1))


def test_walkable_refuses_what_it_cannot_walk() -> None:
    assert walkable([nn.Linear(2, 2), nn.ReLU(), nn.Dropout(0.1).eval()])
    assert not walkable([nn.Linear(2, 2), nn.Dropout(0.1)])  # training mode: mask not recorded
    assert not walkable([nn.Linear(2, 2), nn.LayerNorm(2)])
    trunk = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    _, segments = record_segments(trunk, torch.randn(3, 2), track=False)
    with pytest.raises(ValueError, match="LayerNorm"):
        walk_jacobian(segments, torch.randn(1, 3, 2), list(trunk.parameters()))


def test_untracked_features_need_segments_and_task_features() -> None:
    trunk = nn.Sequential(nn.Linear(3, 4))
    heads = nn.ModuleList([nn.Linear(4, 1) for _ in range(2)])
    x = torch.randn(5, 3)
    z, segments = record_segments(trunk, x, track=False)
    task_z = split_features(z, 2)
    losses = torch.stack([h(u).pow(2).mean() for h, u in zip(heads, task_z, strict=True)])
    balancer = make("upgrad", ["a", "b"])
    with pytest.raises(ValueError, match="track=False"):
        backward(losses, trunk.parameters(), balancer, features=z, task_features=task_z)
    with pytest.raises(ValueError, match="task_features"):
        backward(losses, trunk.parameters(), balancer, features=z, segments=segments)
    other = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="no recorded linear layer"):
        backward(losses, [*trunk.parameters(), *other.parameters()], balancer, features=z,
                 task_features=task_z, segments=segments)  # fmt: skip


@pytest.mark.parametrize("method", ["upgrad", "graddrop"])  # a Gramian method, a J method
def test_walk_with_reduce_on_a_subset_of_the_trunk(method: str) -> None:
    """`reduce` sees every walked block before the Gramian is summed, and parameters left out
    of shared_params get no block (and no gradient), as on the batched path."""
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 5), nn.Tanh()).double()
    heads = nn.ModuleList([nn.Linear(5, 1) for _ in range(K)]).double()
    x, y = torch.randn(11, 6, dtype=torch.float64), torch.randn(11, K, dtype=torch.float64)
    shared = list(trunk[2].parameters())
    seen: list[tuple[int, ...]] = []

    def reduce(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape))
        return t * torch.linspace(0.5, 2.0, t.shape[0], dtype=t.dtype).unsqueeze(1)

    def run(track: bool) -> list[torch.Tensor]:
        for p in [*trunk.parameters(), *heads.parameters()]:
            p.grad = None
        z, segments = record_segments(trunk, x, track=track)
        task_z = split_features(z, K)
        outs = [h(u)[:, 0] for h, u in zip(heads, task_z, strict=True)]
        losses = torch.stack([((o - y[:, i]) ** 2).mean() for i, o in enumerate(outs)])
        torch.manual_seed(1)
        backward(losses, shared, make(method, TASKS), features=z, task_features=task_z,
                 task_params=list(heads.parameters()), segments=segments,
                 reduce=reduce)  # fmt: skip
        assert trunk[0].weight.grad is None
        return [p.grad.clone() for p in shared]

    tracked = run(True)
    assert seen == [(K, 45), (K, 5)]
    seen.clear()
    walked = run(False)
    assert seen == [(K, 45), (K, 5)]
    for a, b in zip(tracked, walked, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_untracked_gramian_walk_refuses_reduce() -> None:
    trunk = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    heads = nn.ModuleList([nn.Linear(4, 1) for _ in range(2)])
    z, segments = record_segments(trunk, torch.randn(5, 3), track=False)
    task_z = split_features(z, 2)
    losses = torch.stack([h(u).pow(2).mean() for h, u in zip(heads, task_z, strict=True)])
    with pytest.raises(ValueError, match="track=True"):
        backward(losses, trunk.parameters(), make("upgrad", ["a", "b"]), mode="gramian",
                 features=z, task_features=task_z, segments=segments,
                 reduce=lambda t: t)  # fmt: skip


def test_approximate_modes_refuse_an_untracked_trunk() -> None:
    trunk = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    heads = nn.ModuleList([nn.Linear(4, 1) for _ in range(2)])
    z, segments = record_segments(trunk, torch.randn(5, 3), track=False)
    task_z = split_features(z, 2)
    losses = torch.stack([h(u).pow(2).mean() for h, u in zip(heads, task_z, strict=True)])
    with pytest.raises(ValueError, match=r"mode='representation'.*track=True"):
        backward(losses, trunk.parameters(), make("upgrad", ["a", "b"]), mode="representation",
                 features=z, task_features=task_z, segments=segments)  # fmt: skip


def _twin(inplace: bool) -> list[nn.Module]:
    torch.manual_seed(3)
    return [
        nn.Linear(6, 9),
        nn.ELU(inplace=inplace),
        nn.Linear(9, 7),
        nn.LeakyReLU(0.1, inplace=inplace),
        nn.Linear(7, 5),
        nn.ReLU(inplace=inplace),
    ]


@pytest.mark.parametrize("rows", [4, 11])  # 4: a linear layer's G from the batch, (a aᵀ)δ
@pytest.mark.parametrize("mode", ["jacobian", "gramian"])
@pytest.mark.parametrize("track", [True, False])
def test_in_place_activations_give_the_out_of_place_update(rows: int, mode: str, track: bool):
    """An in-place block overwrites the input the segments keep: recorded on a copy, the
    update is the out-of-place trunk's (G was 13% off under the batch shortcut; the walk
    crashed on a leaf changed in place)."""
    heads = nn.ModuleList([nn.Linear(5, 1) for _ in range(K)]).double()
    x = torch.randn(rows, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.randn(rows, K, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    plain = [m.double() for m in _twin(False)]
    want, w_want = _grads(plain, heads, x, y, "upgrad", True, False, False, "jacobian")
    got, w_got = _grads([m.double() for m in _twin(True)], heads, x, y, "upgrad", track, True,
                        False, mode)  # fmt: skip
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(w_got, w_want, rtol=1e-6, atol=1e-9)


def test_segments_refuse_a_layer_applied_twice_or_a_block_changing_its_input() -> None:
    layer = nn.Linear(4, 4)
    with pytest.raises(ValueError, match=r"blocks 0 and 2 \(Linear\) share a parameter"):
        record_segments([layer, nn.Tanh(), layer], torch.randn(3, 4))

    class Halve(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mul_(0.5)

    with pytest.raises(ValueError, match=r"block 1 \(Halve\) changes its input in place"):
        record_segments([nn.Linear(4, 4), Halve()], torch.randn(3, 4), track=False)
