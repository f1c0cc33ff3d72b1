"""Architectures side by side: size, training time and test metrics of each one against the
same single-task baselines, over paired seeds (same split, same batches, same budget)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from polytask._files import json_text, write_text_atomic
from polytask.analysis._baselines import (
    fit_single_task,
    primary_metrics,
    single_task_metrics,
    untimed_start_up,
)
from polytask.analysis._compare import delta_m_per_seed, primary_metrics_of
from polytask.app import (
    FittedModel,
    ModelConfig,
    PreparedData,
    RunConfig,
    fit,
)
from polytask.balancers._registry import make_balancer
from polytask.models import ARCHITECTURES, architecture_params
from polytask.models._base import model_size
from polytask.models._per_task import one_copy
from polytask.tasks._task import Task, reported_tasks
from polytask.train._lbfgs import refit_refusal
from polytask.train._step import plan_gradients

Predict = Callable[[pd.DataFrame], pd.DataFrame]
Summary = Callable[[Predict], dict[str, float]]
"""Extra whole-model figures from a model's `predict` (e.g. School's pooled explained variance);
for the single-task baselines `predict` joins the K models' columns."""


BASELINE = "hard_sharing"
"""The single-task baselines' architecture: its parameters (sizes, dropout, tower, per-task
dropout) are the ones every architecture in a comparison shares where it takes them."""


def architecture_spec(base: ModelConfig, architecture: str) -> ModelConfig:
    """`base` switched to `architecture`: its parameters the baseline takes too (sizes, dropout,
    tower) carry over where `architecture` takes them; the rest are `base`'s architecture's own
    (experts, coupling, ...) and are kept only when it is the same one. One network each: an
    ensemble or a blend is not carried over, to `base`'s own architecture neither (its row
    would have several times the others' budget)."""
    target = architecture_params(architecture)  # refuses an unknown name, with the allowed ones
    if architecture == base.architecture:
        return dataclasses.replace(base, ensemble=1, blend=())
    common = architecture_params(BASELINE)
    params = {k: v for k, v in base.params.items() if k in common and k in target}
    return ModelConfig(architecture=architecture, params=params)


@dataclass
class ArchitectureRun:
    """One architecture's results, one entry per seed."""

    architecture: str
    parameters: int = 0
    seconds: list[float] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    summary: list[dict[str, float]] = field(default_factory=list)


@dataclass
class ArchitectureComparison:
    """Every architecture and the single-task baselines (one model per task) on the test split."""

    tasks: Sequence[Task]
    seeds: list[int]
    single_task: ArchitectureRun
    runs: list[ArchitectureRun]

    def delta_m(self, run: ArchitectureRun) -> list[float]:
        """Δm (%) against the single-task baselines, per seed, over the tasks defined for both
        in every seed (as `compare` does: each seed's Δm over the same tasks)."""
        directions = {t.name: t.primary.higher_is_better for t in self.tasks}
        return delta_m_per_seed(run.metrics, self.single_task.metrics, directions)

    def rows(self) -> list[dict[str, object]]:
        """One row per model family: parameters, mean training seconds, (mean, std) of each
        task's primary metric, of each summary figure and of Δm (None for the baselines)."""
        rows = []
        for run in [self.single_task, *self.runs]:
            row: dict[str, object] = {
                "architecture": run.architecture,
                "parameters": run.parameters,
                "train_seconds": float(np.mean(run.seconds)),
            }
            row["metrics"] = {
                t.name: _mean_std([m[t.name] for m in run.metrics]) for t in self.tasks
            }
            keys = run.summary[0] if run.summary else {}
            row["summary"] = {k: _mean_std([s[k] for s in run.summary]) for k in keys}
            row["delta_m"] = None if run is self.single_task else _mean_std(self.delta_m(run))
            rows.append(row)
        return rows

    def to_json(self, path: str | Path) -> None:
        runs = [self.single_task, *self.runs]
        payload = {
            "seeds": self.seeds,
            "primary": primary_metrics_of(self.tasks),
            "rows": self.rows(),
            "runs": [dataclasses.asdict(r) for r in runs],
        }
        write_text_atomic(path, json_text(payload))  # never a partial file


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else float("nan")


def compare_architectures(
    config: RunConfig,
    data: PreparedData,
    architectures: Sequence[str],
    seeds: Sequence[int],
    run_dir: str | Path | None = None,
    summary: Summary | None = None,
) -> ArchitectureComparison:
    """Train each architecture (with `config`'s balancer and training budget) and one
    single-task hard-sharing network per task, for every seed; evaluate all on the test rows.

    Early stopping is off so that every model takes the same steps. `summary`, if given, adds
    whole-model figures for each fitted model and for the single-task models together."""
    if not architectures:
        raise ValueError(f"give at least one architecture from {sorted(ARCHITECTURES)}")
    specs = {a: architecture_spec(config.model, a) for a in architectures}
    for name, spec in specs.items():  # refuse a pair that cannot work before any training
        balancer = make_balancer(config.balancer.name, **config.balancer.params)
        try:
            model = spec.build(data.preprocessor.model_input, data.tasks, seed=0)  # a dry run
            balancer.setup(model.task_names)
            plan_gradients(model, balancer, config.training)
            refusal = refit_refusal(model, config.training)
            if refusal is not None:
                raise ValueError(refusal)
        except ValueError as err:
            said = str(err).startswith(f"architecture {name} ")  # it names itself already
            raise ValueError(str(err) if said else f"architecture {name!r}: {err}") from None
    from polytask.report._run import BASELINES  # the folder layout the report reads

    stl_spec = architecture_spec(config.model, BASELINE)
    runs = {a: ArchitectureRun(a) for a in architectures}
    stl = ArchitectureRun("single-task")
    untimed_start_up()
    for seed in seeds:
        training = dataclasses.replace(
            config.training, seed=seed, patience=None, monitor="loss", keep_last=0, keep_best=False
        )
        seed_dir = Path(run_dir) / f"seed{seed}" if run_dir is not None else None
        for name, spec in specs.items():
            cfg = dataclasses.replace(config, model=spec, training=training)
            started = time.perf_counter()
            fitted = fit(
                cfg, data, run_dir=seed_dir and seed_dir / name, description=f"seed {seed} {name}"
            )
            seconds = time.perf_counter() - started
            assert fitted.trainer is not None
            run = runs[name]
            run.parameters = model_size(one_copy(fitted.model))[0]  # not per-task snapshots
            run.seconds.append(seconds)
            run.metrics.append(primary_metrics(fitted.trainer.evaluate(data.test), data))
            if summary is not None:
                run.summary.append(summary(fitted.predict))
        cfg = dataclasses.replace(config, model=stl_spec, training=training)
        started = time.perf_counter()
        # their own folder: plain compare's seedS/stl_TASK are its own single-task models
        singles = fit_single_task(cfg, data, seed_dir and seed_dir / BASELINES, f"seed {seed}")
        stl.seconds.append(time.perf_counter() - started)
        stl.metrics.append(single_task_metrics(singles, data))
        stl.parameters = sum(model_size(s.model)[0] for s in singles)
        if summary is not None:
            stl.summary.append(summary(_joined(singles)))
    reported = reported_tasks(data.tasks)
    return ArchitectureComparison(reported, list(seeds), stl, list(runs.values()))


def _joined(models: Sequence[FittedModel]) -> Predict:
    """One `predict` over several single-task models: their columns side by side."""
    return lambda df: pd.concat([m.predict(df) for m in models], axis=1)
