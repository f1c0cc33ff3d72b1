"""Numerical guards: a non-finite loss or gradient is caught before the optimizer step, with
the task it came from named, and each step's gradient norms per part for monitoring."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor

from polytask.gradients._engine import NonFiniteError
from polytask.models._base import MultiTaskNet


class TrainingDiverged(RuntimeError):
    """Training stopped at a non-finite loss or gradient (`on_nonfinite: stop`)."""


def check_losses(losses: Tensor, names: Sequence[str]) -> None:
    """Raise before any backward when a task's loss is NaN or infinite."""
    finite = torch.isfinite(losses.detach())
    if not bool(finite.all()):
        raise NonFiniteError(
            "loss", [n for n, ok in zip(names, finite.tolist(), strict=True) if not ok]
        )


class GradientMonitor:
    """The gradient norm of the shared parameters and of each task's own, per step. The
    partition into parts is taken once; each call is one batched norm and one device sync."""

    def __init__(self, model: MultiTaskNet) -> None:
        parts = {"shared": list(model.shared_parameters())}
        parts.update({name: list(model.task_parameters(name)) for name in model.task_names})
        self.names = list(parts)
        self.params = [p for params in parts.values() for p in params]
        self.part_of = [i for i, params in enumerate(parts.values()) for _ in params]
        self._index: Tensor | None = None  # part of every parameter, once all have gradients

    @torch.no_grad()
    def __call__(self) -> dict[str, float]:
        """Norms by part (0 where no gradient); raises `NonFiniteError` naming the parts whose
        gradient is not finite."""
        values = dict.fromkeys(self.names, 0.0)
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):  # frozen parts, or tasks this step did not reach
            kept = [(g, i) for g, i in zip(grads, self.part_of, strict=True) if g is not None]
            present, index = [g for g, _ in kept], [i for _, i in kept]
        else:
            present, index = cast(list[Tensor], grads), self.part_of
        if present:
            if len({(g.device, g.dtype) for g in present}) == 1:
                norms = torch.stack(torch._foreach_norm(present))
            else:
                norms = torch.stack([torch.linalg.vector_norm(g).float() for g in present])
            if index is self.part_of:
                if self._index is None or self._index.device != norms.device:
                    self._index = torch.tensor(self.part_of, device=norms.device)
                where = self._index
            else:
                where = torch.tensor(index, device=norms.device)
            squares = torch.zeros(len(self.names), dtype=norms.dtype, device=norms.device)
            squares.index_add_(0, where, norms**2)
            values.update(zip(self.names, squares.sqrt().tolist(), strict=True))
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteError("gradient", bad)
        return values


def gradient_norms(model: MultiTaskNet) -> dict[str, float]:
    """`GradientMonitor(model)()`, for one-off use outside a training loop."""
    return GradientMonitor(model)()
