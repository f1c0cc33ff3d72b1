"""The exact Jacobian of a trunk of linear layers and elementwise activations, by hand.

When the trunk's forward ran without autograd (`record_segments(..., track=False)`, which
saves building its graph: about 6% of a K = 2 step on the speed benchmark's MLP), the task
gradients are walked back through the recorded blocks: a linear layer's per-task weight
gradients are δ_kᵀ a, its input gradients δ_k W, and an activation multiplies by σ'.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from polytask.gradients._sketch import ELEMENTWISE

if TYPE_CHECKING:
    from polytask.gradients._engine import Segment


def walkable(modules: Sequence[nn.Module]) -> bool:
    """Whether every block is a linear layer or a deterministic elementwise module (dropout
    only where it is the identity, in eval mode or with p = 0: its mask is not recorded)."""
    return all(
        isinstance(m, nn.Linear)
        or (isinstance(m, ELEMENTWISE) and not (isinstance(m, nn.Dropout) and m.training and m.p))
        for m in modules
    )


LinearVisit = Callable[[nn.Linear, Tensor, Tensor], None]
"""Called at each linear layer with its input a (R, in) and the task gradients of its output
δ (K, R, out), rows of every leading axis flattened."""


def walk(segments: Sequence[Segment], dz: Tensor, visit: LinearVisit) -> None:
    """Walk ∂L_k/∂z, given as `dz` (K, *z.shape, a fresh tensor the walk may overwrite), back
    through the recorded `segments` by hand, calling `visit` at each linear layer."""
    modules = [s.module for s in segments]
    if any(m is None for m in modules) or not walkable(modules):  # type: ignore[arg-type]
        names = ", ".join(type(m).__name__ for m in modules)
        raise ValueError(
            f"the untracked Jacobian walk takes nn.Linear and elementwise blocks (dropout in eval "
            f"mode only), got [{names}]: record the segments with track=True instead"
        )
    k = dz.shape[0]
    d = dz
    for i in range(len(segments) - 1, -1, -1):
        seg, module = segments[i], segments[i].module
        if isinstance(module, nn.Linear):
            a = seg.input.reshape(-1, module.in_features)
            visit(module, a, d.reshape(k, -1, module.out_features))
            if i > 0:
                d = torch.matmul(d, module.weight.detach())
        elif isinstance(module, nn.ReLU):
            d.mul_(seg.output > 0)
        elif not isinstance(module, (nn.Identity, nn.Dropout)):
            assert module is not None  # walkable() above
            d = d * _derivative(module, seg.input)


def check_covered(shared: Sequence[Tensor], walked: set[int]) -> None:
    """Every shared parameter must belong to a walked linear layer."""
    missing = [i for i, p in enumerate(shared) if id(p) not in walked]
    if missing:
        raise ValueError(
            f"shared parameters {missing} (by position) belong to no recorded linear layer: "
            "pass the trunk's own parameters as shared_params"
        )


def walk_jacobian(
    segments: Sequence[Segment],
    dz: Tensor,
    shared: Sequence[Tensor],
    visit: Callable[[Tensor], Tensor] | None = None,
) -> list[Tensor]:
    """Per-parameter blocks (K, n_p) of J for `shared`, from ∂L_k/∂z given as `dz`
    (K, *z.shape, a fresh tensor the walk may overwrite) and the recorded `segments`.

    `visit` sees each block as soon as it is computed and returns what is kept (the engine
    reduces it across processes and adds it to the Gramian there, while it is still in cache).
    """
    wanted = {id(p) for p in shared}
    blocks: dict[int, Tensor] = {}

    def keep(param: Tensor, block: Tensor) -> None:
        blocks[id(param)] = block if visit is None else visit(block)

    def on_linear(module: nn.Linear, a: Tensor, d: Tensor) -> None:
        if id(module.weight) in wanted:
            keep(module.weight, torch.matmul(d.transpose(1, 2), a).reshape(d.shape[0], -1))
        if module.bias is not None and id(module.bias) in wanted:
            keep(module.bias, d.sum(1))

    walk(segments, dz, on_linear)
    check_covered(shared, set(blocks))
    return [blocks[id(p)] for p in shared]


def _derivative(module: nn.Module, x: Tensor) -> Tensor:
    """σ'(x) of an elementwise module, from one re-run with autograd on its input."""
    with torch.enable_grad():
        inp = x.detach().requires_grad_(True)
        out = module(inp.clone())  # an in-place module may not change a leaf
        (slope,) = torch.autograd.grad(out, inp, torch.ones_like(out))
    return slope
