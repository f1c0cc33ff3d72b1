"""One training step: forward, per-task losses, the balancer's combination, backward, update.

What the step records and how it back-propagates belong to the planned gradient mode
(`polytask.gradients`); the step never names a mode or a balancer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from polytask.balancers._base import Balancer, BilevelBalancer
from polytask.data._tensors import Batch
from polytask.gradients._engine import BackwardResult
from polytask.gradients._mode import GradientStep, run_backward
from polytask.gradients._plan import GradientPlan
from polytask.gradients._plan import plan_gradients as plan_mode
from polytask.models._base import MultiTaskNet, running_stats_kept
from polytask.models._teacher import teaching
from polytask.tasks._task import Task
from polytask.train._config import TrainConfig
from polytask.train._derived import derive_batch
from polytask.train._guards import GradientMonitor, check_losses
from polytask.train._precision import autocast, full_precision
from polytask.train._spread import Spread, spread_backward


@dataclass(frozen=True)
class StepResult:
    losses: Tensor
    """Per-task losses (K,), detached."""
    weights: Tensor | None = None
    """Effective task weights of a gradient method's update (K,), detached."""
    grad_norms: dict[str, float] | None = None
    """Gradient norm of the shared parameters ("shared") and of each task's own, before
    clipping."""
    labelled: Tensor | None = None
    """Whether the batch labelled each task (K,), bool."""
    gramian: Tensor | None = None
    """G = J Jᵀ (K, K) of the task gradients when the gradient method formed it (detached)."""


def plan_gradients(model: MultiTaskNet, balancer: Balancer, config: TrainConfig) -> GradientPlan:
    """The gradient plan for `config` (its gradient mode and the modes' settings)."""
    return plan_mode(
        model,
        balancer,
        config.gradient_mode,
        batch_size=config.batch_size,
        max_jacobian_mb=config.max_jacobian_mb,
        sketch_size=config.sketch_size,
        subsample_size=config.subsample_size,
    )


def task_losses(
    outputs: dict[str, Tensor],
    batch: Batch,
    tasks: Sequence[Task],
    masks: Sequence[Tensor] | None = None,
) -> Tensor:
    """Stack each task's masked loss into a vector (K,), each on its own rows of the outputs
    (`Batch.rows`); `masks` are the tasks' label masks on `batch` when the caller has them."""
    given = masks if masks is not None else [None] * len(tasks)
    return torch.stack([
        t.compute_loss(batch.outputs_of(t.name, outputs[t.name]), batch.targets[t.name], m)
        for t, m in zip(tasks, given, strict=True)
    ])  # fmt: skip


def train_step(
    model: MultiTaskNet,
    balancer: Balancer,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    tasks: Sequence[Task],
    plan: GradientPlan | None = None,
    val_batch: Batch | None = None,
    grad_clip: float | None = None,
    monitor: GradientMonitor | None = None,
    fit_weights: bool = True,
    spread: Spread | None = None,
    step: int = 0,
    derive: Callable[[Batch, int], Batch] | None = None,
) -> StepResult:
    """One optimizer step with the planned gradients (`plan`: made for this batch's size when
    not given); `fit_weights=False` skips the (logging-only) effective-weight fit of
    coordinate-wise gradient methods. Self-supervised tasks' inputs are derived here unless
    the batch comes derived (`derive_batch`), from torch's global generator. `spread` runs the
    step over processes, micro-batches or a float16 loss scale (see the scale guide;
    `step` seeds its dropout streams, `derive` makes each piece's derived rows)."""
    if plan is None:
        plan = plan_mode(model, balancer, batch_size=batch.x.shape[0])
    model.train()
    optimizer.zero_grad(set_to_none=True)
    if spread is not None and not spread.plain:
        losses, backward, labelled = spread_backward(
            model, balancer, batch, tasks, plan, spread, step, val_batch, fit_weights, derive
        )
        return _update(model, optimizer, losses, backward, labelled, grad_clip, monitor)
    batch = derive_batch(batch, tasks)  # self-supervised tasks' own rows (the Trainer's seeded)
    masks = [t.mask(batch.targets[t.name]) for t in tasks]
    val_loss = None
    if isinstance(balancer, BilevelBalancer):
        if val_batch is None:
            raise ValueError(f"{type(balancer).__name__} needs validation data: pass val to fit()")
        reported = [t for t in tasks if not t.auxiliary]  # the validation objective
        with teaching(model, val_batch.targets), running_stats_kept(model):  # not trained on
            val_loss = task_losses(model(val_batch.x), val_batch, reported).sum()
    precision = spread.precision if spread is not None else "32"
    # the walk by hand reads float32 activations
    with autocast(precision, batch.x.device), teaching(model, batch.targets):
        recorded = plan.method.record(model, batch.x, plan.walk and precision == "32")
        losses = full_precision(task_losses(recorded.outputs, batch, tasks, masks))
    check_losses(losses, [t.name for t in tasks])
    shared = [p for p in model.shared_parameters() if p.requires_grad]
    heads = [p for name in model.task_names for p in model.task_parameters(name) if p.requires_grad]
    # a task this batch does not label has loss 0, not an observation: the balancer is told
    labelled = torch.stack([m.any() for m in masks])
    gradient_step = GradientStep(
        losses, shared, heads, balancer, recorded, val_loss, None, fit_weights, labelled
    )
    # the penalty is a regulariser, not a task: added outside the balancing, right after the
    # forward pass whose graph it may read
    backward = run_backward(plan.method, gradient_step, model.penalty())
    return _update(model, optimizer, losses.detach(), backward, labelled, grad_clip, monitor)


def _update(
    model: MultiTaskNet,
    optimizer: torch.optim.Optimizer,
    losses: Tensor,
    backward: BackwardResult,
    labelled: Tensor,
    grad_clip: float | None,
    monitor: GradientMonitor | None,
) -> StepResult:
    """Check the gradients, clip them, and step the optimizer."""
    norms = (monitor or GradientMonitor(model))()  # raises before the update if not finite
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.grad is not None], grad_clip
        )
    optimizer.step()
    return StepResult(losses, backward.weights, norms, labelled, backward.gramian)
