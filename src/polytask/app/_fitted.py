"""Training from a config, and a trained model with its encoding (predicts from raw tables)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import ValidationError
from torch import Tensor

from polytask._audience import for_user
from polytask._validation import describe_validation_error
from polytask.app._config import ModelConfig, RunConfig
from polytask.app._data import PreparedData
from polytask.app._encoding import Encoding, encoding_from_dict
from polytask.balancers._registry import make_balancer
from polytask.data._source import DataSource
from polytask.data._tabular import DataError, TabularPreprocessor
from polytask.data._tensors import TaskData
from polytask.models import (
    MultiTaskNet,
)
from polytask.models._per_task import PerTaskSnapshots
from polytask.tasks._task import Task, reported_tasks
from polytask.train._checkpoint import CheckpointError, load_checkpoint
from polytask.train._config import TrainConfig
from polytask.train._evaluate import TaskMetrics, predict_raw
from polytask.train._evaluate import evaluate as evaluate_data
from polytask.train._loop import Trainer

log = logging.getLogger("polytask")


PREDICT_FLOATS = 2**24
"""Input floats per batch when predicting on rows read from files (images): about 64 MB."""


@dataclass
class FittedModel:
    """A trained model with its encoding: predicts from and evaluates on raw tables (table
    rows, or the rows of an image manifest)."""

    model: MultiTaskNet
    preprocessor: Encoding
    model_config: ModelConfig
    trainer: Trainer | None = None
    run_config: RunConfig | None = None
    meta_init: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    """The meta head init a meta-trained run learned ("kind:out_features" → tensors in
    `task_parameters` order; empty without meta-training): see
    `polytask.train.meta.initial_task_parameters`."""

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self.model.tasks

    def evaluate(
        self, df: pd.DataFrame, root: str | Path | None = None, where: str | None = None
    ) -> TaskMetrics:
        """Each task's loss and metrics on the labelled rows of `df` (for images: a manifest
        whose paths are relative to `root`, named `where` in error messages)."""
        data = self.preprocessor.source(df, root, self.tasks, where=where)
        device = next(self.model.parameters()).device
        return evaluate_data(self.model, self.tasks, data, _batch_size(data), device)

    def predict(
        self,
        df: pd.DataFrame,
        id_columns: Sequence[str] = (),
        tasks: Sequence[str] | None = None,
        root: str | Path | None = None,
        where: str | None = None,
    ) -> pd.DataFrame:
        """One column per task (the label or value); classification adds class probabilities
        (columns named as in `TaskKind.decode`: `churn`, `churn_prob`, `plan_prob_basic`, ...).
        `id_columns` of `df` (e.g. a customer id) are copied first, so that each prediction
        can be joined back to its row; `tasks` picks some of the tasks (all by default but the
        auxiliary ones, which make no predictions). For an image model `df` is a manifest (no
        target columns needed) whose paths are relative to `root` (default: the current
        folder), named `where` in error messages; kinds that predict per pixel or per object
        give a cell per image holding its array or list (`write_predictions` writes them to
        files)."""
        chosen = self.choose_tasks(tasks)
        ids = check_id_columns(df, id_columns)
        inputs = self.preprocessor.source(df, root, (), where=where)
        device = next(self.model.parameters()).device
        raw = predict_rows(self.model, inputs, device)
        broken = torch.stack(
            [~torch.isfinite(r.reshape(len(r), -1)).all(1) for r in raw.values()]
        ).any(0)
        if broken.any():
            rows = ", ".join(map(str, df.index[broken.cpu().numpy()][:5]))
            raise DataError(
                f"the model's outputs are not finite for rows {rows}: their features are far "
                "outside the training data; check them (units, sentinel values)"
            )
        predictions = {
            t.name: t.kind_spec.prediction(raw[t.name], self.preprocessor.target_fit(t).scale)
            for t in chosen
        }
        return prediction_frame(df, ids, chosen, predictions, self.preprocessor)

    def choose_tasks(self, names: Sequence[str] | None) -> list[Task]:
        """The model's tasks named in `names`, in the model's order (all for None); an unknown
        name is refused with the model's task names."""
        return choose_tasks(self.tasks, names)

    def metadata(self) -> dict[str, Any]:
        pre = self.preprocessor
        return {
            "tasks": [t.to_dict() for t in self.tasks],
            "model_config": dataclasses.asdict(self.model_config),
            **({"in_dim": pre.in_dim} if isinstance(pre, TabularPreprocessor) else {}),
            "preprocessor": pre.to_dict(),
            "config": _config_dict(self.run_config),
            **({"per_task": self.model.layout()} if isinstance(self.model, PerTaskSnapshots)
               else {}),
        }  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Checkpoint: weights, optimizer and balancer state, encoding, tasks, config."""
        trainer = self.trainer or Trainer(self.model, config=_quiet())
        trainer.meta_init = self.meta_init
        return trainer.save(path, self.metadata())

    @classmethod
    def load(cls, path: str | Path) -> FittedModel:
        """The model in a checkpoint of a config-driven run: model.pt, or (from this version
        on) any of its training checkpoints (checkpoints/step-*.pt, best.pt, last_good.pt)."""
        states, meta = load_checkpoint(path)
        if "tasks" not in meta or "preprocessor" not in meta:
            raise CheckpointError(_without_encoding(Path(path)))
        try:
            tasks = [Task(**t) for t in meta["tasks"]]
            spec = ModelConfig.from_dict(meta["model_config"])
            pre = encoding_from_dict(meta["preprocessor"])
            model = spec.build(pre.model_input, tasks)
            if "per_task" in meta:  # each task served from its own snapshot
                model = PerTaskSnapshots.like(model, meta["per_task"]["routes"])
            model.load_state_dict(states["model"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            reason = describe_validation_error(err) if isinstance(err, ValidationError) else err
            raise CheckpointError(
                f"{path} does not hold a model this polytask ({meta.get('polytask_version')} "
                f"wrote it) can rebuild: {reason}"
            ) from None
        return cls(model, pre, spec, meta_init=states.get("meta_init", {}))


def _batch_size(rows: DataSource) -> int:
    """Rows per batch: 1024 table rows, or as many images as fit `PREDICT_FLOATS`."""
    if isinstance(rows, TaskData):
        return 1024
    return max(1, PREDICT_FLOATS // max(1, int(np.prod(rows.input_shape))))


def predict_rows(model: MultiTaskNet, rows: DataSource, device: torch.device) -> dict[str, Tensor]:
    """Raw head outputs for every row of `rows` on the CPU, read a batch at a time (images are
    decoded batch by batch, never all at once)."""
    if isinstance(rows, TaskData):
        return predict_raw(model, rows.x, _batch_size(rows), device)
    if len(rows) == 0:  # no rows: outputs of the right shapes, with none
        return predict_raw(model, torch.zeros((0, *rows.input_shape)), 1, device)
    chunks: dict[str, list[Tensor]] = {}
    model.eval()
    with torch.no_grad():
        for batch in rows.chunks(_batch_size(rows)):
            for name, value in model(batch.x.to(device)).items():
                chunks.setdefault(name, []).append(value.float().cpu())
    return {name: torch.cat(values) for name, values in chunks.items()}


def prediction_frame(
    df: pd.DataFrame,
    ids: Sequence[str],
    tasks: Sequence[Task],
    predictions: dict[str, np.ndarray],
    preprocessor: Encoding,
) -> pd.DataFrame:
    """The predictions table: `ids` columns of `df`, then each task's columns as its kind
    decodes them (`TaskKind.decode`); refuses a column name that two of them would write. A
    column of arrays with more than one axis (a map per image) holds one array per cell."""
    out: dict[str, Any] = {c: df[c].to_numpy() for c in ids}
    for task in tasks:
        columns = task.kind_spec.decode(task, predictions[task.name], preprocessor.target_fit(task))
        clash = sorted(set(columns) & set(out))
        if clash:
            by_id = bool(set(clash) & set(ids))
            raise DataError(
                f"task {task.name!r}: prediction column(s) {clash} are already taken by "
                + (
                    "an id column; pass another id column"
                    if by_id
                    else "another task's predictions; rename one of the tasks"
                )
            )
        out.update(
            {k: list(v) if isinstance(v, np.ndarray) and v.ndim > 1 else v
             for k, v in columns.items()}
        )  # fmt: skip
    return pd.DataFrame(out, index=df.index)


def choose_tasks(tasks: Sequence[Task], names: Sequence[str] | None) -> list[Task]:
    """`tasks` named in `names`, in their own order (all that make predictions for None:
    auxiliary tasks make none); refuses unknown and auxiliary names."""
    predicted = reported_tasks(tasks)
    if names is None:
        return predicted
    if isinstance(names, str):
        names = [names]
    known = [t.name for t in predicted]
    auxiliary = [n for n in names if n in {t.name for t in tasks} - set(known)]
    if auxiliary:
        raise DataError(
            f"task(s) {auxiliary} are auxiliary: trained to help the other tasks, they make no "
            f"predictions; this model predicts {', '.join(known)}"
        )
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DataError(f"unknown task(s) {unknown}: this model predicts {', '.join(known)}")
    if not names:
        raise DataError(f"no task chosen: name one or more of {', '.join(known)}")
    return [t for t in tasks if t.name in set(names)]


def check_id_columns(df: pd.DataFrame, id_columns: Sequence[str]) -> list[str]:
    """The id columns to pass through to predictions, each once; a missing one is named."""
    if isinstance(id_columns, str):
        id_columns = [id_columns]
    ids = list(dict.fromkeys(id_columns))
    missing = [c for c in ids if c not in df.columns]
    if missing:
        shown = ", ".join(map(str, list(df.columns)[:20]))
        raise DataError(f"id column(s) {missing} not found in the data; its columns: {shown}")
    return ids


def _without_encoding(path: Path) -> str:
    """Why a training checkpoint without tasks and encoding cannot predict, and which file
    of its run folder can."""
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    what = (
        f"{path} is a training checkpoint without the data encoding and tasks a prediction "
        "needs (written by Trainer.save, or by an older polytask)"
    )
    model = run / "model.pt"
    if model.is_file() and model.resolve() != path.resolve():
        return f"{what}: predict from {model}, the run's trained model"
    return f"{what}, and {run} holds no model.pt: " + for_user(
        "rebuild the FittedModel from the run's data (polytask.app.fit) and "
        "Trainer.load(path) its weights",
        "finish the run with `polytask train CONFIG --resume` (it writes model.pt), then "
        "predict from that",
    )


def _config_dict(config: RunConfig | None) -> dict[str, Any] | None:
    """The run's settings for the checkpoint (tasks are stored on their own)."""
    if config is None:
        return None
    return {
        "data": dataclasses.asdict(config.data),
        "model": dataclasses.asdict(config.model),
        "balancer": dataclasses.asdict(config.balancer),
        "training": dataclasses.asdict(config.training),
        "output_dir": config.output_dir,
    }


def _quiet() -> TrainConfig:
    return TrainConfig(progress=False)


def fit(
    config: RunConfig,
    data: PreparedData,
    tasks: Sequence[Task] | None = None,
    run_dir: str | Path | None = None,
    description: str = "multi-task",
    resume: bool = False,
) -> FittedModel:
    """Train the configured model on `tasks` (all by default; one for a single-task baseline);
    with `resume`, continue from the newest checkpoint in `run_dir` if there is one."""
    chosen = list(tasks) if tasks is not None else data.tasks
    model = config.model.build(data.preprocessor.model_input, chosen, seed=config.training.seed)
    balancer = make_balancer(config.balancer.name, **config.balancer.params)
    trainer = Trainer(
        model,
        balancer,
        config.training,
        run_dir=run_dir,
        description=description,
        run_meta={"config": _config_dict(config)},
    )
    fitted = FittedModel(model, data.preprocessor, config.model, trainer, config)
    with contextlib.suppress(ValueError):  # a custom loss, metric or head is not stored
        trainer.checkpoint_meta = fitted.metadata()  # every checkpoint can then predict
    if resume and run_dir is not None and (path := trainer.resume(run_dir)) is not None:
        log.info("resuming from %s (epoch %d, step %d)", path, trainer.epoch, trainer.step)
    trainer.fit(data.train, data.val)
    fitted.model = trainer.model  # per-task selection may serve a PerTaskSnapshots
    fitted.meta_init = trainer.meta_init
    return fitted
