"""Loggers by name. Adding a logger: one file (a `Logger` subclass) and one line in `LOGGERS`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from polytask._params import check_params, lookup
from polytask.train.loggers._base import Logger
from polytask.train.loggers._csv import CSVLogger
from polytask.train.loggers._json import JSONLogger
from polytask.train.loggers._mlflow import MLflowLogger
from polytask.train.loggers._tensorboard import TensorBoardLogger

log = logging.getLogger("polytask")

LOGGERS: dict[str, type[Logger]] = {
    "csv": CSVLogger,
    "json": JSONLogger,
    "tensorboard": TensorBoardLogger,
    "mlflow": MLflowLogger,
}
ALWAYS_ON = ("csv", "json")
"""The loggers every run with a run folder has (`metrics.csv`, `metrics.json`)."""


def logger_class(name: str) -> type[Logger]:
    """The logger registered as `name`; an unknown name lists the registered ones, a logger
    whose package is not installed names the pip extra that installs it."""
    cls = lookup("logger", name, LOGGERS)
    problem = cls.missing()
    if problem is not None:
        raise ValueError(f"logger {name!r}: {problem}")
    return cls


def check_loggers(names: Sequence[str], params: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse unknown or uninstalled loggers and bad options before anything runs."""
    for name in names:
        logger_class(name)
    for name, options in params.items():
        if name not in names:
            raise ValueError(
                f"logger_params names {name!r}, which loggers does not list "
                f"(loggers: {list(names) or 'none'})"
            )
        check_params("logger", name, LOGGERS[name], options, skip=1)
    for name in names:
        problem = LOGGERS[name].refused(params.get(name, {}))
        if problem is not None:
            raise ValueError(f"logger {name!r}: {problem}")


def make_logger(name: str, run_dir: str | Path, **params: Any) -> Logger:
    """The logger `name` writing into `run_dir`, with its options validated."""
    cls = logger_class(name)
    build: Callable[..., Logger] = cls  # registered loggers take the run folder first
    return build(run_dir, **check_params("logger", name, cls, params, skip=1))


def run_loggers(
    run_dir: str | Path | None,
    names: Sequence[str] = (),
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Logger]:
    """The loggers of a run: CSV and JSON, then each of `names` (once each), all in `run_dir`.
    Without a run folder there is nowhere to log to: none (with a warning if `names` asked)."""
    if run_dir is None:
        if names:
            log.warning("loggers %s write into the run folder: there is none, so they are off",
                        ", ".join(names))  # fmt: skip
        return []
    chosen = list(dict.fromkeys([*ALWAYS_ON, *names]))
    return [make_logger(n, run_dir, **dict((params or {}).get(n, {}))) for n in chosen]
