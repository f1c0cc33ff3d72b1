"""Mode `jacobian` (exact, the default): J (K × n) of the shared parameters from one batched
backward of K unit cotangents; the balancer's coefficients c come from G = J Jᵀ and the update
Jᵀ c is a matrix product, with no second backward.

With the representation z and per-task leaves of it, only the trunk sees K cotangents. When
the trunk (linear layers and elementwise activations) ran without autograd
(`record_segments(..., track=False)`), the task gradients are walked back by hand
(`_walk.walk_jacobian`) and each block's Gramian is summed while it is still in cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from polytask.balancers._base import Balancer, GradientInfo, GramianBalancer, weighted_sum
from polytask.gradients._engine import (
    BackwardResult,
    Reduce,
    _accumulate,
    _coefficients,
    _combine,
    _filled,
    _gramian,
    _info,
    _reduce,
    _split,
    batched_grads,
    head_gradients,
    row_gramian,
)
from polytask.gradients._mode import GradientMode, GradientStep, Recorded
from polytask.gradients._walk import walk_jacobian


class JacobianMode(GradientMode):
    """The exact Jacobian of the shared parameters, held whole (K × n floats)."""

    name = "jacobian"
    distributed = True
    reduced_update = True
    needs_representation = False
    can_walk = True
    coordinate_wise = True
    bilevel = True
    compiles = False  # its batched backward: only when the trunk is walked by hand

    def check_inputs(self, recorded: Recorded) -> None:
        z = recorded.features
        if z is not None and z.grad_fn is None and not recorded.segments:
            raise ValueError(
                "features= carry no autograd graph: record the trunk with "
                "record_segments(trunk_blocks, x, track=False) and pass segments=, or run it "
                "with autograd on"
            )
        super().check_inputs(recorded)

    def backward(self, step: GradientStep) -> BackwardResult:
        blocks, summed, reached = self.task_blocks(step)
        return apply_jacobian(step.balancer, step.detached, blocks, step.shared, step.val_loss,
                              step.reduce, self.name, step.fit_weights, summed,
                              reached)  # fmt: skip

    def task_blocks(self, step: GradientStep) -> tuple[list[Tensor], Tensor | None, list[bool]]:
        """J of the shared parameters as per-parameter blocks (K, n_p), each passed through
        `step.reduce`, with the heads given their plain gradients; G of the blocks when the
        walk by hand summed it (Gramian balancers), else None; and which shared parameters the
        losses reach (the others' blocks are zeros, and they get no `.grad`, as from a plain
        backward). Gradient accumulation sums these blocks over micro-batches before a
        balancer combines them."""
        losses, shared, heads, rec = step.losses, step.shared, step.heads, step.recorded
        k, reduce = step.num_tasks, step.reduce
        retain = step.val_loss is not None
        z = rec.features
        if z is None:  # the whole graph: one batched backward of K unit cotangents (vmap)
            eye = torch.eye(k, dtype=losses.dtype, device=losses.device)
            grads = batched_grads(losses, [*shared, *heads], eye, retain=retain)
            _accumulate(heads, [None if g is None else g.sum(0) for g in grads[len(shared) :]])
            mine = grads[: len(shared)]
            return self._blocks(mine, shared, k, reduce), None, _reached(mine)
        dz, _ = head_gradients(losses, z, rec.task_features, rec.task_maps, heads)
        assert dz is not None
        summed: Tensor | None = None
        if z.grad_fn is None:  # recorded without autograd: walk the blocks by hand
            assert rec.segments is not None  # check_inputs
            if isinstance(step.balancer, GramianBalancer):
                summed = torch.zeros(k, k, dtype=torch.float64, device=dz.device)

            def visit(block: Tensor) -> Tensor:
                block = _reduce(block, reduce)
                if summed is not None:  # while the block is still in cache
                    summed.add_(row_gramian(block))
                return block

            return walk_jacobian(rec.segments, dz, shared, visit), summed, [True] * len(shared)
        grads = batched_grads(z, shared, dz, retain=retain)
        return self._blocks(grads, shared, k, reduce), None, _reached(grads)

    @staticmethod
    def _blocks(
        grads: Sequence[Tensor | None], shared: Sequence[Tensor], k: int, reduce: Reduce | None
    ) -> list[Tensor]:
        return [_reduce(g.reshape(k, -1), reduce)  # type: ignore[union-attr]
                for g in _filled(grads, shared, k)]  # fmt: skip


def _reached(grads: Sequence[Tensor | None]) -> list[bool]:
    return [g is not None for g in grads]


def apply_jacobian(
    balancer: Balancer,
    losses: Tensor,
    blocks: Sequence[Tensor],
    shared: Sequence[Tensor],
    val_loss: Tensor | None,
    reduce: Reduce | None,
    mode: str,
    fit_weights: bool = True,
    gramian: Tensor | None = None,
    reached: Sequence[bool] | None = None,
) -> BackwardResult:
    """Combine J given as per-parameter blocks (K, n_p); Gramian methods never concatenate.
    `gramian` is G of those blocks when the caller summed it already; `reached` says which
    shared parameters get the update (None: all)."""

    def write(update: Sequence[Tensor]) -> None:
        keep = [True] * len(shared) if reached is None else reached
        _accumulate(shared, [u if r else None for u, r in zip(update, keep, strict=True)])

    held = sum(b.numel() for b in blocks)
    if isinstance(balancer, GramianBalancer):
        val_blocks: list[Tensor] = []
        products = None
        if val_loss is not None:
            g_val = torch.autograd.grad(val_loss, shared, allow_unused=True, materialize_grads=True)
            val_blocks = [_reduce(g.reshape(-1), reduce) for g in g_val]
            products = sum(
                (b.double() @ v.double() for b, v in zip(blocks, val_blocks, strict=True))
            )
        gramian = _gramian(blocks) if gramian is None else gramian
        info = GradientInfo(losses, gramian=gramian, val_products=products)  # type: ignore[arg-type]
        c = _coefficients(balancer, info)
        k = blocks[0].shape[0]
        cf = c.to(blocks[0].dtype)
        update = [weighted_sum(cf[:k], b) for b in blocks]
        if len(c) == k + 1:  # the last coefficient weighs the validation gradient (FORUM)
            update = [u + cf[k] * v for u, v in zip(update, val_blocks, strict=True)]
        write(update)
        return BackwardResult(c[:k].detach().float(), mode, held)
    jac = torch.cat(list(blocks), dim=1)
    combined, fitted = _combine(balancer, _info(balancer, losses, jac), jac, fit_weights)
    write(_split(combined, shared))
    return BackwardResult(fitted, mode, held)
