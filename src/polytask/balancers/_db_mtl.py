"""DB-MTL, dual-balancing MTL (Lin et al., "Dual-Balancing for Multi-Task Learning", 2023).

Loss scale: task gradients of log L_k (= g_k / L_k). Gradient scale: an EMA buffer
b ← g̃ + β_t (b − g̃) with β_t = β / t^σ, each row rescaled to the largest row norm,
α_k = max_j ‖b_j‖ / ‖b_k‖; the update is Σ_k α_k b_k. The buffer is K × n state (needs J).

With a partially labelled batch (`Balancer.labelled`) only the labelled tasks' rows move and
enter the update (max over them): an unlabelled task's gradient row is 0, which is no
observation. Fed to the EMA it decayed that task's row, and rescaled to the largest norm
the stale row still pushed the update at full size in an old direction.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import GradientInfo, JacobianBalancer, require, weighted_sum


class DBMTL(JacobianBalancer):
    """β as in LibMTL (the authors' code); σ 0.5 decays β as β/t^σ, where LibMTL's default, 0,
    keeps it constant (`beta_sigma=0` for theirs; the benchmark tables ran with 0.5).

    Per step (`aggregate`): the EMA buffer (the labelled tasks' rows) and the step count t
    are updated.
    """

    positive_losses = "it back-propagates the log losses"

    updates_state: ClassVar[bool] = True
    labelled_subproblem: ClassVar[bool] = False  # per-task state: sees every row

    buffer: Tensor
    steps: Tensor

    keeps_gradient_state: ClassVar[bool] = True

    def __init__(self, beta: float = 0.9, beta_sigma: float = 0.5) -> None:
        super().__init__()
        require(0 <= beta < 1, "DB-MTL", "beta", beta, "in [0, 1) (its gradients' EMA rate)")
        require(beta_sigma >= 0, "DB-MTL", "beta_sigma", beta_sigma, ">= 0 (beta's decay)")
        self.beta, self.beta_sigma = beta, beta_sigma
        self.register_buffer("buffer", torch.zeros(0))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def aggregate(self, info: GradientInfo) -> Tensor:
        assert info.jacobian is not None
        jac = info.jacobian
        self.steps += 1
        inverse = 1 / (info.losses.to(jac) + 1e-8)  # ∇ log L_k = g_k / L_k
        beta = self.beta / float(self.steps) ** self.beta_sigma
        if self.labelled is not None:
            return self._aggregate_labelled(jac, inverse, beta, self.labelled.to(jac.device))
        if self.buffer.shape == jac.shape:  # b ← β_t b + (1 − β_t) g̃, in place, no K × n temp
            buf = self.buffer.to(jac).mul_(beta).addcmul_(jac, ((1 - beta) * inverse)[:, None])
        else:
            buf = jac * ((1 - beta) * inverse)[:, None]
        norms = buf.norm(dim=1)
        alpha = norms.max() / (norms + 1e-8)
        self.buffer = buf
        return weighted_sum(alpha, buf)

    def _aggregate_labelled(
        self, jac: Tensor, inverse: Tensor, beta: float, labelled: Tensor
    ) -> Tensor:
        """The step on the labelled tasks' rows; the other rows are held and left out."""
        rows = labelled.nonzero().squeeze(1)
        fresh = jac[rows] * ((1 - beta) * inverse[rows])[:, None]
        if self.buffer.shape == jac.shape:
            buf = self.buffer.to(jac)
            buf[rows] = buf[rows].mul_(beta).add_(fresh)
        else:
            buf = torch.zeros_like(jac)
            buf[rows] = fresh
        self.buffer = buf
        if len(rows) == 0:
            return torch.zeros_like(jac[0])
        norms = buf[rows].norm(dim=1)
        alpha = norms.max() / (norms + 1e-8)
        return weighted_sum(alpha, buf[rows])
