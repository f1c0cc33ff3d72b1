"""Mode `gramian` (exact, lean): G = Σ_s J_s J_sᵀ walked over the trunk's segments
(`record_segments`), freeing each J_s, so only the largest segment's block is held; a linear
layer's comes from the batch, ⟨(a aᵀ)δ_k, δ_l⟩, without forming J_s at all. One ordinary
backward of Σ c_k ∂L_k/∂z then applies c. A trunk of linear layers and elementwise activations
recorded without autograd is walked by hand, G and the update alike (`_walk`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from polytask.balancers._base import Balancer, GradientInfo
from polytask.gradients._engine import (
    BackwardResult,
    Reduce,
    Segment,
    _accumulate,
    _batched_grad,
    _coefficients,
    _combined,
    _gramian,
    _reduce,
    apply_cotangent,
    head_gradients,
    row_gramian,
)
from polytask.gradients._mode import GradientMode, GradientStep, trunk_modules
from polytask.gradients._walk import check_covered, walk, walk_jacobian

if TYPE_CHECKING:
    from polytask.models._base import MultiTaskNet


_TASK_CHUNK = 8
"""Tasks per (a aᵀ)δ product: bounds the extra memory of the batch-side Gramian."""


class GramianMode(GradientMode):
    """The exact Gramian without ever holding J: the memory-lean exact mode."""

    name = "gramian"
    distributed = True
    needs_segments = True
    factored_heads = True
    can_walk = True

    def held_floats(
        self, model: MultiTaskNet, balancer: Balancer, shared: Sequence[Tensor], batch_size: int
    ) -> int:
        k = len(model.task_names)
        return max(gramian_block_floats(b, k, batch_size) for b in trunk_modules(model))

    def backward(self, step: GradientStep) -> BackwardResult:
        rec, shared, k = step.recorded, step.shared, step.num_tasks
        z, segments = rec.features, rec.segments
        assert z is not None and segments is not None  # check_inputs
        dz, factored = head_gradients(
            step.losses, z, rec.task_features, rec.task_maps, step.heads, expand=False
        )
        if z.grad_fn is None:  # recorded without autograd: G and the update by hand
            if step.reduce is not None:
                raise ValueError(
                    "reduce= needs the Gramian path's blocks before G is formed: record the "
                    "segments with track=True (the untracked walk forms G from the batch)"
                )
            if factored is not None:
                fresh = factored.expand(k)
            else:  # a copy the walk may overwrite: dz is still needed for the update
                assert dz is not None
                fresh = dz.clone()
            gramian, held = _walked_gramian(segments, fresh, shared)
            del fresh
            c = _coefficients(step.balancer, GradientInfo(step.detached, gramian=gramian))
            combined = _combined(c, dz, factored).unsqueeze(0)
            _accumulate(shared, [b[0] for b in walk_jacobian(segments, combined, shared)])
            return BackwardResult(c.detach().float(), self.name, held)
        if factored is None:
            assert dz is not None
            gramian, held = _segment_gramian(segments, dz, step.reduce)
        else:  # a fresh expansion, which the walk may overwrite and let go
            expanded = factored.expand(k)
            gramian, held = _segment_gramian(segments, expanded, step.reduce, owned=True)
        c = _coefficients(step.balancer, GradientInfo(step.detached, gramian=gramian))
        apply_cotangent(z, shared, _combined(c, dz, factored))
        return BackwardResult(c.detach().float(), self.name, held)


def _segment_gramian(
    segments: Sequence[Segment], cotangent: Tensor, reduce: Reduce | None, owned: bool = False
) -> tuple[Tensor, int]:
    """G = Σ_s J_s J_sᵀ, walking the blocks backwards with batched cotangents (`owned`: the
    first cotangent may be overwritten, as every later one is)."""
    k = cotangent.shape[0]
    gramian = torch.zeros(k, k, dtype=torch.float64, device=cotangent.device)
    held = 0  # the largest segment's block; per-parameter views, never concatenated
    for i in range(len(segments) - 1, -1, -1):
        seg = segments[i]
        needs_input = i > 0 and seg.input.requires_grad
        inputs = [*seg.params, *([seg.input] if needs_input else [])]
        if not inputs:
            continue
        if reduce is None and _linear_shortcut(seg):
            gramian += _linear_gramian(seg, cotangent)
            held = max(held, cotangent.numel())
            if needs_input:
                assert isinstance(seg.module, nn.Linear)
                cotangent = cotangent @ seg.module.weight
                owned = True
            continue
        if owned and not seg.params and isinstance(seg.module, nn.ReLU):
            cotangent.mul_(seg.output > 0)  # in place: one K × B × d block instead of two
            continue
        grads = _batched_grad(seg.output, inputs, cotangent)
        if seg.params:
            blocks = [_reduce(g.reshape(k, -1), reduce) for g in grads[: len(seg.params)]]
            held = max(held, sum(b.numel() for b in blocks))
            gramian += _gramian(blocks)
            del blocks
        if needs_input:
            # a view's backward (Flatten) hands back a view of the cotangent given, which
            # autograd forbids changing in place (and which may be the caller's): not owned
            owned = not _shares_memory(grads[-1], cotangent)
            cotangent = grads[-1]
        del grads
    return gramian, held


def _shares_memory(a: Tensor, b: Tensor) -> bool:
    return bool(a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr())


def _walked_gramian(
    segments: Sequence[Segment], cotangent: Tensor, shared: Sequence[Tensor]
) -> tuple[Tensor, int]:
    """G of `shared` from an untracked walk (`walk.walk`): a linear layer's from the batch when
    that is cheaper (see `_linear_gramian`), else from its per-task block; never all of J."""
    k = cotangent.shape[0]
    wanted = {id(p) for p in shared}
    walked: set[int] = set()
    gramian = torch.zeros(k, k, dtype=torch.float64, device=cotangent.device)
    held = 0

    def on_linear(module: nn.Linear, a: Tensor, d: Tensor) -> None:
        nonlocal gramian, held
        if id(module.weight) in wanted:
            if a.shape[0] <= module.in_features:
                gramian += _weight_gramian(a, d)
                held = max(held, d.numel())
            else:
                block = torch.matmul(d.transpose(1, 2), a).reshape(k, -1)
                gramian += row_gramian(block)
                held = max(held, block.numel())
            walked.add(id(module.weight))
        if module.bias is not None and id(module.bias) in wanted:
            sums = d.sum(1)
            gramian += (sums @ sums.T).double()
            walked.add(id(module.bias))

    walk(segments, cotangent, on_linear)
    check_covered(shared, walked)
    return gramian, held


def gramian_block_floats(module: nn.Module, num_tasks: int, batch_size: int) -> int:
    """What the lean Gramian path holds for one trunk block (the plan's estimate)."""
    if isinstance(module, nn.Linear) and batch_size <= module.in_features:
        return num_tasks * batch_size * module.out_features
    return num_tasks * sum(p.numel() for p in module.parameters() if p.requires_grad)


def _linear_shortcut(seg: Segment) -> bool:
    """A linear layer on a (B, in) input with B ≤ in: its Gramian is cheaper from the batch."""
    module = seg.module
    if not isinstance(module, nn.Linear) or seg.input.dim() != 2:
        return False
    trainable = {id(p) for p in seg.params}
    if id(module.weight) not in trainable:
        return False
    return seg.input.shape[0] <= module.in_features


def _linear_gramian(seg: Segment, cotangent: Tensor) -> Tensor:
    """G of a linear layer's weight (and bias) without forming its K × out × in Jacobian.

    With input a (B, in) and task cotangents δ_k (B, out), g_k = δ_kᵀ a, so
    ⟨g_k, g_l⟩ = Σ_{b,b'} (a aᵀ)_{bb'} δ_kb · δ_lb' = ⟨(a aᵀ) δ_k, δ_l⟩, and the bias adds
    (Σ_b δ_kb) · (Σ_b δ_lb). Costs K·B²·out instead of K·B·out·in, holds K × B × out.
    """
    assert isinstance(seg.module, nn.Linear)
    gramian = _weight_gramian(seg.input.detach(), cotangent)
    bias = seg.module.bias
    if bias is not None and any(p is bias for p in seg.params):
        sums = cotangent.sum(1)
        gramian += (sums @ sums.T).double()
    return gramian


def _weight_gramian(a: Tensor, cotangent: Tensor) -> Tensor:
    """⟨δ_kᵀa, δ_lᵀa⟩ = ⟨(a aᵀ) δ_k, δ_l⟩ for a (B, in) and δ (K, B, out), in float64."""
    k = cotangent.shape[0]
    outer = a @ a.T
    flat = cotangent.reshape(k, -1)
    gramian = torch.empty(k, k, dtype=torch.float64, device=cotangent.device)
    for i in range(0, k, _TASK_CHUNK):  # (a aᵀ)δ for a few tasks at a time bounds the extra
        mixed = torch.matmul(outer, cotangent[i : i + _TASK_CHUNK])
        gramian[i : i + _TASK_CHUNK] = mixed.reshape(mixed.shape[0], -1) @ flat.T
    return gramian
