"""Mode `subsample` (approximate): the coefficients c from the exact Jacobian on the batch's
first `rows` rows (the trunk re-run on them), applied to the full batch with one ordinary trunk
backward.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import TYPE_CHECKING, Any

from torch import Tensor

from polytask.gradients._engine import (
    BackwardResult,
    _batched_grad,
    head_gradients,
    task_labels,
)
from polytask.gradients._mode import GradientMode, GradientStep, Recorded
from polytask.models._base import running_stats_kept

if TYPE_CHECKING:
    from polytask.models._base import MultiTaskNet

SUBSAMPLE_ROWS = 32
"""Rows of the sub-batch by default."""


class SubsampleMode(GradientMode):
    """c from the exact Jacobian on a sub-batch of `rows` rows."""

    name = "subsample"
    exact = False
    reads_whole_batch = False
    compiles = False  # a batched backward through the trunk on the probe rows

    def __init__(self, rows: int = SUBSAMPLE_ROWS) -> None:
        if rows < 1:
            raise ValueError(f"subsample_size must be at least 1, got {rows}")
        self.rows = rows

    @classmethod
    def create(cls, **options: Any) -> SubsampleMode:
        return cls(options.get("subsample_size", SUBSAMPLE_ROWS))

    def __repr__(self) -> str:
        return f"SubsampleMode(rows={self.rows})"

    def record(self, model: MultiTaskNet, x: Tensor, walk: bool = False) -> Recorded:
        recorded = super().record(model, x, walk)
        with running_stats_kept(model):  # the probe rows were counted by the step's forward
            probe = model.representation(x[: self.rows])
        return dataclasses.replace(recorded, probe_features=probe)

    def check_inputs(self, recorded: Recorded) -> None:
        super().check_inputs(recorded)
        if recorded.probe_features is None:
            raise ValueError(
                "mode='subsample' needs probe_features= (the trunk re-run on the batch's first "
                "rows)"
            )

    def backward(self, step: GradientStep) -> BackwardResult:
        rec = step.recorded
        z, probe = rec.features, rec.probe_features
        assert z is not None and probe is not None  # check_inputs
        dz, factored = head_gradients(step.losses, z, rec.task_features, rec.task_maps, step.heads)
        assert dz is not None
        rows = probe.shape[0]
        probe_dz = dz[:, :rows] * (z.shape[0] / rows)
        self._warn_unprobed(step, probe_dz)
        grads = _batched_grad(probe, step.shared, probe_dz, retain=False)
        return self.combine_from_blocks(step, grads, dz, factored)

    def _warn_unprobed(self, step: GradientStep, probe_dz: Tensor) -> None:
        """Say which labelled tasks no probe row labels: their probe gradient is zero, so they
        are left out of this step's balancing (tasks labelled on few rows, many small tasks)."""
        labelled = step.labelled
        if labelled is None:
            return
        seen = probe_dz.reshape(probe_dz.shape[0], -1).ne(0).any(1).to(labelled.device)
        missed = (labelled & ~seen).nonzero().flatten().tolist()
        if missed:
            names = task_labels(step.balancer, len(labelled))
            warnings.warn(
                f"mode='subsample': no probe row (the batch's first {self.rows}) labels "
                f"task(s) {[names[i] for i in missed]}, so they are left out of this step's "
                "balancing: raise subsample_size, or use gradient_mode jacobian, gramian or "
                "sketch for tasks labelled on few rows",
                stacklevel=4,
            )
