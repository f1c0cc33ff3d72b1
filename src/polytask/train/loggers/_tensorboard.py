"""TensorBoard scalars in RUN_DIR/tensorboard (the `tensorboard` extra)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from polytask.train.loggers._base import Logger


class TensorBoardLogger(Logger):
    """One TensorBoard scalar per log key (`train/loss`, `val/churn/auc`, `weight/churn`, ...;
    TensorBoard groups them by the part before the first `/`) at each evaluation's training
    step, in `RUN_DIR/tensorboard` (`tensorboard --logdir RUN_DIR/tensorboard`); the run's
    settings as a text entry. Needs `pip install 'polytask[tensorboard]'`.

    A resumed run appends a new event file that purges the steps after its checkpoint, which an
    interrupted run may have logged before it stopped, so no step appears twice; a logger first
    added on resume also writes the evaluations before the checkpoint."""

    requires = ("tensorboard",)
    extra = "tensorboard"

    def __init__(self, run_dir: str | Path) -> None:
        self.log_dir = Path(run_dir) / "tensorboard"
        self._writer: Any = None
        self._step = 0

    def start(self, step: int, history: Sequence[Mapping[str, float]]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        earlier = self.log_dir.is_dir() and any(self.log_dir.glob("events.out.tfevents.*"))
        # TensorBoard hides every earlier event from purge_step on: those of steps after the
        # checkpoint this run resumes from (or, for a fresh run, of a run this one replaces)
        self._writer = SummaryWriter(str(self.log_dir), purge_step=step + 1)
        if step > 0 and not earlier:  # added on resume: the evaluations before it, too
            for row in history:
                self._scalars(int(row["step"]), row)
        self._step = step

    def log_params(self, params: Mapping[str, Any]) -> None:
        text = json.dumps(params, indent=1, default=str)
        self._writer.add_text("run_settings", f"```\n{text}\n```", global_step=self._step)
        self._writer.flush()

    def log_metrics(self, step: int, logs: Mapping[str, float]) -> None:
        self._scalars(step, logs)
        self._writer.flush()  # a killed run keeps what it logged

    def _scalars(self, step: int, logs: Mapping[str, float]) -> None:
        for key, value in logs.items():
            if key != "step":
                self._writer.add_scalar(key, float(value), global_step=step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
