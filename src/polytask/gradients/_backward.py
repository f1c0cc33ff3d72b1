"""`backward`: the one call a user's own training loop needs, a thin dispatcher to the modes."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from polytask.balancers._base import Balancer, BilevelBalancer
from polytask.gradients._engine import (
    BackwardResult,
    Reduce,
    Segment,
    _task_params,
    check_combined_gradient,
    check_finite_losses,
    jacobian_floats,
)
from polytask.gradients._last_layer import LAST_PARAMS
from polytask.gradients._losses import LossWeighting
from polytask.gradients._mode import GradientMode, GradientStep, Recorded, run_backward
from polytask.gradients._plan import AUTO, auto_mode
from polytask.gradients._registry import make_mode
from polytask.gradients._sketch import SKETCH_SIZE


def backward(
    losses: Tensor,
    shared_params: Iterable[Tensor] | None = None,
    balancer: Balancer | None = None,
    *,
    mode: str | GradientMode = AUTO,
    features: Tensor | None = None,
    task_features: Sequence[Tensor] | None = None,
    task_params: Iterable[Tensor] | None = None,
    task_maps: Sequence[Tensor] | None = None,
    segments: Sequence[Segment] | None = None,
    probe_features: Tensor | None = None,
    val_loss: Tensor | None = None,
    last_params: int = LAST_PARAMS,
    sketch_size: int = SKETCH_SIZE,
    reduce: Reduce | None = None,
    fit_weights: bool = True,
    labelled: Tensor | Sequence[bool] | None = None,
) -> BackwardResult:
    """Back-propagate the task losses (K,) combined by `balancer`; grads accumulate in `.grad`.

    The common case: `backward(losses, balancer=b, features=z)` with z the shared
    representation (the shared parameters are the trainable leaves behind z), or
    `backward(losses, model.trunk.parameters(), b)` for the exact Jacobian of the whole graph.
    `mode` is a name in `polytask.gradients.MODES`, a mode object, or "auto" (as the
    Trainer's: the balancer's preferred mode when features= are given, else the exact
    `jacobian`, or the lean exact `gramian` when J would exceed 1 GB and segments= are given);
    `last_layer` needs shared_params= in the trunk's order. `task_params` default to
    every other leaf the losses reach. With heads reading per-task leaves of z
    (`split_features`), pass them as `task_features`; with `task_maps` (W_k, see
    `linear_task_features`) those are u_k = z W_kᵀ + b_k and the gradients stay factored.
    `segments` are the trunk blocks ending in z (`record_segments`: gramian and sketch modes,
    or recorded with `track=False` for the exact modes' walk by hand); `probe_features` the
    trunk's output on the batch's first rows (subsample); `val_loss` a validation loss for
    bilevel balancers; `reduce` a cross-process reduction applied before G is formed.
    `fit_weights=False` skips the logging-only least-squares fit of effective weights for
    coordinate-wise methods. A NaN or infinite task loss, or task gradient of the shared
    parameters, raises `NonFiniteError` (a `FloatingPointError`) naming the tasks before the
    balancer runs, the same for every method; loss-weighting methods, which never form one
    task's gradient, raise it after back-propagating when the shared parameters' gradient is
    not finite (zero the gradients and skip that step). `labelled` (K,) bool says which tasks
    the batch labelled (an unlabelled task's loss is the 0 of an empty mean, not an
    observation): the balancer then holds those tasks' state (`Balancer.labelled_tasks`);
    None: every task.
    """
    if not isinstance(losses, Tensor) or losses.dim() != 1:
        got = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        raise ValueError(f"losses must be a vector tensor (K,), e.g. torch.stack(...); got {got}")
    if not isinstance(balancer, Balancer):
        raise TypeError(f"balancer must be a Balancer (make_balancer(name)), got {balancer!r}")
    if not losses.requires_grad:
        raise ValueError(
            "the losses carry no autograd graph: compute them with gradients on (not under "
            "torch.no_grad() or from .detach()ed outputs)"
        )
    if balancer.num_tasks and losses.shape[0] != balancer.num_tasks:
        # (a method that needs no setup runs without one, its tasks named by index)
        raise ValueError(
            f"{type(balancer).__name__} was set up for {balancer.num_tasks} tasks "
            f"{list(balancer.task_names)} and got {losses.shape[0]} losses: call "
            "balancer.setup(task_names) once before training, with one name per loss"
        )
    if features is None and segments:
        features = segments[-1].output
    shared = _shared(shared_params, features)
    if isinstance(mode, GradientMode):
        method = mode
    else:  # checked before anything is computed
        if mode == AUTO:  # as the Trainer's: the balancer's preferred mode, else exact
            floats = jacobian_floats(losses.shape[0], shared)
            lean = bool(segments) and reduce is None  # the exact walk takes reduce=
            mode, _ = auto_mode(balancer, features is not None, floats, lean)
        method = make_mode(mode, last_params=last_params, sketch_size=sketch_size)
    if shared_params is None and method.ordered_shared and balancer.uses_gradients:
        raise ValueError(
            f"mode {method.name!r} reads the last shared parameters in the trunk's order: pass "
            "shared_params= (e.g. model.trunk.parameters()), as the parameters found behind "
            "features= come in no layer order"
        )
    if not balancer.uses_gradients:
        method = LossWeighting()
    recorded = Recorded({}, features, task_features, task_maps, segments, probe_features)
    if reduce is not None and method.per_task and method.row_space:
        raise ValueError(
            f"mode {method.name!r} balances gradients with respect to the representation, one "
            "row per example: reduce= across processes would add up different processes' "
            "rows, so its update is not the whole batch's; use mode 'jacobian' or 'gramian' "
            "(exact under reduce=), or 'last_layer'"
        )
    if method.per_task:
        method.check_balancer(balancer)
        if isinstance(balancer, BilevelBalancer) and val_loss is None:
            raise ValueError(
                f"{type(balancer).__name__} needs a validation loss: pass val_loss= "
                "(the Trainer does)"
            )
        method.check_inputs(recorded)
        if features is not None and features.grad_fn is None and task_features is None:
            raise ValueError(
                "features= carry no autograd graph, so the heads must read task_features= "
                "(split_features(z, K) or linear_task_features(z, first_layers))"
            )
        if task_features is not None and features is None:
            raise ValueError(
                "task_features= needs features= (the shared representation z they were split "
                "from): the heads read detached copies of z, so without it no gradient reaches "
                "the trunk"
            )
        if task_maps is not None and features is None:
            raise ValueError("task_maps= needs features= (the shared representation z they map)")
    if labelled is not None and not isinstance(labelled, Tensor):  # e.g. a list of bools
        labelled = torch.as_tensor(labelled, dtype=torch.bool, device=losses.device)
    if method.per_task and features is not None:
        _refuse_tied(losses, features, shared)
    check_finite_losses(balancer, losses, labelled)  # before any backward: one inf NaNs every row
    heads = (
        _task_params(losses, [*shared, *(task_features or ())], task_params)
        if method.per_task
        else []
    )
    step = GradientStep(
        losses, shared, heads, balancer, recorded, val_loss, reduce, fit_weights, labelled
    )
    _check_learnt_weights_move(balancer)
    try:
        result = run_backward(method, step)
    except (RuntimeError, IndexError) as err:
        if balancer.num_tasks:
            raise
        raise ValueError(  # its state is sized by the tasks: torch's own error said nothing
            f"{type(balancer).__name__} is not set up: call balancer.setup(task_names) once "
            f"before training, one name per loss (got {losses.shape[0]} losses; the error: "
            f"{err})"
        ) from err
    if not method.per_task:
        check_combined_gradient(balancer, shared)
    if result.weights is None and not method.per_task:
        with balancer.labelled_tasks(labelled):
            result = dataclasses.replace(result, weights=balancer.weights(step.detached))
    return result


STILL_CALLS = 10
"""`backward` warns when a balancer's learnt weights have not moved in this many calls."""


def _check_learnt_weights_move(balancer: Balancer) -> None:
    """Warn once when the balancer's learnable weights kept their values over `STILL_CALLS`
    calls while holding a gradient from the last one: they are in no optimizer (an own loop
    that passed only the model's parameters), so the method never learns its weights."""
    params = [p for p in balancer.parameters() if p.requires_grad]
    memo: dict[str, Any] = balancer.__dict__.setdefault("_learnt_weights_seen", {})
    if not params or memo.get("warned"):
        return
    held = all(p.grad is not None for p in params)  # an optimizer's zero_grad clears them
    values = float(sum(p.detach().double().sum() for p in params))
    memo["still"] = memo.get("still", 0) + 1 if held and values == memo.get("values") else 0
    memo["values"] = values
    if memo["still"] >= STILL_CALLS:
        memo["warned"] = True
        warnings.warn(
            f"{type(balancer).__name__}'s learnt weights have not moved in {STILL_CALLS} "
            "calls while their gradients pile up: add balancer.parameters() to your optimizer, "
            "e.g. torch.optim.Adam([*model.parameters(), *balancer.parameters()])",
            stacklevel=3,
        )


def _refuse_tied(losses: Tensor, features: Tensor, shared: Sequence[Tensor]) -> None:
    """Refuse a shared parameter that the losses also reach without passing through
    `features` (a weight tied between trunk and head): the per-task modes split the graph at
    z, so the head's use of it would get no gradient."""
    ids = {id(p): i for i, p in enumerate(shared)}
    stop = features.grad_fn
    seen: set[int] = set()
    stack = [losses.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node is stop or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor) and id(variable) in ids:
            raise ValueError(
                f"shared parameter {ids[id(variable)]} (shape {tuple(variable.shape)}) is also "
                "used after features= (a weight tied between the trunk and a head): the "
                "per-task modes split the graph at features=, so its use after them would get "
                "no gradient. Leave features= out and pass the trunk's parameters as "
                "shared_params= (the exact Jacobian of the whole graph), or untie the weight"
            )
        stack.extend(nxt for nxt, _ in node.next_functions)


def _shared(given: Iterable[Tensor] | None, features: Tensor | None) -> list[Tensor]:
    """The shared parameters that require grad: those given, or the leaves behind `features`."""
    if given is None:
        if features is None or features.grad_fn is None:
            raise TypeError(
                "pass shared_params= (e.g. model.trunk.parameters()), or features= with the "
                "autograd graph of the shared trunk"
            )
        params = [p for p in _task_params(features, [], None) if p.requires_grad]
    else:
        params = [] if isinstance(given, Tensor) else list(given)
        if not params and not isinstance(given, Tensor):
            raise ValueError(
                "shared_params is empty: a generator such as model.trunk.parameters() is used "
                "up after one pass, so pass it anew each step or keep a list"
            )
        if not params or not all(isinstance(p, Tensor) for p in params):
            raise TypeError(
                "shared_params must be an iterable of parameters, e.g. model.trunk.parameters()"
            )
    shared = [p for p in params if p.requires_grad]
    if not shared:
        raise ValueError("backward needs at least one shared parameter that requires grad")
    return shared
