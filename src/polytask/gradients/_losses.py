"""The plan for loss-weighting balancers: one ordinary backward of the combined loss (no
per-task gradients). Not a selectable mode: the planner picks it for balancers that need only
the losses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from polytask.balancers._base import Balancer
from polytask.gradients._engine import BackwardResult, apply_cotangent
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
        if step.scale == 1.0:
            total = step.balancer.combine(step.losses)
        else:  # combined at the losses' own values, back-propagated with the float16 scale
            total = step.balancer.combine(step.losses / step.scale) * step.scale
        objective = total if penalty is None else total + penalty
        rec = step.recorded
        if rec.task_features is None or rec.features is None:
            objective.backward()
            return BackwardResult(None, self.name, 0)
        # heads that read detached per-task leaves of z (split_features, linear_task_features):
        # the trunk gets Σ_k ∂total/∂z through them, as if the heads had read z itself
        reached = torch.autograd.grad(
            objective, list(rec.task_features), retain_graph=True, allow_unused=True
        )
        objective.backward(retain_graph=any(g is not None for g in reached))  # z's graph kept
        maps: Sequence[Tensor | None] = rec.task_maps or [None] * len(reached)
        parts = [
            g if w is None else g @ w for g, w in zip(reached, maps, strict=True) if g is not None
        ]
        if parts:
            apply_cotangent(
                rec.features, step.shared, torch.stack(parts).sum(0).to(rec.features.dtype)
            )
        return BackwardResult(None, self.name, 0)

    def backward(self, step: GradientStep) -> BackwardResult:
        return self.backward_with_penalty(step, None)
