"""Training hooks: progress display, early stopping, checkpoints (loggers: `loggers/`).

The trainer calls each hook in order; none of them needs to know which balancer or model runs.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from polytask.train._run_folder import check_fresh

if TYPE_CHECKING:
    from polytask.tasks._task import Task
    from polytask.train._loop import Trainer
    from polytask.train._step import StepResult

log = logging.getLogger("polytask")


class Callback:
    """Base class with no-op hooks."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None: ...

    def on_eval_end(self, trainer: Trainer, logs: dict[str, float]) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...


SUMMARISED = 12
"""Above this many tasks made from one column, a progress line shows their mean primary
validation metric instead of one value per task."""


def _summary(trainer: Trainer, logs: dict[str, float]) -> str:
    """Train and validation loss plus each task's primary validation metric (for more than
    `SUMMARISED` tasks made from one column, their mean)."""
    from polytask.train._evaluate import task_families

    shown = ["train/loss", "val/loss"]
    text = "  ".join(f"{k}={logs[k]:.4g}" for k in shown if k in logs)
    families = {c: ts for c, ts in task_families(trainer.tasks).items() if len(ts) > SUMMARISED}
    grouped = {t.name for ts in families.values() for t in ts}
    parts = [text] if text else []
    for column, tasks in families.items():
        metric = tasks[0].primary.name
        values = [logs[k] for t in tasks if (k := f"val/{t.name}/{metric}") in logs]
        values = [v for v in values if v == v]  # undefined (NaN) left out
        if values:
            parts.append(f"val/{column}: task mean {metric}={sum(values) / len(values):.4g}")
    parts += [f"{k}={logs[k]:.4g}" for t in trainer.tasks if t.name not in grouped
              if (k := f"val/{t.name}/{t.primary.name}") in logs]  # fmt: skip
    text = "  ".join(parts)
    return text + (f"  ({logs['time/step_ms']:.1f} ms/step)" if "time/step_ms" in logs else "")


class ProgressDisplay(Callback):
    """A rich progress bar on a terminal; plain log lines otherwise (CI, pipes, files)."""

    def __init__(
        self, description: str = "training", console: Console | None = None, lines: int = 5
    ) -> None:
        self.console = console or Console(stderr=True)
        self.description = description
        self.lines = lines
        self._every = 1
        self._evals = 0
        self._bar: Progress | None = None
        self._task_id: Any = None

    def on_fit_start(self, trainer: Trainer) -> None:
        n_evals = max(1, trainer.total_steps // max(1, trainer.eval_every))
        self._every = max(1, math.ceil(n_evals / self.lines))
        self._evals = 0
        if trainer.plan.method.per_task:
            self.console.print(
                f"{self.description}: {trainer.plan.describe()}", highlight=False, soft_wrap=True
            )
        if self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task_id = self._bar.add_task(self.description, total=trainer.total_steps, info="")

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if self._bar is not None:
            self._bar.update(self._task_id, completed=trainer.step)

    def on_eval_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        line = f"{self.description} epoch {trainer.epoch} step {trainer.step}: "
        line += _summary(trainer, logs)
        self._evals += 1
        last = trainer.step >= trainer.total_steps
        if self._bar is not None:
            self._bar.update(self._task_id, info=f"val/loss={logs.get('val/loss', math.nan):.4g}")
        elif self._evals % self._every == 0 or last:
            self.console.print(line, highlight=False, soft_wrap=True)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        summary = trainer.stopper.summary(trainer) if trainer.stopper is not None else None
        if summary is not None and not trainer.interrupted:  # no final model to speak of
            self.console.print(f"{self.description}: {summary}", highlight=False, soft_wrap=True)


class EarlyStopping(Callback):
    """Stops when `monitor` has not improved for `patience` evaluations; can restore the best."""

    def __init__(
        self, monitor: str, higher_is_better: bool, patience: int | None, restore_best: bool
    ) -> None:
        self.monitor = monitor
        self.sign = 1.0 if higher_is_better else -1.0
        self.patience = patience
        self.restore_best = restore_best
        self.best: float = -math.inf
        self.best_step = self.best_epoch = 0
        self._best_state: dict[str, Any] | None = None
        self._bad = 0
        self._undefined = False  # warned that the monitored value was NaN

    @classmethod
    def for_monitor(
        cls, monitor: str, tasks: Sequence[Task], patience: int | None, restore_best: bool
    ) -> EarlyStopping:
        """Early stopping on `monitor`: "loss" (the summed validation loss) or "TASK/METRIC",
        with the direction that metric declares; an unknown one lists those allowed."""
        if monitor == "loss":
            return cls("val/loss", False, patience, restore_best)
        task_name, metric = monitor.split("/")
        metrics = {m.name: m for t in tasks if t.name == task_name for m in t.metric_objects()}
        found = metrics.get(metric)
        if found is None:
            allowed = ["loss"] + [f"{t.name}/{m.name}" for t in tasks for m in t.metric_objects()]
            raise ValueError(
                f"monitor {monitor!r} names no task metric of this model; allowed: "
                + ", ".join(allowed)
            )
        return cls(f"val/{monitor}", found.higher_is_better, patience, restore_best)

    def on_eval_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise KeyError(
                f"early stopping monitors {self.monitor!r}, which the evaluation does not report; "
                f"available: {', '.join(sorted(logs))}"
            )
        value = self.sign * logs[self.monitor]
        if math.isnan(value):  # undefined (one class in the validation rows): no evidence
            if not self._undefined:
                log.warning(
                    "%s is undefined (NaN) at epoch %d: early stopping and the choice of the "
                    "best weights skip such evaluations (the model keeps its last weights if "
                    "every one is). Monitor a metric the validation rows define, or 'loss'",
                    self.monitor, trainer.epoch,
                )  # fmt: skip
            self._undefined = True
            return
        if value > self.best or math.isnan(self.best):
            self.best, self.best_step, self._bad = value, trainer.step, 0
            self.best_epoch = trainer.epoch
            if self.restore_best:
                self._best_state = copy.deepcopy(trainer.model.state_dict())
        else:
            self._bad += 1
            if self.patience is not None and self._bad >= self.patience:
                trainer.should_stop = True

    def describe(self, trainer: Trainer) -> str:
        """Why training stopped early (epochs counted from 1)."""
        restored = ", whose weights are restored" if self._best_state is not None else ""
        return (
            f"stopped early at epoch {trainer.epoch} (step {trainer.step}): {self.monitor} has "
            f"not improved for {self.patience} evaluations; best at epoch {self.best_epoch} "
            f"(step {self.best_step}){restored}"
        )

    def summary(self, trainer: Trainer) -> str | None:
        """The line the progress display ends with: why training stopped early, if it did, or
        which evaluation's weights the model keeps when that is not the last."""
        early = trainer.should_stop and trainer.step < trainer.total_steps  # not the last step
        if early:
            return self.describe(trainer)
        if self.restore_best and self.best_step not in (0, trainer.step):
            return (
                f"{self.monitor} was best at epoch {self.best_epoch} (step {self.best_step}), "
                f"whose weights are restored: the model (and its test metrics) is that "
                f"evaluation's, not the last one's (epoch {trainer.epoch})"
            )
        return None

    @property
    def exhausted(self) -> bool:
        """Whether the patience has run out: a resumed run that had stopped early stays so."""
        return self.patience is not None and self._bad >= self.patience

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._best_state is not None:
            trainer.model.load_state_dict(self._best_state)
            trainer.best_step = self.best_step

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "best_epoch": self.best_epoch,
                "bad": self._bad, "best_state": self._best_state}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step = float(state["best"]), int(state["best_step"])
        self.best_epoch = int(state.get("best_epoch", 0))
        self._bad, self._best_state = int(state["bad"]), state["best_state"]


class Checkpointer(Callback):
    """At each evaluation, a checkpoint of everything a resumed run needs in
    `folder/step-NNNNNNNN.pt` (written atomically; only the newest `keep_last` stay) and, with
    `best`, `best.pt` whenever the monitored value improves."""

    def __init__(self, folder: Path, keep_last: int, best: EarlyStopping | None) -> None:
        self.folder, self.keep_last, self.best = folder, keep_last, best

    def on_fit_start(self, trainer: Trainer) -> None:
        """Refuse a fresh run over another run's checkpoints; remove half-written temporary
        files a killed run left (never a finished one)."""
        if trainer.step == 0:
            check_fresh(self.folder)
        for folder in (self.folder, self.folder.parent):
            for stale in folder.glob(".*.pt.*.tmp"):
                stale.unlink(missing_ok=True)

    def on_eval_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if self.keep_last:
            trainer.save(self.folder / f"step-{trainer.step:08d}.pt")
            for old in sorted(self.folder.glob("step-*.pt"))[: -self.keep_last]:
                old.unlink()
        if self.best is not None and self.best.best_step == trainer.step:
            trainer.save(self.folder.parent / "best.pt")


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest `step-*.pt` in `folder`, if any."""
    found = sorted(folder.glob("step-*.pt"))
    return found[-1] if found else None
