"""The balancer interface: how the tasks' losses or gradients are combined into one update.

A balancer's base class is the one thing that says what it needs; the gradient modes
(`polytask.gradients`) compute exactly that and never look at the balancer's name:

- `Balancer` (loss weighting): `combine(losses)` returns the scalar to back-propagate.
- `GramianBalancer`: returns coefficients c (K,) from the Gramian G = J Jᵀ of the per-task
  gradients; the shared parameters get Jᵀ c.
- `JacobianBalancer`: acts on the gradients coordinate by coordinate (or keeps gradient-sized
  state) and returns the combined gradient (n,) from J itself.
- `BilevelBalancer` (a `GramianBalancer`): also gets the inner products of each task gradient
  with the gradient of a validation loss (the Trainer draws a validation batch each step).

`needs` is derived from the class (for inspection), never declared. `updates_state` says
whether a method's running state changes each time it is called in a step (so a step must call
it exactly once), and `epoch_end` marks balancers whose state changes once per window.

Partially labelled batches: a task the batch does not label has loss exactly 0 (and a zero
gradient), which is not an observation of that task. The caller says which tasks the batch
labelled with `with balancer.labelled_tasks(mask): ...` around the step's call (the training
step and `polytask.gradients.backward(..., labelled=)` do); inside it `Balancer.labelled` is the
(K,) mask, or None when every task is labelled, so fully labelled steps run the methods' plain
code. A method that reads the losses treats the step as one on the sub-problem of the labelled
tasks: normalisers, means and maxima are taken over them, and the running state of the other
tasks is held (neither fed a zero loss nor decayed).

Balancers are `nn.Module`s so that learnable weights reach the optimizer and running state
lands in checkpoints.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

AXPY_TASKS = 8
"""Up to this many tasks on CPU, cᵀ R is summed row by row (K fused multiply-adds over n),
which measured 1.5–3× faster than `torch.mv` on the transposed (n, K) view at K ≤ 8."""


def weighted_sum(c: Tensor, rows: Tensor) -> Tensor:
    """cᵀ R for R (K, n); a (1, K) @ (K, n) matmul is several times slower than either path."""
    k = rows.shape[0]
    if rows.device.type != "cpu" or k > AXPY_TASKS:
        return torch.mv(rows.T, c)
    weights = c.tolist()
    out = rows[0] * weights[0]
    for i in range(1, k):
        out.add_(rows[i], alpha=weights[i])
    return out


@dataclass(frozen=True)
class GradientInfo:
    """What the engine hands a gradient balancer for one step."""

    losses: Tensor
    """Task losses (K,), detached."""
    gramian: Tensor | None = None
    """G = J Jᵀ (K, K) in float64, when the balancer needs it."""
    jacobian: Tensor | None = None
    """J (K, n), one row per task gradient, when the balancer needs it."""
    val_products: Tensor | None = None
    """(K,) inner products g_k · g_val with the validation-loss gradient (bilevel methods)."""
    val_gradient: Tensor | None = None
    """g_val itself (n,), given only on the explicit-Jacobian reference path."""

    def require_gramian(self) -> Tensor:
        if self.gramian is not None:
            return self.gramian
        if self.jacobian is None:
            raise ValueError("this balancer needs the Gramian or the Jacobian; got neither")
        j = self.jacobian.double()
        return j @ j.T


def first_labelled(labelled: Tensor | None, like: Tensor) -> Tensor:
    """(K,) bool on `like`'s device: the tasks the step labelled (`Balancer.labelled`; None:
    all), where a method records a task's first value."""
    if labelled is None:
        return torch.ones(like.shape[0], dtype=torch.bool, device=like.device)
    return labelled.to(like.device)


def require(ok: bool, method: str, name: str, value: object, rule: str) -> None:
    """Refuse a hyper-parameter outside its range, naming the range."""
    if not ok:
        raise ValueError(f"{method} {name} must be {rule}, got {value!r}")


class Balancer(nn.Module):
    """Base class. Constructors store hyper-parameters only; `setup` sizes state for K tasks."""

    updates_state: ClassVar[bool] = False
    """The method's running state (not its learnable weights) changes on each call in a step:
    call `combine` / `coefficients` / `aggregate` exactly once per optimizer step."""
    records: ClassVar[tuple[str, ...]] = ()
    """Attributes that record the last call for inspection (RLW's draw), not state: nothing
    later reads them, so they are not in `updates_state` or checkpoints."""
    repeatable: ClassVar[bool] = False
    """`combine` is a fixed function of the losses (no random draws, no state changed by the
    call, no gradients read, no learnt weights), so an optimizer may evaluate the objective
    several times in one step and run it to its optimum (`optimizer: lbfgs`). Learnt weights
    (uncertainty, IMTL-L) are left out: their joint objective falls without bound as one task's
    training loss nears 0, which an exact optimizer finds."""
    positive_losses: ClassVar[str] = ""
    """Why the method needs losses ≥ 0 (it takes their log, divides by them, or learns a
    scale of them), or "" when any real loss will do: `backward` refuses a negative one."""
    preferred_mode: ClassVar[str | None] = None
    """A method defined on a particular gradient space (MGDA-UB: the representation) says so."""
    task_names: tuple[str, ...]
    _labelled: Tensor | None

    def __init__(self) -> None:
        super().__init__()
        self.task_names = ()
        self._labelled = None

    def setup(self, task_names: Sequence[str]) -> None:
        """Called once before the optimizer is built."""
        self.task_names = tuple(task_names)

    @classmethod
    def params_for(cls, params: Mapping[str, Any], task_names: Sequence[str]) -> dict[str, Any]:
        """`params` for a model of only `task_names` of the configured tasks (a group of them):
        a method whose parameters name tasks keeps those tasks' entries."""
        return dict(params)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """As `nn.Module`'s, after `setup` (the state's sizes follow the tasks): a balancer not
        set up is told so, not given a size mismatch."""
        held = any(isinstance(v, Tensor) and v.numel() for v in state_dict.values())
        if held and not self.task_names:
            raise ValueError(
                f"{type(self).__name__}: call setup(task_names) before load_state_dict (its "
                "state is sized by the tasks)"
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # state sized at the first step (GradNorm's L(0), ExcessMTL's squares, DB-MTL's
        # buffer, ...) is still empty in a balancer only set up: take the saved size
        # state kept in float64 where the gradients were (ExcessMTL's loss weights, MoCo's λ,
        # made float32 by setup) stays float64: copied into float32 it would round
        for name, held in self._buffers.items():
            saved = state_dict.get(prefix + name)
            if held is None or not isinstance(saved, Tensor):
                continue
            sized = not held.numel() and saved.shape != held.shape
            wider = held.dtype == torch.float32 and saved.dtype == torch.float64
            if sized or wider:
                self._buffers[name] = held.new_empty(saved.shape, dtype=saved.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def uses_gradients(self) -> bool:
        """Whether the method combines per-task gradients (not only losses)."""
        return isinstance(self, GramianBalancer | JacobianBalancer)

    @property
    def needs(self) -> frozenset[str]:
        """What the engine computes for this method, derived from its base class."""
        if isinstance(self, BilevelBalancer):
            return frozenset({"gramian", "val_gradient"})
        if isinstance(self, GramianBalancer):
            return frozenset({"gramian"})
        if isinstance(self, JacobianBalancer):
            return frozenset({"jacobian"})
        return frozenset({"losses"})

    def combine(self, losses: Tensor) -> Tensor:
        """The scalar to back-propagate; by default Σ_k w_k · L_k with weights held constant."""
        return (self.loss_weights(losses).detach() * losses).sum()

    def loss_weights(self, losses: Tensor) -> Tensor:
        """Per-task weights (K,) of a loss-weighting method for the current step."""
        raise NotImplementedError(f"{type(self).__name__} does not weight losses directly")

    def weights(self, losses: Tensor) -> Tensor:
        """Effective per-task weights ∂combine/∂L_k at `losses` (for logging and inspection).

        Methods with state updated in `combine` should override `loss_weights`, which must not
        mutate; one that does not (`updates_state` with `combine` only) is probed on a copy, so
        that logging its weights moves neither its state nor the random streams.
        """
        self._check_losses(losses)
        if type(self).loss_weights is not Balancer.loss_weights:
            return self.loss_weights(losses)
        probe = losses.detach().clone().requires_grad_(True)
        if not self.updates_state:
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(self.combine(probe), probe)
            return grad
        devices = [losses.device] if losses.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            (grad,) = torch.autograd.grad(copy.deepcopy(self).combine(probe), probe)
        return grad

    def drawn_weights(self) -> Tensor | None:
        """The weights the last `combine` drew at random, for methods that draw them each step
        (RLW), whose `weights` are their expectation; None for the others."""
        return None

    def epoch_end(self) -> None:
        """Called at the end of each window (epoch, or N steps when training by steps)."""

    @property
    def labelled(self) -> Tensor | None:
        """Which tasks the current step's batch labelled (K,) bool, set by `labelled_tasks`;
        None when it labelled every task or the caller did not say (then every loss counts)."""
        return getattr(self, "_labelled", None)

    def labelled_mask(self, k: int, device: torch.device) -> Tensor:
        """`labelled` as a (K,) bool on `device`, every task True where it is None."""
        labelled = self.labelled
        if labelled is None:
            return torch.ones(k, dtype=torch.bool, device=device)
        return labelled.to(device)

    @contextmanager
    def labelled_tasks(self, labelled: Tensor | None) -> Iterator[None]:
        """Within the block, the step's batch labelled only the tasks where `labelled` is True.

        The losses of the other tasks are the 0 of an empty mean, not observations: without
        the mask, methods that take logs, ratios, normalisers or running means of the losses
        read them as real (e.g. FAMO put nearly all its weight on the unlabelled tasks). A mask
        with every task labelled (or None) leaves `labelled` None, so the plain code runs.
        """
        if labelled is not None:
            # a balancer not set up (K unknown) takes any length
            k = self.num_tasks or (labelled.shape[0] if labelled.dim() == 1 else 0)
            if labelled.dtype != torch.bool or labelled.shape != (k,):
                raise ValueError(
                    f"{type(self).__name__} expected a labelled mask of {k} bools (one per "
                    f"task, True where the batch labels it), got dtype {labelled.dtype} and "
                    f"shape {tuple(labelled.shape)}: pass e.g. "
                    "torch.stack([task.mask(y).any() for task, y in ...])"
                )
            if bool(labelled.all()):
                labelled = None
        before = self.labelled
        self._labelled = labelled
        try:
            yield
        finally:
            self._labelled = before

    def _check_losses(self, losses: Tensor) -> None:
        if not self.num_tasks and losses.dim() == 1:
            raise ValueError(
                f"{type(self).__name__} is not set up: call balancer.setup(task_names) once "
                f"before training, one name per loss (got {losses.shape[0]} losses)"
            )
        if losses.shape != (self.num_tasks,):
            raise ValueError(
                f"{type(self).__name__} expected {self.num_tasks} task losses "
                f"(call setup(task_names) first), got shape {tuple(losses.shape)}"
            )

    def extra_repr(self) -> str:
        return f"tasks={list(self.task_names)}"


class GramianBalancer(Balancer):
    """A gradient method whose update is Jᵀ c with c computed from the Gramian (and losses)."""

    labelled_subproblem: ClassVar[bool] = True
    """With a partially labelled batch the engine hands the method only the labelled tasks'
    rows and gives the others weight 0. False for methods with per-task state or a task count
    fixed at setup: they see every row (an unlabelled task's is 0) and may read `labelled`."""

    def coefficients(self, info: GradientInfo) -> Tensor:
        """c (K,), float64; the shared parameters' gradient is Σ_k c_k g_k. Balancers that
        need `val_gradient` may return K + 1 entries, the last weighing g_val."""
        raise NotImplementedError

    def aggregate(self, info: GradientInfo) -> Tensor:
        """Combined gradient from an explicit Jacobian (the slow reference path)."""
        if info.jacobian is None:
            raise ValueError("aggregate needs the Jacobian")
        c = self.coefficients(info).to(info.jacobian.dtype)
        k = info.jacobian.shape[0]
        combined = c[:k] @ info.jacobian
        if len(c) == k + 1:  # bilevel methods may weigh the validation gradient too
            if info.val_gradient is None:
                raise ValueError("this balancer weighs the validation gradient: pass val_gradient")
            combined = combined + c[k] * info.val_gradient.to(combined)
        return combined

    def combine(self, losses: Tensor) -> Tensor:
        raise TypeError(
            f"{type(self).__name__} balances gradients, not losses: train with "
            "polytask.backward(losses, shared_params, balancer) or the Trainer"
        )


class JacobianBalancer(Balancer):
    """A gradient method that needs the Jacobian itself (coordinate-wise or gradient state)."""

    keeps_gradient_state: ClassVar[bool] = False
    """Methods with K × n running state need a fixed gradient space (not the representation)."""
    labelled_subproblem: ClassVar[bool] = True
    """As `GramianBalancer.labelled_subproblem`."""

    def aggregate(self, info: GradientInfo) -> Tensor:
        """Combined gradient (n,) from J (K, n)."""
        raise NotImplementedError

    combine = GramianBalancer.combine


class BilevelBalancer(GramianBalancer):
    """A Gramian method that also weighs task gradients by their inner products with a
    validation loss's gradient (`GradientInfo.val_products`); it needs the exact Jacobian
    mode and validation data."""

    labelled_subproblem: ClassVar[bool] = False  # per-task state: sees every row
    steps_on_validation: ClassVar[bool] = False
    """Its update may be the validation gradient alone (K + 1 coefficients, the task ones 0),
    which a main-task direction built from the task coefficients cannot see."""


def ones_like_tasks(losses: Tensor) -> Tensor:
    return torch.ones_like(losses.detach())
