"""Mode `last_layer` (approximate): the coefficients c from the Jacobian of the last shared
parameter tensors only (by default a linear layer's weight and bias); one ordinary trunk
backward then applies Σ c_k ∂L_k/∂z to every shared parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from polytask.balancers._base import Balancer
from polytask.gradients._engine import (
    BackwardResult,
    _batched_grad,
    head_gradients,
)
from polytask.gradients._mode import GradientMode, GradientStep

if TYPE_CHECKING:
    from polytask.models._base import MultiTaskNet

LAST_PARAMS = 2
"""Parameter tensors of the `last_layer` mode by default (a linear layer's weight and bias)."""


class LastLayerMode(GradientMode):
    """c from the last `params` shared parameter tensors' Jacobian."""

    name = "last_layer"
    distributed = True
    exact = False
    compiles = False  # a batched backward through the trunk's last layers
    ordered_shared = True

    def __init__(self, params: int = LAST_PARAMS) -> None:
        if params < 1:
            raise ValueError(f"last_params must be at least 1, got {params}")
        self.params = params

    @classmethod
    def create(cls, **options: Any) -> LastLayerMode:
        return cls(options.get("last_params", LAST_PARAMS))

    def __repr__(self) -> str:
        return f"LastLayerMode(params={self.params})"

    def held_floats(
        self, model: MultiTaskNet, balancer: Balancer, shared: Sequence[Tensor], batch_size: int
    ) -> int:
        return len(model.task_names) * sum(p.numel() for p in shared[-self.params :])

    def backward(self, step: GradientStep) -> BackwardResult:
        rec = step.recorded
        z = rec.features
        assert z is not None  # check_inputs
        dz, factored = head_gradients(step.losses, z, rec.task_features, rec.task_maps, step.heads)
        grads = _batched_grad(z, step.shared[-self.params :], dz)  # type: ignore[arg-type]
        return self.combine_from_blocks(step, grads, dz, factored)
