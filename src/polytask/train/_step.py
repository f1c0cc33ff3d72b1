"""One training step: forward, per-task losses, the balancer's combination, backward, update.

What the step computes depends only on the balancer's declared `needs` and the gradient plan
(never on the balancer's name): loss weighting back-propagates `combine(losses)`; gradient
methods go through the engine in the planned mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from polytask.balancers._base import Balancer
from polytask.data._tensors import Batch
from polytask.gradients._engine import (
    LAST_PARAMS,
    backward,
    check_mode_supported,
    gramian_block_floats,
    jacobian_floats,
    linear_task_features,
    record_segments,
    split_features,
)
from polytask.gradients._sketch import SKETCH_SIZE, sketch_layer_index
from polytask.gradients._walk import walkable
from polytask.models._base import MultiTaskNet
from polytask.tasks._task import Task
from polytask.train._config import TrainConfig
from polytask.train._guards import GradientMonitor, check_losses


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


@dataclass(frozen=True)
class GradientPlan:
    """How the step gets its gradients: "losses" or an engine mode, and what it holds."""

    mode: str
    held_floats: int
    reason: str = ""
    walk: bool = False
    """An exact mode (jacobian or gramian) on a trunk of linear layers and elementwise
    activations: its forward runs without autograd and the task gradients are walked back by
    hand (`balancers.walk`)."""

    def describe(self) -> str:
        if self.mode == "losses":
            return "gradients: one backward of the combined loss"
        mb = self.held_floats * 4 / 2**20
        walk = " (trunk walked by hand)" if self.walk else ""
        return (
            f"gradients: {self.mode} mode{walk}, holding {self.held_floats:,} floats "
            f"({mb:.1f} MB)" + (f"; {self.reason}" if self.reason else "")
        )


def plan_gradients(model: MultiTaskNet, balancer: Balancer, config: TrainConfig) -> GradientPlan:
    """Choose the engine mode up front, with a clear error when it cannot work for this model."""
    if not balancer.uses_gradients:
        return GradientPlan("losses", 0)
    shared = [p for p in model.shared_parameters() if p.requires_grad]
    if not shared:
        frozen = any(True for _ in model.shared_parameters())
        raise ValueError(
            f"{type(model).__name__} has no parameters shared by all tasks"
            + (" left to train (training.freeze lists 'shared')" if frozen else "")
            + f", so {type(balancer).__name__} has no gradients to balance: use a "
            "loss-weighting balancer (ew, uncertainty, dwa, ...)"
            + (" or unfreeze the shared parameters" if frozen else "")
        )
    k = len(model.task_names)
    full = jacobian_floats(k, shared)
    blocks = model.trunk_blocks()
    mode: str = config.gradient_mode
    reason = ""
    if not model.shared_representation:
        if mode not in ("auto", "jacobian"):
            raise ValueError(
                f"{type(model).__name__} has no single shared representation, so gradient_mode "
                f"{mode!r} cannot work: set training.gradient_mode to 'jacobian' (or 'auto')"
            )
        mode = "jacobian"
    if mode == "auto":
        mode = balancer.preferred_mode or "jacobian"
        limit = config.max_jacobian_mb * 2**20 / 4
        if mode == "jacobian" and full > limit and "jacobian" not in balancer.needs and blocks:
            mode = "gramian"
            reason = f"J would take {full * 4 / 2**20:.0f} MB > max_jacobian_mb"
    try:
        check_mode_supported(balancer, mode)
    except ValueError as err:
        raise ValueError(f"{err}: set training.gradient_mode accordingly") from None
    if mode in ("gramian", "sketch") and not blocks:
        raise ValueError(
            f"gradient_mode {mode!r} needs a sequential trunk (nn.Sequential, or an MLP); "
            "use gradient_mode 'jacobian' or 'representation' for this model"
        )
    held = full
    if mode == "gramian" and blocks:
        held = max(gramian_block_floats(b, k, config.batch_size) for b in blocks)
    elif mode == "representation":
        entries = model.head_entry_layers()
        held = k * config.batch_size * model.representation_dim
        if entries is not None and "jacobian" not in balancer.needs:
            width = sum(e.out_features for e in entries)  # factored: (B, Σo) and (Σo, d)
            held = width * (config.batch_size + model.representation_dim)
    elif mode == "last_layer":
        held = k * sum(p.numel() for p in shared[-LAST_PARAMS:])
    elif mode == "sketch" and blocks:
        held = _sketch_floats(blocks, k, config)
    walks = mode in ("jacobian", "gramian") and _walks(model, blocks, shared)
    return GradientPlan(mode, held, reason, walks)


def _walks(
    model: MultiTaskNet, blocks: Sequence[nn.Module] | None, shared: Sequence[Tensor]
) -> bool:
    """Whether the exact modes can walk this trunk by hand: linear layers and elementwise
    activations holding every shared parameter (dropout only with p = 0, since the step
    trains), and no model penalty that might read the trunk's forward graph."""
    if not model.shared_representation or not blocks or not walkable(blocks):
        return False
    if any(isinstance(b, nn.Dropout) and b.p for b in blocks):
        return False
    if type(model).penalty is not MultiTaskNet.penalty:
        return False
    in_blocks = {id(p) for b in blocks for p in b.parameters() if p.requires_grad}
    return in_blocks == {id(p) for p in shared}


def _sketch_floats(blocks: Sequence[nn.Module], k: int, config: TrainConfig) -> int:
    """What the sketch mode holds: J_k Ω for every task and the sketched input (N, r)."""
    try:
        layer = blocks[sketch_layer_index(blocks)]
    except ValueError as err:
        raise ValueError(f"{err} (training.gradient_mode)") from None
    assert isinstance(layer, nn.Linear)
    columns = min(config.sketch_size, layer.in_features + int(layer.bias is not None))
    return columns * (k * layer.out_features + config.batch_size)


def task_losses(
    outputs: dict[str, Tensor],
    batch: Batch,
    tasks: Sequence[Task],
    masks: Sequence[Tensor] | None = None,
) -> Tensor:
    """Stack each task's masked loss into a vector (K,); `masks` are the tasks' label masks
    on `batch` when the caller already has them."""
    given = masks if masks is not None else [None] * len(tasks)
    return torch.stack([
        t.compute_loss(outputs[t.name], batch.targets[t.name], m)
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
    subsample_size: int = 32,
    grad_clip: float | None = None,
    monitor: GradientMonitor | None = None,
    fit_weights: bool = True,
    sketch_size: int = SKETCH_SIZE,
) -> StepResult:
    """One optimizer step; `fit_weights=False` skips the (logging-only) effective-weight fit of
    coordinate-wise gradient methods."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    names = [t.name for t in tasks]
    masks = [t.mask(batch.targets[t.name]) for t in tasks]
    if plan is None or plan.mode == "losses":
        losses = task_losses(model(batch.x), batch, tasks, masks)
        check_losses(losses, names)
        total = balancer.combine(losses)
        penalty = model.penalty()  # a regulariser, not a task: added outside the balancing
        (total if penalty is None else total + penalty).backward()
        weights = None
    else:
        val_loss = None
        if "val_gradient" in balancer.needs:
            if val_batch is None:
                raise ValueError(
                    f"{type(balancer).__name__} needs validation data: pass val to fit()"
                )
            val_loss = task_losses(model(val_batch.x), val_batch, tasks).sum()
        losses, inputs = _engine_inputs(model, plan, batch, tasks, subsample_size, masks)
        if plan.mode == "sketch":
            inputs["sketch_size"] = sketch_size
        check_losses(losses, names)
        penalty = model.penalty()
        if penalty is not None:  # first, while the forward graph it may read is still held
            penalty.backward(retain_graph=True)
        weights = backward(
            losses,
            list(model.shared_parameters()),
            balancer,
            task_params=[p for name in model.task_names for p in model.task_parameters(name)],
            val_loss=val_loss,
            fit_weights=fit_weights,
            **inputs,
        ).weights
    # raises before the update when a gradient is not finite
    norms = (monitor or GradientMonitor(model))()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.grad is not None], grad_clip
        )
    optimizer.step()
    labelled = torch.stack([m.any() for m in masks])
    return StepResult(losses.detach(), weights, norms, labelled)


def _engine_inputs(
    model: MultiTaskNet,
    plan: GradientPlan,
    batch: Batch,
    tasks: Sequence[Task],
    subsample_size: int,
    masks: Sequence[Tensor],
) -> tuple[Tensor, dict[str, Any]]:
    """The task losses and what the engine's `mode` reads besides them: nothing for models
    without one shared representation (the exact Jacobian of their shared parameters); else
    z, the heads' per-task inputs (factored when every head starts with a linear layer), the
    trunk's blocks (gramian, sketch, or recorded without autograd for the walk) or its
    output on the first rows (subsample)."""
    if not model.shared_representation:
        return task_losses(model(batch.x), batch, tasks, masks), {}
    mode = plan.mode
    segments = None
    if mode in ("gramian", "sketch") or plan.walk:
        blocks = model.trunk_blocks()
        assert blocks is not None
        z, segments = record_segments(blocks, batch.x, track=not plan.walk)
    else:
        z = model.representation(batch.x)
    factored = mode in ("representation", "gramian", "sketch")
    entries = model.head_entry_layers() if factored else None
    maps = None
    if entries is not None:
        task_z, maps = linear_task_features(z, entries)
        outputs = model.heads_forward_from_entries(task_z)
    else:
        task_z = split_features(z, len(tasks))
        outputs = model.heads_forward(task_z)
    probe = model.representation(batch.x[:subsample_size]) if mode == "subsample" else None
    inputs = {"mode": mode, "features": z, "task_features": task_z, "task_maps": maps,
              "segments": segments, "probe_features": probe}  # fmt: skip
    return task_losses(outputs, batch, tasks, masks), inputs
