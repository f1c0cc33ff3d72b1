"""Learning-rate schedules: the base class of the schedules and the callback that runs one.

A schedule is built on `torch.optim.lr_scheduler` (`LambdaLR`, `ReduceLROnPlateau`), so each
optimizer parameter group keeps its own base learning rate and the schedule scales them all
alike: per-task groups (`TrainConfig.task_lr`) keep their ratios. Step-based schedules advance
after every optimizer step, evaluation-based ones (plateau) after each evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from polytask._audience import for_user
from polytask.train._callbacks import Callback, EarlyStopping

if TYPE_CHECKING:
    from polytask.tasks._task import Task
    from polytask.train._config import TrainConfig
    from polytask.train._loop import Trainer
    from polytask.train._step import StepResult

Steps = Annotated[int, Field(ge=1)]
"""A positive number of optimizer steps (or evaluations)."""
WarmupSteps = Annotated[int, Field(ge=0)]
"""Steps of linear warm-up (0: none)."""
Shrink = Annotated[float, Field(gt=0, lt=1)]
"""A factor the learning rate is multiplied by: in (0, 1)."""
Floor = Annotated[float, Field(ge=0, le=1)]
"""The lowest learning rate, as a fraction of each group's base rate."""


class LRSchedule:
    """One learning-rate schedule. Step-based ones give `scale(step, total)`, the multiple of
    each group's base rate for the optimizer step after `step` steps (of `total`); others
    override `make` (and set `per_evaluation`).

    Adding a schedule: subclass this in its own file and add one line to `LR_SCHEDULES`.
    """

    name: ClassVar[str] = ""
    per_evaluation: ClassVar[bool] = False
    """Whether it advances after each evaluation (reading the monitored value) instead of
    after each optimizer step."""

    def scale(self, step: int, total: int) -> float:
        raise NotImplementedError

    def warmup_steps(self) -> int:
        """Steps of warm-up this schedule starts with (checked against the run's length)."""
        return 0

    def make(self, optimizer: Optimizer, total_steps: int, maximise: bool) -> LRScheduler:
        """The torch scheduler for a run of `total_steps` (`maximise`: whether the monitored
        value is better higher; only evaluation-based schedules read it)."""
        return LambdaLR(optimizer, lambda step: self.scale(step, total_steps))

    def evaluated(self, scheduler: LRScheduler, value: float) -> None:
        """Advance `scheduler` after an evaluation whose monitored value is `value` (only
        evaluation-based schedules are advanced here)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


def linear_warmup(step: int, warmup: int) -> float:
    """The warm-up factor of the step after `step` steps: 1/warmup, 2/warmup, ..., then 1."""
    return min(1.0, (step + 1) / warmup) if warmup else 1.0


def cosine_factor(progress: float, min_factor: float) -> float:
    """From 1 at progress 0 down to `min_factor` at progress 1, along half a cosine."""
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class LRScheduling(Callback):
    """Runs `schedule` during `Trainer.fit`: built when training starts (the run's length is
    known then), stepped after each optimizer step or each evaluation, saved in checkpoints
    (`state_dict`) and restored on resume (`begin`)."""

    def __init__(self, schedule: LRSchedule, monitor: str) -> None:
        self.schedule = schedule
        self.monitor = monitor
        """`TrainConfig.monitor`, which evaluation-based schedules watch."""
        self.scheduler: LRScheduler | None = None
        self._key = "val/loss"
        self._lr = math.nan

    @classmethod
    def of(cls, config: TrainConfig) -> LRScheduling | None:
        """The schedule `config.lr_schedule` asks for (None: a constant learning rate)."""
        if config.lr_schedule is None:
            return None
        from polytask.train.lr._registry import make_lr_schedule  # the members import this file

        schedule = make_lr_schedule(config.lr_schedule, **config.lr_schedule_params)
        return cls(schedule, config.monitor)

    def begin(self, trainer: Trainer, state: dict[str, Any] | None, validated: bool) -> None:
        """Build the scheduler on the trainer's optimizer for its `total_steps`, refusing a run
        it cannot serve, and restore `state` (from a checkpoint) when given."""
        self._key, maximise = self.check(trainer.tasks, trainer.total_steps, validated)
        groups = trainer.optimizer.param_groups
        resumed_lrs = [group["lr"] for group in groups]  # as the loaded optimizer left them
        self.scheduler = self.schedule.make(trainer.optimizer, trainer.total_steps, maximise)
        if state is not None:
            self.scheduler.load_state_dict(state)
            for group, lr in zip(groups, resumed_lrs, strict=True):
                group["lr"] = lr
        self._lr = float(groups[0]["lr"])

    def check(self, tasks: Sequence[Task], total: int, validated: bool) -> tuple[str, bool]:
        """Refuse a run of `total` steps this schedule cannot serve; (the log it watches, whether
        higher is better) for a schedule that reads evaluations, else ("", False)."""
        name = self.schedule.name
        warmup = self.schedule.warmup_steps()
        if warmup >= total:
            raise ValueError(
                f"lr_schedule {name!r}: warm-up of {warmup} steps is not shorter than the run "
                f"({total} steps): lower lr_schedule_params.warmup"
            )
        if self.schedule.per_evaluation:
            if not validated:
                raise ValueError(
                    f"lr_schedule {name!r} lowers the learning rate when the validation "
                    f"{self.monitor!r} stops improving, but there is no validation data: "
                    + for_user("pass val to fit()", "give the split a validation part")
                    + " or use a step-based schedule (warmup, cosine, step)"
                )
            reported = [t for t in tasks if not t.auxiliary]
            watched = EarlyStopping.for_monitor(self.monitor, reported, None, False)
            return watched.monitor, watched.sign > 0
        return "", False

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        self._lr = float(trainer.optimizer.param_groups[0]["lr"])  # what this step used
        if self.scheduler is not None and not self.schedule.per_evaluation:
            self.scheduler.step()

    def on_eval_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if self.scheduler is not None and self.schedule.per_evaluation:
            self.schedule.evaluated(self.scheduler, logs[self._key])

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    @property
    def last_lr(self) -> float:
        """The learning rate the latest optimizer step used (the first parameter group's)."""
        return self._lr


def lr_logs(trainer: Trainer) -> dict[str, float]:
    """`lr`: the learning rate of the latest optimizer step, of the first parameter group (the
    shared parameters' unless they are frozen; task groups keep their `task_lr` ratio to it)."""
    if trainer.lr_schedule is not None:
        return {"lr": trainer.lr_schedule.last_lr}
    return {"lr": float(trainer.optimizer.param_groups[0]["lr"])}
