"""Masked-feature reconstruction (a self-supervised auxiliary task): a random `mask_rate` of each
row's input values is set to 0 (the training mean, once standardised; a one-hot block reads as
missing) and the head predicts the original values of the masked entries, the loss counting
those entries only (as in VIME's mask estimation and masked autoencoders, on tabular rows)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from polytask.tasks._kinds._base import Derived
from polytask.tasks._kinds._self_supervised import (
    InputReconstructionKind,
    masked,
    require_values,
)

if TYPE_CHECKING:
    from polytask.tasks._task import Task


class ReconstructionKind(InputReconstructionKind):
    """Reconstruct the masked input values: `mask_rate` (0.3) of the values of each row are
    replaced by 0; the target is the original value there (NaN elsewhere: not counted)."""

    params: ClassVar[Mapping[str, float]] = {"mask_rate": 0.3, "features": 0}

    def validate(self, task: Task) -> None:
        super().validate(task)
        rate = self.param(task, "mask_rate")
        if not 0 < rate < 1:
            raise ValueError(f"task {task.name!r}: mask_rate must be in (0, 1), got {rate}")

    def derive(self, task: Task, x: Tensor, generator: torch.Generator | None) -> Derived:
        require_values(task, x)
        flat = x.reshape(x.shape[0], -1)
        drawn = masked(flat, self.param(task, "mask_rate"), generator)
        inputs = torch.where(drawn, torch.zeros_like(flat), flat).view(x.shape)
        target = torch.where(drawn, flat, torch.full_like(flat, float("nan")))
        return Derived(inputs, target)
