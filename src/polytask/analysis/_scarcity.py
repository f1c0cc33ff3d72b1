"""Data scarcity: a task's test metric against the fraction of its training labels kept,
for the multi-task model and for a single-task model of that task (learning curves).

Only the chosen task's training labels are thinned (a random `fraction` of its labelled
training rows, drawn per seed); the other tasks keep theirs, validation and test rows are
untouched. Every model trains with the same budget and early stopping off, as in `compare`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from polytask._files import json_text, write_text_atomic
from polytask.analysis._baselines import primary_metrics
from polytask.app import PreparedData, RunConfig, fit
from polytask.data._sampler import missing_like
from polytask.data._tensors import TaskData
from polytask.tasks._task import Task


def keep_label_fraction(data: TaskData, task: Task, fraction: float, seed: int) -> TaskData:
    """`data` with only a random `fraction` of `task`'s labelled rows still labelled (at least
    one); the others are marked missing."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction for {task.name!r} must be in (0, 1], got {fraction}")
    target = data.targets[task.name]
    mask = task.mask(target)
    labelled = (mask.reshape(len(target), -1).any(1)).nonzero().squeeze(1)
    keep = max(1, round(fraction * len(labelled)))
    order = torch.randperm(len(labelled), generator=torch.Generator().manual_seed(seed))
    drop = labelled[order[keep:]]
    thinned = target.clone()
    thinned[drop] = missing_like(target, len(drop))
    return TaskData(data.x, {**data.targets, task.name: thinned}, data.target_scale)


def _std(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


@dataclass
class CurvePoint:
    """One label fraction: labelled training rows kept, and per-seed test metrics."""

    fraction: float
    labelled: int
    mtl: list[float] = field(default_factory=list)
    stl: list[float] = field(default_factory=list)


@dataclass
class LearningCurve:
    task: Task
    seeds: list[int]
    points: list[CurvePoint]

    def rows(self) -> list[dict[str, float]]:
        """Per fraction: labelled rows, MTL and STL means and stds, and MTL's change (%): the
        mean of each seed's own change over the seeds where it is defined (`delta_seeds` of
        them; NaN where none is: a single-task value of 0, or an undefined metric)."""
        sign = 1.0 if self.task.primary.higher_is_better else -1.0
        out = []
        for p in self.points:
            mtl, stl = np.array(p.mtl), np.array(p.stl)
            with np.errstate(divide="ignore", invalid="ignore"):
                changes = 100 * sign * (mtl - stl) / np.abs(stl)
            defined = changes[np.isfinite(changes)]
            out.append(
                {
                    "fraction": p.fraction,
                    "labelled": p.labelled,
                    "mtl_mean": float(mtl.mean()),
                    "mtl_std": _std(mtl),
                    "stl_mean": float(stl.mean()),
                    "stl_std": _std(stl),
                    "delta_pct": float(defined.mean()) if defined.size else math.nan,
                    "delta_seeds": int(defined.size),
                    "seeds": len(changes),
                }
            )
        return out

    def to_json(self, path: str | Path) -> None:
        payload = {
            "task": self.task.name,
            "metric": self.task.primary.name,
            "higher_is_better": self.task.primary.higher_is_better,
            "seeds": self.seeds,
            "rows": self.rows(),
            "points": [dataclasses.asdict(p) for p in self.points],
        }
        write_text_atomic(path, json_text(payload))  # never a partial file


def label_fraction_curve(
    config: RunConfig,
    data: PreparedData,
    task_name: str,
    fractions: Sequence[float],
    seeds: Sequence[int],
    run_dir: str | Path | None = None,
) -> LearningCurve:
    """For each fraction and seed: thin the task's training labels, train the multi-task model
    and a single-task model of the task, and record the task's primary test metric."""
    names = [t.name for t in data.tasks]
    if task_name not in names:
        close = difflib.get_close_matches(task_name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"--label-fraction names unknown task {task_name!r}{hint}; tasks: {names}")
    task = data.tasks[names.index(task_name)]
    if task.auxiliary:
        raise ValueError(
            f"--label-fraction names auxiliary task {task_name!r}, which is not evaluated: "
            "name a task with labels"
        )
    parts = data.train if isinstance(data.train, dict) else {"": data.train}
    held = {n: d for n, d in parts.items() if isinstance(d, TaskData)}
    if len(held) < len(parts):
        raise ValueError(
            "--label-fraction works on table data held in memory, not on images, text or audio"
        )
    points = []
    for fraction in fractions:
        point = CurvePoint(fraction, 0)
        for seed in seeds:
            thinned_parts = {
                n: keep_label_fraction(d, task, fraction, seed) if task.name in d.targets else d
                for n, d in held.items()
            }
            point.labelled = sum(
                int(task.mask(d.targets[task.name]).reshape(len(d), -1).any(1).sum())
                for d in thinned_parts.values() if task.name in d.targets
            )  # fmt: skip
            train = thinned_parts if isinstance(data.train, dict) else thinned_parts[""]
            thinned = dataclasses.replace(data, train=train)
            training = dataclasses.replace(
                config.training, seed=seed, patience=None, monitor="loss", keep_last=0,
                keep_best=False,
            )  # fmt: skip
            cfg = dataclasses.replace(config, training=training)
            where = Path(run_dir) / fraction_folder(fraction) / f"seed{seed}" if run_dir else None
            label = f"{task.name} {fraction:g} seed {seed}"
            single = cfg.for_tasks([task.name])
            for target, tasks, run in ((point.mtl, None, cfg), (point.stl, [task], single)):
                sub = where and where / ("mtl" if tasks is None else "stl")
                fitted = fit(run, thinned, tasks=tasks, run_dir=sub, description=label)
                assert fitted.trainer is not None
                metrics = primary_metrics(fitted.trainer.evaluate(data.test), thinned)
                target.append(metrics[task.name])
        points.append(point)
    return LearningCurve(task, list(seeds), points)


def fraction_folder(fraction: float) -> str:
    """The folder name of one label fraction's runs in a `--label-fraction` comparison."""
    return f"fraction{fraction:g}"


def fraction_folders(folder: Path) -> list[Path]:
    """The label fractions' folders a `--label-fraction` comparison wrote into `folder` (a
    folder of the user's that merely starts with "fraction" is not one)."""
    found = []
    for path in sorted(folder.glob("fraction*")):
        try:
            fraction = float(path.name.removeprefix("fraction"))
        except ValueError:
            continue
        if path.is_dir() and path.name == fraction_folder(fraction):
            found.append(path)
    return found
