"""Per-task model selection: each task is served from its own best validation evaluation.

One snapshot chosen by the summed validation loss serves a task that peaked early past its
best. With `selection: per_task` each task keeps the snapshot of its own best evaluation, by
its primary metric. A head is only valid with the trunk it was trained with, so a task's
snapshot is the whole shared part plus its own parameters at that evaluation; snapshots are
held once per distinct best evaluation (up to one per task), and a snapshot no task points to
any more is dropped at once.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from polytask._audience import for_user
from polytask.models._base import MultiTaskNet
from polytask.models._per_task import PerTaskSnapshots
from polytask.train._callbacks import EarlyStopping

if TYPE_CHECKING:
    from polytask.tasks._task import Task
    from polytask.train._config import TrainConfig
    from polytask.train._loop import Trainer

log = logging.getLogger("polytask")


def make_stopper(config: TrainConfig, tasks: Sequence[Task]) -> EarlyStopping:
    """The early-stopping and selection callback `config.selection` asks for; auxiliary tasks
    are not evaluated, so "loss" sums the other tasks' losses and none of theirs is monitored
    (with per-task selection they follow the newest weights)."""
    if config.selection == "per_task":
        return PerTaskSelection(tasks, config.patience)
    auxiliary = [t.name for t in tasks if t.auxiliary]
    if config.monitor.split("/")[0] in auxiliary:
        raise ValueError(
            f"monitor {config.monitor!r} names an auxiliary task, which is trained but never "
            "evaluated: monitor 'loss' or a metric of another task"
        )
    reported = [t for t in tasks if not t.auxiliary]
    return EarlyStopping.for_monitor(config.monitor, reported, config.patience, config.restore_best)


def check_selection(config: TrainConfig, tasks: Sequence[Task], validated: bool) -> None:
    """Refuse a misnamed `monitor`, and settings that read validation data in a run without
    any (they would do nothing, silently)."""
    make_stopper(config, tasks)
    if validated:
        return
    idle = [
        *(["selection: per_task"] if config.selection == "per_task" else []),
        *(["keep_best: true"] if config.keep_best else []),
        *([f"monitor: {config.monitor}"] if config.monitor != "loss" else []),
    ]
    if idle:
        fields = [s.split(":")[0] for s in idle]
        raise ValueError(
            f"{', '.join(idle)} choose{'s' if len(idle) == 1 else ''} weights by their "
            "validation scores, but there is no validation data: "
            + for_user(
                f"pass val to fit(), or drop {' and '.join(fields)}",
                "give the split a validation part (data.split.val_fraction > 0), or drop "
                + " and ".join(f"training.{f}" for f in fields),
            )
        )


@dataclass
class TaskBest:
    """One task's best evaluation so far and how long it has not improved since."""

    step: int = 0
    """Step of the best evaluation (0: none yet)."""
    epoch: int = 0
    by: str = ""
    """What chose it: the primary metric's name, "loss" where the metric was undefined, or
    "latest" for a task the validation data does not label (it follows the newest weights)."""
    value: float = math.nan
    """The value of `by` there."""
    metric: float = -math.inf
    """The best primary metric, signed so that higher is better."""
    loss: float = math.inf
    """The loss at the best evaluation (what an evaluation with an undefined metric must beat)."""
    evidence: bool = False
    """Whether any evaluation has given it a finite loss."""
    bad: int = 0
    """Evaluations since the best."""


class PerTaskSelection(EarlyStopping):
    """Keeps, for each task, the snapshot of its best evaluation by its primary metric (or its
    loss when the metric is undefined there); stops once every task's own `patience` has run
    out; at the end serves each task from its snapshot (`PerTaskSnapshots` when the best
    evaluations differ, else the model restored to the common one)."""

    def __init__(self, tasks: Sequence[Task], patience: int | None) -> None:
        super().__init__("each task's primary metric", True, patience, True)
        self.tasks = tuple(tasks)
        self.records = {t.name: TaskBest() for t in self.tasks}
        self.snapshots: dict[int, dict[str, Any]] = {}
        """step → {"epoch": ..., "state": the model's state (less unserved tasks' own)}"""
        self._own: dict[str, set[str]] = {}

    def on_fit_start(self, trainer: Trainer) -> None:
        if isinstance(trainer.model, PerTaskSnapshots):
            raise RuntimeError(
                "this Trainer already serves a per-task selection (trainer.model is a "
                "PerTaskSnapshots): train a new Trainer, or resume one from the run folder"
            )
        self._own = own_state_keys(trainer.model)
        trainer.selected = self.selected()

    def on_eval_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        improved = [t for t in self.tasks if self._judge(t, logs, trainer)]
        if improved:
            self.best_step, self.best_epoch = trainer.step, trainer.epoch  # best.pt follows
            kept = {t.name for t in improved}
            dropped = set().union(*(k for name, k in self._own.items() if name not in kept))
            state = {k: v for k, v in trainer.model.state_dict().items() if k not in dropped}
            self.snapshots[trainer.step] = {"epoch": trainer.epoch, "state": copy.deepcopy(state)}
            held = {r.step for r in self.records.values()}
            self.snapshots = {s: v for s, v in self.snapshots.items() if s in held}
        trainer.selected = self.selected()
        if self.exhausted:
            trainer.should_stop = True

    def _judge(self, task: Task, logs: dict[str, float], trainer: Trainer) -> bool:
        """Whether this evaluation is `task`'s new best (and record it if so)."""
        record, metric = self.records[task.name], task.primary
        loss_key = f"val/{task.name}/loss"
        if loss_key not in logs or (not record.evidence and math.isnan(logs[loss_key])):
            # not labelled by the validation data (yet): nothing to judge, follow the newest
            record.step, record.epoch = trainer.step, trainer.epoch
            record.by, record.value = "latest", math.nan
            record.bad = self.patience or 0  # it does not hold training back
            return True
        loss = logs[loss_key]
        value = logs.get(f"val/{task.name}/{metric.name}", math.nan)
        signed = value if metric.higher_is_better else -value
        better = signed > record.metric if not math.isnan(value) else loss < record.loss
        record.evidence = record.evidence or math.isfinite(loss)
        if not better and record.step:
            record.bad += 1
            return False
        record.step, record.epoch, record.bad = trainer.step, trainer.epoch, 0
        record.by, record.value = (metric.name, value) if not math.isnan(value) else ("loss", loss)
        if not math.isnan(value):
            record.metric = signed
        record.loss = loss if not math.isnan(loss) else math.inf
        return True

    def selected(self) -> dict[str, dict[str, Any]]:
        """Which evaluation serves each task: {task: {step, epoch, by, value}}."""
        return {
            name: {"step": r.step, "epoch": r.epoch, "by": r.by, "value": r.value}
            for name, r in self.records.items()
            if r.step
        }

    @property
    def exhausted(self) -> bool:
        """Whether every task's own patience has run out."""
        return self.patience is not None and all(
            r.bad >= self.patience for r in self.records.values()
        )

    def describe(self, trainer: Trainer) -> str:
        """Why training stopped early, and where each task is served from."""
        served = describe_selected(self.selected())
        return (
            f"stopped early at epoch {trainer.epoch} (step {trainer.step}): no task's primary "
            f"metric has improved for {self.patience} evaluations; {served}"
        )

    def summary(self, trainer: Trainer) -> str | None:
        early = trainer.should_stop and trainer.step < trainer.total_steps  # not the last step
        return self.describe(trainer) if early else describe_selected(self.selected())

    def on_fit_end(self, trainer: Trainer) -> None:
        """Serve each task from its snapshot."""
        if not self.snapshots or isinstance(trainer.model, PerTaskSnapshots):
            return
        steps = sorted({r.step for r in self.records.values()})
        trainer.best_step = steps[-1]
        log.info("%s", describe_selected(self.selected()))
        if len(steps) == 1:
            trainer.model.load_state_dict(self.snapshots[steps[0]]["state"])
            return
        members = []
        for step in steps:
            member = copy.deepcopy(trainer.model)
            member.load_state_dict(self.snapshots[step]["state"], strict=False)
            members.append(member)
        routes = {name: steps.index(r.step) for name, r in self.records.items()}
        trainer.model = PerTaskSnapshots(members, routes)

    def state_dict(self) -> dict[str, Any]:
        return {
            "records": {name: asdict(r) for name, r in self.records.items()},
            "snapshots": [
                {"step": step, "epoch": s["epoch"], "state": s["state"]}
                for step, s in self.snapshots.items()
            ],
            "best_step": self.best_step,
            "best_epoch": self.best_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = {name: TaskBest(**r) for name, r in state["records"].items()}
        self.snapshots = {
            int(s["step"]): {"epoch": int(s["epoch"]), "state": s["state"]}
            for s in state["snapshots"]
        }
        self.best_step, self.best_epoch = int(state["best_step"]), int(state["best_epoch"])


def own_state_keys(model: MultiTaskNet) -> dict[str, set[str]]:
    """Each task's own parameters, by their state-dict keys (shared ones excluded)."""
    shared = {id(p) for p in model.shared_parameters()}
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return {
        t: {n for p in model.task_parameters(t) if id(p) not in shared for n in names[id(p)]}
        for t in model.task_names
    }


def describe_selected(selected: dict[str, dict[str, Any]]) -> str:
    """'served per task: a from epoch 3 (step 30, auc 0.91), b from ...'"""
    parts = []
    for name, s in selected.items():
        latest = s["by"] == "latest"
        why = "newest weights: no validation labels" if latest else f"{s['by']} {s['value']:.4g}"
        parts.append(f"{name} from epoch {s['epoch']} (step {s['step']}, {why})")
    return "served per task: " + ", ".join(parts)
