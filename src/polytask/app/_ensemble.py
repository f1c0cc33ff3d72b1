"""Training a seed ensemble (`model.ensemble: N`: N members trained apart, each with its own
seed and its own validation rows, so that together they learn from every training row) and a
blend of unlike models (`model.blend`)."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from polytask.data import TaskData
from polytask.models import Ensemble, MultiTaskNet
from polytask.tasks import Task

if TYPE_CHECKING:
    from polytask.app._config import RunConfig
    from polytask.app._data import PreparedData
    from polytask.app._fitted import FittedModel

log = logging.getLogger("polytask")

Fit = Callable[..., "FittedModel"]


def recarve(
    train: TaskData, val: TaskData, tasks: Sequence[Task], seed: int
) -> tuple[TaskData, TaskData]:
    """Train and validation rows drawn again from their union with `seed`: as many validation
    rows as before from each group of rows that label the same tasks (so every task of a
    family keeps its share), the targets' scale unchanged (it was fitted on training rows)."""
    both = TaskData(
        torch.cat([train.x, val.x]),
        {k: torch.cat([train.targets[k], val.targets[k]]) for k in train.targets},
        train.target_scale,
    )
    n = len(both)
    # one bool per row and task: labelled anywhere (a multilabel task's mask has a column per
    # label, a dense task's a pixel each)
    labelled = np.stack(
        [t.mask(both.targets[t.name]).reshape(n, -1).any(1).numpy()
         for t in tasks if t.name in both.targets], axis=1,
    )  # fmt: skip
    _, group = np.unique(labelled, axis=0, return_inverse=True)
    group = group.reshape(-1)
    rng = np.random.default_rng(seed)
    chosen = []
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        before = int((members >= len(train)).sum())  # its validation rows: the same count,
        # so a task keeps its training rows (a share of the whole took a tiny task's only one)
        chosen.append(rng.permutation(members)[:before])
    is_val = np.zeros(n, dtype=bool)
    is_val[np.concatenate(chosen)] = True
    take = torch.from_numpy
    return both.subset(take(np.flatnonzero(~is_val))), both.subset(take(np.flatnonzero(is_val)))


def resume_refusal(config: RunConfig) -> str | None:
    """Why `config` cannot be resumed (None: it can): its members train one after another,
    and a checkpoint holds one of them."""
    what = "model.blend" if config.model.blend else "model.ensemble > 1"
    if not config.model.blend and config.model.ensemble == 1:
        return None
    return (
        f"resume is not supported for {what} (its members train one after another): train it "
        "again, with --overwrite to replace the earlier run"
    )


def fit_ensemble(
    fit: Fit,
    config: RunConfig,
    data: PreparedData,
    tasks: Sequence[Task] | None,
    run_dir: str | Path | None,
    description: str,
) -> FittedModel:
    """Train `config.model.ensemble` members with `fit` (member i: seed + i, validation rows
    carved again with that seed where the rows are in memory and not split by group; member 0
    keeps the configured carve and writes to `run_dir` itself, member i > 0 to
    run_dir/memberI) and return them as one `Ensemble`."""

    n, seed = config.model.ensemble, config.training.seed
    single = dataclasses.replace(config, model=dataclasses.replace(config.model, ensemble=1))
    own_rows = (
        isinstance(data.train, TaskData)
        and isinstance(data.val, TaskData)
        and len(data.val) > 0
        and config.data.split.by is None
    )
    if not own_rows:
        log.info(
            "ensemble members share the validation rows (they are carved again only for "
            "in-memory tables not split by group); they differ by seed"
        )
    chosen = list(tasks) if tasks is not None else data.tasks
    members: list[FittedModel] = []
    for i in range(n):
        member_config = dataclasses.replace(
            single, training=dataclasses.replace(config.training, seed=seed + i)
        )
        member_data = data
        if own_rows and i > 0:
            assert isinstance(data.train, TaskData) and isinstance(data.val, TaskData)
            train, val = recarve(data.train, data.val, chosen, seed + i)
            member_data = dataclasses.replace(data, train=train, val=val, groups=None, split=None)
        members.append(
            fit(
                member_config,
                member_data,
                tasks,
                run_dir=member_dir(run_dir, "member", i),
                description=f"{description} (member {i + 1}/{n})",
                unresumable=resume_refusal(config),
            )
        )
    return _served(members[0], Ensemble([m.model for m in members]), data, config)


def fit_blend(
    fit: Fit,
    config: RunConfig,
    data: PreparedData,
    tasks: Sequence[Task] | None,
    run_dir: str | Path | None,
    description: str,
) -> FittedModel:
    """Train the configured model (in `run_dir`, its curves the run's) and each `model.blend`
    member (its architecture and parameters, the run's training settings with its own on top,
    in run_dir/blendI) with `fit`, on the same rows, and return their weighted `Ensemble`.
    Every member's model and training settings are checked first: a mistake in the last
    member stops the run before the first trains."""
    spec = config.model
    members = _checked_members(config, data, list(tasks) if tasks is not None else data.tasks)
    weights = spec.blend_weights()
    main = fit(
        dataclasses.replace(config, model=dataclasses.replace(spec, blend=())),
        data,
        tasks,
        run_dir=run_dir,
        description=f"{description} (blend: {spec.architecture}, weight {weights[0]:g})",
        unresumable=resume_refusal(config),
    )
    models = [main.model]
    for i, (member_config, weight) in enumerate(zip(members, weights[1:], strict=True), 1):
        folder = member_dir(run_dir, "blend", i)
        what = f"{description} (blend: {member_config.model.architecture}, weight {weight:g})"
        models.append(
            fit(member_config, data, tasks, folder, what, unresumable=resume_refusal(config)).model
        )
    return _served(main, Ensemble(models, weights), data, config)


def preflight(config: RunConfig, data: PreparedData, tasks: Sequence[Task] | None = None) -> None:
    """Refuse what `fit` would refuse about the configured model and each blend member (a
    task kind, an optimizer) without training anything, e.g. before a run folder is cleared."""
    chosen = list(tasks) if tasks is not None else data.tasks
    alone = dataclasses.replace(config.model, blend=(), ensemble=1)
    build_trainer(dataclasses.replace(config, model=alone), data, chosen)
    _checked_members(config, data, chosen)


def _checked_members(
    config: RunConfig, data: PreparedData, tasks: Sequence[Task]
) -> list[RunConfig]:
    """Each `model.blend` member's run config (its model, the run's training settings with its
    own on top), its model and trainer built first so that a mistake names the member."""
    members = []
    for i, member in enumerate(config.model.blend):
        member_config = dataclasses.replace(
            config, model=member.model_config(), training=member.training_from(config.training)
        )
        _preflight(member_config, data, tasks, f"model.blend[{i}] ({member.architecture})")
        members.append(member_config)
    return members


def build_trainer(config: RunConfig, data: PreparedData, tasks: Sequence[Task]) -> None:
    """Build `config`'s model and trainer without training (what either refuses is raised)."""
    _check_trainer(config, _model(config, data, tasks), data)


def _model(config: RunConfig, data: PreparedData, tasks: Sequence[Task]) -> MultiTaskNet:
    return config.model.build(data.preprocessor.model_input, tasks, seed=config.training.seed)


def _check_trainer(config: RunConfig, model: MultiTaskNet, data: PreparedData) -> None:
    """Build `model`'s trainer of `config` and check `data` with it, without training."""
    from polytask.balancers import make_balancer
    from polytask.train import Trainer

    balancer = make_balancer(config.balancer.name, **config.balancer.params)
    quiet = dataclasses.replace(config.training, progress=False, loggers=(), logger_params={})
    trainer = Trainer(model, balancer, quiet)  # no run folder: its loggers would warn they are off
    trainer.check_data(data.train, data.val)


def _preflight(config: RunConfig, data: PreparedData, tasks: Sequence[Task], what: str) -> None:
    """`build_trainer` for a blend member: what it refuses is said before anything trains,
    naming the member, and where its trainer refuses, where its own training settings go."""
    try:
        model = _model(config, data, tasks)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None
    try:
        _check_trainer(config, model, data)
    except ValueError as err:
        raise ValueError(
            f"{what}: {err} (a member's own training settings go in its `training:`, e.g. "
            "model.blend: [{architecture: forest, weight: 0.5, training: {optimizer: lbfgs, "
            "lr: 1, batch_size: 1000000, epochs: 1}}])"
        ) from None


def _served(
    first: FittedModel, model: Ensemble, data: PreparedData, config: RunConfig
) -> FittedModel:
    """`model` (the members together) as the run's fitted model, read through the trainer of
    its `first` member, whose curves are the run folder's (metrics.csv, the report)."""
    from polytask.app._fitted import FittedModel

    trainer = first.trainer
    assert trainer is not None
    trainer.model = model  # evaluate / predict through the trainer read all the members
    return FittedModel(model, data.preprocessor, config.model, trainer, config)


MEMBER_FOLDERS = re.compile(r"(member|blend)\d+")
"""The subfolders `member_dir` names (which `polytask train --overwrite` also removes)."""


def member_dir(run_dir: str | Path | None, kind: str, i: int) -> Path | None:
    """Where member i of an ensemble (`kind` "member") or of a blend ("blend") writes: member
    0 of an ensemble in the run folder itself (its metrics and report are the run's), the
    others in run_dir/memberI or run_dir/blendI."""
    if run_dir is None:
        return None
    return Path(run_dir) if kind == "member" and i == 0 else Path(run_dir) / f"{kind}{i}"
