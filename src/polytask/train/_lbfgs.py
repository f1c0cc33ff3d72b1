"""Full-batch L-BFGS (`TrainConfig.optimizer: lbfgs`): quasi-Newton steps with a line search on
the whole training objective. For small smooth models (linear or shallow ones, such as the
classic mean-regularised MTL of `mean_regularised` with `hidden: []`), whose optimum Adam's
mini-batch steps approach slowly: on School, 139 schools' intercepts each get a noisy gradient
from a few rows per batch, and early stopping comes before they are learnt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from polytask.balancers._base import Balancer
from polytask.data._tensors import Batch
from polytask.gradients._plan import GradientPlan
from polytask.models._base import MultiTaskNet
from polytask.models._teacher import teaching
from polytask.tasks._task import Task
from polytask.train._config import TrainConfig
from polytask.train._derived import derive_batch
from polytask.train._guards import GradientMonitor, NonFiniteError, check_losses
from polytask.train._step import StepResult, task_losses

ITERATIONS_PER_STEP = 20
"""L-BFGS iterations in one training step (each one or a few evaluations of the objective)."""
HISTORY = 100
"""Past steps kept for the curvature estimate."""
RELATIVE_CHANGE = 1e-6
"""A step ends when the objective (or a parameter) changes by less than this × the objective
(at least 1): torch's absolute default (1e-9) is below float32's resolution of an objective
summed over many tasks, so converged steps ran all their iterations."""


class FullBatchLBFGS(torch.optim.LBFGS):
    """torch's L-BFGS with a strong-Wolfe line search over one parameter group; each group's
    `weight_decay` of the Trainer becomes the L2 term decay/2 · ‖p‖² of the objective, since
    L-BFGS has no decay of its own and its line search must see the whole objective."""

    def __init__(self, groups: Sequence[dict[str, Any]], lr: float) -> None:
        params = [p for g in groups for p in g["params"]]
        super().__init__(
            params,
            lr=lr,
            max_iter=ITERATIONS_PER_STEP,
            history_size=HISTORY,
            line_search_fn="strong_wolfe",
        )
        self.decay: list[tuple[float, list[nn.Parameter]]] = [
            (float(g["weight_decay"]), list(g["params"]))
            for g in groups
            if g.get("weight_decay", 0.0)
        ]

    def settle(self, objective: float) -> None:
        """Scale the convergence tolerance to the objective's size (see RELATIVE_CHANGE)."""
        for group in self.param_groups:
            group["tolerance_change"] = RELATIVE_CHANGE * max(1.0, abs(objective))

    def l2(self) -> Tensor | None:
        """Σ_groups decay/2 · ‖p‖² (None without weight decay)."""
        if not self.decay:
            return None
        return torch.stack([
            d / 2 * torch.stack([(p**2).sum() for p in ps]).sum() for d, ps in self.decay
        ]).sum()  # fmt: skip


def lbfgs_refusal(
    config: TrainConfig,
    model: MultiTaskNet,
    balancer: Balancer,
    plan: GradientPlan,
    plain: bool,
) -> str | None:
    """Why `optimizer: lbfgs` cannot train this setup (None: it can). Its line search evaluates
    the objective several times per step, so the objective must be the same function at each
    evaluation, and its step is one step length for every parameter."""
    head = "training.optimizer lbfgs"
    # a model fitted in closed form between steps needs lbfgs: adamw is no way out for it
    adamw = "" if type(model).refit_reason else ", or use optimizer adamw"
    if not type(balancer).repeatable:
        from polytask.balancers._registry import BALANCERS  # the registry imports this family

        fit = sorted(n for n, cls in BALANCERS.items() if cls.repeatable)
        names = [n for n, cls in BALANCERS.items() if cls is type(balancer)]
        given = f"balancer {names[0]!r}" if names else type(balancer).__name__
        return (
            f"{head} evaluates the objective several times per step (its line search), so the "
            f"balancer must combine the losses by a fixed function, and {given} does not (it "
            "changes with each call, draws at random, learns weights or reads gradients): set "
            f"balancer.name to one of {fit}{adamw}"
        )
    if plan.method.per_task:
        return f"{head} back-propagates the combined loss: leave training.gradient_mode auto"
    if config.task_lr:
        return (
            f"{head} takes one step length for every parameter (its line search sets it): "
            f"drop training.task_lr{adamw}"
        )
    if config.grad_clip is not None:
        return f"{head} sets its step by a line search: drop training.grad_clip"
    if not plain or config.precision != "32":
        return (
            f"{head} re-evaluates the whole batch in its line search, in float32: set "
            "training.accumulate to 1 and training.precision to 32, and train in one process "
            "(not torchrun)"
        )
    if config.meta_learning:
        return f"{head} does not run meta-learning episodes: use optimizer adamw"
    drops = sorted(
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0
    )
    if drops:
        return (
            f"{head} needs the same objective at each evaluation of a step, and the model has "
            f"dropout ({', '.join(drops[:3])}{', ...' if len(drops) > 3 else ''}): set the "
            f"model's dropout and task_dropout to 0{adamw}"
        )
    return None


def refit_refusal(model: MultiTaskNet, config: TrainConfig) -> str | None:
    """Why `config` cannot train `model` (None: it can): a model fitted in closed form between
    full-batch steps (`refit_reason`) needs the lbfgs optimizer."""
    reason = type(model).refit_reason
    if not reason or config.optimizer == "lbfgs":
        return None
    return (
        f"{reason}, between full-batch steps: set training.optimizer: lbfgs and "
        "training.lr: 1, with training.batch_size at least the training rows"
    )


def lbfgs_warning(config: TrainConfig) -> str | None:
    """A learning rate far below L-BFGS's usual first step length: it works, slowly, and early
    stopping may keep a fit that is not the optimum."""
    if config.lr >= 0.1:
        return None
    return (
        f"training.optimizer lbfgs with lr {config.lr}: lr is the first step length of its line "
        "search, and 1 is usual; small steps reach the optimum slowly, and early stopping may "
        "keep weights short of it. Set training.lr: 1"
    )


def batch_refusal(steps_per_epoch: int, batch_size: int, rows: Sequence[int]) -> str | None:
    """L-BFGS steps on the whole training objective: one batch per epoch (`rows`: each training
    source's row count)."""
    if steps_per_epoch == 1:
        return None
    if len(rows) > 1:
        return (
            f"training.optimizer lbfgs steps on the whole training objective, and this run "
            f"draws from {len(rows)} training sources in turn: give it one training set"
        )
    return (
        f"training.optimizer lbfgs steps on the whole training set, and its {rows[0]} rows "
        f"take {steps_per_epoch} batches of {batch_size}: set training.batch_size to at least "
        f"{rows[0]}"
    )


def objective_weights(balancer: Balancer, losses: Tensor, labelled: Tensor) -> Tensor:
    """∂ objective / ∂ each task's loss at `losses` (the weights of a linear balancer)."""
    with torch.enable_grad():
        at = losses.detach().clone().requires_grad_(True)
        with balancer.labelled_tasks(labelled):
            (weights,) = torch.autograd.grad(balancer.combine(at), at)
    return weights


def lbfgs_step(
    model: MultiTaskNet,
    balancer: Balancer,
    optimizer: FullBatchLBFGS,
    batch: Batch,
    tasks: Sequence[Task],
    monitor: GradientMonitor,
) -> StepResult:
    """Up to `ITERATIONS_PER_STEP` L-BFGS iterations on `batch` (the Trainer's step with
    `optimizer: lbfgs`; the losses reported are those of its last evaluation). A non-finite
    loss or gradient at any evaluation puts the weights back as they were and forgets the
    curvature history before raising: a skipped step leaves the model as the last good one
    left it."""
    model.train()
    batch = derive_batch(batch, tasks)
    names = [t.name for t in tasks]
    masks = [t.mask(batch.targets[t.name]) for t in tasks]
    labelled = torch.stack([m.any() for m in masks])
    params = [p for g in optimizer.param_groups for p in g["params"]]
    kept = [p.detach().clone() for p in params]
    seen: dict[str, Tensor] = {}
    if type(model).refit_reason is not None:
        with torch.no_grad(), teaching(model, batch.targets):
            losses = task_losses(model(batch.x), batch, tasks, masks)
        weights = objective_weights(balancer, losses, labelled)
        if model.refit(batch.x, batch.targets, masks, weights):
            optimizer.state.clear()  # a new objective: the curvature history is another's

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        with teaching(model, batch.targets):
            outputs = model(batch.x)
        losses = task_losses(outputs, batch, tasks, masks)
        check_losses(losses, names)
        with balancer.labelled_tasks(labelled):
            objective = balancer.combine(losses)
        for extra in (model.penalty(), optimizer.l2()):
            if extra is not None:
                objective = objective + extra
        check_losses(objective.reshape(1), ["penalty"])  # the tasks' losses were finite
        objective.backward()
        seen["losses"] = losses.detach()
        seen["objective"] = objective.detach()
        return objective.detach()

    try:
        optimizer.step(closure)
        norms = monitor()
        optimizer.settle(float(seen["objective"]))
    except NonFiniteError:
        with torch.no_grad():
            for p, old in zip(params, kept, strict=True):
                p.copy_(old)
        optimizer.state.clear()
        raise
    return StepResult(seen["losses"], None, norms, labelled)
