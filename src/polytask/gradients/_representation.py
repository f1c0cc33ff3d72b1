"""Mode `representation` (approximate, cheap): the balancer works on the gradients with respect
to the shared representation z (one ordinary backward through the heads), then one ordinary
trunk backward applies the combined cotangent. When every head starts with a linear layer the
gradients stay factored (g_k W_k), and G and the cotangent come from the factors without K
copies of z's gradient (the cheap path for many tasks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import Tensor

from polytask.balancers._base import Balancer, GradientInfo, GramianBalancer, JacobianBalancer
from polytask.gradients._engine import (
    BackwardResult,
    _coefficients,
    _combine,
    _info,
    _reduce,
    apply_cotangent,
    head_gradients,
)
from polytask.gradients._mode import GradientMode, GradientStep

if TYPE_CHECKING:
    from polytask.models._base import MultiTaskNet


class RepresentationMode(GradientMode):
    """Balancing in the representation's gradient space (MGDA-UB's own space)."""

    name = "representation"
    row_space = True
    reduced_update = True
    exact = False
    factored_heads = True
    coordinate_wise = True
    gradient_state = False

    def held_floats(
        self, model: MultiTaskNet, balancer: Balancer, shared: Sequence[Tensor], batch_size: int
    ) -> int:
        entries = model.head_entry_layers()
        if entries is not None and not isinstance(balancer, JacobianBalancer):
            width = sum(e.out_features for e in entries)  # factored: (B, Σo) and (Σo, d)
            return width * (batch_size + model.representation_dim)
        return len(model.task_names) * batch_size * model.representation_dim

    def backward(self, step: GradientStep) -> BackwardResult:
        rec, balancer, k = step.recorded, step.balancer, step.num_tasks
        z = rec.features
        assert z is not None  # check_inputs
        dz, factored = head_gradients(
            step.losses, z, rec.task_features, rec.task_maps, step.heads, expand=False
        )
        if factored is not None:
            if step.reduce is None and isinstance(balancer, GramianBalancer):
                c = _coefficients(
                    balancer, GradientInfo(step.detached, gramian=factored.gramian(k))
                )
                apply_cotangent(z, step.shared, factored.combined(c))
                return BackwardResult(c.detach().float(), self.name, factored.held)
            dz = factored.expand(k)
        assert dz is not None
        flat = _reduce(dz.reshape(k, -1), step.reduce)
        combined, fitted = _combine(balancer, _info(balancer, step.detached, flat), flat)
        apply_cotangent(z, step.shared, combined.reshape(z.shape).to(z.dtype))
        return BackwardResult(fitted, self.name, flat.numel())
