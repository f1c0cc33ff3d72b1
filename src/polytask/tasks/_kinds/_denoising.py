"""Denoising (a self-supervised auxiliary task): Gaussian noise of standard deviation
`noise_std` is added to every input value (standardised features: in units of their training
std) and the head reconstructs the clean values (a denoising autoencoder, Vincent et al. 2008)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from polytask.tasks._kinds._base import Derived
from polytask.tasks._kinds._self_supervised import InputReconstructionKind, normal, require_values

if TYPE_CHECKING:
    from polytask.tasks._task import Task


class DenoisingKind(InputReconstructionKind):
    """Reconstruct the clean input values from the values plus N(0, `noise_std`²) noise."""

    params: ClassVar[Mapping[str, float]] = {"noise_std": 0.5, "features": 0}

    def validate(self, task: Task) -> None:
        super().validate(task)
        std = self.param(task, "noise_std")
        if not std > 0:
            raise ValueError(f"task {task.name!r}: noise_std must be > 0, got {std}")

    def derive(self, task: Task, x: Tensor, generator: torch.Generator | None) -> Derived:
        require_values(task, x)
        flat = x.reshape(x.shape[0], -1)
        noisy = flat + self.param(task, "noise_std") * normal(flat.shape, generator, flat)
        return Derived(noisy.view(x.shape), flat)
