"""k-shot curves: how well a new task is learnt from k labelled rows, by strategy and trunk,
against a network of the same architecture trained from scratch on the same k rows."""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from polytask.adapt._adapt import (
    AdaptConfig,
    HeadInit,
    _evaluate,
    adapt,
    fit_task,
    warn_shared_rows,
)
from polytask.adapt._edit import with_target
from polytask.adapt.strategies._registry import check_strategy, make_strategy, taken_params
from polytask.app._encoding import tabular_encoding
from polytask.app._fitted import FittedModel
from polytask.data._tabular import DataError
from polytask.tasks._columns import DataWarning
from polytask.tasks._kinds import TargetFit
from polytask.tasks._task import Task

DEFAULT_KS = (5, 10, 20, 50)
SCRATCH = "scratch (same architecture, new task only)"


@dataclasses.dataclass(frozen=True)
class KShotCurve:
    """The new task's primary metric on held-out rows, per method and k, one value per repeat
    (each repeat draws other k rows)."""

    task: str
    metric: str
    higher_is_better: bool
    ks: tuple[int, ...]
    results: dict[str, dict[int, tuple[float, ...]]]
    """{method: {k: values over the repeats}}; a k larger than the pool is absent."""
    eval_rows: int
    pool_rows: int

    def mean(self, method: str, k: int) -> float:
        return float(np.mean(self.results[method][k]))

    def best(self, k: int) -> str:
        """The method with the best mean at `k`."""
        methods = [m for m in self.results if k in self.results[m]]
        sign = 1 if self.higher_is_better else -1
        return max(methods, key=lambda m: sign * self.mean(m, k))

    def table(self) -> list[list[str]]:
        """Rows of (method, "mean ± std" per k), best per k marked with *."""
        ks = [k for k in self.ks if any(k in r for r in self.results.values())]
        rows = [["method", *[f"k={k}" for k in ks]]]
        for method, by_k in self.results.items():
            cells = []
            for k in ks:
                if k not in by_k:
                    cells.append("—")
                    continue
                values = by_k[k]
                star = " *" if self.best(k) == method else ""
                cells.append(f"{np.mean(values):.4g} ± {np.std(values):.2g}{star}")
            rows.append([method, *cells])
        return rows

    def to_markdown(self) -> str:
        rows = self.table()
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(lines)


def kshot_curve(
    fitted: FittedModel,
    task: Task,
    data: pd.DataFrame,
    ks: Sequence[int] = DEFAULT_KS,
    repeats: int = 5,
    strategies: Sequence[str] = ("head_only", "l2sp"),
    config: AdaptConfig | None = None,
    inits: Sequence[HeadInit] | None = None,
    eval_data: pd.DataFrame | None = None,
    eval_fraction: float = 0.5,
    others: Mapping[str, FittedModel] | None = None,
    label: str = "this model",
    scratch: bool = True,
    seed: int = 0,
    on_result: Callable[[str, int, int, float], None] | None = None,
) -> KShotCurve:
    """For each k and repeat, draw k labelled rows of `data` (the pool), fit `task` on them
    with each strategy on `fitted` (and on each model of `others`, e.g. a plain MTL model beside
    a meta-trained one: methods are then named "strategy (label)"), and train a network of
    `fitted`'s architecture from scratch on the same rows; score each on the held-out rows
    (`eval_data`, else `eval_fraction` of `data`'s labelled rows, drawn once with `seed`). The
    class set of a classification task comes from all of `data` (a k-row draw may miss a
    class); everything else the target encoding learns (e.g. a regression scale) comes from the
    k rows only. `inits` (default: `config.init` only) fits each strategy from each head init
    ("auto", "fresh", "mean", "meta"; see `AdaptConfig`); a trunk without a meta init skips
    "meta"."""
    config = config or AdaptConfig()
    for name in strategies:
        check_strategy(name, taken_params(name, config.params))
    ks = tuple(sorted(set(ks)))
    if not ks or min(ks) < 1 or repeats < 1:
        raise ValueError(f"ks must be positive numbers of rows and repeats >= 1; got {ks}")
    if eval_data is not None:
        warn_shared_rows(fitted, data, eval_data)
    pool, held = _pool_and_held_out(fitted, task, data, eval_data, eval_fraction, seed)
    if len(pool) < ks[0]:
        raise DataError(
            f"task {task.name!r}: only {len(pool)} labelled rows to draw from, fewer than the "
            f"smallest k ({ks[0]})"
            + (f" ({len(held)} others, {eval_fraction:.0%} of the labelled rows, are held out to "
               "score each point; eval_data (--eval-data) gives the scoring rows instead)"
               if eval_data is None else "")
            + ": give more rows or smaller ks"
        )  # fmt: skip
    beyond = [k for k in ks if k > len(pool)]
    if beyond:
        warnings.warn(
            DataWarning(
                f"task {task.name!r}: k = {', '.join(map(str, beyond))} left out of the curve: "
                f"only {len(pool)} labelled rows to draw from"
                + (" (the others are held out to score each point)" if eval_data is None else "")
            ),
            stacklevel=2,
        )
    vocabulary = task.fit_target(pd.concat([pool, held])).classes
    trunks = {label: fitted, **(others or {})}
    # with several models, the network from scratch says whose architecture it has
    scratch_name = SCRATCH if len(trunks) == 1 else (
        f"scratch ({label}'s architecture, new task only)"
    )  # fmt: skip
    starts = tuple(dict.fromkeys(inits or (config.init,)))
    if "meta" in starts and not any(t.meta_init for t in trunks.values()):
        raise ValueError(
            "init 'meta': none of the models was trained with training.meta_learning; compare "
            "'fresh' and 'mean' instead"
        )
    rng = np.random.default_rng(seed)
    results: dict[str, dict[int, list[float]]] = {}
    resolved: Task | None = None
    for k in (k for k in ks if k <= len(pool)):
        for r in range(repeats):
            shot = pool.iloc[rng.choice(len(pool), size=k, replace=False)]
            fit = _shot_fit(task, shot, vocabulary)
            run = dataclasses.replace(config, seed=config.seed + r)
            for named, trunk in trunks.items():
                done: set[tuple[str, str]] = set()  # "auto" is "meta" or "fresh": once each
                for name, init in itertools.product(strategies, starts):
                    if init == "meta" and not trunk.meta_init:
                        continue
                    params = taken_params(name, config.params)
                    one = dataclasses.replace(run, strategy=name, params=params, init=init)
                    res = adapt(trunk, task, shot, one, target_fit=fit)
                    if (name, res.init) in done:  # the same fit again: counted once
                        continue
                    done.add((name, res.init))
                    resolved = next(t for t in res.fitted.tasks if t.name == task.name)
                    value = _score(res.fitted, held, resolved)
                    method = name if len(starts) == 1 else f"{name}, {res.init} init"
                    method = f"{method} ({named})" if len(trunks) > 1 else method
                    results.setdefault(method, {}).setdefault(k, []).append(value)
                    if on_result:
                        on_result(method, k, r, value)
            if scratch:
                value = _from_scratch(fitted, task, shot, held, fit, run)
                results.setdefault(scratch_name, {}).setdefault(k, []).append(value)
                if on_result:
                    on_result(scratch_name, k, r, value)
    primary = (resolved or task).primary
    return KShotCurve(
        task=task.name,
        metric=primary.name,
        higher_is_better=primary.higher_is_better,
        ks=ks,
        results={m: {k: tuple(v) for k, v in by_k.items()} for m, by_k in results.items()},
        eval_rows=len(held),
        pool_rows=len(pool),
    )


def _pool_and_held_out(
    fitted: FittedModel,
    task: Task,
    data: pd.DataFrame,
    eval_data: pd.DataFrame | None,
    eval_fraction: float,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows k are drawn from and the rows every fit is scored on (labelled rows only)."""
    missing = [c for c in task.target_columns if c not in data.columns]
    if missing:
        raise DataError(f"task {task.name!r}: target column(s) {missing} not in the data")
    labelled = data[data[list(task.target_columns)].notna().any(axis=1)]
    if eval_data is not None:
        held = eval_data[eval_data[list(task.target_columns)].notna().any(axis=1)]
        pool = labelled
    else:
        if not 0 < eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
        order = np.random.default_rng(seed).permutation(len(labelled))
        cut = round(len(labelled) * eval_fraction)
        held, pool = labelled.iloc[order[:cut]], labelled.iloc[order[cut:]]
    if len(held) == 0:
        raise DataError(f"task {task.name!r}: no labelled rows to score the k-shot fits on")
    return pool, held


def _shot_fit(task: Task, shot: pd.DataFrame, vocabulary: list[object] | None) -> TargetFit:
    """The target encoding learnt from the k rows, with the class set of the whole data: a
    draw that holds one class only is still a valid k-shot problem."""
    try:
        with warnings.catch_warnings():  # the labels' warnings are the whole data's, not a draw's
            warnings.simplefilter("ignore", DataWarning)
            return dataclasses.replace(task.fit_target(shot), classes=vocabulary)
    except DataError:
        if vocabulary is None:
            raise
        return TargetFit(classes=vocabulary)


def _score(fitted: FittedModel, held: pd.DataFrame, task: Task) -> float:
    metrics = _evaluate(fitted, held, [task.name])
    return float(metrics[task.name][task.primary.name])


def _from_scratch(
    fitted: FittedModel,
    task: Task,
    shot: pd.DataFrame,
    held: pd.DataFrame,
    fit: TargetFit,
    config: AdaptConfig,
) -> float:
    """A fresh network of `fitted`'s architecture for `task` alone, trained on `shot`."""
    pre = with_target(tabular_encoding(fitted.preprocessor, "adapt"), task, fit)
    resolved = pre.resolve_tasks([task])[0]
    model = fitted.model_config.build(pre.feature_names, [resolved], seed=config.seed)
    model.to(next(fitted.model.parameters()).device)
    alone = FittedModel(model, pre, fitted.model_config)
    encoded = pre.transform(shot, [resolved])
    mask = resolved.mask(encoded.targets[task.name])
    rows = mask if mask.dim() == 1 else mask.any(dim=1)
    device = next(model.parameters()).device
    x, y = encoded.x[rows].to(device), encoded.targets[task.name][rows].to(device)
    fit_task(model, resolved, x, y, make_strategy("finetune"), config)
    return _score(alone, held, resolved)
