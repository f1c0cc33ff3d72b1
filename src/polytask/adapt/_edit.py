"""Changing the task set of a trained model: add a head, remove tasks, rename them.

The edited model is rebuilt by its own architecture's builder for the new task list, and every
weight it shares with the old model is copied over by name. No architecture is named here: where
an architecture's shared weights depend on which tasks exist (their shapes differ, or the kept
tasks' outputs change), the edit is refused rather than half done.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from polytask.app._config import ModelConfig
from polytask.app._encoding import tabular_encoding
from polytask.app._fitted import FittedModel
from polytask.data._tabular import DataError, TabularPreprocessor
from polytask.models._base import MultiTaskNet, grown_parts
from polytask.models._per_task import PerTaskSnapshots
from polytask.tasks._columns import DataWarning, check_columns
from polytask.tasks._kinds import TargetFit
from polytask.tasks._task import Task

PROBE_ROWS = 16
"""Rows of random inputs on which an edited model's kept tasks must answer as before."""


class EditError(ValueError):
    """A task edit that cannot be made on this model (the model is left as it was)."""


def check_new_task(fitted: FittedModel, task: Task) -> None:
    """Refuse a task `add_task` cannot add to `fitted` (before any data is read)."""
    _refuse_snapshots(fitted, "add a task to")
    if task.kind_spec.derives_targets:
        raise EditError(
            f"task {task.name!r}: a {task.kind} task learns from the inputs alone, with no labels "
            "to fit from few rows; declare it among the training tasks instead"
        )
    if task.name in fitted.model.task_names:
        raise EditError(
            f"the model already has a task {task.name!r}: choose another name, or remove or "
            "rename the existing task first"
        )


def add_task(
    fitted: FittedModel,
    task: Task,
    df: pd.DataFrame,
    target_fit: TargetFit | None = None,
    seed: int = 0,
) -> FittedModel:
    """`fitted` with a fresh head for `task` (drawn with `seed`), its target encoding fitted on
    `df`'s labelled rows (or `target_fit` when given); every existing weight is kept, so the old
    tasks answer exactly as before."""
    check_new_task(fitted, task)
    check_columns(df, task.target_columns, f"task {task.name!r}: target column(s)", None)
    tabular = tabular_encoding(fitted.preprocessor, "edit")
    features = {*tabular.numeric, *tabular.categorical}
    both = sorted(features & set(task.target_columns))
    if both:
        raise EditError(
            f"task {task.name!r}: columns {both} are input features of this model; a task "
            "cannot predict a column the model reads"
        )
    pre = with_target(tabular, task, target_fit or task.fit_target(df))
    resolved = pre.resolve_tasks([task])[0]
    target = pre.transform_target(resolved, df)
    if not bool(resolved.mask(target).any()):
        raise DataError(
            f"task {task.name!r} has no label in the data: check its target column(s) "
            f"{list(task.target_columns)}"
        )
    problem = resolved.kind_spec.degenerate(resolved, target, pre.target_fit(resolved))
    if problem:  # e.g. rows of one class: a head fitted on them tells nothing apart
        warnings.warn(
            f"task {task.name!r}, the rows its head is fitted on: {problem}; the head learns "
            "from these rows alone, so give it rows whose targets differ",
            DataWarning,
            stacklevel=2,
        )
    return _rebuilt(fitted, [*fitted.tasks, resolved], {}, pre, seed)


def with_target(pre: TabularPreprocessor, task: Task, fit: TargetFit) -> TabularPreprocessor:
    """`pre` that also encodes `task`'s targets as `fit` says (classes, scale)."""
    return dataclasses.replace(
        pre,
        classes={**pre.classes, **({task.name: fit.classes} if fit.classes is not None else {})},
        target_scale={**pre.target_scale, **({task.name: fit.scale} if fit.scale else {})},
    )


def remove_tasks(fitted: FittedModel, names: Sequence[str]) -> FittedModel:
    """`fitted` without the tasks `names` (their heads dropped); the others answer as before."""
    _refuse_snapshots(fitted, "remove tasks from")
    names = [names] if isinstance(names, str) else list(names)
    _check_known(fitted, names)
    kept = [t for t in fitted.tasks if t.name not in set(names)]
    if not any(not t.auxiliary for t in kept):
        raise EditError(
            "cannot remove every task it predicts: a model needs at least one task that is "
            "not auxiliary"
        )
    pre = tabular_encoding(fitted.preprocessor, "edit")
    pre = dataclasses.replace(
        pre,
        classes={k: v for k, v in pre.classes.items() if k not in names},
        target_scale={k: v for k, v in pre.target_scale.items() if k not in names},
    )
    return _rebuilt(fitted, kept, {}, pre)


def rename_tasks(fitted: FittedModel, mapping: Mapping[str, str]) -> FittedModel:
    """`fitted` with tasks renamed (`{old: new}`); weights, encoding and outputs are unchanged."""
    _refuse_snapshots(fitted, "rename tasks of")
    _check_known(fitted, list(mapping))
    final = [mapping.get(n, n) for n in fitted.model.task_names]
    twice = sorted({n for n in final if final.count(n) > 1})
    if twice:
        raise EditError(f"renaming would give two tasks the name(s) {twice}: choose other names")
    tasks = []
    for t in fitted.tasks:
        new = mapping.get(t.name)
        if new is None or new == t.name:
            tasks.append(t)
            continue
        # a task whose target defaulted to its name keeps reading the same column
        target = t.target if t.kind_spec.derives_targets else (t.target or t.name)
        tasks.append(dataclasses.replace(t, name=new, target=target))
    pre = tabular_encoding(fitted.preprocessor, "edit")
    pre = dataclasses.replace(
        pre,
        classes={mapping.get(k, k): v for k, v in pre.classes.items()},
        target_scale={mapping.get(k, k): v for k, v in pre.target_scale.items()},
    )
    return _rebuilt(fitted, tasks, {new: old for old, new in mapping.items()}, pre)


def task_state_keys(model: MultiTaskNet, name: str) -> set[str]:
    """The state-dict keys of task `name`'s own parameters (its head, tower, gate...)."""
    own = {id(p) for p in model.task_parameters(name)}
    return {k for k, p in model.named_parameters() if id(p) in own}


def _rebuilt(
    fitted: FittedModel,
    tasks: list[Task],
    old_names: Mapping[str, str],
    pre: TabularPreprocessor,
    seed: int = 0,
) -> FittedModel:
    """The model for `tasks` with the old model's weights (task `n` reads those of
    `old_names.get(n, n)`; new ones drawn with `seed`), checked to answer the kept tasks as
    before."""
    old_model = fitted.model
    grown = grown_parts(old_model)
    if grown:
        raise EditError(
            f"this model holds a model grown from its training rows ({', '.join(grown)}: "
            "fitted whole to every task's rows), which an edit cannot regrow or carry over: "
            "retrain with the new task list (polytask train)"
        )
    names = [t.name for t in tasks]
    spec = _config_for(fitted.model_config, old_model.task_names, names, old_names)
    device = next(old_model.parameters()).device
    try:
        new_model = spec.build(pre.feature_names, tasks, seed=seed).to(device)
    except ValueError as err:
        problem = f"architecture {spec.architecture!r} cannot hold these tasks: {err}"
        raise EditError(problem) from None
    old_state = old_model.state_dict()
    state = new_model.state_dict()
    kept = [t.name for t in tasks if old_names.get(t.name, t.name) in old_model.task_names]
    fresh = set().union(*(task_state_keys(new_model, t.name) for t in tasks if t.name not in kept))
    to_old = {**{n: n for n in kept}, **old_names}
    buffers = {name for name, _ in new_model.named_buffers()}
    for key in state:
        source = _source_key(key, to_old, old_state)
        if source in old_state and old_state[source].shape == state[key].shape:
            state[key] = old_state[source].clone()
        elif not owned_by(key, fresh, buffers):
            raise EditError(_coupled(spec.architecture, key, old_state.get(source), state[key]))
    new_model.load_state_dict(state)
    _check_unchanged(old_model, new_model, {n: to_old[n] for n in kept}, pre.in_dim, spec)
    return dataclasses.replace(
        fitted, model=new_model, preprocessor=pre, model_config=spec, trainer=None
    )


def _source_key(key: str, to_old: Mapping[str, str], old_state: Mapping[str, Tensor]) -> str:
    """The old model's state key for the new model's `key`: each module in its path named by
    a (new) task name renamed to the old name, unless no such entry exists and `key` itself
    does (a shared weight's path may hold a word that is also a new task's name: trunk)."""
    parts = key.split(".")  # the last is a parameter's own name, or a ParameterDict's task
    renaming = [i for i, part in enumerate(parts) if to_old.get(part, part) != part]
    renaming = sorted(renaming, key=lambda i: i == len(parts) - 1)  # modules' names first
    for i in renaming:  # the task's module (heads.heads.weight) or entry (deviations.t0)
        one = ".".join(to_old[p] if j == i else p for j, p in enumerate(parts))
        if one in old_state:
            return one
    if key in old_state:
        return key
    return ".".join(to_old.get(p, p) if j < len(parts) - 1 else p for j, p in enumerate(parts))


def owned_by(key: str, keys: set[str], buffers: set[str]) -> bool:
    """Whether state entry `key` is one of `keys` (a task's parameters) or one of `buffers`
    (e.g. batch-norm statistics) of a module holding one of them; a parameter beside them in
    one module (another task's entry of a ParameterDict) is not."""
    if key in keys:
        return True
    module = key.rsplit(".", 1)[0]
    return key in buffers and any(k.rsplit(".", 1)[0] == module for k in keys)


def _coupled(architecture: str, key: str, old: Tensor | None, new: Tensor) -> str:
    shapes = (
        f"shape {tuple(old.shape)} before, {tuple(new.shape)} after"
        if old is not None
        else "no counterpart in the trained model"
    )
    return (
        f"architecture {architecture!r} ties its shared weights to the set of tasks ({key}: "
        f"{shapes}), so its trained weights cannot be kept across this change: retrain with the "
        "new task list (polytask train), or use an architecture with per-task heads such as "
        "hard_sharing or mmoe"
    )


@torch.no_grad()
def _check_unchanged(
    old: MultiTaskNet,
    new: MultiTaskNet,
    kept: Mapping[str, str],
    in_dim: int,
    spec: ModelConfig,
) -> None:
    """Refuse an edit after which a kept task answers differently (its weights were copied, but
    the architecture couples the tasks in a way the copy cannot carry)."""
    device = next(old.parameters()).device
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(PROBE_ROWS, in_dim, generator=gen).to(device)
    modes = old.training, new.training
    old.eval()
    new.eval()
    try:
        before, after = old(x), new(x)
    finally:
        old.train(modes[0])
        new.train(modes[1])
    for name, old_name in kept.items():
        if not torch.allclose(before[old_name], after[name], rtol=1e-5, atol=1e-6):
            raise EditError(
                f"architecture {spec.architecture!r} couples its tasks: after this change task "
                f"{name!r} would answer differently with the same weights, so the edit is "
                "refused; retrain with the new task list (polytask train) instead"
            )


def _config_for(
    spec: ModelConfig, before: Sequence[str], names: list[str], old_names: Mapping[str, str]
) -> ModelConfig:
    """`spec` with its per-task parameters (mappings keyed by the tasks `before`, e.g.
    task_dropout) renamed and restricted to the tasks `names`."""
    to_new = {old: new for new, old in old_names.items()}

    def moved(given: Mapping[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for key, value in given.items():
            if isinstance(value, Mapping) and value and set(value) <= set(before):
                renamed = {to_new.get(k, k): v for k, v in value.items()}
                value = {k: v for k, v in renamed.items() if k in names}
            params[key] = value
        return params

    blend = tuple(dataclasses.replace(m, params=moved(m.params)) for m in spec.blend)
    return dataclasses.replace(spec, params=moved(spec.params), blend=blend)


def _check_known(fitted: FittedModel, names: Sequence[str]) -> None:
    known = list(fitted.model.task_names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise EditError(f"unknown task(s) {unknown}: this model's tasks are {', '.join(known)}")


def _refuse_snapshots(fitted: FittedModel, what: str) -> None:
    if isinstance(fitted.model, PerTaskSnapshots):
        raise EditError(
            f"cannot {what} a model that serves each task from its own snapshot "
            "(training.selection: per_task): retrain with selection: joint to edit its tasks"
        )
