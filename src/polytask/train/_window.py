"""What the Trainer gathers between two evaluations: per-task losses over the steps that
labelled each task, effective weights, gradient norms and step time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from polytask.train._step import StepResult


@dataclass(frozen=True)
class WindowSummary:
    """One window's means: task losses (K,) and weights (K,) if the method reported them, each
    over the steps that labelled the task; gradient norms by name; milliseconds per step."""

    losses: Tensor
    weights: Tensor | None
    grad_norms: dict[str, float]
    step_ms: float
    labelled: Tensor
    """How many of the window's steps labelled each task (K,): a task none labelled has a loss
    of 0 in `losses` that was never measured."""

    @property
    def measured(self) -> Tensor:
        """`losses` with NaN for the tasks no step of the window labelled."""
        return torch.where(self.labelled.to(self.losses.device) > 0, self.losses, torch.nan)


@dataclass
class Window:
    """Accumulates step results until `close` summarises and resets them."""

    _losses: list[Tensor] = field(default_factory=list)
    _labelled: list[Tensor] = field(default_factory=list)
    _weights: list[Tensor] = field(default_factory=list)
    _weighed: list[Tensor] = field(default_factory=list)
    _norms: list[dict[str, float]] = field(default_factory=list)
    _seconds: float = 0.0

    def __len__(self) -> int:
        return len(self._losses)

    def add(self, result: StepResult, seconds: float) -> None:
        self._losses.append(result.losses)
        assert result.labelled is not None
        self._labelled.append(result.labelled)
        self._norms.append(result.grad_norms or {})
        if result.weights is not None:
            self._weights.append(result.weights)
            self._weighed.append(result.labelled)
        self._seconds += seconds

    def close(self, task_names: Sequence[str] = ()) -> WindowSummary:
        """The window's means (each task's loss, and the gradient norm of its own parameters
        named in `task_names`, over the steps that labelled it: NaN where none did, not a mean
        with 0 for the steps that did not); resets. A window whose every step was skipped
        (non-finite) has NaN losses, no weights or norms and labels no task."""
        if not self._losses:
            tasks = len(task_names)
            self._seconds = 0.0
            return WindowSummary(
                torch.full((tasks,), math.nan), None, {}, math.nan, torch.zeros(tasks)
            )
        losses = torch.stack(self._losses)
        seen = torch.stack(self._labelled).to(losses)
        column = {name: i for i, name in enumerate(task_names)}
        norms = {}
        for k in self._norms[0]:
            on = seen[:, column[k]].bool().tolist() if k in column else [True] * len(self._norms)
            kept = [n[k] for n, labelled in zip(self._norms, on, strict=True) if labelled]
            norms[f"grad_norm/{k}"] = sum(kept) / len(kept) if kept else math.nan
        summary = WindowSummary(
            losses.sum(0) / seen.sum(0).clamp_min(1),
            self._mean_weights(),
            norms,
            1000 * self._seconds / len(self._losses),
            seen.sum(0),
        )
        self._losses, self._labelled, self._weights, self._norms = [], [], [], []
        self._weighed, self._seconds = [], 0.0
        return summary

    def _mean_weights(self) -> Tensor | None:
        """Each task's mean weight over the recorded steps that labelled it (an unlabelled
        task's 0 says nothing about how the method weighs it); over all of them if none did."""
        if not self._weights:
            return None
        weights = torch.stack(self._weights)
        seen = torch.stack(self._weighed).to(weights)
        count = seen.sum(0)
        labelled_mean = (weights * seen).sum(0) / count.clamp_min(1)
        return torch.where(count > 0, labelled_mean, weights.mean(0))
