"""MetaBalance (He et al., "MetaBalance: Improving Multi-Task Recommendations via Adapting
Gradient Magnitudes of Auxiliary Tasks", WWW 2022).

Auxiliary gradients are rescaled towards the main task's gradient norm, with moving averages
m_k ← β m_k + (1 − β) ‖g_k‖ and relax factor r: g_k ← (r m_main / m_k + 1 − r) g_k. Norms
come from the Gramian's diagonal (the whole shared gradient, not per parameter tensor).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, GramianBalancer


class MetaBalance(GramianBalancer):
    """`main_task` defaults to the first task; r = 1 matches norms fully, r = 0 is EW.

    Per step (`coefficients`): the moving averages of the gradient norms are updated.
    """

    updates_state: ClassVar[bool] = True
    labelled_subproblem: ClassVar[bool] = False  # per-task state: sees every row

    norms: Tensor

    def __init__(self, main_task: str | None = None, relax: float = 0.7, beta: float = 0.9):
        super().__init__()
        if not 0 <= relax <= 1 or not 0 <= beta < 1:
            raise ValueError(
                f"MetaBalance needs relax in [0, 1], beta in [0, 1); got {relax}, {beta}"
            )
        self.main_task = main_task
        self.relax = relax
        self.beta = beta
        self.register_buffer("norms", torch.zeros(0, dtype=torch.float64))
        self.main_index = 0

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        if self.main_task is not None and self.main_task not in task_names:
            raise ValueError(
                f"MetaBalance main_task {self.main_task!r} is not one of {list(task_names)}"
            )
        self.main_index = 0 if self.main_task is None else list(task_names).index(self.main_task)
        self.norms = torch.zeros(0, dtype=torch.float64)

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        current = g.diagonal().clamp_min(0).sqrt()
        if self.norms.numel() != current.numel():
            self.norms = current.clone()
        else:
            self.norms = self.beta * self.norms.to(g) + (1 - self.beta) * current
        ratio = self.norms[self.main_index] / self.norms.clamp_min(1e-20)
        c = self.relax * ratio + (1 - self.relax)
        c[self.main_index] = 1.0
        return c
