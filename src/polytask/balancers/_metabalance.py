"""MetaBalance (He et al., "MetaBalance: Improving Multi-Task Recommendations via Adapting
Gradient Magnitudes of Auxiliary Tasks", WWW 2022).

Auxiliary gradients are rescaled towards the main task's gradient norm, with moving averages
m_k ← β m_k + (1 − β) ‖g_k‖ started at 0 (as the authors' optimizer) and relax factor r:
g_k ← (r m̂_main / m̂_k + 1 − r) g_k, m̂_k = m_k / (1 − β^{n_k}) over the n_k steps that
labelled task k (the authors' ratio m_main / m_k where every step labels every task; a task
absent from a batch keeps its average, where a zero norm would shrink it and overscale the
task on its return). Norms come from the Gramian's diagonal (the whole shared gradient, not
per parameter tensor).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

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
    counts: Tensor

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
        self.register_buffer("counts", torch.zeros(0, dtype=torch.float64))
        self.main_index = 0

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        if self.main_task is not None and self.main_task not in task_names:
            raise ValueError(
                f"MetaBalance main_task {self.main_task!r} is not one of {list(task_names)}"
            )
        self.main_index = 0 if self.main_task is None else list(task_names).index(self.main_task)
        self.norms = torch.zeros(0, dtype=torch.float64)
        self.counts = torch.zeros(0, dtype=torch.float64)

    def coefficients(self, info: GradientInfo) -> Tensor:
        g = info.require_gramian()
        current = g.diagonal().clamp_min(0).sqrt()
        k = current.numel()
        if self.norms.numel() != k:
            self.norms, self.counts = current.new_zeros(k), current.new_zeros(k)
        seen = self.labelled_mask(k, g.device)
        moved = self.beta * self.norms.to(g) + (1 - self.beta) * current
        self.norms = torch.where(seen, moved, self.norms.to(g))
        self.counts = self.counts.to(g) + seen.to(g)
        known = self.counts > 0
        average = torch.where(known, self.norms / (1 - self.beta ** self.counts.clamp_min(1)), 0.0)
        main = average[self.main_index]
        ratio = torch.where((average > 0) & (main > 0), main / average.clamp_min(1e-300), 1.0)
        c = self.relax * ratio + (1 - self.relax)
        c[self.main_index] = 1.0
        return torch.where(seen, c, 0.0)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        """Checkpoints from before the step counts started the averages at the first norm
        (no bias to correct): counted as many steps as their bias no longer shows."""
        norms = state_dict.get(prefix + "norms")
        if prefix + "counts" not in state_dict and isinstance(norms, Tensor):
            state_dict[prefix + "counts"] = torch.full_like(norms, 1000.0)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
