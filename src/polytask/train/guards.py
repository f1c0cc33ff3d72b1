"""Numerical guards: a non-finite loss or gradient is caught before the optimizer step, with
the task it came from named, and each step's gradient norms per part for monitoring."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from polytask.models.base import MultiTaskNet


class NonFiniteError(ArithmeticError):
    """A step produced NaN or ±inf; `tasks` names where ("shared" for shared parameters whose
    gradient cannot be traced to one task), `what` is "loss" or "gradient"."""

    def __init__(self, what: str, tasks: Sequence[str]) -> None:
        self.what, self.tasks = what, list(tasks)
        super().__init__(f"non-finite {what} in task(s) {self.tasks}")


class TrainingDiverged(RuntimeError):
    """Training stopped at a non-finite loss or gradient (`on_nonfinite: stop`)."""


def check_losses(losses: Tensor, names: Sequence[str]) -> None:
    """Raise before any backward when a task's loss is NaN or infinite."""
    finite = torch.isfinite(losses.detach())
    if not bool(finite.all()):
        raise NonFiniteError(
            "loss", [n for n, ok in zip(names, finite.tolist(), strict=True) if not ok]
        )


def _norm(params: Sequence[Tensor]) -> Tensor | None:
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return None
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def gradient_norms(model: MultiTaskNet) -> dict[str, float]:
    """The gradient norm of the shared parameters and of each task's own (one device sync per
    step); raises `NonFiniteError` naming the parts whose gradient is not finite."""
    parts = {"shared": _norm(list(model.shared_parameters()))}
    for name in model.task_names:
        parts[name] = _norm(list(model.task_parameters(name)))
    present = {k: v for k, v in parts.items() if v is not None}
    values = dict.fromkeys(parts, 0.0)
    if present:
        values.update(zip(present, torch.stack(list(present.values())).tolist(), strict=True))
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise NonFiniteError("gradient", bad)
    return values
