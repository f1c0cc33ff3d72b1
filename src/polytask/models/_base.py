"""The contract every multi-task architecture keeps, so that training, balancing and analysis
never branch on which architecture they drive."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, SupportsIndex

import torch
from torch import Tensor, nn

from polytask.tasks._task import Task


@contextmanager
def running_stats_kept(model: nn.Module) -> Iterator[None]:
    """Within the block, forward passes leave the normalisation layers' running statistics
    (BatchNorm's mean, variance and count) as they were: for a pass that is not a training
    step's own (a probe of its rows, a validation batch), which would count rows twice or
    fold validation rows into the statistics the model is evaluated with."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    kept = [dict(m._buffers) for m in norms]
    for m in norms:  # the pass updates copies; the originals are put back untouched (a copy
        # back in place would change tensors the step's graph saved for its backward)
        m._buffers.update({k: v.clone() for k, v in m._buffers.items() if v is not None})
    try:
        yield
    finally:
        for m, buffers in zip(norms, kept, strict=True):
            m._buffers.update(buffers)


def same_output(name: str, tasks: Sequence[Task]) -> int:
    """The output size every task shares, for architectures whose heads share a structure
    (refused, naming the sizes, when they differ)."""
    sizes = {t.name: t.out_features for t in tasks}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{name} shares its heads' structure between the tasks, so they need "
                         f"the same output size; got {sizes}")  # fmt: skip
    return next(iter(sizes.values()))


class LastForward(list[Tensor]):
    """What a model's last forward kept with its graph for its penalty (AITM's probabilities,
    DSelect-k's selectors); a copy or a pickle of the model starts without it: tensors inside a
    graph can be neither."""

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[type[LastForward], tuple[()]]:
        return type(self), ()


class MultiTaskNet(nn.Module):
    """`forward(x)` returns `{task_name: output}`; `shared_parameters()` are those every task
    updates (what gradient balancing acts on) and `task_parameters(name)` one task's own.

    Architectures with one shared representation z read by every head set
    `shared_representation = True` and implement `representation` / `heads_forward`; the
    engine's representation, last-layer and lean Gramian modes need it. Others are balanced on
    the exact Jacobian of their shared parameters.
    """

    shared_representation: ClassVar[bool] = False
    refit_reason: ClassVar[str | None] = None
    """Set (to why) by architectures that fit part of themselves in closed form from the whole
    training batch between steps (`refit`); the Trainer then needs `optimizer: lbfgs`."""
    grown: ClassVar[bool] = False
    """True for models fitted whole by their first `refit` (a forest), which the optimizer then
    leaves as they are: the Trainer stops after their first step, and `tune` searches their own
    parameters only (learning rate, weight decay and dropout do nothing to them)."""
    representation_dim: int = 0
    tasks: tuple[Task, ...]

    def _init_tasks(self, tasks: Sequence[Task]) -> None:
        if not tasks:
            raise ValueError(f"{type(self).__name__} needs at least one task")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        self.tasks = tuple(tasks)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        raise NotImplementedError

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        raise NotImplementedError

    def representation(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no single shared representation")

    def heads_forward(self, z: Tensor | Sequence[Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no single shared representation")

    def trunk_blocks(self) -> list[nn.Module] | None:
        """The shared trunk as ordered blocks (for the lean Gramian path), if it is one."""
        return None

    def head_entry_layers(self) -> list[nn.Linear] | None:
        """Each head's first linear layer, when the engine may keep gradients factored."""
        return None

    def heads_forward_from_entries(self, entries: Sequence[Tensor]) -> dict[str, Tensor]:
        """The heads after their first linear layer, on its outputs (see `head_entry_layers`)."""
        raise NotImplementedError(f"{type(self).__name__} has no head entry layers")

    def penalty(self) -> Tensor | None:
        """A regulariser the training step adds to the combined loss, outside the balancing: on
        the parameters (soft sharing's coupling) or on what the last forward pass cached (AITM's
        calibrator); the step asks for it right after its forward pass."""
        return None

    def refit(
        self,
        x: Tensor,
        targets: Mapping[str, Tensor],
        masks: Sequence[Tensor],
        weights: Tensor,
    ) -> bool:
        """A closed-form update from the whole training batch before a full-batch step (an
        empirical-Bayes prior; `weights`: the objective's weight on each task's loss); True
        when it changed the training objective. Nothing to update by default."""
        return False

    def diagnostics(self) -> dict[str, float]:
        """Numbers worth logging about the last forward pass (e.g. expert usage per task)."""
        return {}

    def check_targets(self, targets: Mapping[str, Tensor]) -> None:
        """Refuse (or warn of) training targets the architecture's model cannot mean, before
        training (e.g. a funnel's later stage labelled where an earlier one is 0); the
        targets of data held in memory, by task. Nothing by default."""

    def shared_prediction(self, x: Tensor) -> Tensor | None:
        """The raw output, before any task's `shape_output`, that the model would give a task
        of its own kind it has not seen: the shared part alone, where its tasks are a shared
        function plus each task's deviation (a new school's, a new patient's); None where the
        architecture has no such part."""
        return None

    def _check_task(self, name: str) -> None:
        if name not in self.task_names:
            raise KeyError(f"unknown task {name!r}; the model's tasks are {list(self.task_names)}")


class GrownNet(MultiTaskNet):
    """A model fitted whole by its first `refit` (a forest, a Gaussian process), its fit kept in
    buffers whose sizes the fit sets (`_VARIABLE`: resized when a saved fit is loaded). It
    trains nothing: `anchor`, which its outputs read with a zero gradient, gives the Trainer's
    optimizer a parameter to hold, so it runs through the same loop (checkpoints, evaluation,
    resume) as every model, and its L-BFGS step ends at once."""

    grown: ClassVar[bool] = True
    seed: Tensor
    _VARIABLE: ClassVar[tuple[str, ...]] = ()

    def _init_grown(self, tasks: Sequence[Task]) -> None:
        self._init_tasks(tasks)
        self.anchor = nn.Parameter(torch.zeros(()))
        # the fit's random state, drawn from the builder's seeded generator
        self.register_buffer("seed", torch.randint(0, 2**31 - 1, ()))

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield self.anchor

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        self._check_task(name)
        return iter(())

    @property
    def fitted(self) -> bool:
        """Whether the fit is done (read from a buffer's size: fixed in an exported graph)."""
        raise NotImplementedError

    def _outputs(
        self, x: Tensor, rows: Tensor, step: int, predict: Callable[[Tensor], Tensor]
    ) -> dict[str, Tensor]:
        """Each task's output for the input `x`: 0 until fitted, else `predict` (rows × tasks)
        of its prepared `rows`, `step` rows at a time (all at once in an exported graph), read
        with the anchor's zero gradient."""
        zero = self.anchor * 0
        if not self.fitted:
            out = torch.zeros_like(x[:, 0]) + zero
            return {t.name: out for t in self.tasks}
        tracing = torch.jit.is_tracing() or torch.compiler.is_exporting()
        if tracing or rows.shape[0] <= step:
            values = predict(rows)
        else:
            values = torch.cat([predict(chunk) for chunk in rows.split(step)])
        values = values.to(x.dtype) + zero
        return {task.name: values[:, i] for i, task in enumerate(self.tasks)}

    def _labelled(self, task: Task, mask: Tensor, what: str) -> Tensor:
        """`mask` as a flat boolean vector, refusing a task without labelled rows."""
        m = mask.reshape(-1)
        if not bool(m.any()):
            raise ValueError(
                f"task {task.name!r} has no labelled training rows: {what} cannot be fitted "
                "for it (give it rows, or leave it out of this model)"
            )
        return m

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # a fit's buffers have its own sizes: take them before copying
        for name in self._VARIABLE:
            saved = state_dict.get(prefix + name)
            if isinstance(saved, Tensor):
                current = self._buffers[name]
                assert current is not None
                self._buffers[name] = torch.empty_like(saved, device=current.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._loaded()

    def _loaded(self) -> None:
        """Called after a saved fit is loaded (Python-side state read from its buffers)."""


def grown_parts(model: nn.Module) -> list[str]:
    """The class names of `model`'s grown parts (`MultiTaskNet.grown`: a forest), itself or
    inside an ensemble or blend: sized by their fit, so not built anew from a config."""
    return sorted({type(m).__name__ for m in model.modules() if getattr(m, "grown", False)})


def model_size(model: nn.Module) -> tuple[int, int]:
    """(learnt values, bytes) of `model`: its parameters, plus what each grown part keeps of
    its fit (a forest's trees, a GP's rows and weights: a grown model trains no parameter),
    and the bytes of its parameters and buffers, each tensor once."""
    values = sum(p.numel() for p in model.parameters())
    for part in model.modules():
        if isinstance(part, GrownNet):
            fit = part.state_dict(keep_vars=True).items()
            values += sum(t.numel() for k, t in fit if k not in ("anchor", "seed") and "." not in k)
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}.values()
    return values, sum(t.numel() * t.element_size() for t in tensors)


def listed(problems: Mapping[str, str]) -> str:
    """The first three `{task: problem}` as "a: x; b: y; c: z (and 2 more)", for messages."""
    shown = "; ".join(f"{n}: {w}" for n, w in list(problems.items())[:3])
    return shown + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")


def loss_named(task: Task) -> str:
    """`task`'s loss as a message names it."""
    return f"loss {task.loss if isinstance(task.loss, str) else '(a custom one)'}"


def require_mse_regression(tasks: Sequence[Task], why: str, instead: str) -> None:
    """Refuse `tasks` unless each is a one-output regression task with the mse loss (what
    models fitted to each task's mean in closed form need): the message says `why` the
    architecture needs them so and what to use `instead`."""

    def problem(task: Task) -> str | None:
        if task.kind_spec.classic != "value" or task.out_features != 1:
            return f"kind {task.kind}"
        if (task.loss or "mse") != "mse":
            return loss_named(task)
        return None

    bad = {t.name: why_not for t in tasks if (why_not := problem(t))}
    if bad:
        raise ValueError(
            f"{why}, so every task must be a one-output regression with the mse loss; "
            f"{len(bad)} of {len(tasks)} are not ({listed(bad)}): make them regression tasks "
            f"with loss mse (the default), or {instead}"
        )
