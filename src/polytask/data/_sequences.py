"""Rows of text or audio for training and prediction: one `SequenceSource` for both.

Inputs differ in length, so each batch is padded to its own longest row (dynamic padding):
token ids with `PAD_ID` (text), waveforms with NaN (audio). Text rows are tokenised once, when
the source is made, and their token ids held in memory (8 bytes a token: its id and its word's
index; with the texts); audio files are read from disk when a batch needs them, never all at
once.

Targets: a sequence-level task (a label or value per row: `binary`, `multiclass`,
`regression`, ...) is encoded from the table by its kind as for tabular data; a sequential
task (`TaskKind.sequential`: tags per token, a translation, a transcript) has each row's target
read by its kind from its cell against the row's tokenised input (`TaskKind.text_target`),
once, and the rows of a batch padded together by `TaskKind.pad_rows`. A row that does not
label a sequential task is marked missing over its whole padded width
(`TaskKind.missing_target`).

Training order (`order`): with `bucket`, rows of similar length are batched together so that
little of a batch is padding: the rows are shuffled, sorted by length within windows of
`bucket_size` rows, cut into runs of `batch_size` rows, and the runs shuffled. Every row
appears once per epoch, and the order is drawn from the sampler's generator, so a resumed
run continues exactly.
"""

from __future__ import annotations

import copy
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from polytask.data._source import Batch, DataSource, Selected
from polytask.data._tensors import TaskData
from polytask.tasks._columns import (
    DataError,
    DataWarning,
    check_columns,
    json_scalar,
    more_rows,
)
from polytask.tasks._kinds import TargetFit, TaskKind, TextRow
from polytask.tasks._task import Task

BUCKET_BATCHES = 100
"""The default bucketing window: this many batches of rows sorted by length together."""

KNOWN_LIMIT = 2**24
"""Target elements above which a sequential task's padded targets of a whole split are not
built for the degenerate-label checks (`known_targets`)."""


def missing_cell(cell: Any, blank: bool = True) -> bool:
    """An empty cell (None, NaN, and with `blank` blank text): the row does not label the task.
    Lists and mappings (JSON lines cells) are values, even when empty; so is blank text without
    `blank` (a sequential task's kind reads it: an empty transcript)."""
    if isinstance(cell, list | tuple | dict | np.ndarray):
        return False
    if isinstance(cell, str):
        return blank and not cell.strip()
    return cell is None or bool(pd.isna(cell))


def row_where(where: str, label: Any, file: str | None = None) -> str:
    """`where, row label` (with the row's `file`, for audio), how messages name a row."""
    row = f"{where}, row {label}"
    return f"{row} (audio {file})" if file is not None else row


def fit_error(err: Exception, task: Task, where: str, labels: Sequence[Any]) -> DataError:
    """A kind's refusal of a training cell while fitting (`TaskKind.fit_text`, `fit_target`)
    as a DataError naming the file, the task, and the row when the kind says which ("training
    row i": the i-th training row, named by its row in the file)."""
    message = str(err)
    prefix = where
    found = re.search(r"training row (\d+): ", message)
    if found and int(found.group(1)) < len(labels):
        message = message.replace(found.group(0), "", 1)
        prefix = row_where(where, labels[int(found.group(1))])
    if message.startswith(f"task {task.name!r}"):
        return DataError(f"{prefix}{', ' if prefix != where else ': '}{message}")
    return DataError(f"{prefix}{', ' if prefix != where else ': '}task {task.name!r}: {message}")


def report_too_long(
    where: str,
    labels: Sequence[Any],
    lengths: np.ndarray,
    limit: int,
    policy: str,
    unit: str,
    fix: str,
    split: str | None = None,
    files: Sequence[str] | None = None,
    tasks: Sequence[Task] = (),
) -> None:
    """Rows longer than `limit`: refused (`policy` refuse: a DataError naming the first, and
    how many more) or one DataWarning saying how many are cut (truncate), and for the rows of
    a part that is scored, which of `tasks` lose targets with the cut."""
    over = np.flatnonzero(lengths > limit)
    if not len(over):
        return
    first = int(over[0])
    if policy == "refuse":
        more = more_rows(len(over) - 1)
        file = files[first] if files is not None else None
        raise DataError(
            f"{row_where(where, labels[first], file)}: {int(lengths[first])} {unit}, more than "
            f"the limit of {limit}{more}: {fix}, or set too_long: truncate to cut such rows"
        )
    part = f", {split} rows" if split else ""
    cut = [t.name for t in tasks if t.kind_spec.cut_with_input]
    whole = [t.name for t in tasks if t.kind_spec.sequential and not t.kind_spec.cut_with_input]
    scored = ""
    if cut and split not in (None, "train"):
        scored = (f"; the metrics of {cut} score only the {unit} kept (a label cut off counts "
                  "neither as found nor as missed)")  # fmt: skip
    if whole and split is not None:  # a transcript of the whole input, for a part of it
        scored += (
            f"; the targets of {whole} stay whole, so on these rows the model "
            + ("learns" if split == "train" else "is scored on")
            + " words it was not given"
        )
    warnings.warn(
        f"{where}{part}: {len(over)} of {len(lengths)} rows are longer than {limit} {unit} "
        f"(the longest {int(lengths.max())}) and were truncated to it{scored}; {fix} to keep "
        "them whole",
        DataWarning,
        stacklevel=3,
    )


class SequenceInputs(ABC):
    """The inputs of a source's rows, by row: lengths (tokens or samples, after truncation),
    a batch padded to its longest row, and each row as a `TextRow` for targets and
    predictions."""

    modality: ClassVar[str]
    """"text" or "audio"."""
    lengths: np.ndarray
    """Each row's input length (int64): tokens, or samples at the encoding's rate."""
    max_length: int
    """The most any row holds: the model's input size."""

    def __len__(self) -> int:
        return len(self.lengths)

    @abstractmethod
    def batch(self, rows: Sequence[int]) -> Tensor:
        """The rows' inputs (n, L), L the longest of them, padded."""

    @abstractmethod
    def empty(self) -> Tensor:
        """A batch of no rows."""

    @abstractmethod
    def text_row(self, row: int) -> TextRow:
        """Row `row` as the kinds read it (`TaskKind.decode_row`)."""

    def target_row(self, row: int, cell: Any) -> TextRow:
        """Row `row` as its target cell `cell` is read against (`TaskKind.text_target`)."""
        return self.text_row(row)


def bucketed_order(
    lengths: np.ndarray, generator: torch.Generator, batch_size: int, window: int
) -> Tensor:
    """Every row once, rows of similar length in the same runs of `batch_size`: a random
    permutation sorted by length within windows of `window` rows, cut into runs of
    `batch_size`, and the whole runs shuffled (a last, shorter run stays last, so that runs
    and batches coincide)."""
    n = len(lengths)
    order = torch.randperm(n, generator=generator)
    drawn = torch.as_tensor(lengths, dtype=torch.long)[order]
    parts = []
    for start in range(0, n, window):
        by_length = torch.sort(drawn[start : start + window], stable=True).indices
        parts.append(order[start : start + window][by_length])
    ordered = torch.cat(parts) if parts else order
    runs = n // batch_size
    shuffled = torch.randperm(runs, generator=generator)
    whole = ordered[: runs * batch_size].view(runs, batch_size)[shuffled].reshape(-1)
    return torch.cat([whole, ordered[runs * batch_size :]])


def read_targets(
    task: Task,
    cells: Sequence[Any],
    inputs: SequenceInputs,
    fit: TargetFit,
    where: str,
    labels: Sequence[Any],
) -> list[Tensor | None]:
    """Each row's target for sequential `task` from its cell (None: the row does not label
    it), read by the kind against the row's input; a refused cell is named by row."""
    kind = task.kind_spec
    rows: list[Tensor | None] = []
    first: tuple[int, str] | None = None  # the first refused row and why; then a count
    refused = 0
    for i, cell in enumerate(cells):
        if missing_cell(cell, blank=False):
            rows.append(None)
            continue
        try:
            rows.append(kind.text_target(task, cell, inputs.target_row(i, cell), fit))
        except ValueError as err:
            first, refused = first or (i, str(err)), refused + 1
            rows.append(None)
    if first is not None:
        i, why = first
        what = why if why.startswith(f"task {task.name!r}") else f"task {task.name!r}: {why}"
        file = getattr(inputs, "names", None)
        row = row_where(where, labels[i], file[i] if file else None)
        more = refused - 1
        rest = more_rows(more, "refused for this task")
        raise DataError(f"{row}, {what}{rest}")
    return rows


def aligned(inputs: SequenceInputs, labelled: Sequence[tuple[int, Tensor]]) -> bool:
    """Whether the `labelled` rows' targets (row, target) have one entry per input token."""
    lengths = inputs.lengths
    return inputs.modality == "text" and all(
        r.ndim >= 1 and r.shape[0] == lengths[i] for i, r in labelled
    )


class SequenceSource(DataSource):
    """Rows of text or audio with their tasks' targets (see the module docs): `rows` pads the
    inputs and sequential targets of a batch to its longest row; `order` buckets rows by
    length when `bucket` is set (training)."""

    def __init__(
        self,
        inputs: SequenceInputs,
        frame: pd.DataFrame,
        tasks: Sequence[Task],
        fit_of: Callable[[Task], TargetFit],
        where: str,
        *,
        batch_size: int = 32,
        bucket: bool = False,
        bucket_size: int | None = None,
    ) -> None:
        if batch_size < 1 or (bucket_size is not None and bucket_size < 1):
            raise ValueError("batch_size and bucket_size must be positive")
        self.inputs = inputs
        self.where = where
        self.labels = [json_scalar(v) for v in frame.index]
        self.batch_size = batch_size
        self.bucket = bucket
        self.bucket_size = bucket_size or BUCKET_BATCHES * batch_size
        self.tasks: dict[str, Task] = {}
        self.held: dict[str, Tensor] = {}
        """Sequence-level targets, encoded for every row."""
        self.listed: dict[str, list[Tensor | None]] = {}
        """Sequential targets, one tensor per row (None: not labelled)."""
        self.template: dict[str, Tensor] = {}
        """One labelled row per sequential task: the dtype and trailing shape of its rows."""
        self.aligned: dict[str, bool] = {}
        """Sequential tasks whose rows are as long as their inputs (a tag per token)."""
        fits: dict[str, TargetFit] = {}
        for task in tasks:
            if task.kind_spec.derives_targets:
                continue
            check_columns(frame, task.target_columns, f"task {task.name!r}: target columns",
                          where)  # fmt: skip
            fits[task.name] = fit = fit_of(task)
            if task.kind_spec.sequential:
                if not self._add_sequential(task, frame, fit):
                    continue  # no row labels it: no row shape to give
            else:
                try:
                    self.held[task.name] = task.encode_target(frame, fit)
                except DataError as err:
                    raise DataError(f"{where}: {err}") from None
            self.tasks[task.name] = task
        self._keep_fits(fits)

    def _keep_fits(self, fits: Mapping[str, TargetFit]) -> None:
        """The kept tasks' `TargetFit`s and the regression scales among them."""
        self.target_fits = {name: fits[name] for name in self.tasks}
        self.target_scale = {
            name: scale
            for name, fit in self.target_fits.items()
            if (scale := fit.scale) is not None
        }

    def _add_sequential(self, task: Task, frame: pd.DataFrame, fit: TargetFit) -> bool:
        cells = frame[task.target_columns[0]].tolist()
        rows = read_targets(task, cells, self.inputs, fit, self.where, self.labels)
        labelled = [(i, r) for i, r in enumerate(rows) if r is not None]
        if not labelled:
            return False
        self.listed[task.name] = rows
        self.template[task.name] = labelled[0][1]
        self.aligned[task.name] = aligned(self.inputs, labelled)
        return True

    per_task: ClassVar[tuple[str, ...]] = (
        "held", "listed", "template", "aligned", "target_fits", "target_scale"
    )  # fmt: skip
    """The attributes that hold something per task (`select` keeps its tasks')."""

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.inputs.max_length,)

    @property
    def lengths(self) -> np.ndarray:
        """Each row's input length (tokens or samples)."""
        return self.inputs.lengths

    @property
    def predict_batch(self) -> int:
        """Rows per batch when predicting: about 65 536 tokens, or 2^24 audio samples."""
        budget = 2**16 if self.inputs.modality == "text" else 2**24
        return max(1, budget // max(1, self.inputs.max_length))

    @property
    def target_like(self) -> Mapping[str, Tensor]:
        like = {}
        for name, task in self.tasks.items():
            if name in self.held:
                like[name] = self.held[name][:0]
            else:
                like[name] = task.kind_spec.pad_rows(task, [self.template[name]])[:0]
        return like

    def text_row(self, row: int) -> TextRow:
        """Row `row`'s tokenised input (no tokens for audio)."""
        return self.inputs.text_row(row)

    def labelled_rows(self, task: str) -> int:
        """How many rows label `task` (0 for a task the source has no targets for)."""
        if task in self.held:
            return int(self.tasks[task].mask(self.held[task]).sum())
        return sum(r is not None for r in self.listed.get(task, []))

    def known_targets(self) -> dict[str, Tensor]:
        """The targets of every row, for checks over a whole split: sequence-level ones, and
        sequential ones padded to the longest row (left out when they would be very large)."""
        known = dict(self.held)
        every = list(range(len(self)))
        for name, rows in self.listed.items():
            longest = max((int(r.numel()) for r in rows if r is not None), default=0)
            if len(rows) * max(longest, int(self.lengths.max(initial=0))) <= KNOWN_LIMIT:
                known[name] = self._padded(name, every)
        return known

    def _padded(self, name: str, rows: Sequence[int]) -> Tensor:
        """Task `name`'s targets of `rows`, padded together (`pad_targets`)."""
        return self.pad_targets(name, [self.listed[name][r] for r in rows], self.lengths[rows])

    def pad_targets(
        self, name: str, per_row: Sequence[Tensor | None], lengths: np.ndarray
    ) -> Tensor:
        """Task `name`'s targets of some rows (`per_row`, None where a row does not label it;
        `lengths` the rows' input lengths), padded together by its kind; rows that do not label
        it marked missing over the whole padded width."""
        task, template = self.tasks[name], self.template[name]
        kind: TaskKind = task.kind_spec
        filled, missing = [], []
        for j, target in enumerate(per_row):
            if target is None:
                if self.aligned[name]:
                    shape = (int(lengths[j]), *template.shape[1:])
                    like = template.new_zeros(shape)
                else:
                    like = template[:1]
                target = kind.missing_target(task, like)
                missing.append(j)
            filled.append(target)
        padded = kind.pad_rows(task, filled)
        for j in missing:
            padded[j] = kind.missing_target(task, padded[j])
        return padded

    def rows(self, index: Tensor) -> Batch:
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if len(index) == 0:
            return Batch(self.inputs.empty(), {t: v.clone() for t, v in self.target_like.items()})
        rows = index.tolist()
        x = self.inputs.batch(rows)
        targets = {}
        for name in self.tasks:
            if name in self.held:
                targets[name] = self.held[name][index]
            else:
                targets[name] = self._padded(name, rows)
        return Batch(x, targets)

    def order(self, generator: torch.Generator) -> Tensor | None:
        """One epoch's rows: shuffled, and bucketed by length with `bucket` (module docs)."""
        if not self.bucket:
            return torch.randperm(len(self), generator=generator)
        return bucketed_order(self.lengths, generator, self.batch_size, self.bucket_size)

    def to_memory(self) -> TaskData:
        """Every row in one batch, padded to the longest (audio: every waveform read)."""
        batch = self.rows(torch.arange(len(self)))
        return TaskData(batch.x, batch.targets, dict(self.target_scale))

    def select(self, tasks: Sequence[str], every_row: Sequence[str] = ()) -> DataSource:
        """The same rows with only `tasks`' targets."""
        kept = copy.copy(self)
        kept.tasks = {n: t for n, t in self.tasks.items() if n in tasks}
        for attribute in self.per_task:
            setattr(kept, attribute, {n: v for n, v in getattr(self, attribute).items()
                                      if n in kept.tasks})  # fmt: skip
        return Selected(kept, tasks, every_row)
