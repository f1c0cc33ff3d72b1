"""Gradient modes: how the per-task gradients are taken and combined by a balancer.

`backward(losses, balancer=..., features=z)` is the one call a user's own training loop needs;
the Trainer plans a mode for its model up front (`plan_gradients`). Each mode is one object in
its own file, registered in `MODES`:

- `jacobian` (exact, default): J (K × n) from one batched backward; update Jᵀ c.
- `gramian` (exact, lean): G summed segment by segment, never holding J.
- `representation` (approximate, cheap): balancing on ∂L_k/∂z, one trunk backward.
- `last_layer` (approximate): c from the last shared parameter tensors' Jacobian.
- `subsample` (approximate): c from the exact Jacobian on a sub-batch.
- `sketch` (approximate, cheap): c from a sketched Gramian of the trunk's last linear layer.

Distributed training: pass `reduce` (e.g. an all-reduce mean over processes); it is applied to
the per-task gradient blocks before the Gramian is formed, so G is that of the global Jacobian.

Auxiliary tasks: `auxiliary_aware(balancer, auxiliary, "gated" | "projected")` lets any
balancer combine the main tasks and adds each auxiliary gradient only where it does not conflict
with them (Du et al. 2018).
"""

from polytask.gradients._auxiliary import (
    AuxiliaryAwareBilevel,
    AuxiliaryAwareGramian,
    AuxiliaryAwareJacobian,
    auxiliary_aware,
    auxiliary_coefficients,
)
from polytask.gradients._backward import backward
from polytask.gradients._engine import (
    BackwardResult,
    NonFiniteError,
    Reduce,
    Segment,
    apply_cotangent,
    head_gradients,
    jacobian_floats,
    linear_task_features,
    record_segments,
    row_gramian,
    split_features,
)
from polytask.gradients._gramian import GramianMode
from polytask.gradients._jacobian import JacobianMode
from polytask.gradients._last_layer import LAST_PARAMS, LastLayerMode
from polytask.gradients._losses import LossWeighting
from polytask.gradients._mode import GradientMode, GradientStep, Recorded
from polytask.gradients._plan import GradientPlan, plan_gradients
from polytask.gradients._registry import DEFAULT_MODE, LEAN_MODE, MODES, make_mode, modes_for
from polytask.gradients._representation import RepresentationMode
from polytask.gradients._sketch import SKETCH_SIZE, SketchMode
from polytask.gradients._subsample import SubsampleMode

__all__ = [
    "DEFAULT_MODE",
    "LAST_PARAMS",
    "LEAN_MODE",
    "MODES",
    "SKETCH_SIZE",
    "AuxiliaryAwareBilevel",
    "AuxiliaryAwareGramian",
    "AuxiliaryAwareJacobian",
    "BackwardResult",
    "GradientMode",
    "GradientPlan",
    "GradientStep",
    "GramianMode",
    "JacobianMode",
    "LastLayerMode",
    "LossWeighting",
    "NonFiniteError",
    "Recorded",
    "Reduce",
    "RepresentationMode",
    "Segment",
    "SketchMode",
    "SubsampleMode",
    "apply_cotangent",
    "auxiliary_aware",
    "auxiliary_coefficients",
    "backward",
    "head_gradients",
    "jacobian_floats",
    "linear_task_features",
    "make_mode",
    "modes_for",
    "plan_gradients",
    "record_segments",
    "row_gramian",
    "split_features",
]
