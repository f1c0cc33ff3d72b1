"""Training from a config, and a trained model with its encoding (predicts from raw tables)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
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
from polytask.app._data import PreparedData, data_fingerprint
from polytask.app._encoding import Encoding, encoding_from_dict
from polytask.app._ensemble import fit_blend, fit_ensemble, resume_refusal
from polytask.balancers._registry import make_balancer
from polytask.data._sequences import SequenceSource
from polytask.data._source import DataSource
from polytask.data._tabular import DataError, TabularPreprocessor
from polytask.data._tensors import TaskData
from polytask.models import (
    MultiTaskNet,
)
from polytask.models._per_task import PerTaskSnapshots
from polytask.models._teacher import TeacherForced
from polytask.models.encoders import Features
from polytask.tasks._columns import DataWarning
from polytask.tasks._kinds import UNK_ID
from polytask.tasks._task import Task, reported_tasks, same_value
from polytask.train._checkpoint import CheckpointError, load_checkpoint
from polytask.train._config import TrainConfig
from polytask.train._evaluate import TaskMetrics, predict_source
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
    """The run's config when the model was trained in this process (`fit`); None after
    `load`: a checkpoint keeps the settings for the record (`meta["config"]` of
    `polytask.train.load_checkpoint`), not a config to prepare data from: load the YAML for that."""
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
        files). For a text model `df` holds the texts (its text column), for an audio model
        it is a manifest (paths relative to `root`); a task per token or sequence gives a cell
        per row as its kind decodes it (`TaskKind.decode_row`: tags per word, a text)."""
        chosen = self.choose_tasks(tasks)
        ids = check_id_columns(df, id_columns)
        inputs = self.preprocessor.source(df, root, (), where=where)
        device = next(self.model.parameters()).device
        decoded: dict[str, list[Any]] = {}
        if isinstance(inputs, SequenceSource):
            fits = {t.name: self.preprocessor.target_fit(t) for t in chosen}
            raw, decoded = predict_sequences(self.model, inputs, chosen, fits, device)
        else:
            raw = predict_rows(self.model, inputs, device)
        broken = torch.stack(
            [~torch.isfinite(r.reshape(len(r), -1)).all(1) for r in raw.values()]
            or [torch.zeros(len(df), dtype=torch.bool)]
        ).any(0)
        if broken.any():
            rows = ", ".join(map(str, df.index[broken.cpu().numpy()][:5]))
            largest = max((float(p.detach().abs().max()) for p in self.model.parameters()
                           if p.numel()), default=0.0)  # fmt: skip
            if not math.isfinite(largest) or (bool(broken.all()) and len(df) > 1):
                raise DataError(
                    f"the model's outputs are not finite for {'any' if broken.all() else 'rows'}"
                    f"{'' if broken.all() else ' ' + rows} of the {len(df)} rows: the model, "
                    f"not the rows, is the likely cause (its largest weight is {largest:.3g}: a "
                    "run that diverged?); train it again with a lower training.lr or "
                    "training.grad_clip"
                )
            raise DataError(
                f"the model's outputs are not finite for rows {rows}: their features are far "
                "outside the training data; check them (units, sentinel values)"
            )
        predictions = {
            t.name: t.kind_spec.prediction(raw[t.name], self.preprocessor.target_fit(t).scale)
            for t in chosen
            if t.name not in decoded
        }
        left_out = [t for t in self.tasks if t not in chosen]
        shared = _shared_part(self.model, inputs, self.preprocessor, device)
        return prediction_frame(
            df, ids, chosen, predictions, self.preprocessor, decoded, left_out, shared
        )

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
        """Checkpoint: weights, optimizer and balancer state, encoding, tasks, config. A model
        put together in Python is checked first against the network `model_config` builds,
        which is what `load` rebuilds and loads the weights into."""
        if self.trainer is None:
            self._check_rebuilt()
        trainer = self.trainer or Trainer(self.model, config=_quiet(self.model))
        trainer.meta_init = self.meta_init
        return trainer.save(path, self.metadata())

    def _check_rebuilt(self) -> None:
        """Refuse a model that `model_config` does not build layer for layer (a trunk of
        one's own, another activation): its weights would load into another network."""
        if isinstance(self.model, PerTaskSnapshots):
            return
        try:
            rebuilt = self.model_config.build(self.preprocessor.model_input, self.tasks, seed=0)
        except (TypeError, ValueError) as err:
            raise ValueError(f"model_config cannot rebuild the model on load: {err}") from None
        mine, built = _layers(self.model), _layers(rebuilt)
        if mine != built:
            at = next((i for i, (a, b) in enumerate(zip(mine, built, strict=False)) if a != b),
                      min(len(mine), len(built)))  # fmt: skip
            here = mine[at] if at < len(mine) else "nothing"
            there = built[at] if at < len(built) else "nothing"
            raise ValueError(
                f"model_config ({self.model_config.architecture}, {self.model_config.params}) "
                f"builds another network than this model (layer {at}: {here} here, {there} "
                "rebuilt), and load builds the network from it: give the model_config this "
                "model was built from, or, for a network of your own, save it with "
                "Trainer.save and load it into the same code (Trainer(model).load)"
            )

    @classmethod
    def load(cls, path: str | Path) -> FittedModel:
        """The model in a checkpoint of a config-driven run: model.pt, or (from this version
        on) any of its training checkpoints (checkpoints/step-*.pt, best.pt, last_good.pt)."""
        states, meta = load_checkpoint(path)
        if "tasks" not in meta or "preprocessor" not in meta:
            raise CheckpointError(_without_encoding(Path(path)))
        missing = _unregistered(meta)
        if missing:
            raise CheckpointError(
                f"{path} needs {missing}, not registered in this process: your own code added "
                "it (docs/extending.md). Import the module that registers it first: in Python "
                "`import MODULE` before loading, on the command line `polytask --import MODULE "
                "...` (or --import path/to/file.py)"
            )
        try:
            tasks = [Task(**t) for t in meta["tasks"]]
            spec = ModelConfig.from_dict(meta["model_config"])
            pre = encoding_from_dict(meta["preprocessor"])
            model = spec.build(pre.model_input, tasks)
            if "per_task" in meta:  # each task served from its own snapshot
                model = PerTaskSnapshots.like(model, meta["per_task"]["routes"])
            model.load_state_dict(_named_as(states["model"], model.state_dict()))
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            reason = describe_validation_error(err) if isinstance(err, ValidationError) else err
            raise CheckpointError(
                f"{path} does not hold a model this polytask ({meta.get('polytask_version')} "
                f"wrote it) can rebuild: {reason}"
            ) from None
        return cls(model, pre, spec, meta_init=states.get("meta_init", {}))


def _named_as(
    saved: Mapping[str, torch.Tensor], built: Mapping[str, torch.Tensor]
) -> Mapping[str, torch.Tensor]:
    """`saved` under `built`'s names, where only the names differ: a model of one's own
    whose containers are named otherwise (`trunk.0.weight` for `trunk.net.0.weight`), which
    save checked builds the same layers in the same order; else `saved` as it is."""
    if saved.keys() == built.keys() or len(saved) != len(built):
        return saved
    pairs = list(zip(built.items(), saved.values(), strict=True))
    if any(mine.shape != theirs.shape for (_, mine), theirs in pairs):
        return saved
    return {name: value for (name, _), value in pairs}


def _layers(model: torch.nn.Module) -> list[str]:
    """The layers of `model` (modules holding no other) in order, with their parameters'
    shapes: containers may differ in name (a trunk of one's own that builds the same)."""
    return [
        f"{type(m).__name__}{[tuple(p.shape) for p in m.parameters(recurse=False)] or ''}"
        for m in model.modules()
        if next(m.children(), None) is None
    ]


def _unregistered(meta: Mapping[str, Any]) -> str | None:
    """The task kinds and architecture a checkpoint names that no registry here holds."""
    from polytask.models import ARCHITECTURES
    from polytask.tasks import KINDS

    kinds = sorted({str(t.get("kind")) for t in meta["tasks"] if isinstance(t, Mapping)
                    and isinstance(t.get("kind"), str) and t["kind"] not in KINDS})  # fmt: skip
    what = [f"task kind {k!r}" for k in kinds]
    architecture = (meta.get("model_config") or {}).get("architecture")
    if isinstance(architecture, str) and architecture not in ARCHITECTURES:
        what.append(f"architecture {architecture!r}")
    return " and ".join(what) or None


def _batch_size(rows: DataSource) -> int:
    """Rows per batch: 1024 table rows, as many images as fit `PREDICT_FLOATS`, or a text or
    audio source's own `predict_batch`."""
    if isinstance(rows, TaskData):
        return 1024
    if isinstance(rows, SequenceSource):
        return rows.predict_batch
    return max(1, PREDICT_FLOATS // max(1, int(np.prod(rows.input_shape))))


def _reads_positions(model: MultiTaskNet, task: Task) -> bool:
    """Whether `task`'s head gives an output per position of the model's sequence (a tag per
    token, a character per audio frame), not one it generates itself (a decoder's text)."""
    heads = getattr(model, "heads", None)
    if not isinstance(heads, torch.nn.ModuleDict) or task.name not in heads:
        return True
    return not any(isinstance(m, TeacherForced) for m in heads[task.name].modules())


def _own_positions(output: Tensor, length: int, width: int, stride: int | None) -> Tensor:
    """A row's output cut to the row's own positions, when the output has one per position of
    the model's sequence (`width` input steps, `stride` steps a position); else as it is."""
    if stride is None or output.ndim < 1 or output.shape[0] != math.ceil(width / stride):
        return output
    return output[: math.ceil(length / stride)]


def predict_sequences(
    model: MultiTaskNet,
    rows: SequenceSource,
    tasks: Sequence[Task],
    fits: Mapping[str, Any],
    device: torch.device,
) -> tuple[dict[str, Tensor], dict[str, list[Any]]]:
    """For text or audio rows: the raw outputs of sequence-level tasks (rows in order, on the
    CPU) and each sequential task's prediction per row (`TaskKind.decode_row`, given the row's
    output cut to its own positions when the head outputs one per position). Rows are read
    in order of length, so that batches hold little padding."""
    n = len(rows)
    sequential = [t for t in tasks if t.kind_spec.sequential]
    decoded: dict[str, list[Any]] = {t.name: [None] * n for t in sequential}
    raw: dict[str, Tensor] = {}
    features = getattr(model, "features", None)
    stride = features.stride if isinstance(features, Features) and features.sequence else None
    cut = {t.name: _reads_positions(model, t) for t in sequential}
    order = np.argsort(rows.lengths, kind="stable")
    size = rows.predict_batch
    model.eval()
    with torch.no_grad():
        if n == 0:  # no rows: outputs of the right shapes, with none
            text = rows.inputs.modality == "text"
            x = torch.full((1, 1), UNK_ID) if text else torch.zeros(1, rows.input_shape[0])
            out = model(x.to(device))
            return {t.name: out[t.name].float().cpu()[:0] for t in tasks}, decoded
        for start in range(0, n, size):
            index = torch.as_tensor(order[start : start + size], dtype=torch.long)
            batch = rows.rows(index)
            out = model(batch.x.to(device))
            width = batch.x.shape[1]
            for task in tasks:
                output = out[task.name].float().cpu()
                if task.name not in decoded:
                    if task.name not in raw:
                        raw[task.name] = output.new_empty((n, *output.shape[1:]))
                    raw[task.name][index] = output
                    continue
                kind, fit = task.kind_spec, fits[task.name]
                for j, i in enumerate(index.tolist()):
                    own = output[j]
                    if cut[task.name]:
                        own = _own_positions(own, int(rows.lengths[i]), width, stride)
                    decoded[task.name][i] = kind.decode_row(task, own, rows.text_row(i), fit)
    return raw, decoded


SharedPart = Callable[[Task, np.ndarray], dict[str, Any] | None]
"""(a task made from a column, a row mask) → the task's decoded columns for those rows as the
model's shared part alone predicts them (a new group's); None where it has no shared part."""


def _shared_part(
    model: MultiTaskNet, rows: DataSource, preprocessor: Encoding, device: torch.device
) -> SharedPart:
    """`rows`' predictions by `model.shared_prediction`, computed when asked for, on the rows
    asked for (table rows only)."""

    def predict(task: Task, chosen: np.ndarray) -> dict[str, Any] | None:
        if not isinstance(rows, TaskData):
            return None
        x = rows.x[torch.from_numpy(chosen)]
        model.eval()
        with torch.no_grad():
            parts = [model.shared_prediction(x[i : i + 1024].to(device))
                     for i in range(0, len(x), 1024)]  # fmt: skip
        given = [p.float().cpu() for p in parts if p is not None]
        if not given or len(given) < len(parts):
            return None
        fit = preprocessor.target_fit(task)  # tasks made from a column share one encoding
        predicted = task.kind_spec.prediction(task.shape_output(torch.cat(given)), fit.scale)
        return task.kind_spec.decode(task, predicted, fit)

    return predict


def predict_rows(model: MultiTaskNet, rows: DataSource, device: torch.device) -> dict[str, Tensor]:
    """Raw head outputs for every row of `rows` on the CPU, read a batch at a time (images are
    decoded batch by batch, never all at once)."""
    return predict_source(model, rows, _batch_size(rows), device)


_SUSPECT_ROWS = 10
"""Rows from which a table none of whose rows holds a group the tasks were made for is
suspected of a column written otherwise."""


def prediction_frame(
    df: pd.DataFrame,
    ids: Sequence[str],
    tasks: Sequence[Task],
    predictions: dict[str, np.ndarray],
    preprocessor: Encoding,
    decoded: Mapping[str, list[Any]] | None = None,
    left_out: Sequence[Task] = (),
    shared: SharedPart | None = None,
    unshared: str = "",
) -> pd.DataFrame:
    """The predictions table: `ids` columns of `df`, then each task's columns as its kind
    decodes them (`TaskKind.decode`; the tasks in `decoded`: one column of their predictions
    per row); refuses a column name that two of them would write. A column of arrays with more
    than one axis (a map per image) holds one array per cell. `left_out`: the model's tasks not
    predicted (rows of theirs are blank because they were not chosen, which a warning says).
    `shared`: the model's shared part (`_shared_part`), which predicts the rows of tasks made
    from a column whose value no task was made for; `unshared`: why those rows are blank
    without one, where that is not the model's lack of it."""
    out: dict[str, Any] = {c: df[c].to_numpy() for c in ids}
    decoded = decoded or {}
    families: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Any]] = {}
    for task in tasks:
        if task.name in decoded:
            columns: dict[str, Any] = {task.name: decoded[task.name]}
        else:
            fit = preprocessor.target_fit(task)
            columns = task.kind_spec.decode(task, predictions[task.name], fit)
        if task.where is not None and all(c in df.columns for c in task.where):
            inside = _inside(task.where, df)
            key = (tuple(task.target_columns), tuple(sorted(task.where)))
            families.setdefault(key, []).append((task, inside, columns))
            columns = {k: _blank(v, inside) for k, v in columns.items()}
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
    for (targets, columns_of), members in families.items():
        if len(members) > 1 and len(targets) == 1:  # tasks made from a column: one per value
            orphans = ~np.any([inside for _, inside, _ in members], axis=0)
            unchosen = np.zeros(len(df), dtype=bool)
            for task in left_out:
                if task.where is not None and set(task.where) == set(columns_of):
                    unchosen |= _inside(task.where, df)
            new = orphans & ~unchosen
            missing = new & df[list(columns_of)].isna().any(axis=1).to_numpy()
            first = members[0][0]
            guess = shared(first, new) if shared is not None and new.any() else None
            fill = (unshared or NEW_BLANK) if guess is None else NEW_SHARED
            check = ""
            # not one row of many matched: more likely a column written otherwise (a request
            # of a few rows about new groups is not suspect)
            if new.all() and len(df) >= _SUSPECT_ROWS:
                made = [str(next(iter(t.where.values()))) for t, _, _ in members[:5]]
                check = (f"; no row holds a value the tasks were made for ({', '.join(made)}, "
                         "...): check the column's values (spaces, case, type)")  # fmt: skip
            for rows, why, then in (
                (new & ~missing, "hold values no task was made for", fill + check),
                (missing, f"have no {' / '.join(map(repr, columns_of))} value", fill),
                (orphans & unchosen, "belong to tasks not chosen for prediction", "are blank"),
            ):
                if rows.any():
                    shown = df.loc[rows, list(columns_of)].iloc[0].to_dict()
                    warnings.warn(
                        f"{int(rows.sum())} row(s) {why} (e.g. {shown}): their "
                        f"{targets[0]!r} predictions {then}",
                        DataWarning, stacklevel=3,
                    )  # fmt: skip
            own = _row_own(members, targets[0])
            for name, values in (guess or {}).items():
                column = _own_column(first, name, targets[0])
                if column in own:
                    own[column][new] = np.asarray(values)
            for column, values in own.items():
                if column in ids:  # the true values kept beside: the predictions renamed
                    column = f"{column}_predicted"
                if column in out:
                    raise DataError(
                        f"the predictions' column {column!r} (each row's own task's prediction "
                        f"of {targets[0]!r}) is already taken by an id column or a task's "
                        "column; pass another id column or rename the task"
                    )
                out[column] = values
    return pd.DataFrame(out, index=df.index)


def _inside(where: Mapping[str, Any], df: pd.DataFrame) -> np.ndarray:
    """The rows of `df` that a task's `where` keeps."""
    keep = np.ones(len(df), dtype=bool)
    for column, value in where.items():
        keep &= same_value(df[column], value)  # as in training: 3 matches "3" and 3.0
    return keep


def _blank(values: Any, inside: np.ndarray) -> Any:
    """`values` with the rows outside blanked (a task made for one school says nothing about
    another school's rows), in a column of their own type (`_blanks`)."""
    array = np.asarray(values)
    if array.ndim != 1:  # an array per row (a map, a vector)
        rows = array.astype(object, copy=True)
        rows[~inside] = None
        return rows
    out = _blanks(array, len(array))
    out[inside] = array[inside]
    return out


def _blanks(like: np.ndarray, n: int) -> Any:
    """`n` blanks in a column that can hold values like `like`'s and keeps their type: NaN
    floats, pandas' nullable integers and booleans (a binary task's 0 / 1 labels stay 0 / 1,
    not 0.0 / 1.0), None in any other column."""
    kind = like.dtype.kind
    if kind == "f":
        return np.full(n, np.nan)
    if kind in "iub":
        return pd.array([pd.NA] * n, dtype="boolean" if kind == "b" else "Int64")
    return np.full(n, None, object)


NEW_SHARED = (
    "are the model's shared part's, as for a new group (see Predictions in the many-tasks guide)"
)
NEW_BLANK = (
    "are blank: the model has no shared part to predict a new group with (mean_regularised, "
    "multilevel and gp have one, unless trained with training.selection: per_task; a blend or "
    "an ensemble needs one in every member)"
)


def _own_column(task: Task, name: str, target: str) -> str | None:
    """The combined column that task column `name` fills (`<task>_prob` → `<target>_prob`)."""
    return target + name[len(task.name) :] if name.startswith(task.name) else None


def _row_own(members: list[tuple[Task, np.ndarray, dict[str, Any]]], target: str
             ) -> dict[str, np.ndarray]:  # fmt: skip
    """For tasks made from a column (one per value, each `where` on it, rows not shared): each
    row's own task's prediction in one column per kind of column, `<target>` for `<task>`,
    `<target>_prob` for `<task>_prob`, ..."""
    combined: dict[str, np.ndarray] = {}
    for task, inside, columns in members:
        for name, values in columns.items():
            array = np.asarray(values)
            column = _own_column(task, name, target)
            if column is None or array.ndim != 1:
                continue
            if column not in combined:
                combined[column] = _blanks(array, len(array))
            combined[column][inside] = array[inside]
    return combined


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


def _quiet(model: MultiTaskNet) -> TrainConfig:
    """Settings for a trainer that only saves `model` (an edited one): the full-batch optimizer
    of a model refitted between its steps, which refuses any other."""
    if type(model).refit_reason is not None:
        return TrainConfig(progress=False, optimizer="lbfgs", lr=1.0, batch_size=1 << 30)
    return TrainConfig(progress=False)


def fit(
    config: RunConfig,
    data: PreparedData,
    tasks: Sequence[Task] | None = None,
    run_dir: str | Path | None = None,
    description: str = "multi-task",
    resume: bool = False,
    unresumable: str | None = None,
) -> FittedModel:
    """Train the configured model on `tasks` (all by default; one for a single-task baseline);
    with `resume`, continue from the newest checkpoint in `run_dir` if there is one.
    `model.ensemble: N` trains N members apart into one `polytask.models.Ensemble` (member 0 in
    run_dir, member i in run_dir/memberI); `model.blend`, this model in run_dir and blend member
    i in run_dir/blendI, into their weighted `Ensemble`. `unresumable`: why the run this
    model is part of cannot be resumed (an ensemble's member), said if it is interrupted."""
    if resume and (refusal := resume_refusal(config)):
        raise ValueError(refusal)
    if config.model.blend:
        return fit_blend(fit, config, data, tasks, run_dir, description)
    if config.model.ensemble > 1:
        return fit_ensemble(fit, config, data, tasks, run_dir, description)
    chosen = list(tasks) if tasks is not None else data.tasks
    model = config.model.build(data.preprocessor.model_input, chosen, seed=config.training.seed)
    balancer = make_balancer(config.balancer.name, **config.balancer.params)
    trainer = Trainer(
        model,
        balancer,
        config.training,
        run_dir=run_dir,
        description=description,
        run_meta={"config": _config_dict(config), "data": data_fingerprint(data)},
    )
    trainer.unresumable = unresumable
    fitted = FittedModel(model, data.preprocessor, config.model, trainer, config)
    with contextlib.suppress(ValueError):  # a custom loss, metric or head is not stored
        trainer.checkpoint_meta = fitted.metadata()  # every checkpoint can then predict
    if resume and run_dir is not None and (path := trainer.resume(run_dir)) is not None:
        log.info("resuming from %s (epoch %d, step %d)", path, trainer.epoch, trainer.step)
    trainer.fit(data.train, data.val)
    fitted.model = trainer.model  # per-task selection may serve a PerTaskSnapshots
    fitted.meta_init = trainer.meta_init
    return fitted
