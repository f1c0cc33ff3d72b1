"""The plan for loss-weighting balancers: one ordinary backward of the combined loss (no
per-task gradients). Not a selectable mode: the planner picks it for balancers that need only
the losses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from polytask.balancers._base import Balancer
from polytask.gradients._engine import BackwardResult, apply_cotangent, graph_nodes
from polytask.gradients._mode import GradientMode, GradientStep, Recorded

if TYPE_CHECKING:
    from polytask.models._base import MultiTaskNet


class LossWeighting(GradientMode):
    """`balancer.combine(losses)` back-propagated once (a model penalty added to it)."""

    name = "losses"
    needs_representation = False
    per_task = False

    def held_floats(
        self, model: MultiTaskNet, balancer: Balancer, shared: Sequence[Tensor], batch_size: int
    ) -> int:
        return 0

    def record(self, model: MultiTaskNet, x: Tensor, walk: bool = False) -> Recorded:
        return Recorded(model(x))

    def backward_with_penalty(self, step: GradientStep, penalty: Tensor | None) -> BackwardResult:
        values = step.losses if step.scale == 1.0 else step.losses / step.scale
        total = step.balancer.combine(values)
        if step.scale != 1.0:  # combined at the losses' own values, back-propagated scaled
            total = total * step.scale
        applied = _applied(step.balancer, values)
        objective = total if penalty is None else total + penalty
        rec, z = step.recorded, step.recorded.features
        # heads that read per-task features cut from z's graph (split_features'
        # leaves, linear_task_features of z.detach()): the trunk gets Σ_k ∂total/∂z through
        # them, as if the heads had read z itself (features still on z's graph reach it anyway)
        cut = [
            i for i, u in enumerate(rec.task_features or ()) if z is not None and not _reaches(u, z)
        ]
        if not cut:
            objective.backward()
            return BackwardResult(applied, self.name, 0)
        assert z is not None and rec.task_features is not None
        if z.grad_fn is None:
            raise ValueError(
                "a loss weighting back-propagates through the trunk's graph, and features= "
                "were recorded without autograd (track=False): record them with autograd"
            )
        reached = torch.autograd.grad(
            objective, [rec.task_features[i] for i in cut], retain_graph=True, allow_unused=True
        )
        objective.backward(retain_graph=True)  # z's graph kept for the cotangent
        maps = [None if rec.task_maps is None else rec.task_maps[i] for i in cut]
        parts = [
            g if w is None else g @ w for g, w in zip(reached, maps, strict=True) if g is not None
        ]
        if parts:
            apply_cotangent(z, step.shared, torch.stack(parts).sum(0).to(z.dtype))
        return BackwardResult(applied, self.name, 0)

    def backward(self, step: GradientStep) -> BackwardResult:
        return self.backward_with_penalty(step, None)


def _applied(balancer: Balancer, losses: Tensor) -> Tensor:
    """The weights this step's combination applied (∂combine/∂L_k, read after `combine`
    moved any state: DWA's are the window's, FAMO's the updated logits'); a random draw's
    own weights (RLW), not their expectation."""
    drawn = balancer.drawn_weights()
    return (drawn if drawn is not None else balancer.weights(losses.detach())).detach()


def _reaches(t: Tensor, z: Tensor) -> bool:
    """Whether `t` was computed from `z` (a walk of its autograd graph back to z's node, or z
    itself): such a feature passes the gradient to the trunk on its own."""
    if t is z:
        return True
    target = z.grad_fn
    if target is None or t.grad_fn is None:
        return False
    return any(node is target for node in graph_nodes(t.grad_fn))
