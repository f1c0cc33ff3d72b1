"""Degradation alert: one task getting worse while the others get better.

Negative transfer often shows as one task's validation metric sliding for several evaluations
while the rest still improve; the summed loss hides it. The alert names the task, how much it
lost from its best and what to try, once per such streak.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from polytask._audience import for_user
from polytask.train._callbacks import Callback

if TYPE_CHECKING:
    from polytask.tasks._task import Task
    from polytask.train._loop import Trainer

log = logging.getLogger("polytask")
WARNED = 5
"""Alerts per run logged as warnings; later ones are info lines (all are kept)."""
MIN_LOSS = 0.01
"""A task must have lost at least this fraction of its best value before it is called
degrading: smaller slides over a few evaluations are common noise."""


MIN_GAIN = 0.001
"""The others' mean relative improvement (0.1%) that counts as improving: below it, their
metrics stood still (a float's rounding is not a gain)."""


class DegradationWatch:
    """Fed each evaluation's logs, returns the alerts that evaluation raises: a task whose
    primary validation metric (its loss where the metric is undefined) has worsened for
    `window` consecutive evaluations, ending at least `min_loss` (relative) below its best,
    while the other tasks improved on average (mean relative change above `MIN_GAIN`) over
    the same evaluations. One alert per streak: it is re-armed once the task stops worsening."""

    def __init__(
        self,
        tasks: Sequence[Task],
        window: int,
        min_loss: float = MIN_LOSS,
        per_task: bool = False,
        task_lr: bool = True,
    ) -> None:
        """`task_lr`: whether the optimizer takes per-task learning rates (the advice offers
        them only then)."""
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window, self.min_loss, self.per_task = window, min_loss, per_task
        self.task_lr = task_lr
        self.specs = [(t.name, t.primary.name, t.primary.higher_is_better) for t in tasks]
        self.rows: list[dict[str, tuple[str, float, float]]] = []
        """Per evaluation: {task: (what, value, value signed so that higher is better)}"""
        self.steps: list[tuple[int, int]] = []
        self.streak = {name: 0 for name, _, _ in self.specs}
        self.fired = {name: False for name, _, _ in self.specs}

    def _reading(self, logs: Mapping[str, float], task: str, metric: str, higher: bool) -> Any:
        value = logs.get(f"val/{task}/{metric}", math.nan)
        if not math.isnan(value):
            return metric, value, value if higher else -value
        loss = logs.get(f"val/{task}/loss", math.nan)
        return None if math.isnan(loss) else ("loss", loss, -loss)

    def update(self, logs: Mapping[str, float]) -> list[dict[str, Any]]:
        row = {}
        for name, metric, higher in self.specs:
            reading = self._reading(logs, name, metric, higher)
            if reading is not None:
                row[name] = reading
        previous = self.rows[-1] if self.rows else {}
        self.rows.append(row)
        self.steps.append((int(logs.get("step", 0)), int(logs.get("epoch", 0))))
        alerts = []
        for name, _, _ in self.specs:
            now, before = row.get(name), previous.get(name)
            if now is None or before is None or now[0] != before[0] or not now[2] < before[2]:
                self.streak[name], self.fired[name] = 0, False
                continue
            self.streak[name] += 1
            if self.streak[name] >= self.window and not self.fired[name]:
                if self._relative_loss(name) < self.min_loss:
                    continue  # a slide within noise: keep watching
                gain = self._others_gain(name)
                if gain is not None and gain > MIN_GAIN:
                    self.fired[name] = True
                    alerts.append(self._alert(name, gain))
        return alerts

    def _relative_loss(self, task: str) -> float:
        """How far the task's latest value is below its best so far, relative to the best."""
        what = self.rows[-1][task][0]
        values = [r[task] for r in self.rows if task in r and r[task][0] == what]
        best = max(values, key=lambda v: v[2])
        return (best[2] - values[-1][2]) / max(abs(best[1]), 1e-12)

    def _others_gain(self, task: str) -> float | None:
        """Mean relative improvement of the other tasks over the task's worsening streak."""
        then, now = self.rows[-1 - self.streak[task]], self.rows[-1]
        gains = []
        for name, _, _ in self.specs:
            a, b = then.get(name), now.get(name)
            if name == task or a is None or b is None or a[0] != b[0]:
                continue
            gains.append((b[2] - a[2]) / max(abs(a[1]), 1e-12))
        return sum(gains) / len(gains) if gains else None

    def _alert(self, task: str, gain: float) -> dict[str, Any]:
        what, value, _ = self.rows[-1][task]
        best_i = max(
            (i for i, r in enumerate(self.rows) if task in r and r[task][0] == what),
            key=lambda i: (self.rows[i][task][2], -i),
        )
        best = self.rows[best_i][task][1]
        (step, epoch), (best_step, best_epoch) = self.steps[-1], self.steps[best_i]
        lost = abs(best - value)
        fixes = []
        if not self.per_task:  # else already served from its best evaluation
            fixes.append(for_user(
                'TrainConfig(selection="per_task") to serve it from its best evaluation',
                "training.selection: per_task to serve it from its best evaluation",
            ))  # fmt: skip
        if self.task_lr:
            fixes.append(for_user(
                f"a lower task_lr for it (task_lr={{{task!r}: 0.3}})",
                f"a lower training.task_lr for it (task_lr: {{{task}: 0.3}})",
            ))  # fmt: skip
        fix = ", ".join([*fixes, "a task-specific tower"])
        message = (
            f"task {task!r} is degrading: val/{task}/{what} has worsened for {self.streak[task]} "
            f"evaluations in a row, to {value:.4g} at epoch {epoch} (step {step}), {lost:.4g} "
            f"from its best {best:.4g} at epoch {best_epoch} (step {best_step}), while the other "
            f"tasks improved by {100 * gain:.2g}% on average. Try {fix}, "
            "another balancer, or training it in another group (`polytask analyze CONFIG` "
            "shows which tasks help each other)"
        )
        return {"step": step, "epoch": epoch, "task": task, "metric": what, "value": value,
                "best": best, "best_step": best_step, "best_epoch": best_epoch, "lost": lost,
                "others_gain": gain, "message": message}  # fmt: skip


ONE_MODEL = ("training", "multi-task", "analysis")
"""The labels of a command's only model (Trainer's, `fit`'s and `analyze`'s defaults): its
warnings need no label; a comparison's models ("seed 1 STL churn") are named in theirs."""


class DegradationAlert(Callback):
    """Runs a `DegradationWatch` over the validation logs: each alert is logged as a warning
    and appended to `trainer.alerts` (which checkpoints carry)."""

    def __init__(self, tasks: Sequence[Task], window: int, selection: str = "joint") -> None:
        self.tasks, self.window, self.selection = tuple(tasks), window, selection
        self.watch = self._watch()
        self.active = True

    def _watch(self, task_lr: bool = True) -> DegradationWatch:
        per_task = self.selection == "per_task"
        return DegradationWatch(self.tasks, self.window, per_task=per_task, task_lr=task_lr)

    def on_fit_start(self, trainer: Trainer) -> None:
        """Replay the history a resumed run brings, silently, so its alerts are the same."""
        self.watch = self._watch(task_lr=trainer.config.optimizer != "lbfgs")
        # a prior refitted each epoch (multilevel) shrinks some tasks more and others less:
        # one task worsening while the others improve is that, not a conflict between tasks
        self.active = type(trainer.model).refit_reason is None
        if not self.active:
            return
        trainer.alerts = [a for logs in trainer.history for a in self.watch.update(logs)]

    def on_eval_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if not self.active:
            return
        # a comparison trains many models: say which one (its progress line's label)
        label = getattr(trainer, "description", "training")
        which = "" if label in ONE_MODEL else f"{label}: "
        for alert in self.watch.update(logs):
            warned = len(trainer.alerts)
            if warned < WARNED:
                log.warning("%s%s", which, alert["message"])
            else:  # with many small tasks (e.g. 139 schools) the log would drown
                if warned == WARNED:
                    log.warning(
                        "more tasks are degrading: further alerts are info lines (-v) and "
                        + for_user("are kept in Trainer.alerts", "are kept in the checkpoints")
                    )
                log.info("%s%s", which, alert["message"])
            trainer.alerts.append(alert)
