"""Training configuration: a frozen dataclass checked when it is made."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import field
from typing import Any, Literal

from pydantic import ConfigDict, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass

from polytask.data._schedules import make_schedule
from polytask.gradients._auxiliary import AuxiliaryRule
from polytask.gradients._registry import make_mode
from polytask.gradients._sketch import SKETCH_SIZE
from polytask.train._precision import normalise_precision
from polytask.train._selection_config import check_selection
from polytask.train.loggers._registry import check_loggers
from polytask.train.lr._registry import LR_SCHEDULES, make_lr_schedule
from polytask.train.meta._registry import META_LEARNERS, make_meta_learner

OptimizerName = Literal["adamw", "adam", "sgd", "lbfgs"]
DEFAULT_EPOCHS = 20
"""How long a run is when neither `epochs` nor `steps` is given."""


NUMBERS = (
    "epochs", "steps", "eval_every", "batch_size", "lr", "weight_decay", "patience", "seed",
    "max_jacobian_mb", "subsample_size", "sketch_size", "grad_clip", "keep_last",
    "num_workers", "conflict_every", "affinity_every", "lookahead_lr", "accumulate",
    "dist_timeout_s", "degradation_window",
)  # fmt: skip
"""The settings that take a number."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Give `epochs` (20 when neither is given), or `steps` to train by optimiser
    steps instead.

    Validation runs each epoch (or every `eval_every` steps when training by steps), which is also
    the window of window-based balancers such as DWA. Early stopping watches `monitor`: "loss"
    (the sum of the tasks' validation losses) or "TASK/METRIC", e.g. "churn/auc".

    `gradient_mode` applies to gradient balancers (see `polytask.gradients`): "auto" is
    the exact Jacobian path, or the memory-lean exact Gramian path when J would exceed
    `max_jacobian_mb`, or the balancer's own space (MGDA-UB: the representation).
    `subsample_size` is the sub-batch of the "subsample" mode, `sketch_size` the columns of
    the "sketch" mode's random sketch (more: closer to the exact update, slower).

    Per-task regularisation: `task_lr` multiplies the learning rate of a task's own parameters
    (its head or tower), `task_weight_decay` sets their weight decay (default `weight_decay`);
    `freeze` lists parts that are not trained ("shared", or task names: e.g. ["shared"] trains
    the heads only); `grad_clip` caps the norm of the whole model gradient before each step
    (a balancer's own learnt weights, uncertainty's log-variances and the like, are left out).

    `optimizer` "lbfgs" takes full-batch L-BFGS steps with a line search (up to 20 iterations
    per step, `lr` its first step length: 1 is usual; `weight_decay` an L2 term of the
    objective): it reaches the optimum of small smooth models, such as the linear
    `mean_regularised`, that Adam's mini-batch steps stop short of. It needs the training rows
    in one batch (`batch_size` at least their number), no dropout and a balancer with a fixed
    combination of the losses (ew, fixed, gls, ...), and refuses other setups.

    A NaN or infinite task loss or gradient is caught before the optimizer step:
    `on_nonfinite` "stop" ends training naming the task (the weights before that step are
    kept, in RUN_DIR/last_good.pt), "skip" drops the step, counts it per task and goes on.

    With a run folder, a checkpoint is written at every evaluation (atomically) into
    RUN_DIR/checkpoints, keeping the newest `keep_last` (0: none); `keep_best` also keeps
    RUN_DIR/best.pt, the weights at the best `monitor` value. `Trainer.resume(RUN_DIR)` (CLI:
    `train --resume`) continues from the newest one exactly.

    `selection` says which weights serve each task at the end: "joint" (one snapshot, at the
    best `monitor` value), or "per_task": each task is served from its own best evaluation by
    its primary metric (its validation loss where the metric is undefined), as the trunk and
    its head were at that evaluation (a head fits only the trunk it was trained with), so up to
    one copy of the shared part per distinct best evaluation is held. With a `patience`,
    "per_task" stops when every task's own patience has run out. `degradation_window` (null:
    off) warns when a task's primary validation metric has worsened for that many consecutive
    evaluations while the other tasks improved on average (`Trainer.alerts`).

    `schedule` picks which data source each step draws from when tasks come with their own
    data sets (`polytask.data.SCHEDULES`: joint, round_robin, uniform, proportional,
    temperature, annealed, dynamic), with `schedule_params` (e.g. {temperature: 2}).
    `num_workers` > 0 gathers training batches in that many worker processes (same batches,
    same results; they stop cleanly on Ctrl-C, which ends training at the newest checkpoint).

    How the tasks relate (`polytask.train.TaskRelations`, RUN_DIR/relations.json): gradient
    conflict is measured every `conflict_every` steps (free when the gradient method forms the
    Gramian; otherwise a probe of one forward and one batched backward), TAG task affinity every
    `affinity_every` steps (one probe plus one forward per task, with a lookahead step of size
    `lookahead_lr`, default `lr`); None turns either off. Neither changes the training.

    `auxiliary_gradients` applies when some tasks are auxiliary (`Task.auxiliary`): "plain"
    makes each one more task for the balancer; "gated" and "projected" let the balancer
    combine the main tasks only and add each auxiliary gradient scaled by max(0, cosine) with
    the main direction, or less its component against it (`polytask.gradients.auxiliary_aware`).

    With a run folder, every evaluation is written to RUN_DIR/metrics.csv and metrics.json;
    `loggers` adds more by name (`polytask.train.loggers.LOGGERS`: "tensorboard", "mlflow"),
    each with its options in `logger_params` (e.g. {mlflow: {tracking_uri: ...}}).

    Scale (see the scale guide): `precision` "32", "bf16" (bfloat16 autocast of the forward
    pass) or "16" (float16 autocast with a dynamic loss scale, divided out of every per-task
    gradient before the balancer reads it; the balancers' solvers always run in float32 or
    float64). `accumulate` splits each batch into that many micro-batches (activations of one
    micro-batch; the same update as the whole batch: gradient balancers hold and combine the
    summed per-task gradients J, not the micro-batches' combined ones). Under `torchrun` (WORLD_SIZE
    > 1) `batch_size` is the global batch, shared among the processes, which sum their losses
    and per-task gradients before the balancer runs; `dist_backend` ("auto": nccl on GPUs, else
    gloo) and `dist_timeout_s` (how long a collective waits for a process) set the group.

    `meta_learning` meta-trains the model for fast adaptation to new tasks of the same kind
    (`polytask.train.meta.META_LEARNERS`: "reptile", "fomaml"; None: off). Ordinary steps go on;
    after every `every`-th step an episode adapts (shared parameters, a meta head init shared
    by all tasks of one kind and output size) to one training task's rows and moves both
    towards what adapts well; the meta head init is kept with the model (`Trainer.meta_init`,
    `FittedModel.meta_init`). `meta_params` sets the method's parameters: `every` (4),
    `inner_steps` (5), `inner_lr` (0.05), `outer_lr` (0.1) and `support` (rows per episode,
    10); see `polytask.train.meta` and the meta-learning guide.

    `lr_schedule` varies the learning rate over the run (`polytask.train.lr.LR_SCHEDULES`;
    None: constant), with `lr_schedule_params`: "warmup" (linear over `warmup` steps, 100, then
    constant), "cosine" (optional linear `warmup`, 0, then a cosine decay to `min_factor` × lr,
    0, at the last step), "step" (× `gamma`, 0.1, every `every` steps) and "plateau" (×
    `factor`, 0.5, when the validation `monitor` has not improved for `patience`, 3,
    evaluations; not below `min_factor` × lr). Every parameter group keeps its ratio to lr
    (`task_lr`); the schedule is saved in checkpoints, and the learning rate of each window's
    last step is logged as `lr`.

    `compile` compiles the model's trunk and heads with `torch.compile` (in place: the model
    keeps its class and methods) where the step's gradient path can use compiled modules;
    paths that cannot are refused before training, naming what to use instead (see the
    performance guide). The first steps are slow while it compiles; it pays off on long runs
    of a model whose step is dominated by many small operations.
    """

    epochs: int | None = None
    steps: int | None = None
    eval_every: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: OptimizerName = "adamw"
    patience: int | None = 10
    monitor: str = "loss"
    restore_best: bool = True
    selection: Literal["joint", "per_task"] = "joint"
    degradation_window: int | None = 3
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    gradient_mode: str = "auto"
    max_jacobian_mb: float = 1024.0
    subsample_size: int = 32
    sketch_size: int = SKETCH_SIZE
    task_lr: dict[str, float] = field(default_factory=dict)
    task_weight_decay: dict[str, float] = field(default_factory=dict)
    freeze: tuple[str, ...] = ()
    grad_clip: float | None = None
    on_nonfinite: Literal["stop", "skip"] = "stop"
    keep_last: int = 1
    keep_best: bool = False
    schedule: str = "joint"
    schedule_params: dict[str, float] = field(default_factory=dict)
    num_workers: int = 0
    conflict_every: int | None = 10
    affinity_every: int | None = None
    lookahead_lr: float | None = None
    loggers: tuple[str, ...] = ()
    logger_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta_learning: str | None = None
    meta_params: dict[str, float] = field(default_factory=dict)
    auxiliary_gradients: AuxiliaryRule = "plain"
    precision: str | int = "32"
    accumulate: int = 1
    dist_backend: Literal["auto", "gloo", "nccl"] = "auto"
    dist_timeout_s: float = 1800.0
    lr_schedule: str | None = None
    lr_schedule_params: dict[str, float] = field(default_factory=dict)
    compile: bool = False

    __pydantic_config__ = ConfigDict(extra="forbid")

    @field_validator(*NUMBERS, mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any, info: ValidationInfo) -> Any:
        """A number given as true / false is refused: YAML reads yes, no, on and off as
        booleans, which pydantic would take as 1 and 0 (`lr: yes` trained at 1.0)."""
        if isinstance(value, bool):
            raise ValueError(
                f"{info.field_name} takes a number, not {str(value).lower()} (YAML reads yes, "
                "no, on and off as true / false; null leaves it unset where that is allowed)"
            )
        return value

    def __post_init__(self) -> None:
        if self.epochs is None and self.steps is None:  # neither given: 20 epochs
            object.__setattr__(self, "epochs", DEFAULT_EPOCHS)
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give one of epochs and steps, not both (set the other to null)")
        object.__setattr__(self, "precision", normalise_precision(self.precision))
        if not self.dist_timeout_s > 0:
            raise ValueError(f"dist_timeout_s must be > 0, got {self.dist_timeout_s}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.keep_last < 0:
            raise ValueError(f"keep_last must be >= 0, got {self.keep_last}")
        for name in ("epochs", "steps", "eval_every", "batch_size", "patience", "subsample_size",
                     "sketch_size", "conflict_every", "affinity_every", "accumulate"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.lookahead_lr is not None and not self.lookahead_lr > 0:
            raise ValueError(f"lookahead_lr must be > 0 (or null: lr), got {self.lookahead_lr}")
        if not self.max_jacobian_mb > 0:
            raise ValueError(f"max_jacobian_mb must be > 0, got {self.max_jacobian_mb}")
        if not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        for name, value in self.task_lr.items():
            if not 0 < value < math.inf:
                raise ValueError(
                    f"task_lr[{name!r}] must be a finite number > 0, got {value} (to leave the "
                    "task's parameters as they are, freeze it instead)"
                )
        for name, value in self.task_weight_decay.items():
            if not 0 <= value < math.inf:
                raise ValueError(
                    f"task_weight_decay[{name!r}] must be a finite number >= 0, got {value}"
                )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip}")
        make_schedule(self.schedule, **self.schedule_params)  # names what is wrong
        if self.gradient_mode != "auto":
            try:
                make_mode(self.gradient_mode)
            except ValueError as err:
                raise ValueError(f"gradient_mode: {err} (or 'auto')") from None
        check_selection(self)
        self._check_meta()
        self._check_lr_schedule()
        check_loggers(self.loggers, self.logger_params)  # unknown, or its package is missing
        if self.monitor != "loss" and self.monitor.count("/") != 1:
            raise ValueError(f"monitor must be 'loss' or 'TASK/METRIC', got {self.monitor!r}")

    def for_tasks(self, task_names: Sequence[str]) -> TrainConfig:
        """These settings for a model of only `task_names` (a single-task baseline, a group of
        tasks): per-task settings of other tasks dropped, which that model would refuse, and a
        `monitor` of another task's metric replaced by the loss."""
        keep = set(task_names)
        monitor = self.monitor if self.monitor.split("/")[0] in keep else "loss"
        return dataclasses.replace(
            self,
            task_lr={k: v for k, v in self.task_lr.items() if k in keep},
            task_weight_decay={k: v for k, v in self.task_weight_decay.items() if k in keep},
            freeze=tuple(p for p in self.freeze if p == "shared" or p in keep),
            monitor=monitor,
        )

    def _check_lr_schedule(self) -> None:
        """A known learning-rate schedule with valid parameters, and no parameters without one."""
        if self.lr_schedule is None:
            if self.lr_schedule_params:
                raise ValueError(
                    f"lr_schedule_params {sorted(self.lr_schedule_params)} is set but "
                    f"lr_schedule is not: name a schedule ({', '.join(LR_SCHEDULES)}) or drop "
                    "lr_schedule_params"
                )
            return
        try:
            make_lr_schedule(self.lr_schedule, **self.lr_schedule_params)
        except ValueError as err:
            which = "lr_schedule_params" if self.lr_schedule in LR_SCHEDULES else "lr_schedule"
            raise ValueError(f"{which}: {err}") from None

    def _check_meta(self) -> None:
        """A known meta-learning method with valid parameters, and no parameters without one."""
        if self.meta_learning is None:
            if self.meta_params:
                raise ValueError(
                    f"meta_params {sorted(self.meta_params)} is set but meta_learning is not: "
                    f"name a method ({', '.join(META_LEARNERS)}) or drop meta_params"
                )
            return
        try:
            make_meta_learner(self.meta_learning, **self.meta_params)
        except ValueError as err:
            which = "meta_params" if self.meta_learning in META_LEARNERS else "meta_learning"
            raise ValueError(f"{which}: {err}") from None
