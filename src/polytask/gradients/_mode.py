"""The gradient-mode protocol: what one mode records in the forward pass and how it back-propagates.

A mode is one object (one file, one line in `MODES`) that owns both halves of a step:

- `record(model, x, walk)`: runs the model and keeps what its backward reads (the shared
  representation z, per-task leaves of it, the trunk's segments, a probe sub-batch, ...);
- `backward(step)`: turns the task losses into gradients in `.grad`, with the balancer's
  combination on the shared parameters.

Planning (`held_floats`, `check_model`, `check_balancer`) lets the Trainer refuse a mode that
cannot work before any data is read. Neither the Trainer nor `train_step` ever names a mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from polytask.balancers._base import Balancer, BilevelBalancer, GradientInfo, JacobianBalancer
from polytask.gradients._engine import (
    BackwardResult,
    Reduce,
    Segment,
    _coefficients,
    _combined,
    _Factored,
    _gramian,
    _reduce,
    apply_cotangent,
    linear_task_features,
    observe_gramian,
    record_segments,
    split_features,
)

if TYPE_CHECKING:
    from polytask.models._base import MultiTaskNet


@dataclass(frozen=True)
class Recorded:
    """What a mode's forward kept: the heads' outputs and the tensors its backward reads."""

    outputs: dict[str, Tensor]
    features: Tensor | None = None
    """The shared representation z (None: the exact Jacobian of the whole graph)."""
    task_features: Sequence[Tensor] | None = None
    """What each head read: a detached leaf of z, or its first linear layer's output u_k."""
    task_maps: Sequence[Tensor] | None = None
    """The heads' first linear weights W_k when `task_features` are u_k = z W_kᵀ + b_k."""
    segments: Sequence[Segment] | None = None
    probe_features: Tensor | None = None


@dataclass(frozen=True)
class GradientStep:
    """Everything one backward reads: the losses, parameters, balancer and the recording."""

    losses: Tensor
    shared: Sequence[Tensor]
    heads: Sequence[Tensor]
    balancer: Balancer
    recorded: Recorded
    val_loss: Tensor | None = None
    reduce: Reduce | None = None
    fit_weights: bool = True
    labelled: Tensor | None = None
    """Which tasks the batch labelled (K,) bool; None: all. The balancer reads it from
    `Balancer.labelled` while the step runs inside `run_backward`."""
    values: Tensor | None = None
    """The losses the balancer reads, when they differ from `losses`' values (None: those):
    a distributed step's global losses, or float16 losses before the loss scale."""
    scale: float = 1.0
    """The float16 loss scale `losses` carry (their gradients are unscaled by `reduce` and
    after the backward; see the scale guide)."""
    detached: Tensor = field(init=False)

    def __post_init__(self) -> None:
        values = self.values if self.values is not None else self.losses
        object.__setattr__(self, "detached", values.detach())

    @property
    def num_tasks(self) -> int:
        return int(self.losses.shape[0])

    @property
    def features(self) -> Tensor | None:
        return self.recorded.features


def run_backward(
    method: GradientMode, step: GradientStep, penalty: Tensor | None = None
) -> BackwardResult:
    """`method.backward_with_penalty(step, penalty)` with the balancer told which tasks the
    batch labelled (`Balancer.labelled_tasks`): the one place a step's mask reaches it."""
    with step.balancer.labelled_tasks(step.labelled), observe_gramian(step.balancer) as tap:
        result = method.backward_with_penalty(step, penalty)
    return dataclasses.replace(result, gramian=tap.value) if tap.value is not None else result


class GradientMode:
    """Base class of the gradient modes; subclasses set the class flags and `backward`.

    Adding a mode: subclass this in its own file, implement `backward` (and `held_floats`,
    plus `record` when the default recording does not fit), and add one line to
    `polytask.gradients.MODES`.
    """

    name: ClassVar[str] = ""
    exact: ClassVar[bool] = True
    """Whether the update equals the balancer's on the exact Jacobian of the shared parameters."""
    needs_representation: ClassVar[bool] = True
    """Reads one shared representation z (the model's `shared_representation`)."""
    needs_segments: ClassVar[bool] = False
    """Reads the trunk's blocks (`record_segments`): the model needs a sequential trunk."""
    factored_heads: ClassVar[bool] = False
    """Reads the heads' first linear layers' outputs when every head starts with one."""
    can_walk: ClassVar[bool] = False
    """Can walk a trunk of linear layers and elementwise activations recorded untracked."""
    coordinate_wise: ClassVar[bool] = False
    """Works for balancers that act on the gradients themselves (`JacobianBalancer`)."""
    bilevel: ClassVar[bool] = False
    """Works for balancers that need a validation gradient in parameter space."""
    gradient_state: ClassVar[bool] = True
    """Works for balancers that keep per-task gradient state (a fixed gradient space)."""
    per_task: ClassVar[bool] = True
    """Takes per-task gradients (False only for the loss-weighting plan)."""
    compiles: ClassVar[bool] = True
    """Works on a model whose pieces are `torch.compile`d (`TrainConfig.compile`): False for
    modes that take a vmapped batched backward through the model's forward graph, which
    compiled modules do not support (unless the plan walks the trunk by hand)."""
    reads_whole_batch: ClassVar[bool] = True
    """Estimates from every row of the batch (False: from its first rows only, which never hold
    a self-supervised task's derived rows, appended after the clean ones)."""
    distributed: ClassVar[bool] = False
    """With `reduce` summing over processes, the update equals this mode's single-process
    update on the whole batch (each per-task block is summed before the balancer reads it)."""
    ordered_shared: ClassVar[bool] = False
    """Reads the shared parameters in the trunk's order (its last ones are the last layer), so
    `backward` needs them given: the leaves found behind z come in no such order."""
    row_space: ClassVar[bool] = False
    """Task gradients are taken on the shared representation's rows, not on the shared
    parameters: tasks labelled on different rows (a self-supervised task's derived rows) have
    gradients with no product, so a cosine between them is always 0."""
    reduced_update: ClassVar[bool] = False
    """The shared parameters' update is formed from the reduced blocks, so it comes out summed
    over processes and unscaled (False: from this process's rows, summed afterwards)."""

    @classmethod
    def create(cls, **options: Any) -> GradientMode:
        """This mode with its settings picked from `options` (the Trainer passes all of its
        mode settings, e.g. `sketch_size`, `subsample_size`; each mode reads its own)."""
        return cls()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- planning ---------------------------------------------------------------------------

    @classmethod
    def refusal(cls, balancer: Balancer) -> str | None:
        """Why this mode cannot serve `balancer` (None: it can)."""
        if isinstance(balancer, BilevelBalancer) and not cls.bilevel:
            return "bilevel methods use parameter space"
        if isinstance(balancer, JacobianBalancer) and not cls.coordinate_wise:
            return "it acts on the gradients themselves"
        if getattr(balancer, "keeps_gradient_state", False) and not cls.gradient_state:
            return "it keeps per-task gradient state"
        return None

    def check_balancer(self, balancer: Balancer) -> None:
        """Refuse a balancer this mode cannot serve, naming the modes that can."""
        from polytask.gradients._registry import modes_for

        why = self.refusal(balancer)
        if why is not None:
            allowed = " or ".join(repr(m) for m in modes_for(balancer))
            raise ValueError(
                f"{type(balancer).__name__} needs mode={allowed} ({why}), not {self.name!r}"
            )

    def check_model(self, model: MultiTaskNet) -> None:
        """Refuse a model this mode cannot work on (raised at planning, before training)."""
        derived = [t.name for t in model.tasks if t.kind_spec.derives_targets]
        if derived and not self.reads_whole_batch:
            raise ValueError(
                f"gradient_mode {self.name!r} estimates the task weights on the batch's first "
                f"rows, which never hold the rows of the self-supervised tasks {derived} "
                "(derived inputs follow the clean rows): use another gradient mode"
            )
        if self.needs_representation and not model.shared_representation:
            raise ValueError(
                f"{type(model).__name__} has no single shared representation, so gradient_mode "
                f"{self.name!r} cannot work: set training.gradient_mode to 'jacobian' (or 'auto')"
            )
        if self.needs_segments and not model.trunk_blocks():
            raise ValueError(
                f"gradient_mode {self.name!r} needs a sequential trunk (an nn.Sequential, or "
                "polytask's MLP) holding each of its parameters in one block (not a layer "
                "applied twice, nor weights tied between blocks); use gradient_mode 'jacobian' "
                "or 'representation' for this model"
            )

    def held_floats(
        self, model: MultiTaskNet, balancer: Balancer, shared: Sequence[Tensor], batch_size: int
    ) -> int:
        """How many floats of per-task gradients this mode holds at once (the plan's figure)."""
        return len(model.task_names) * sum(p.numel() for p in shared)

    # -- the step ---------------------------------------------------------------------------

    def record(self, model: MultiTaskNet, x: Tensor, walk: bool = False) -> Recorded:
        """Run `model` on `x`, keeping what `backward` reads (see the class flags)."""
        if not model.shared_representation:
            return Recorded(model(x))
        segments = None
        if self.needs_segments or walk:
            blocks = model.trunk_blocks()
            assert blocks is not None  # check_model
            z, segments = record_segments(blocks, x, track=not walk)
        else:
            z = model.representation(x)
        entries = model.head_entry_layers() if self.factored_heads else None
        maps: list[Tensor] | None = None
        task_z: list[Tensor]
        if entries is not None:
            task_z, maps = linear_task_features(z, entries)
            outputs = model.heads_forward_from_entries(task_z)
        else:
            task_z = split_features(z, len(model.task_names))
            outputs = model.heads_forward(task_z)
        return Recorded(outputs, z, task_z, maps, segments)

    def check_inputs(self, recorded: Recorded) -> None:
        """Refuse a recording this mode cannot back-propagate (for users' own loops)."""
        features, segments = recorded.features, recorded.segments
        if self.needs_segments and not segments:
            raise ValueError(
                f"mode={self.name!r} needs segments= (record them with "
                "polytask.gradients.record_segments(trunk_blocks, x))"
            )
        if features is not None and features.grad_fn is None and not self.can_walk:
            raise ValueError(
                f"mode={self.name!r} backpropagates through the trunk, but features= carry no "
                "autograd graph: record the segments with track=True (only the jacobian and "
                "gramian modes walk an untracked trunk)"
            )
        if self.needs_representation and features is None:
            raise ValueError(f"mode={self.name!r} needs features= (the shared representation)")

    def backward_with_penalty(self, step: GradientStep, penalty: Tensor | None) -> BackwardResult:
        """`backward`, with a model penalty (a regulariser outside the balancing) added to the
        gradients first, while the forward graph it may read is still held."""
        if penalty is not None:
            penalty.backward(retain_graph=True)
        return self.backward(step)

    def combine_from_blocks(
        self,
        step: GradientStep,
        grads: Sequence[Tensor],
        dz: Tensor | None,
        factored: _Factored | None,
    ) -> BackwardResult:
        """For modes that estimate c from a part of J: c from the Gramian of the per-task blocks
        `grads` (K, ...), then one ordinary trunk backward of Σ c_k ∂L_k/∂z on the full batch."""
        k = step.num_tasks
        blocks = [_reduce(g.reshape(k, -1), step.reduce) for g in grads]
        del grads
        held = sum(b.numel() for b in blocks)
        c = _coefficients(step.balancer, GradientInfo(step.detached, gramian=_gramian(blocks)))
        del blocks
        z = step.features
        assert z is not None
        apply_cotangent(z, step.shared, _combined(c, dz, factored))
        return BackwardResult(c.detach().float(), self.name, held)

    def backward(self, step: GradientStep) -> BackwardResult:
        """Fill `.grad`: the balancer's combination on the shared parameters, plain gradients on
        the heads."""
        raise NotImplementedError


def trunk_modules(model: MultiTaskNet) -> list[nn.Module]:
    """The model's trunk blocks (empty when it has no sequential trunk)."""
    return list(model.trunk_blocks() or ())
