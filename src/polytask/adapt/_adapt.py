"""Fitting a new task on a trained multi-task model from few labelled rows."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from dataclasses import field
from typing import Literal

import pandas as pd
import torch
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass
from torch import Tensor

from polytask.adapt._edit import EditError, add_task, owned_by, remove_tasks, task_state_keys
from polytask.adapt.strategies._base import AdaptStrategy
from polytask.adapt.strategies._registry import check_strategy, make_strategy
from polytask.app._data import warn_unseen
from polytask.app._encoding import tabular_encoding
from polytask.app._fitted import FittedModel
from polytask.data._tabular import DataError
from polytask.models._base import MultiTaskNet
from polytask.tasks._columns import DataWarning
from polytask.tasks._kinds import TargetFit
from polytask.tasks._task import Task
from polytask.train._evaluate import TaskMetrics, predict_raw
from polytask.train._evaluate import evaluate as evaluate_data
from polytask.train.meta import initial_task_parameters, mean_task_parameters, meta_init_key

HeadInit = Literal["auto", "fresh", "mean", "meta"]
"""Where a new task's head starts (see `AdaptConfig`)."""

SMALL_ROWS = 4096
"""Up to this many rows, a new task is fitted on one thread (see `one_thread`)."""


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class AdaptConfig:
    """How a new task is fitted: the `strategy` (`polytask.adapt.STRATEGIES`: head_only,
    finetune, l2sp) with its `params` (e.g. {strength: 0.1} for l2sp), then `steps` AdamW steps
    of size `lr` on batches of `batch_size` labelled rows (all of them when fewer), drawn with
    `seed`. `init` is where the new head starts: "fresh" (drawn with `seed`), "mean" (the mean
    of the old heads of the same kind and size), "meta" (the meta head init of a model trained
    with `training.meta_learning`), or "auto": "meta" where the model has one for the task's
    kind and size, else "fresh"."""

    strategy: str = "head_only"
    params: dict[str, float] = field(default_factory=dict)
    init: HeadInit = "auto"
    steps: int = 300
    lr: float = 1e-2
    batch_size: int = 256
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_strategy(self.strategy, self.params)
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


@dataclasses.dataclass(frozen=True)
class AdaptResult:
    """The adapted model and what adapting did to every task."""

    fitted: FittedModel
    task: str
    strategy: str
    init: str
    """Where the new head started: "fresh", "mean" or "meta"."""
    rows: int
    """Labelled rows the new task was fitted on."""
    losses: tuple[float, ...]
    """The new task's training loss at each step."""
    old_before: TaskMetrics
    """The old tasks' metrics on the evaluation rows before adapting (empty: no such rows)."""
    old_after: TaskMetrics
    """... and after."""
    new_metrics: TaskMetrics
    """The new task's metrics on the evaluation rows (empty when they do not label it)."""
    old_change: dict[str, float]
    """Per old task (auxiliary ones aside), the largest change of its raw output on the
    adaptation rows (0.0: the old task answers exactly as before)."""


def adapt(
    fitted: FittedModel,
    task: Task,
    data: pd.DataFrame,
    config: AdaptConfig | None = None,
    eval_data: pd.DataFrame | None = None,
    target_fit: TargetFit | None = None,
) -> AdaptResult:
    """`fitted` with `task` added and fitted on `data`'s rows that label it (the features as the
    model was trained on; its target columns). `fitted` itself is not changed. `eval_data`
    (rows labelled for old tasks, the new one, or both) gives the old tasks' metrics before and
    after, and the new task's. `target_fit` replaces the target encoding fitted on `data`."""
    config = config or AdaptConfig()
    strategy = make_strategy(config.strategy, **config.params)
    if eval_data is not None:
        warn_shared_rows(fitted, data, eval_data)
    adapted = add_task(fitted, task, data, target_fit, seed=config.seed)
    new = next(t for t in adapted.tasks if t.name == task.name)
    init = start_head(adapted, fitted, new, config.init)
    encoded = tabular_encoding(adapted.preprocessor, "adapt").transform(data, [new])
    mask = new.mask(encoded.targets[new.name])
    rows = mask if mask.dim() == 1 else mask.any(dim=1)
    device = next(adapted.model.parameters()).device
    x = encoded.x[rows].to(device)
    y = encoded.targets[new.name][rows].to(device)
    old_names = tuple(t.name for t in fitted.tasks if not t.auxiliary)  # the reported ones
    before = _outputs(adapted.model, x, old_names)
    old_before = _evaluate(fitted, eval_data, old_names)
    view = training_view(adapted, new.name)
    losses = fit_task(view.model, new, x, y, strategy, config)
    if view is not adapted:  # the view's weights (by the same names) back into the whole model
        adapted.model.load_state_dict({**adapted.model.state_dict(), **view.model.state_dict()})
    after = _outputs(adapted.model, x, old_names)
    change = {n: float((after[n] - before[n]).abs().max()) if len(x) else 0.0 for n in old_names}
    return AdaptResult(
        fitted=adapted,
        task=new.name,
        strategy=config.strategy,
        init=init,
        rows=int(rows.sum()),
        losses=tuple(losses),
        old_before=old_before,
        old_after=_evaluate(adapted, eval_data, old_names),
        new_metrics=_evaluate(adapted, eval_data, [new.name]),
        old_change=change,
    )


def warn_shared_rows(fitted: FittedModel, data: pd.DataFrame, eval_data: pd.DataFrame) -> None:
    """A DataWarning when adaptation rows have the same features as evaluation rows (numbers
    compared as floats to 6 significant digits, so a CSV's 1 and 1.0 or rounded copies
    match): if they are the same rows, the new task is scored on rows it was fitted on."""
    encoding = tabular_encoding(fitted.preprocessor, "adapt")
    numeric, categorical = list(encoding.numeric), list(encoding.categorical)
    features = [*numeric, *categorical]
    if not features or not len(data) or not len(eval_data):
        return
    if any(c not in frame.columns for c in features for frame in (data, eval_data)):
        return  # refused elsewhere, naming the column

    def keys(frame: pd.DataFrame) -> pd.Series:
        numbers = frame[numeric].apply(pd.to_numeric, errors="coerce").astype(float)
        shown = numbers.apply(lambda column: column.map(lambda v: f"{v:.6g}"))  # pandas 2.0 too
        return pd.concat([shown, frame[categorical].astype(str)], axis=1).agg("|".join, axis=1)

    shared = int(keys(data).isin(set(keys(eval_data))).sum())
    if shared:
        warnings.warn(
            f"{shared} of the {len(data)} adaptation rows have the same features as evaluation "
            "rows: if they are the same rows, the new task's score is not a test score; take "
            "the adaptation rows from outside the run's test rows (RUN/split.npz lists them) "
            "or give --eval-data rows it was not fitted on",
            DataWarning,
            stacklevel=3,
        )


def training_view(fitted: FittedModel, name: str) -> FittedModel:
    """The model with task `name` only, sharing nothing but holding the same weights by the same
    names: fitting one head of a many-task model need not run every other head at each step
    (measured: 139 School heads made a fit 10x slower). The whole model itself where the view
    cannot be made, or where the model's penalty couples the tasks (the view's would differ)."""
    if len(fitted.tasks) == 1 or fitted.model.penalty() is not None:
        return fitted
    try:
        return remove_tasks(fitted, [t.name for t in fitted.tasks if t.name != name])
    except EditError:
        return fitted


def start_head(adapted: FittedModel, trained: FittedModel, task: Task, init: str) -> str:
    """Set the new task's own parameters in `adapted` as `init` says (see `AdaptConfig`);
    returns the init used ("fresh", "mean" or "meta")."""
    model = adapted.model
    meta = initial_task_parameters(trained.meta_init, task, model)
    if init == "auto":
        init = "fresh" if meta is None else "meta"
    if init == "fresh":
        return init
    if init == "meta" and meta is None:
        from polytask.models._ensemble import Ensemble

        if isinstance(trained.model, Ensemble):
            why = "is an ensemble (model.ensemble or model.blend), which keeps no meta head init"
        elif not trained.meta_init:
            why = "was not trained with training.meta_learning"
        else:
            why = f"has no meta head init for a {meta_init_key(task)} head of this shape"
        raise ValueError(f"init 'meta': the model {why}; use init 'fresh' or 'mean'")
    values = meta
    if init == "mean":
        try:
            values = initial_task_parameters(mean_task_parameters(trained.model), task, model)
        except ValueError:
            values = None
        if values is None:
            raise ValueError(
                f"init 'mean': the model has no other {meta_init_key(task)} task whose own "
                "parameters have the new head's shapes; use init 'fresh'"
            )
    assert values is not None
    with torch.no_grad():
        for p, value in zip(model.task_parameters(task.name), values, strict=True):
            p.copy_(value)
    return init


def fit_task(
    model: MultiTaskNet,
    task: Task,
    x: Tensor,
    y: Tensor,
    strategy: AdaptStrategy,
    config: AdaptConfig,
) -> list[float]:
    """Train `task`'s head (and the shared weights if the strategy says so) on (x, y); every
    other weight and buffer is restored afterwards, so what the strategy does not train is
    exactly as it was. Returns the loss per step."""
    trainable = strategy.trainable(model, task.name)
    state = model.state_dict()
    buffers = {name for name, _ in model.named_buffers()}
    if strategy.trains_shared:  # the old tasks' own weights (and buffers) stay as they were
        held = set().union(*(task_state_keys(model, n) for n in model.task_names if n != task.name))
        keep = {k: v.detach().clone() for k, v in state.items() if owned_by(k, held, buffers)}
    else:  # everything but the new task's own weights stays as it was
        own = task_state_keys(model, task.name)
        keep = {k: v.detach().clone() for k, v in state.items() if not owned_by(k, own, buffers)}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    strategy.start(model)
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    n = len(x)
    # dropout draws from the seed too, not from torch's global generator
    devices = [x.device] if x.device.type == "cuda" else []
    with one_thread(len(x) <= SMALL_ROWS), torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        try:
            model.train()
            for _ in range(config.steps):
                index = (
                    torch.randperm(n, generator=gen)[: config.batch_size].to(x.device)
                    if n > config.batch_size
                    else None
                )
                xb, yb = (x, y) if index is None else (x[index], y[index])
                loss = task.compute_loss(model(xb)[task.name], yb)
                total = loss
                for extra in (strategy.penalty(model), model.penalty()):
                    if extra is not None:
                        total = total + extra
                if not torch.isfinite(total):
                    raise DataError(
                        f"task {task.name!r}: the adaptation loss is not finite at step "
                        f"{len(losses) + 1}: lower the learning rate (--lr) or check the targets"
                    )
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
        finally:
            for k, p in model.named_parameters():
                p.requires_grad_(flags[k])
            model.load_state_dict({**model.state_dict(), **keep})
            model.eval()
    return losses


@contextlib.contextmanager
def one_thread(small: bool) -> Iterator[None]:
    """One intra-op thread while fitting on few rows: for tensors this small, a second thread
    only synchronises (and spins on a loaded machine: measured 8x slower at load 5)."""
    before = torch.get_num_threads()
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _outputs(model: MultiTaskNet, x: Tensor, names: tuple[str, ...]) -> dict[str, Tensor]:
    device = x.device
    raw = predict_raw(model, x, 1024, device)
    return {n: raw[n] for n in names}


def _evaluate(
    fitted: FittedModel, df: pd.DataFrame | None, names: tuple[str, ...] | list[str]
) -> TaskMetrics:
    """Metrics of the tasks `names` on the rows of `df` that have their target columns."""
    if df is None:
        return {}
    tasks = [
        t
        for t in fitted.tasks
        if t.name in names and all(c in df.columns for c in t.target_columns)
    ]
    if not tasks:
        return {}
    device = next(fitted.model.parameters()).device
    encoding = tabular_encoding(fitted.preprocessor, "adapt")
    # a class the model was not trained on counts as unlabelled: said, not scored without
    warn_unseen(tasks, encoding, df, "evaluation", "the evaluation data")
    data = encoding.transform(df, tasks)
    return evaluate_data(fitted.model, tasks, data, 1024, device)
