"""Gradient modes: how the per-task gradients are taken and combined by a balancer.

`backward(losses, shared_params, balancer, ...)` is the one call a user's own training loop
needs; the Trainer plans a mode for its model up front.
"""

from polytask.gradients._engine import (
    MODES,
    BackwardResult,
    Segment,
    backward,
    linear_task_features,
    record_segments,
    row_gramian,
    split_features,
)

__all__ = [
    "MODES",
    "BackwardResult",
    "Segment",
    "backward",
    "linear_task_features",
    "record_segments",
    "row_gramian",
    "split_features",
]
