"""Grouped training against all-in-one and single-task training (`polytask compare --groups`).

Each group of tasks gets its own model of the configured architecture; every model trains
with the same budget, split and batches per seed (early stopping off, as in `compare`). With
`groups=None` the grouping is chosen automatically: the seed-0 all-in-one model is trained with
TAG affinity measured (the measurement does not change its training, so it is also that seed's
all-in-one result) and the grouping that maximises total affinity within `max_groups` models is
trained. A group of one task is that task's single-task model, and a group of every task the
all-in-one model (the same runs, reused).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polytask._files import json_text, write_text_atomic
from polytask.analysis._analyze import (
    AFFINITY_EVERY,
    check_measurable,
    measure_relations,
    not_measured,
    suggest_grouping,
    warn_unmeasured_affinity,
)
from polytask.analysis._architectures import _mean_std
from polytask.analysis._baselines import (
    advice_for,
    primary_metrics,
    untimed_start_up,
)
from polytask.analysis._compare import (
    ComparisonResult,
    delta_m_per_seed,
    primary_metrics_of,
)
from polytask.analysis._grouping import Grouping, parse_groups
from polytask.analysis._transfer import SUGGESTIONS
from polytask.app import BalancerConfig, FittedModel, PreparedData, RunConfig, fit
from polytask.models._base import model_size
from polytask.tasks._task import Task
from polytask.train._relations import TaskRelations


@dataclass
class GroupsRun:
    """One way of splitting the tasks into models, and its results per seed."""

    label: str
    groups: tuple[tuple[str, ...], ...]
    parameters: int = 0
    seconds: list[float] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)


@dataclass
class GroupComparison:
    """Single-task, all-in-one and grouped training on the test split, over paired seeds."""

    tasks: Sequence[Task]
    seeds: list[int]
    single_task: GroupsRun
    all_in_one: GroupsRun
    grouped: GroupsRun
    grouping: Grouping | None = None
    """The automatic choice (None when the groups were given)."""
    relations: TaskRelations | None = None
    advice: tuple[str, ...] = SUGGESTIONS
    """What the all-in-one comparison suggests for a flagged task (`advice_for` the config)."""
    basis: str = "affinity"
    """What the automatic choice read: "affinity", or "gradient cosine" where affinity was
    not measured."""

    @property
    def directions(self) -> dict[str, bool]:
        return {t.name: t.primary.higher_is_better for t in self.tasks}

    def delta_m(self, run: GroupsRun) -> list[float]:
        """Δm (%) of `run` against single-task training, per seed."""
        return delta_m_per_seed(run.metrics, self.single_task.metrics, self.directions)

    def all_in_one_comparison(self) -> ComparisonResult:
        """The all-in-one model against single-task training, as `compare` reports it."""
        result = ComparisonResult(tasks=self.tasks, advice=self.advice)
        pairs = zip(self.seeds, self.all_in_one.metrics, self.single_task.metrics, strict=True)
        for seed, mtl, stl in pairs:
            result.add(seed, mtl, stl)
        return result

    def rows(self) -> list[dict[str, object]]:
        """Per way of training: models, parameters, mean training seconds, each task's primary
        metric and Δm (mean, std over seeds; Δm None for single-task)."""
        out = []
        for run in (self.single_task, self.all_in_one, self.grouped):
            dm = None if run is self.single_task else _mean_std(self.delta_m(run))
            out.append({
                "training": run.label,
                "groups": [list(g) for g in run.groups],
                "models": len(run.groups),
                "parameters": run.parameters,
                "train_seconds": float(np.sum(run.seconds) / max(len(self.seeds), 1)),
                "metrics": {t.name: _mean_std([m[t.name] for m in run.metrics])
                            for t in self.tasks},
                "delta_m": dm,
            })  # fmt: skip
        return out

    def to_json(self, path: str | Path) -> None:
        payload: dict[str, object] = {
            "seeds": self.seeds,
            "primary": primary_metrics_of(self.tasks),
            "rows": self.rows(),
            "runs": [dataclasses.asdict(r) for r in
                     (self.single_task, self.all_in_one, self.grouped)],
        }  # fmt: skip
        if self.grouping is not None:
            payload["grouping"] = {
                "groups": [list(g) for g in self.grouping.groups],
                "score": self.grouping.score,
                "method": self.grouping.method,
                "basis": self.basis,
            }
        if self.relations is not None:
            payload["relations"] = self.relations.to_dict()
        write_text_atomic(path, json_text(payload))


def _size(models: Sequence[FittedModel]) -> int:
    return sum(model_size(m.model)[0] for m in models)


def check_group_balancer(
    balancer: BalancerConfig,
    groups: Sequence[Sequence[str]] | None,
    names: Sequence[str],
    max_groups: int = 2,
) -> None:
    """Refuse, before any training, groups of several tasks the balancer cannot weight (too
    few for the method); `groups` None: any group of two tasks, which a suggestion of at most
    `max_groups` groups may hold (with one group, only the all-in-one model)."""
    if groups is None:
        candidates = [names[:2]] if len(names) > 2 and max_groups > 1 else []
    else:
        candidates = [g for g in groups if 1 < len(g) < len(names)]
    for group in candidates:
        try:
            balancer.for_tasks(group).check_tasks(group)
        except ValueError as e:
            which = f"group {','.join(group)}" if groups is not None else "a suggested group"
            raise ValueError(
                f"{which} cannot be trained with balancer {balancer.name!r}: {e}; give groups "
                "it can weight (--groups a,b/c) or choose another balancer"
            ) from None


def compare_groups(
    config: RunConfig,
    data: PreparedData,
    groups: str | Sequence[Sequence[str]] | None,
    seeds: Sequence[int],
    max_groups: int = 2,
    run_dir: str | Path | None = None,
    affinity_every: int = AFFINITY_EVERY,
) -> GroupComparison:
    """Train single-task, all-in-one and grouped models for every seed and evaluate them on the
    test rows; `groups` as lists of task names or "a,b/c" (every task in exactly one group),
    or None to choose them from the seed-0 all-in-one run's affinity."""
    if not seeds:
        raise ValueError("give at least one seed")
    auxiliary = [t.name for t in data.tasks if t.auxiliary]
    if auxiliary:
        raise ValueError(
            f"grouping compares the evaluated tasks; remove the auxiliary tasks {auxiliary} "
            "from the config (or compare with single-task models: compare without --groups)"
        )
    if len(data.tasks) < 2:
        raise ValueError(
            f"the config has {len(data.tasks)} task: grouping needs at least two tasks (to "
            "compare a model with single-task ones: compare without --groups)"
        )
    if groups is None:  # the groups come from the relations: refused now if none can be measured
        check_measurable(config, data)
    by_name = {t.name: t for t in data.tasks}
    training = dataclasses.replace(
        config.training, patience=None, monitor="loss", keep_last=0, keep_best=False
    )
    base = dataclasses.replace(config, training=training)
    names = tuple(by_name)
    stl = GroupsRun("single-task", tuple((n,) for n in names))
    allin = GroupsRun("all-in-one", (names,))
    grouping: Grouping | None = None
    relations: TaskRelations | None = None
    basis = "affinity"
    chosen: tuple[tuple[str, ...], ...] | None = None
    if groups is not None:  # every task in exactly one group, as the CLI's a,b/c form
        spec = groups if isinstance(groups, str) else "/".join(",".join(g) for g in groups)
        chosen = parse_groups(spec, names)
    check_group_balancer(config.balancer, chosen, names, max_groups)
    grouped: GroupsRun | None = None
    untimed_start_up()
    for seed in seeds:
        cfg = dataclasses.replace(
            base, training=dataclasses.replace(training, seed=seed)
        )  # fmt: skip
        where = Path(run_dir) / f"seed{seed}" if run_dir is not None else None
        started = time.perf_counter()
        measuring = chosen is None
        if chosen is None:  # the all-in-one run measures affinity, then the groups follow
            mtl = measure_relations(
                cfg, data, seed, affinity_every, where and where / "all", f"seed {seed} all-in-one"
            )
            assert mtl.trainer is not None
            relations = mtl.trainer.task_relations
            if relations is None:
                assert mtl.trainer is not None
                raise ValueError(
                    not_measured(mtl.trainer.step, cfg.training.conflict_every, affinity_every)
                    + ", or give the groups (a,b/c)"
                )
            warn_unmeasured_affinity(relations, mtl.trainer.step, affinity_every)
            grouping, basis = suggest_grouping(relations, max_groups)
            chosen = grouping.groups
        else:
            mtl = fit(cfg, data, run_dir=where and where / "all",
                      description=f"seed {seed} all-in-one")  # fmt: skip
        seconds = time.perf_counter() - started
        if mtl.trainer is not None and mtl.trainer.task_relations is not None and measuring:
            # the measuring run's monitor is no part of training the all-in-one model
            spent_monitoring = mtl.trainer.task_relations.monitor_ms_per_step * mtl.trainer.step
            seconds = max(seconds - spent_monitoring / 1000, 0.0)
        allin.seconds.append(seconds)
        allin.metrics.append(_test_metrics(mtl, data))
        allin.parameters = _size([mtl])
        if grouped is None:
            label = " / ".join(",".join(g) for g in chosen)
            grouped = GroupsRun(f"grouped: {label}", chosen)
        singles: dict[str, FittedModel] = {}
        metrics: dict[str, float] = {}
        own: dict[str, float] = {}  # each single-task model's own training seconds
        for name in names:
            started = time.perf_counter()
            single = fit(cfg.for_tasks([name]), data, tasks=[by_name[name]],
                         run_dir=where and where / f"stl_{name}",
                         description=f"seed {seed} STL {name}")  # fmt: skip
            own[name] = time.perf_counter() - started
            singles[name] = single
            metrics.update(_test_metrics(single, data))
        stl.seconds.append(sum(own.values()))
        stl.metrics.append(metrics)
        stl.parameters = _size(list(singles.values()))
        models, group_metrics, spent = [], {}, 0.0
        for i, group in enumerate(chosen):
            if len(group) == 1:  # the single-task model of that task: the same run
                models.append(singles[group[0]])
                group_metrics.update({group[0]: metrics[group[0]]})
                spent += own[group[0]]
                continue
            if len(group) == len(names):  # every task in one group: the all-in-one model
                models.append(mtl)
                group_metrics.update(allin.metrics[-1])
                spent += allin.seconds[-1]
                continue
            started = time.perf_counter()
            model = fit(cfg.for_tasks(group), data, tasks=[by_name[n] for n in group],
                        run_dir=where and where / f"group{i}",
                        description=f"seed {seed} group {','.join(group)}")  # fmt: skip
            spent += time.perf_counter() - started
            models.append(model)
            group_metrics.update(_test_metrics(model, data))
        grouped.seconds.append(spent)
        grouped.metrics.append(group_metrics)
        grouped.parameters = _size(models)
    assert grouped is not None
    return GroupComparison(
        data.tasks, list(seeds), stl, allin, grouped, grouping, relations, advice_for(config),
        basis,
    )  # fmt: skip


def _test_metrics(fitted: FittedModel, data: PreparedData) -> dict[str, float]:
    assert fitted.trainer is not None
    return primary_metrics(fitted.trainer.evaluate(data.test), data)
