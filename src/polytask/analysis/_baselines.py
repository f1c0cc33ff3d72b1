"""Train the multi-task model and one single-task baseline per task with the same budget."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from polytask.analysis._compare import ComparisonResult, ModelCost, Pooled, SeedCost
from polytask.analysis._transfer import DEFAULT_ALPHA, suggestions
from polytask.app import FittedModel, PreparedData, RunConfig, fit
from polytask.data._sampler import merge_sources
from polytask.models import MultiTaskNet
from polytask.models._base import model_size
from polytask.models._per_task import one_copy, snapshot_count
from polytask.models._registry import architecture_params
from polytask.tasks._task import reported_tasks
from polytask.train._evaluate import POOLED, TaskMetrics, evaluate, task_families


def untimed_start_up() -> None:
    """Torch imports its compiler the first time an optimizer is built (seconds on a busy
    machine): done here, before any model is timed, lest the first model trained in the
    process look several times slower than the rest."""
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])


def primary_metrics(metrics: TaskMetrics, data: PreparedData) -> dict[str, float]:
    return {t.name: metrics[t.name][t.primary.name] for t in data.tasks if t.name in metrics}


def compare_with_single_task(
    config: RunConfig,
    data: PreparedData,
    seeds: Sequence[int],
    run_dir: str | Path | None = None,
    alpha: float = DEFAULT_ALPHA,
    baseline: RunConfig | None = None,
    keep_models: bool = False,
) -> ComparisonResult:
    """For each seed: the MTL model and K single-task models, evaluated on the test rows.

    Every model sees the same training rows in the same batches for the same number of epochs
    and steps (early stopping is switched off; the best validation checkpoint is still kept when
    `restore_best` is set). Seeds change initialisation and batch order; the split stays fixed,
    so the runs are paired. `alpha`: the level of the per-task negative-transfer test.
    `baseline`: the single-task models take its model and training settings (e.g. tuned for
    them by `polytask tune --single-task`) instead of `config`'s, on the same data and seeds.
    `keep_models`: save every model in its folder of `run_dir` (`seedS/mtl/model.pt`,
    `seedS/stl_TASK/model.pt`), e.g. to serve a task's single-task model where sharing harms
    it."""
    if keep_models and run_dir is None:
        raise ValueError("keep_models saves the models in run_dir: give one")
    untimed_start_up()
    result = ComparisonResult(  # no auxiliary tasks
        tasks=reported_tasks(data.tasks), alpha=alpha, advice=advice_for(config)
    )
    for seed in seeds:
        training = dataclasses.replace(
            config.training, seed=seed, patience=None, monitor="loss", keep_last=0, keep_best=False
        )
        cfg = dataclasses.replace(config, training=training)
        seed_dir = Path(run_dir) / f"seed{seed}" if run_dir is not None else None
        started = time.perf_counter()
        mtl = fit(cfg, data, run_dir=seed_dir and seed_dir / "mtl", description=f"seed {seed} MTL")
        cost = SeedCost(model_cost(mtl, time.perf_counter() - started), {})
        assert mtl.trainer is not None
        evaluated = mtl.trainer.evaluate(data.test, summaries=True)
        mtl_metrics = primary_metrics(evaluated, data)
        stl_cfg = cfg
        if baseline is not None:
            stl_training = dataclasses.replace(
                baseline.training, seed=seed, patience=None, monitor="loss", keep_last=0,
                keep_best=False,
            )  # fmt: skip
            stl_cfg = dataclasses.replace(cfg, model=baseline.model, training=stl_training)
        singles = fit_single_task(stl_cfg, data, seed_dir, f"seed {seed}", cost.stl)
        if keep_models and seed_dir is not None:
            mtl.save(seed_dir / "mtl" / "model.pt")
            for single in singles:
                single.save(seed_dir / f"stl_{single.tasks[0].name}" / "model.pt")
        families = bool(task_families(result.tasks))
        stl_evaluated = single_task_evaluation(singles, data, summaries=families)
        stl_metrics = primary_metrics(stl_evaluated, data)
        pooled = (_pooled(evaluated), _pooled(stl_evaluated)) if families else None
        result.add(seed, mtl_metrics, stl_metrics, cost, pooled)
    return result


def _pooled(metrics: TaskMetrics) -> Pooled:
    """The pooled entries of `evaluate(..., summaries=True)`, by column."""
    return {key.removesuffix(POOLED): dict(value) for key, value in metrics.items()
            if key.endswith(POOLED)}  # fmt: skip


def single_task_evaluation(
    singles: Sequence[FittedModel], data: PreparedData, summaries: bool = False
) -> TaskMetrics:
    """Each task's test metrics from its own single-task model, in one pass over the test
    rows, as each model's trainer would evaluate it; `summaries`: also the task mean and pooled
    metrics of tasks made from a column (each row predicted by its own task's model)."""
    first = singles[0].trainer
    assert first is not None
    routed = _Routed([s.model for s in singles])
    rows = merge_sources(data.test) if isinstance(data.test, Mapping) else data.test
    return evaluate(routed, routed.tasks, rows, first.config.batch_size * 4, first.device,
                    first.processes, summaries)  # fmt: skip


class _Routed(MultiTaskNet):
    """Single-task models as one: each task's output from its own model."""

    def __init__(self, members: Sequence[MultiTaskNet]) -> None:
        super().__init__()
        self._init_tasks([t for m in members for t in m.tasks])
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {name: out for m in self.members for name, out in m(x).items()}


def model_cost(fitted: FittedModel, seconds: float) -> ModelCost:
    """A fitted model's parameters, the bytes of its parameters and buffers, and `seconds`."""
    values, size = model_size(fitted.model)
    copies = snapshot_count(fitted.model)
    own = model_size(one_copy(fitted.model))[0] if copies > 1 else None
    return ModelCost(values, size, seconds, copies, own)


def advice_for(config: RunConfig) -> tuple[str, ...]:
    """What the negative-transfer test suggests for `config`'s model: not the conflict
    balancer it already uses, and a tower per task only where its architecture takes a `tower`
    and has none (esmm's default towers, cross_stitch's whole towers: none suggested)."""
    params = architecture_params(config.model.architecture)
    tower = params.get("tower")
    offer = tower is not None and not config.model.params.get("tower", tower.default)
    return suggestions(config.balancer.name, offer)


def fit_single_task(
    config: RunConfig,
    data: PreparedData,
    run_dir: Path | None,
    label: str,
    costs: dict[str, ModelCost] | None = None,
) -> list[FittedModel]:
    """One model per task (auxiliary tasks have none: they are not evaluated) with `config`'s
    architecture and budget, trained on its own loss (`RunConfig.for_tasks`); with `costs`,
    each one's size and training time is recorded there under the task's name."""
    singles = []
    for task in reported_tasks(data.tasks):
        started = time.perf_counter()
        single = fit(
            config.for_tasks([task.name]),
            data,
            tasks=[task],
            run_dir=run_dir and run_dir / f"stl_{task.name}",
            description=f"{label} STL {task.name}",
        )
        if costs is not None:
            costs[task.name] = model_cost(single, time.perf_counter() - started)
        singles.append(single)
    return singles


def single_task_metrics(singles: Sequence[FittedModel], data: PreparedData) -> dict[str, float]:
    """Each single-task model's primary test metric."""
    return primary_metrics(single_task_evaluation(singles, data), data)
