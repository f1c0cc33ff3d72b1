"""Trimmed mean (Yin et al., "Byzantine-Robust Distributed Learning", ICML 2018), as torchjd
offers it: per coordinate, drop the `trim` largest and `trim` smallest task values and
average the rest."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from polytask.balancers.base import GradientInfo, JacobianBalancer


class TrimmedMean(JacobianBalancer):
    """Needs more than 2·trim tasks."""

    def __init__(self, trim: int = 1) -> None:
        super().__init__()
        if trim < 0:
            raise ValueError(f"trimmed mean trim must be >= 0, got {trim}")
        self.trim = trim

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        self._check(len(self.task_names))

    def _check(self, k: int) -> None:
        if k <= 2 * self.trim:
            raise ValueError(
                f"trimmed mean with trim={self.trim} needs > {2 * self.trim} tasks, got {k}"
            )

    def aggregate(self, info: GradientInfo) -> Tensor:
        assert info.jacobian is not None
        k = info.jacobian.shape[0]
        self._check(k)
        ordered = torch.sort(info.jacobian, dim=0).values
        return ordered[self.trim : k - self.trim].mean(0)
