"""A training step spread over processes (torchrun), micro-batches (gradient accumulation) or a
float16 loss scale, making the update one float32 step on the whole batch would make.

Each task's loss is a mean over its labelled rows, so a piece p of the batch (one process's
share, or one micro-batch of it) contributes ℓ_pk = L_pk · n_pk / N_k (n: the piece's labelled
rows of task k, N: the whole batch's). The ℓ_pk sum over the pieces to the whole batch's
losses, and their gradients to its gradients. What is summed depends on the balancer:

- loss-weighting balancers: the losses first (K floats), then the combination's weights
  ∂combine/∂L at those whole-batch losses weigh each piece's backward, and the parameters'
  gradients are summed (with several micro-batches a forward pass without gradients finds the
  losses first: one more forward per micro-batch);
- gradient balancers, one piece per process: the gradient mode runs with `reduce` summing every
  per-task block over the processes before the balancer reads it (modes marked `distributed`);
- gradient balancers with micro-batches: the per-task gradients J of the shared parameters are
  summed over micro-batches and processes, then the balancer combines the whole batch's J.

A float16 loss scale multiplies what is back-propagated and is divided out of every gradient
before a balancer reads it; the balancers' solvers never see scaled or half-precision values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from polytask.balancers._base import Balancer, BilevelBalancer
from polytask.data._tensors import Batch
from polytask.gradients._engine import BackwardResult, _accumulate, observe_gramian
from polytask.gradients._jacobian import JacobianMode, apply_jacobian
from polytask.gradients._mode import GradientStep, run_backward
from polytask.gradients._plan import GradientPlan
from polytask.models._base import MultiTaskNet, running_stats_kept
from polytask.models._teacher import teaching
from polytask.tasks._task import Task
from polytask.train._distributed import Processes
from polytask.train._guards import check_losses
from polytask.train._precision import LossScale, autocast, full_precision


@dataclass(frozen=True)
class Spread:
    """How a step reaches beyond one float32 forward pass of one process's batch."""

    processes: Processes | None = None
    precision: str = "32"
    scale: LossScale | None = None
    accumulate: int = 1
    seed: int = 0

    @property
    def plain(self) -> bool:
        """One process, one forward, no loss scale: the ordinary step (autocast aside)."""
        return self.processes is None and self.scale is None and self.accumulate == 1

    @property
    def factor(self) -> float:
        return self.scale.value if self.scale is not None else 1.0


def spread_refusal(plan: GradientPlan, balancer: Balancer, spread: Spread) -> str | None:
    """Why `plan` cannot run spread this way (None: it can), saying what to use instead."""
    method = plan.method
    if not method.per_task:
        return None
    own = balancer.preferred_mode
    spread_out = spread.accumulate > 1 or spread.processes is not None
    if spread_out and own is not None and method.name == own and own not in ("jacobian", "gramian"):
        how = "training.accumulate" if spread.accumulate > 1 else "torchrun"
        return (
            f"{type(balancer).__name__} is defined on the {own} gradients, which {how} cannot "
            f"sum exactly; with jacobian or gramian it becomes the method it is built on (as "
            f"mgda_ub becomes mgda): name that balancer, or train without {how}"
        )
    if spread.accumulate > 1:
        if isinstance(balancer, BilevelBalancer):
            return (
                f"{type(balancer).__name__} reads a validation gradient every step: train it "
                "without training.accumulate"
            )
        if method.name not in ("jacobian", "gramian"):
            return (
                f"training.accumulate sums the exact per-task gradients J over micro-batches; "
                f"gradient_mode {method.name!r} estimates them from one batch: use jacobian or "
                "gramian"
            )
        return None
    if spread.processes is not None and not method.distributed:
        return (
            f"gradient_mode {method.name!r} cannot sum its per-task gradients over processes "
            "exactly: use jacobian (or gramian, which never holds all of J)"
        )
    return None


def accumulated_plan(
    plan: GradientPlan, model: MultiTaskNet, spread: Spread, max_jacobian_mb: float
) -> GradientPlan:
    """The plan the accumulation path runs: it sums each micro-batch's Jacobian of the shared
    parameters, so it holds J whatever mode was planned (the log named the planned one, and
    max_jacobian_mb went unheeded); refused when J exceeds max_jacobian_mb."""
    if spread.accumulate == 1 or not plan.method.per_task:
        return plan
    floats = len(model.task_names) * sum(
        p.numel() for p in model.shared_parameters() if p.requires_grad
    )
    mb = floats * 4 / 2**20
    if mb > max_jacobian_mb:
        raise ValueError(
            f"training.accumulate sums the whole Jacobian of the shared parameters over its "
            f"micro-batches ({mb:,.0f} MB here), above training.max_jacobian_mb "
            f"({max_jacobian_mb:g}): raise max_jacobian_mb, or train without accumulate (the "
            "lean gradient modes then keep the memory down)"
        )
    if plan.mode == "jacobian":
        return plan
    return GradientPlan(JacobianMode(), floats, f"training.accumulate holds J, not {plan.mode}'s "
                        "share of it")  # fmt: skip


def spread_backward(
    model: MultiTaskNet,
    balancer: Balancer,
    batch: Batch,
    tasks: Sequence[Task],
    plan: GradientPlan,
    spread: Spread,
    step: int,
    val_batch: Batch | None = None,
    fit_weights: bool = True,
    derive: Callable[[Batch, int], Batch] | None = None,
) -> tuple[Tensor, BackwardResult, Tensor]:
    """Fill `.grad` with the whole batch's update; returns its losses (K,), what the backward
    did and which tasks the whole batch labelled. `derive` makes a piece's self-supervised
    rows (piece index given)."""
    pieces = [p for p in _split(batch, spread.accumulate) if p.x.shape[0] > 0] or [batch]
    if derive is not None:
        pieces = [derive(p, i) for i, p in enumerate(pieces)]
    whole = _Whole(pieces, tasks, spread.processes)
    forward = _Forward(model, spread, step)
    if not plan.method.per_task:
        return _by_losses(model, balancer, whole, forward, spread)
    # by the setting, not by this process's pieces: a short last batch can leave one process
    # a single piece and another two, and every process must run the same collectives
    if spread.accumulate == 1:
        return _by_mode(model, balancer, whole, forward, plan, spread, val_batch, fit_weights)
    return _accumulated(model, balancer, whole, forward, spread, fit_weights)


def _split(batch: Batch, parts: int) -> list[Batch]:
    if parts == 1:
        return [batch]
    xs = batch.x.tensor_split(parts)
    targets = {t: v.tensor_split(parts) for t, v in batch.targets.items()}
    return [Batch(x, {t: v[i] for t, v in targets.items()}) for i, x in enumerate(xs)]


class _Whole:
    """The pieces of one step and what ties them to the whole batch: each task's labelled
    entries per piece (rows, or pixels for dense kinds: what its loss is a mean over), summed
    over the processes too, and each piece's share of the rows."""

    def __init__(self, pieces: list[Batch], tasks: Sequence[Task], processes: Processes | None):
        self.pieces, self.tasks, self.processes = pieces, tasks, processes
        self.masks = [[t.mask(p.targets[t.name]) for t in tasks] for p in pieces]
        device = pieces[0].x.device
        k = len(tasks)
        # per piece: each task's additive units (rows, pixels, boxes), whether it labels any
        # row, and the piece's rows; summed over the pieces and the processes
        counts = torch.tensor(
            [[*(float(t.kind_spec.label_count(p.targets[t.name])) for t in tasks),
              *(float(bool(m.any())) for m in masks),
              float(p.x.shape[0])] for p, masks in zip(pieces, self.masks, strict=True)],
            dtype=torch.float64, device=device,
        )  # fmt: skip
        total = counts.sum(0)
        if processes is not None:
            processes.sum_(total)

        def denominators(c: Tensor) -> Tensor:  # what each task's loss divides by
            units = [t.kind_spec.loss_denominator(c[..., j], c[..., k + j] > 0)
                     for j, t in enumerate(tasks)]  # fmt: skip
            return torch.stack([*units, c[..., -1]], dim=-1)

        whole = denominators(total)
        self.labelled = whole[:-1] > 0
        self.shares = (denominators(counts) / whole.clamp(min=1)).float()  # (pieces, K + 1)

    def losses(self, i: int, outputs: dict[str, Tensor]) -> Tensor:
        """Piece i's contribution ℓ_ik = L_ik · n_ik / N_k to the whole batch's losses."""
        piece = self.pieces[i]
        losses = full_precision(torch.stack([
            t.compute_loss(piece.outputs_of(t.name, outputs[t.name]), piece.targets[t.name], m)
            for t, m in zip(self.tasks, self.masks[i], strict=True)
        ]))  # fmt: skip
        return losses * self.shares[i, :-1].to(losses)

    def penalty(self, i: int, model: MultiTaskNet) -> Tensor | None:
        """The model's penalty after piece i's forward, weighted by the piece's rows (summed
        over pieces and processes: the penalty once, or its mean over the batch's rows)."""
        penalty = model.penalty()
        return None if penalty is None else full_precision(penalty) * self.shares[i, -1]

    def total(self, local: Tensor) -> Tensor:
        """The whole batch's losses from this process's summed contributions."""
        values = local.detach().clone()
        if self.processes is not None:
            self.processes.sum_(values)
        check_losses(values, [t.name for t in self.tasks])  # alike on every process
        return values


class _Forward:
    """Forward passes under autocast; with several processes, dropout draws from a stream of
    each (step, process, piece), so the processes' global generators stay in step (the
    balancers' own draws must agree everywhere)."""

    def __init__(self, model: MultiTaskNet, spread: Spread, step: int):
        self.model, self.spread, self.step = model, spread, step
        self.device = next(iter(model.parameters())).device

    def mark(self) -> tuple[Tensor, Tensor | None]:
        """The generators' state before a pass over the pieces, for `replay`."""
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    def replay(self, marked: tuple[Tensor, Tensor | None]) -> None:
        """Set the generators back to `marked`, so that a second pass over the pieces draws the
        first pass's dropout masks (with several processes each piece seeds its own stream)."""
        if self.spread.processes is not None:
            return
        torch.set_rng_state(marked[0])
        if marked[1] is not None:
            torch.cuda.set_rng_state(marked[1], self.device)

    @contextmanager
    def __call__(self, piece: int, targets: Mapping[str, Tensor]) -> Iterator[None]:
        """The block's forward passes, heads that read their targets given `targets`."""
        processes = self.spread.processes
        with autocast(self.spread.precision, self.device), teaching(self.model, targets):
            if processes is None:
                yield
                return
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                seed = hash((self.spread.seed, self.step, processes.rank, piece)) & (2**63 - 1)
                torch.manual_seed(seed)
                yield


def _trainable(model: MultiTaskNet) -> tuple[list[Tensor], list[Tensor]]:
    shared: list[Tensor] = [p for p in model.shared_parameters() if p.requires_grad]
    heads: list[Tensor] = [
        p for name in model.task_names for p in model.task_parameters(name) if p.requires_grad
    ]
    return shared, heads


def _penalty_grads(penalty: Tensor | None, params: Sequence[Tensor], scale: float) -> list[Tensor]:
    if penalty is None:
        return []
    grads = torch.autograd.grad(
        penalty * scale, list(params), retain_graph=True, allow_unused=True, materialize_grads=True
    )
    return list(grads)


def _finish(
    params: Sequence[Tensor],
    spread: Spread,
    penalty: Sequence[Tensor] = (),
    penalty_params: Sequence[Tensor] = (),
) -> None:
    """Sum `params`' gradients (and the penalty's) over the processes in one collective, divide
    out the loss scale, and add the penalty's gradients; a gradient no process formed stays
    None."""
    processes, scale = spread.processes, spread.factor
    if processes is not None:
        device = params[0].device if params else torch.device("cpu")
        had = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        processes.sum_all_([*(p.grad for p in params if p.grad is not None), *penalty, had])
        for p, formed in zip(params, had.tolist(), strict=True):
            if not formed:
                p.grad = None
    if scale != 1.0:
        for g in [*(p.grad for p in params), *penalty]:
            if g is not None:
                g.div_(scale)
    if penalty:
        _accumulate(penalty_params, penalty)


def _reducer(spread: Spread) -> Callable[[Tensor], Tensor] | None:
    processes, scale = spread.processes, spread.factor
    if processes is None and scale == 1.0:
        return None

    def reduce(block: Tensor) -> Tensor:
        if processes is not None:
            block = processes.sum_(block.contiguous())
        return block / scale if scale != 1.0 else block

    return reduce


def _by_losses(
    model: MultiTaskNet, balancer: Balancer, whole: _Whole, forward: _Forward, spread: Spread
) -> tuple[Tensor, BackwardResult, Tensor]:
    """Loss-weighting balancers: combine the whole batch's losses, then back-propagate each
    piece's losses with the combination's weights."""
    params = [p for p in model.parameters() if p.requires_grad]
    kept: tuple[Tensor, Tensor | None] | None = None
    if len(whole.pieces) == 1:
        with forward(0, whole.pieces[0].targets):
            local = whole.losses(0, model(whole.pieces[0].x))
            kept = (local, whole.penalty(0, model))
    else:  # the losses first; the backward's forward passes draw the same dropout masks
        marked = forward.mark()
        with torch.no_grad():
            local = torch.zeros(len(whole.tasks), device=whole.pieces[0].x.device)
            for i, piece in enumerate(whole.pieces):
                with forward(i, piece.targets):
                    local = local + whole.losses(i, model(piece.x))
    values = whole.total(local)
    leaf = values.clone().requires_grad_(True)
    with balancer.labelled_tasks(whole.labelled):
        total = balancer.combine(leaf)
    total.backward()  # the balancer's own parameters: alike on every process, not summed
    assert leaf.grad is not None
    weights = leaf.grad.detach()
    if kept is None:
        forward.replay(marked)
    for i, piece in enumerate(whole.pieces):
        if kept is None:
            with forward(i, piece.targets):
                losses, extra = whole.losses(i, model(piece.x)), whole.penalty(i, model)
        else:
            losses, extra = kept
        objective = (losses * weights).sum() + (extra if extra is not None else 0.0)
        (objective * spread.factor).backward()
    _finish(params, spread)
    return values, BackwardResult(weights, "losses", 0), whole.labelled  # those applied


def _by_mode(
    model: MultiTaskNet,
    balancer: Balancer,
    whole: _Whole,
    forward: _Forward,
    plan: GradientPlan,
    spread: Spread,
    val_batch: Batch | None,
    fit_weights: bool,
) -> tuple[Tensor, BackwardResult, Tensor]:
    """Gradient balancers, one piece: the planned mode, each per-task block summed over the
    processes and unscaled (`reduce`) before the balancer reads it."""
    piece, scale = whole.pieces[0], spread.factor
    shared, heads = _trainable(model)
    with forward(0, piece.targets):
        recorded = plan.method.record(model, piece.x, walk=False)
        local = whole.losses(0, recorded.outputs)
        penalty = whole.penalty(0, model)
    values = whole.total(local)
    params = [*shared, *heads]
    penalty_grads = _penalty_grads(penalty, params, scale)
    val_loss = None
    if isinstance(balancer, BilevelBalancer):
        if val_batch is None:
            raise ValueError(f"{type(balancer).__name__} needs validation data: pass val to fit()")
        world = spread.processes.world_size if spread.processes is not None else 1
        reported = [t for t in whole.tasks if not t.auxiliary]
        with forward(1, val_batch.targets), running_stats_kept(model):  # not trained on
            outputs = model(val_batch.x)
        val_loss = torch.stack(
            [t.compute_loss(outputs[t.name], val_batch.targets[t.name]) for t in reported]
        ).sum() * (scale / world)  # every process reads the same validation batch
    step = GradientStep(
        local * scale, shared, heads, balancer, recorded, val_loss, _reducer(spread),
        fit_weights, whole.labelled, values=values, scale=scale,
    )  # fmt: skip
    result = run_backward(plan.method, step)
    pending = heads if plan.method.reduced_update else params
    _finish(pending, spread, penalty_grads, params)
    return values, result, whole.labelled


def _accumulated(
    model: MultiTaskNet,
    balancer: Balancer,
    whole: _Whole,
    forward: _Forward,
    spread: Spread,
    fit_weights: bool,
) -> tuple[Tensor, BackwardResult, Tensor]:
    """Gradient balancers, several micro-batches: J of the shared parameters summed over the
    micro-batches and the processes, then combined once (the exact Jacobian path)."""
    shared, heads = _trainable(model)
    params = [*shared, *heads]
    k, scale = len(whole.tasks), spread.factor
    jacobian = JacobianMode()
    blocks: list[Tensor] = []
    reached: list[bool] = []
    penalty: list[Tensor] = []
    local = torch.zeros(k, device=whole.pieces[0].x.device)
    for i, piece in enumerate(whole.pieces):
        with forward(i, piece.targets):
            recorded = jacobian.record(model, piece.x, walk=False)
            losses = whole.losses(i, recorded.outputs)
            extra = whole.penalty(i, model)
        local = local + losses.detach()
        more = _penalty_grads(extra, params, scale)  # before the blocks free the graph
        penalty = more if not penalty else [a.add_(b) for a, b in zip(penalty, more, strict=True)]
        step = GradientStep(losses * scale, shared, heads, balancer, recorded)
        parts, _, hit = jacobian.task_blocks(step)  # the heads get their plain gradients
        blocks = parts if not blocks else [b.add_(g) for b, g in zip(blocks, parts, strict=True)]
        reached = hit if not reached else [a or b for a, b in zip(reached, hit, strict=True)]
        del parts
    values = whole.total(local)
    if spread.processes is not None:
        spread.processes.sum_all_(blocks)
    if scale != 1.0:
        blocks = [b.div_(scale) for b in blocks]
    _finish(heads, spread, penalty, params)
    with balancer.labelled_tasks(whole.labelled), observe_gramian(balancer) as tap:
        result = apply_jacobian(balancer, values, blocks, shared, None, None, "jacobian",
                                fit_weights, reached=reached)  # fmt: skip
    if tap.value is not None:
        result = dataclasses.replace(result, gramian=tap.value)
    return values, result, whole.labelled
