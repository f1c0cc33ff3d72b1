"""From a table to a trained multi-task model and back: load, split, encode, train, predict."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from polytask.balancers.registry import make_balancer
from polytask.config import ModelConfig, RunConfig, SplitConfig
from polytask.data.split import Split, random_split, split_from_file
from polytask.data.synthetic import CUSTOMER_CATEGORICAL, CUSTOMER_NUMERIC, make_customers
from polytask.data.tabular import DataError, TabularPreprocessor, read_csv
from polytask.data.tensors import TaskData, unscale
from polytask.models import (
    AITM,
    ESMM,
    PLE,
    CrossStitch,
    LearningToBranch,
    MeanRegularised,
    MMoE,
    MultiInput,
    MultiTaskNet,
    SoftSharing,
    hard_sharing_mlp,
    mtan_mlp,
)
from polytask.tasks.task import Task
from polytask.train.checkpoint import CheckpointError, load_checkpoint
from polytask.train.config import TrainConfig
from polytask.train.evaluate import TaskMetrics, predict_raw
from polytask.train.evaluate import evaluate as evaluate_data
from polytask.train.loop import Trainer

log = logging.getLogger("polytask")


def load_frame(config: RunConfig) -> pd.DataFrame:
    """The raw rows the config names."""
    data = config.data
    if data.builtin is not None:
        try:
            return make_customers(**data.options)
        except TypeError as err:
            raise DataError(f"data.options: {err}".replace("make_customers() ", "")) from None
    assert data.path is not None
    return read_csv(data.path)


def feature_columns(config: RunConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if config.data.features is None:  # built-in data set
        return tuple(CUSTOMER_NUMERIC), tuple(CUSTOMER_CATEGORICAL)
    return config.data.features.numeric, config.data.features.categorical


def make_split(config: RunConfig | SplitConfig, n: int) -> Split:
    s = config.data.split if isinstance(config, RunConfig) else config
    if s.file is not None:
        if not Path(s.file).is_file():
            raise DataError(f"split file {s.file} does not exist")
        return split_from_file(s.file, n, s.val_fraction, s.seed)
    return random_split(n, s.val_fraction, s.test_fraction, s.seed)


Parts = TaskData | dict[str, TaskData]
"""One data set, or several by name (each labelling some of the tasks)."""


@dataclass(frozen=True)
class PreparedData:
    preprocessor: TabularPreprocessor
    tasks: list[Task]
    train: Parts
    val: Parts | None
    test: Parts


def load_prepared(config: RunConfig) -> PreparedData:
    """The config's data, split and encoded: one table, or each of `data.sources`."""
    if config.data.sources is not None:
        return prepare_sources(config)
    return prepare(config, load_frame(config))


def prepare_sources(config: RunConfig) -> PreparedData:
    """Several CSV files, each split on its own; one encoding fitted on all training rows (a
    task's target statistics from the rows that label it); each part keeps its own tasks."""
    assert config.data.sources is not None
    numeric, categorical = feature_columns(config)
    frames, splits, labels = {}, {}, {}
    for i, source in enumerate(config.data.sources):
        name = f"{i}:{Path(source.path).name}"
        frame = read_csv(source.path)
        has = [t.name for t in config.tasks if all(c in frame for c in t.target_columns)]
        chosen = list(source.tasks) if source.tasks is not None else has
        lacking = [t for t in chosen if t not in has]
        if lacking or not chosen:
            raise DataError(
                f"data source {source.path}: " + (f"no target columns for tasks {lacking}"
                if lacking else "it has the target columns of none of the tasks")
            )  # fmt: skip
        frames[name], splits[name], labels[name] = (
            frame,
            make_split(source.split, len(frame)),
            chosen,
        )
    by_name = {t.name: t for t in config.tasks}

    def part(name: str, rows: Any) -> pd.DataFrame:
        frame = frames[name].iloc[rows].copy()
        for t in config.tasks:  # a task's columns count only where this source labels it
            if t.name not in labels[name]:
                for c in t.target_columns:
                    frame[c] = np.nan
        return frame

    train_all = pd.concat([part(n, splits[n].train) for n in frames], ignore_index=True)
    pre = TabularPreprocessor.fit(train_all, numeric, categorical, config.tasks)
    tasks = pre.resolve_tasks(config.tasks)
    resolved = {t.name: t for t in tasks}

    def encode(which: str) -> dict[str, TaskData]:
        out = {}
        for n in frames:
            rows = getattr(splits[n], which)
            if len(rows):
                out[n] = pre.transform(frames[n].iloc[rows], [resolved[t] for t in labels[n]])
        return out

    train = encode("train")
    for name in by_name:
        if not any(name in d.targets and bool(resolved[name].mask(d.targets[name]).any())
                   for d in train.values()):  # fmt: skip
            raise DataError(f"task {name!r} has no label in the training rows of any source")
    return PreparedData(pre, tasks, train, encode("val") or None, encode("test"))


def prepare(config: RunConfig, df: pd.DataFrame) -> PreparedData:
    """Split rows, fit the encoding on the training rows only, and encode every part."""
    split = make_split(config, len(df))
    numeric, categorical = feature_columns(config)
    train_df = df.iloc[split.train]
    pre = TabularPreprocessor.fit(train_df, numeric, categorical, config.tasks)
    tasks = pre.resolve_tasks(config.tasks)
    for task in tasks:
        if not bool(task.mask(pre.transform_target(task, train_df)).any()):
            raise DataError(
                f"task {task.name!r} has no label in the training rows: check its target "
                f"columns {list(task.target_columns)} and the split"
            )
    val = pre.transform(df.iloc[split.val], tasks) if len(split.val) else None
    return PreparedData(
        pre, tasks, pre.transform(train_df, tasks), val, pre.transform(df.iloc[split.test], tasks)
    )


def _given(spec: ModelConfig, **fields: str) -> dict[str, Any]:
    """Constructor arguments from the optional config fields that are set (keyword → field);
    the ones left out take the architecture's own defaults."""
    values = {kw: getattr(spec, field) for kw, field in fields.items()}
    return {kw: v for kw, v in values.items() if v is not None and v != ()}


_Builder = Callable[[ModelConfig, Sequence[str], Sequence[Task]], MultiTaskNet]
"""(model config, the encoded input columns' names, tasks) → the architecture."""
ARCHITECTURES: dict[str, _Builder] = {
    "hard_sharing": lambda s, f, t: hard_sharing_mlp(
        len(f), t, hidden=s.hidden, dropout=s.dropout, tower=s.tower, task_dropout=s.task_dropout
    ),
    "mmoe": lambda s, f, t: MMoE(len(f), t, expert_hidden=s.hidden, tower=s.tower,
                                 dropout=s.dropout, task_dropout=s.task_dropout,
                                 **_given(s, num_experts="experts", gate="gate", top_k="top_k")),
    "cgc": lambda s, f, t: PLE(len(f), t, levels=1, expert_hidden=s.hidden, tower=s.tower,
                               dropout=s.dropout, task_dropout=s.task_dropout,
                               **_given(s, shared_experts="experts", task_experts="task_experts")),
    "ple": lambda s, f, t: PLE(len(f), t, expert_hidden=s.hidden, tower=s.tower, dropout=s.dropout,
                               task_dropout=s.task_dropout,
                               **_given(s, shared_experts="experts", task_experts="task_experts",
                                        levels="levels")),
    "mtan": lambda s, f, t: mtan_mlp(len(f), t, hidden=s.hidden, dropout=s.dropout, tower=s.tower,
                                     task_dropout=s.task_dropout),
    "ltb": lambda s, f, t: LearningToBranch(
        len(f), t, hidden=s.hidden, dropout=s.dropout, tower=s.tower, task_dropout=s.task_dropout,
        **_given(s, branches="branches", temperature="temperature")),
    "esmm": lambda s, f, t: ESMM(len(f), t, hidden=s.hidden, dropout=s.dropout,
                                 task_dropout=s.task_dropout, **_given(s, tower="tower")),
    "aitm": lambda s, f, t: AITM(len(f), t, hidden=s.hidden, dropout=s.dropout,
                                 task_dropout=s.task_dropout,
                                 **_given(s, tower="tower", calibration="calibration")),
    "multi_input": lambda s, f, t: MultiInput(
        len(f), t, inputs=input_columns(s.inputs or {}, f), hidden=s.hidden, tower=s.tower,
        dropout=s.dropout, task_dropout=s.task_dropout, **_given(s, encoder_dim="encoder_dim")),
    "cross_stitch": lambda s, f, t: CrossStitch(len(f), t, hidden=s.hidden, dropout=s.dropout,
                                                task_dropout=s.task_dropout),
    "soft_sharing": lambda s, f, t: SoftSharing(
        len(f), t, hidden=s.hidden, dropout=s.dropout, task_dropout=s.task_dropout,
        **_given(s, coupling="coupling", penalty="penalty")),
    "mean_regularised": lambda s, f, t: MeanRegularised(
        len(f), t, hidden=s.hidden, dropout=s.dropout, task_dropout=s.task_dropout,
        **_given(s, coupling="coupling")),
}  # fmt: skip


def build_model(
    spec: ModelConfig, features: int | Sequence[str], tasks: Sequence[Task]
) -> MultiTaskNet:
    """The architecture `spec` names (see `ARCHITECTURES`), for inputs of `features` encoded
    columns (their names, as `TabularPreprocessor.feature_names` gives them, or their count)."""
    names = [f"x{i}" for i in range(features)] if isinstance(features, int) else list(features)
    return ARCHITECTURES[spec.architecture](spec, names, tasks)


def input_columns(
    inputs: Mapping[str, Sequence[str]], features: Sequence[str]
) -> dict[str, list[int]]:
    """Each task's input columns by position, from raw feature names: a numeric feature is one
    column, a categorical one all of its one-hot columns ("region" → "region=north", ...)."""
    out: dict[str, list[int]] = {}
    for task, names in inputs.items():
        columns: list[int] = []
        for name in names:
            hits = [i for i, f in enumerate(features) if f == name or f.startswith(f"{name}=")]
            if not hits:
                raise ValueError(
                    f"model.inputs[{task!r}]: feature {name!r} is not an input column; "
                    f"the features are {sorted({f.split('=')[0] for f in features})}"
                )
            columns += hits
        out[task] = columns
    return out


@dataclass
class FittedModel:
    """A trained model with its encoding: predicts from and evaluates on raw tables."""

    model: MultiTaskNet
    preprocessor: TabularPreprocessor
    model_config: ModelConfig
    trainer: Trainer | None = None
    run_config: RunConfig | None = None

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self.model.tasks

    def evaluate(self, df: pd.DataFrame) -> TaskMetrics:
        data = self.preprocessor.transform(df, self.tasks)
        device = next(self.model.parameters()).device
        return evaluate_data(self.model, self.tasks, data, 1024, device)

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        """One column per task (the label or value); classification adds class probabilities."""
        x = self.preprocessor.transform_features(df)
        device = next(self.model.parameters()).device
        raw = predict_raw(self.model, x, 1024, device)
        broken = torch.stack(
            [~torch.isfinite(r.reshape(len(r), -1)).all(1) for r in raw.values()]
        ).any(0)
        if broken.any():
            rows = ", ".join(map(str, df.index[broken.cpu().numpy()][:5]))
            raise DataError(
                f"the model's outputs are not finite for rows {rows}: their features are far "
                "outside the training data; check them (units, sentinel values)"
            )
        out: dict[str, Any] = {}
        for task in self.tasks:
            scale = self.preprocessor.target_scale
            p = unscale(scale, task.name, task.predict(raw[task.name])).numpy()
            if task.kind == "regression":
                out[task.name] = p
            elif task.kind == "binary":
                classes = self.preprocessor.classes[task.name]
                out[task.name] = self.preprocessor.decode_labels(task, (p >= 0.5).astype(int))
                out[f"{task.name}_prob_{classes[1]}"] = p
            elif task.kind == "multiclass":
                out[task.name] = self.preprocessor.decode_labels(task, p.argmax(axis=1))
                for j, c in enumerate(self.preprocessor.classes[task.name]):
                    out[f"{task.name}_prob_{c}"] = p[:, j]
            else:
                for j, col in enumerate(task.target_columns):
                    out[col] = (p[:, j] >= 0.5).astype(int)
                    out[f"{col}_prob"] = p[:, j]
        return pd.DataFrame(out, index=df.index)

    def metadata(self) -> dict[str, Any]:
        return {
            "tasks": [t.to_dict() for t in self.tasks],
            "model_config": dataclasses.asdict(self.model_config),
            "in_dim": self.preprocessor.in_dim,
            "preprocessor": self.preprocessor.to_dict(),
            "config": _config_dict(self.run_config),
        }

    def save(self, path: str | Path) -> Path:
        """Checkpoint: weights, optimizer and balancer state, encoding, tasks, config."""
        trainer = self.trainer or Trainer(self.model, config=_quiet())
        return trainer.save(path, self.metadata())

    @classmethod
    def load(cls, path: str | Path) -> FittedModel:
        states, meta = load_checkpoint(path)
        try:
            tasks = [Task(**t) for t in meta["tasks"]]
            saved: dict[str, Any] = {
                k: tuple(v) if isinstance(v, list) else v for k, v in meta["model_config"].items()
            }
            spec = ModelConfig(**saved)
            pre = TabularPreprocessor.from_dict(meta["preprocessor"])
            model = build_model(spec, pre.feature_names, tasks)
            model.load_state_dict(states["model"])
        except (KeyError, TypeError, RuntimeError) as err:
            raise CheckpointError(
                f"{path} does not hold a model this polytask ({meta.get('polytask_version')} "
                f"wrote it) can rebuild: {err}"
            ) from None
        return cls(model, pre, spec)


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
    with torch.random.fork_rng(
        devices=[]
    ):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(config.training.seed)
        model = build_model(config.model, data.preprocessor.feature_names, chosen)
    balancer = make_balancer(config.balancer.name, **config.balancer.params)
    trainer = Trainer(model, balancer, config.training, run_dir=run_dir, description=description)
    trainer.checkpoint_meta = {"config": _config_dict(config)}
    if resume and run_dir is not None and (path := trainer.resume(run_dir)) is not None:
        log.info("resuming from %s (step %d)", path, trainer.step)
    trainer.fit(data.train, data.val)
    return FittedModel(model, data.preprocessor, config.model, trainer, config)
