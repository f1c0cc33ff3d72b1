"""Trimmed mean (Yin et al., "Byzantine-Robust Distributed Learning", ICML 2018), as torchjd
offers it: per coordinate, drop the `trim` largest and `trim` smallest task values and
average the rest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, JacobianBalancer


class TrimmedMean(JacobianBalancer):
    """Needs more than 2·trim tasks. A partly labelled batch is aggregated over its labelled
    tasks' rows, with trim lowered to what their number allows."""

    labelled_subproblem: ClassVar[bool] = False  # restricts itself, trimming less if need be

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
        self._check(info.jacobian.shape[0])
        jac, trim = info.jacobian, self.trim
        if (labelled := self.labelled) is not None:  # the labelled rows, as many trimmed as fit
            jac = jac[labelled.to(jac.device)]
            trim = min(trim, (len(jac) - 1) // 2)
            if len(jac) == 0:
                return info.jacobian.new_zeros(info.jacobian.shape[1])
        k = jac.shape[0]
        if trim * k > _NETWORK_LIMIT:
            return torch.sort(jac, dim=0).values[trim : k - trim].mean(0)
        rows = _drop_extremes(list(jac.unbind(0)), trim)
        kept = rows[0].clone()
        for row in rows[1:]:
            kept.add_(row)
        return kept.div_(len(rows))


_NETWORK_LIMIT = 96
"""Up to trim × K compare-exchanges of this order, selection beats `torch.sort` along K (a
strided sort of n short columns, ~15× slower on CPU at K = 8)."""


def _drop_extremes(rows: list[Tensor], trim: int) -> list[Tensor]:
    """The rows left once each coordinate's `trim` largest and smallest values are moved out,
    by bubble passes of elementwise min/max: exact (no arithmetic), ties handled, no sort."""
    k = len(rows)
    for p in range(trim):  # the p-th largest settles at k − 1 − p
        for i in range(k - 1 - p):
            _order(rows, i)
    for p in range(trim):  # the p-th smallest of the rest settles at p
        for i in range(k - 2 - trim, p - 1, -1):
            _order(rows, i)
    return rows[trim : k - trim]


def _order(rows: list[Tensor], i: int) -> None:
    """Compare-exchange rows i and i + 1 coordinate-wise: the smaller values first."""
    rows[i], rows[i + 1] = torch.minimum(rows[i], rows[i + 1]), torch.maximum(rows[i], rows[i + 1])
