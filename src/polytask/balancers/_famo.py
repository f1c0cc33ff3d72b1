"""FAMO, fast adaptive multitask optimisation (Liu et al., NeurIPS 2023).

Task logits ξ give z = softmax(ξ); the step minimises Σ_k z_k log(L_k − L_min) / c with
c = Σ_k z_k / (L_k − L_min), so task k's gradient is weighted z_k / (c (L_k − L_min)). After
each step ξ moves to make the log losses fall at equal rates, down the gradient
J_softmax(ξ)ᵀ δ + γ ξ, δ_k = log L_k(before) − log L_k(after). "After" is the next step's
loss on a fresh batch, which spares the paper's extra forward pass. The step is Adam's with
learning rate β (`optimizer="adam"`, as the authors' code and LibMTL take it: γ is Adam's
weight decay), or the plain step ξ ← ξ − β (J_softmax(ξ)ᵀ δ + γ ξ) of the paper's
Algorithm 1 (`optimizer="sgd"`), which at the default β = 0.025 moves the logits about a
thousand times less, leaving the weights near 1/L_k.

A batch that labels only some tasks (`Balancer.labelled`) is a step on those tasks: c sums
over them (the others' loss of 0 is no observation; taken as one, it held almost all the
weight), and δ is taken over the tasks labelled now that were labelled before, as the mean
change per step since each was last labelled, with the softmax restricted to them; the other
tasks' logits (and Adam's moments) are held, decay included.

`loss_average` (α, 0 by default: the paper) puts a running mean of each task's loss over the
steps that labelled it, L̄_k ← α L̄_k + (1 − α) L_k, in the weights' 1/(L_k − L_min) in place
of this batch's loss. With many tasks and random batches a task's batch loss is the mean of
one or two rows, and 1/L of a single row is heavy-tailed (for squared error, ∇ log L = 2∇r/r
grows without bound as the residual r → 0): on 30 binary tasks, each row labelling one, at
batch 32 FAMO's mean test AUC was 0.74 with α = 0 and 0.81 with α = 0.9, like equal weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import Balancer, require


class FAMO(Balancer):
    """Loss weighting with O(1) cost per step; β the logit step size, γ its decay.

    Per step (`combine`): the task logits move and the labelled tasks' log losses (and, with
    `loss_average`, their running means) are kept.
    """

    positive_losses = "it balances the log losses"

    updates_state: ClassVar[bool] = True

    logits: Tensor
    previous: Tensor
    """Each task's log loss when it was last labelled."""
    since: Tensor
    """Steps since `previous` was recorded (0: never labelled yet)."""
    average: Tensor
    """Running mean of each task's shifted loss over its labelled steps (with `loss_average`)."""
    moments: Tensor
    """Adam's first and second moments of each logit's gradient, and its step count (3 × K)."""

    def __init__(
        self,
        lr: float = 0.025,
        decay: float = 1e-3,
        min_loss: float = 0.0,
        loss_average: float = 0.0,
        optimizer: str = "adam",
    ) -> None:
        super().__init__()
        require(lr > 0, "FAMO", "lr", lr, "> 0 (the step size of its weights' logits)")
        require(decay >= 0, "FAMO", "decay", decay, ">= 0 (weight decay of the logits)")
        require(min_loss >= 0, "FAMO", "min_loss", min_loss, ">= 0 (a floor under the losses)")
        if not 0 <= loss_average < 1:
            raise ValueError(
                f"FAMO loss_average must be in [0, 1) (0: this batch's loss), got {loss_average}"
            )
        if optimizer not in ("adam", "sgd"):
            raise ValueError(
                f"FAMO optimizer must be 'adam' (the authors' code) or 'sgd' (the paper's plain "
                f"step), got {optimizer!r}"
            )
        self.optimizer = optimizer
        self.lr = lr
        self.decay = decay
        self.min_loss = min_loss
        self.loss_average = loss_average
        for name in ("logits", "previous", "since", "average", "moments"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.float64))

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        k = len(task_names)
        self.logits = torch.zeros(k, dtype=torch.float64)
        self.previous = torch.zeros(k, dtype=torch.float64)
        self.since = torch.zeros(k, dtype=torch.float64)
        self.average = torch.zeros(k, dtype=torch.float64)
        self.moments = torch.zeros(3, k, dtype=torch.float64)

    def _shifted(self, losses: Tensor) -> Tensor:
        return (losses - self.min_loss).clamp_min(1e-8)

    def loss_weights(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)
        z = torch.softmax(self.logits, 0).to(losses)
        d = self._shifted(losses.detach())
        if self.loss_average:  # the running mean where there is one (`combine` updates it first)
            d = torch.where(self.since.to(d.device) > 0, self.average.to(d), d)
        labelled = self.labelled
        if labelled is None:
            c = (z / d).sum()
            return z / (c * d)
        z = torch.where(labelled.to(z.device), z, 0.0)  # the softmax over the labelled tasks
        c = (z / d).sum()
        # 0 weights where unlabelled (none labelled: all 0; c · d could underflow to 0 / 0)
        return torch.where(z > 0, z / (c * d).clamp_min(torch.finfo(d.dtype).tiny), 0.0)

    def update(self, losses: Tensor) -> None:
        """Move the logits using the change of log losses since each task was last labelled."""
        now = torch.log(self._shifted(losses.detach().double())).to(self.logits.device)
        labelled = self.labelled
        seen = (
            torch.ones_like(now, dtype=torch.bool) if labelled is None else labelled.to(now.device)
        )
        known = seen & (self.since > 0)
        if bool(known.any()):
            delta = torch.where(known, (self.previous - now) / self.since.clamp_min(1), 0.0)
            z = torch.softmax(self.logits.masked_fill(~known, -torch.inf), 0)
            jvp = z * (delta - (z * delta).sum())  # J_softmax(ξ)ᵀ δ over the known tasks
            grad = jvp + self.decay * self.logits
            self.logits -= torch.where(known, self._step(grad, known), 0.0)
        if self.loss_average:
            shifted = now.exp()
            mean = self.loss_average * self.average + (1 - self.loss_average) * shifted
            self.average = torch.where(
                seen, torch.where(self.since > 0, mean, shifted), self.average
            )
        self.previous = torch.where(seen, now, self.previous)
        self.since = torch.where(seen, 1.0, torch.where(self.since > 0, self.since + 1, 0.0))

    def _step(self, grad: Tensor, known: Tensor) -> Tensor:
        """The logits' step for `grad`: plain, or Adam's (β₁ 0.9, β₂ 0.999, ε 1e-8, as
        torch.optim.Adam), whose moments and step counts move only where `known`."""
        if self.optimizer == "sgd":
            return self.lr * grad
        first, second, count = self.moments
        self.moments = torch.stack([
            torch.where(known, 0.9 * first + 0.1 * grad, first),
            torch.where(known, 0.999 * second + 0.001 * grad**2, second),
            count + known.to(count.dtype),
        ])  # fmt: skip
        first, second, count = self.moments
        steps = count.clamp_min(1)
        unbiased = first / (1 - 0.9**steps)
        return self.lr * unbiased / ((second / (1 - 0.999**steps)).sqrt() + 1e-8)

    def combine(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)  # before the state is touched: says to call setup
        self.update(losses)
        return super().combine(losses)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        """Checkpoints from before `since` kept `previous` empty until the first step, then
        one value per task: both still load."""
        previous = state_dict.get(prefix + "previous")
        if previous is not None and prefix + "since" not in state_dict:
            k = self.num_tasks
            stepped = previous.numel() == k
            state_dict[prefix + "previous"] = previous if stepped else self.previous.new_zeros(k)
            state_dict[prefix + "since"] = self.since.new_full((k,), 1.0 if stepped else 0.0)
            state_dict[prefix + "average"] = torch.exp(state_dict[prefix + "previous"])
        if prefix + "moments" not in state_dict and prefix + "logits" in state_dict:
            state_dict[prefix + "moments"] = self.moments.new_zeros(3, self.num_tasks)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
