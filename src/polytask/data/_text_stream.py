"""Text rows streamed from disk (`data.text.stream`): `StreamedTextSource` reads and
tokenises the rows of each batch when the batch is asked for, so that memory holds per row
only its byte range in the file, its token count (for length buckets) and its sequence-level
targets (a label or value), never the texts, token ids or per-token targets.

When made, the source checks every row in one pass a chunk at a time (an empty text, a text
over `max_length` with `too_long: refuse`, a bad tag list or target: one message naming the
file and row, as in memory) and keeps each row's token count; training batches are bucketed
by those counts over windows of rows as in memory (`bucketed_order`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from polytask.data._sequences import (
    BUCKET_BATCHES,
    SequenceInputs,
    SequenceSource,
    aligned,
    read_targets,
    report_too_long,
)
from polytask.data._source import Batch
from polytask.data._text_files import FileRows
from polytask.tasks._columns import DataError
from polytask.tasks._kinds import TextRow
from polytask.tasks._task import Task

if TYPE_CHECKING:
    from polytask.data._text import TextEncoding, TextInputs


class StreamedTextInputs(SequenceInputs):
    """The inputs of rows of a text file, read and tokenised a batch at a time (the last
    batch kept, so that its rows' `text_row` reads nothing again)."""

    modality = "text"

    def __init__(
        self, encoding: TextEncoding, rows: FileRows, lengths: np.ndarray, columns: Sequence[str]
    ) -> None:
        self.encoding = encoding
        self.file_rows = rows
        self.lengths = lengths
        self.max_length = encoding.max_length
        self.columns = list(columns)
        self._last: tuple[list[int], TextInputs, Any] | None = None

    def read(self, rows: Sequence[int]) -> tuple[TextInputs, Any]:
        """Rows `rows` tokenised, and their table (the text and sequential target columns)."""
        from polytask.data._text import frame_texts

        rows = [int(r) for r in rows]
        if self._last is not None and self._last[0] == rows:
            return self._last[1], self._last[2]
        frame = self.file_rows.read(rows, self.columns)
        inputs = self.encoding.encode(frame_texts(frame, self.encoding.text_column, self.where))
        self._last = (rows, inputs, frame)
        return inputs, frame

    @property
    def where(self) -> str:
        return str(self.file_rows.file.path)

    def batch(self, rows: Sequence[int]) -> Tensor:
        inputs, _ = self.read(rows)
        return inputs.batch(list(range(len(rows))))

    def empty(self) -> Tensor:
        return torch.zeros((0, 1), dtype=torch.long)

    def text_row(self, row: int) -> TextRow:
        if self._last is not None and row in self._last[0]:
            return self._last[1].text_row(self._last[0].index(row))
        return self.read([row])[0].text_row(0)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_last": None}  # a worker process reads its own batches


class StreamedTextSource(SequenceSource):
    """The rows `rows` of a text file with `tasks`' targets, read from disk per batch (module
    docs); the same interface and training order as an in-memory `SequenceSource`."""

    per_task: ClassVar[tuple[str, ...]] = (*SequenceSource.per_task, "counts")

    def __init__(
        self,
        encoding: TextEncoding,
        rows: FileRows,
        tasks: Sequence[Task],
        where: str,
        *,
        batch_size: int = 32,
        bucket: bool = False,
        bucket_size: int | None = None,
        split: str | None = None,
    ) -> None:
        from polytask.data._text import frame_texts

        if batch_size < 1 or (bucket_size is not None and bucket_size < 1):
            raise ValueError("batch_size and bucket_size must be positive")
        self.where = where
        self.labels = rows.labels
        self.batch_size, self.bucket = batch_size, bucket
        self.bucket_size = bucket_size or BUCKET_BATCHES * batch_size
        self.tasks: dict[str, Task] = {}
        self.held: dict[str, Tensor] = {}
        self.listed: dict[str, list[Tensor | None]] = {}  # none: read per batch
        self.template: dict[str, Tensor] = {}
        self.aligned: dict[str, bool] = {}
        self.counts: dict[str, int] = {}
        """How many rows label each sequential task."""
        wanted = [t for t in tasks if not t.kind_spec.derives_targets]
        fits = {t.name: encoding.target_fit(t) for t in wanted}
        sequential = [t for t in wanted if t.kind_spec.sequential]
        held = [t for t in wanted if not t.kind_spec.sequential]
        columns = list(dict.fromkeys(
            [encoding.text_column, *(t.target_columns[0] for t in sequential)]
        ))  # fmt: skip
        if held:
            needed = [c for t in held for c in (*t.target_columns, *(t.where or {}))]
            table = rows.table(list(dict.fromkeys(needed)))
            for task in held:
                try:
                    encoded = task.encode_target(table, fits[task.name])
                except DataError as err:
                    raise DataError(f"{where}: {err}") from None
                self.held[task.name] = encoded
        lengths, full = [], []
        flags = {t.name: True for t in sequential}
        counts = dict.fromkeys(flags, 0)
        for chunk in rows.chunks(columns):
            inputs = encoding.encode(frame_texts(chunk, encoding.text_column, where))
            lengths.append(inputs.lengths)
            full.append(inputs.full_lengths)
            labels = list(chunk.index)
            for task in sequential:
                cells = chunk[task.target_columns[0]].tolist()
                got = read_targets(task, cells, inputs, fits[task.name], where, labels)
                labelled = [(i, r) for i, r in enumerate(got) if r is not None]
                counts[task.name] += len(labelled)
                flags[task.name] &= aligned(inputs, labelled)
                if labelled and task.name not in self.template:
                    self.template[task.name] = labelled[0][1]
        self.inputs = StreamedTextInputs(
            encoding, rows, np.concatenate(lengths) if lengths else np.zeros(0, np.int64), columns
        )
        report_too_long(
            where, self.labels, np.concatenate(full) if full else np.zeros(0, np.int64),
            encoding.max_length, encoding.too_long, "tokens",
            "shorten the text, or train with a larger data.text.max_length", split,
            tasks=wanted,
        )  # fmt: skip
        for task in wanted:
            if task.kind_spec.sequential:
                if not counts[task.name]:
                    continue  # no row labels it: no row shape to give
                self.counts[task.name] = counts[task.name]
                self.aligned[task.name] = flags[task.name]
            self.tasks[task.name] = task
        self._keep_fits(fits)

    def labelled_rows(self, task: str) -> int:
        if task in self.held:
            return super().labelled_rows(task)
        return self.counts.get(task, 0)

    def known_targets(self) -> dict[str, Tensor]:
        """The sequence-level targets (sequential ones are never all read at once)."""
        return dict(self.held)

    def rows(self, index: Tensor) -> Batch:
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if len(index) == 0:
            return Batch(self.inputs.empty(), {t: v.clone() for t, v in self.target_like.items()})
        rows = index.tolist()
        assert isinstance(self.inputs, StreamedTextInputs)
        inputs, frame = self.inputs.read(rows)
        x = inputs.batch(list(range(len(rows))))
        targets = {}
        for name, task in self.tasks.items():
            if name in self.held:
                targets[name] = self.held[name][index]
                continue
            cells = frame[task.target_columns[0]].tolist()
            fit = self.target_fits[name]
            got = read_targets(task, cells, inputs, fit, self.where, list(frame.index))
            targets[name] = self.pad_targets(name, got, inputs.lengths)
        return Batch(x, targets)
