"""The logger interface: a callback that receives each evaluation's logs and the run's settings."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from polytask.train._callbacks import Callback

if TYPE_CHECKING:
    from polytask.train._loop import Trainer


class Logger(Callback):
    """Where a run's metrics go. A logger implements `log_metrics` and, where it has a place for
    them, `log_params`, `start` and `close`; the Trainer calls them through the callback hooks:

    - `start(step, history)` and `log_params(settings)` before the first evaluation is logged
      (not when `fit` starts, so that a run refused or failing before its first evaluation
      leaves nothing behind): `step` is where `fit` started (> 0 when it resumed from a
      checkpoint) and `history` the evaluations logged before it (restored from the
      checkpoint), `settings` the run's settings (`Trainer.run_settings()`: model, tasks,
      balancer, training config, and from the command line the whole config);
    - `log_metrics(step, logs)` after each evaluation, with that evaluation's logs (the row
      `metrics.csv` gets: `step`, `epoch`, `train/...`, `val/TASK/METRIC`, ...);
    - `close()` when `fit` ends, normally or not (if `start` was called).

    A logger that needs a package beyond polytask's own names it in `requires` (top-level module
    names) and the pip extra that installs it in `extra`: a run that asks for it without the
    package is refused before training, naming `pip install 'polytask[EXTRA]'`. Register a
    logger by name in `polytask.train.loggers.LOGGERS` to make it available to
    `TrainConfig(loggers=[...])` (its constructor takes the run folder first, then its options,
    `TrainConfig.logger_params`); any instance can also be passed in `Trainer(callbacks=[...])`.
    """

    requires: ClassVar[tuple[str, ...]] = ()
    """Top-level modules this logger imports (lazily, when training starts)."""
    extra: ClassVar[str | None] = None
    """The pip extra of polytask that installs `requires`."""

    @classmethod
    def missing(cls) -> str | None:
        """Why this logger cannot run here (a required package is not installed), or None."""
        absent = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        if not absent:
            return None
        how = f"pip install 'polytask[{cls.extra}]'" if cls.extra else f"pip install {absent[0]}"
        needs = ", ".join(absent)
        return f"{cls.__name__} needs the {needs} package, which is not installed: {how}"

    @classmethod
    def refused(cls, options: Mapping[str, Any]) -> str | None:
        """Why this logger with `options` would fail once training has started (a setting of
        the environment that refuses them), said before anything runs; None when it can run."""
        return None

    def start(self, step: int, history: Sequence[Mapping[str, float]]) -> None:
        """Open what the logger writes to; `step` > 0 continues a resumed run."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record the run's settings (a nested mapping of JSON values)."""

    def log_metrics(self, step: int, logs: Mapping[str, float]) -> None:
        """Record one evaluation's logs at training step `step`."""
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release what `start` opened."""

    _pending: tuple[int, list[dict[str, float]], dict[str, Any]] | None = None
    _started = False

    def on_fit_start(self, trainer: Trainer) -> None:
        self._pending = (trainer.step, list(trainer.history), trainer.run_settings())

    def on_eval_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if self._pending is not None:
            step, history, settings = self._pending
            self._pending, self._started = None, True
            self.start(step, history)
            self.log_params(settings)
        self.log_metrics(trainer.step, logs)

    def on_fit_end(self, trainer: Trainer) -> None:
        self._pending = None
        if self._started:
            self._started = False
            self.close()


class HistoryFile(Logger):
    """A file in the run folder holding every evaluation so far, up to date after each one:
    the new row appended to the file this logger wrote last, else the file rewritten whole
    (appending keeps a long run with hundreds of tasks from rewriting megabytes each epoch).
    A resumed run starts from the history its checkpoint holds, so the file keeps every row
    (and drops rows an interrupted run logged after its newest checkpoint)."""

    file_name: ClassVar[str]

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.rows: list[Mapping[str, float]] = []
        self._size: int | None = None
        """The file's size after this logger's last write (None: rewrite it whole)."""

    def start(self, step: int, history: Sequence[Mapping[str, float]]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.rows = list(history)
        self._size = None

    def log_metrics(self, step: int, logs: Mapping[str, float]) -> None:
        path = self.run_dir / self.file_name
        ours = self._size is not None and path.is_file() and path.stat().st_size == self._size
        self.rows.append(logs)
        if not (ours and len(self.rows) > 1 and self.append(path, logs)):
            self.write(path)
        self._size = path.stat().st_size

    def write(self, path: Path) -> None:
        """Write `self.rows` to `path`."""
        raise NotImplementedError

    def append(self, path: Path, row: Mapping[str, float]) -> bool:
        """Add `row`, the last of `self.rows`, to the file `write` or `append` left at `path`;
        False when it cannot (the file is then rewritten whole)."""
        return False


def flat_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level with dotted keys (`training.lr`); lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, name))
        else:
            out[name] = value
    return out
