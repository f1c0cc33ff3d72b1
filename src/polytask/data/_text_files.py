"""Text files read from disk a few rows at a time (`data.text.stream`): a `TextFile` indexes
the byte range of each row (a CSV record, a JSON line, a CoNLL sentence) in one pass and reads
any rows back as a table, so that neither the texts nor their token ids are held in memory.

`Rows` is what fitting and the text sources read: some rows of a table, by chunks, a column at
a time, or as a table of a few columns; `FrameRows` serves rows already in memory (a
DataFrame) and `FileRows` rows of a `TextFile`, so the two paths share one fitting code.
Rows are labelled by their number in the file (from 0), as `read_table` labels them.
"""

from __future__ import annotations

import functools
import io
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polytask._files import require_file
from polytask.data._readers import TableFormat, conll_sentence, format_of, json_problem
from polytask.tasks._columns import DataError, json_scalar

CHUNK_ROWS = 4096
"""Rows read together by the passes over a whole file (fitting, checking, lengths)."""


class TextFile(ABC):
    """The rows of one text data file: `starts` / `ends` (byte offsets of each row) and
    `lines` (the line each starts on, for messages), found in one pass when made."""

    def __init__(self, path: str | Path) -> None:
        self.path = require_file(path, "data file", DataError)
        starts: list[int] = []
        ends: list[int] = []
        lines: list[int] = []
        try:
            with open(self.path, "rb") as raw:
                self._index(raw, starts, ends, lines)
        except OSError as err:
            raise DataError(f"cannot read {self.path}: {err}") from None
        if not starts:
            raise DataError(f"data file {self.path} has no rows")
        self.starts = np.asarray(starts, dtype=np.int64)
        self.ends = np.asarray(ends, dtype=np.int64)
        self.lines = np.asarray(lines, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    @abstractmethod
    def _index(self, raw: io.BufferedReader, starts: list[int], ends: list[int],
               lines: list[int]) -> None:  # fmt: skip
        """Append each row's byte range and first line number."""

    @abstractmethod
    def _table(self, blocks: list[bytes], rows: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
        """The rows whose bytes are `blocks` as a table of `columns` (index: `rows`)."""

    @property
    @abstractmethod
    def columns(self) -> list[str]:
        """The columns of the rows (a JSON lines file's: every key some row has)."""

    def read(self, rows: Sequence[int] | np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
        """`rows` (numbers in the file) as a table of `columns`, in the order given."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return pd.DataFrame({c: [] for c in columns}, index=pd.Index([], dtype=np.int64))
        order = np.argsort(rows, kind="stable")
        blocks: list[bytes] = [b""] * len(rows)
        try:
            with open(self.path, "rb") as raw:
                for j in order:
                    row = int(rows[j])
                    raw.seek(int(self.starts[row]))
                    blocks[j] = raw.read(int(self.ends[row] - self.starts[row]))
        except OSError as err:
            raise DataError(f"cannot read {self.path}: {err}") from None
        return self._table(blocks, rows, columns)

    def where(self, row: int) -> str:
        """`path, line N`: where row `row` starts, for messages."""
        return f"{self.path}, line {int(self.lines[row])}"


class JsonLinesFile(TextFile):
    """A JSON lines file: one row per non-blank line, each a JSON object."""

    def _index(self, raw: io.BufferedReader, starts: list[int], ends: list[int],
               lines: list[int]) -> None:  # fmt: skip
        at = 0
        for number, line in enumerate(raw, start=1):
            if line.strip():
                starts.append(at)
                ends.append(at + len(line))
                lines.append(number)
            at += len(line)

    @functools.cached_property
    def columns(self) -> list[str]:
        keys: dict[str, None] = {}
        with open(self.path, "rb") as raw:
            for line in raw:  # one pass, the keys only kept
                try:
                    record = json.loads(line) if line.strip() else {}
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue  # refused with its line number when its row is read
                if isinstance(record, dict):
                    keys.update(dict.fromkeys(map(str, record)))
        return list(keys)

    def _table(self, blocks: list[bytes], rows: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
        records = []
        for block, row in zip(blocks, rows, strict=True):
            try:
                record = json.loads(block.rstrip(b"\r\n"))  # unterminated, not "control"
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise DataError(
                    f"{self.where(int(row))}: not valid JSON ({json_problem(err)}); each line "
                    "must hold one JSON object"
                ) from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{self.where(int(row))}: a JSON {type(record).__name__}, not an object; "
                    'each line must hold one JSON object, e.g. {"text": "...", "label": 1}'
                )
            records.append({c: record.get(c) for c in columns})
        return pd.DataFrame.from_records(records, columns=list(columns), index=rows)


class CsvFile(TextFile):
    """A CSV file: a header, then one row per record (a record may span lines inside quotes:
    it ends at the first line end after an even number of quote characters)."""

    def _index(self, raw: io.BufferedReader, starts: list[int], ends: list[int],
               lines: list[int]) -> None:  # fmt: skip
        at, quotes, start, first = 0, 0, 0, 1
        header: bytes | None = None
        for number, line in enumerate(raw, start=1):
            if quotes == 0:
                start, first = at, number
            at += len(line)
            quotes = (quotes + line.count(b'"')) % 2
            if quotes:
                continue
            if header is None:
                if line.strip():  # pandas skips blank lines before the header too
                    header = line
            elif line.strip():
                starts.append(start)
                ends.append(at)
                lines.append(first)
        if header is None:
            raise DataError(f"cannot read {self.path} as CSV: it is empty")
        self.header = header if header.endswith(b"\n") else header + b"\n"
        counted = len(self.whole(self.columns[:1]))
        if counted != len(starts):
            raise DataError(
                f"{self.path}: its records cannot be found line by line for streaming (pandas "
                f"reads {counted} rows, the line index {len(starts)}: a quote inside an "
                "unquoted field, or lines ended by a bare carriage return?): convert it to "
                "JSON lines, or set text.stream: false"
            )

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in pd.read_csv(io.BytesIO(self.header), nrows=0).columns]

    def _table(self, blocks: list[bytes], rows: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
        body = b"".join(b if b.endswith(b"\n") else b + b"\n" for b in blocks)
        try:
            table = pd.read_csv(io.BytesIO(self.header + body), usecols=list(columns), dtype=str)
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
            raise DataError(f"cannot read {self.path} as CSV: {err}") from None
        if len(table) != len(rows):
            raise DataError(f"cannot read {self.path} as CSV: rows near {self.where(int(rows[0]))} "
                            "are malformed")  # fmt: skip
        table.index = pd.Index(rows)
        return table[list(columns)]

    def whole(self, columns: Sequence[str]) -> pd.DataFrame:
        """`columns` of every row, their types inferred over the whole file (as `read_csv`)."""
        try:
            table = pd.read_csv(self.path, usecols=list(columns))
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as err:
            raise DataError(f"cannot read {self.path} as CSV: {err}") from None
        return table


class ConllFile(TextFile):
    """A CoNLL token file (see `read_conll`): one row per sentence."""

    def __init__(self, path: str | Path, fields: Sequence[str]) -> None:
        self.fields = list(fields)
        super().__init__(path)

    def _index(self, raw: io.BufferedReader, starts: list[int], ends: list[int],
               lines: list[int]) -> None:  # fmt: skip
        at, start, first, open_ = 0, 0, 0, False
        for number, line in enumerate(raw, start=1):
            words = line.decode("utf-8", errors="replace").split()  # as read_conll splits
            if not words or words[0] == "-DOCSTART-":
                if open_:
                    starts.append(start)
                    ends.append(at)
                    lines.append(first)
                    open_ = False
            elif not open_:
                start, first, open_ = at, number, True
            at += len(line)
        if open_:
            starts.append(start)
            ends.append(at)
            lines.append(first)

    @property
    def columns(self) -> list[str]:
        return ["text", *self.fields[1:]]

    def _table(self, blocks: list[bytes], rows: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
        cells: dict[str, list[Any]] = {c: [] for c in columns}
        for block, row in zip(blocks, rows, strict=True):
            try:
                text = block.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"cannot read {self.path} as UTF-8 text: {err}") from None
            lines = [line for line in text.split("\n") if line.strip()]
            sentence = conll_sentence(lines, self.fields, self.path,
                                      int(self.lines[int(row)]))  # fmt: skip
            for c in columns:
                cells[c].append(sentence[c])
        return pd.DataFrame(cells, index=rows)


def text_file(path: str | Path, fmt: str | None = None,
              columns: Sequence[str] | None = None) -> TextFile:  # fmt: skip
    """`path` indexed by row: CSV, JSON lines, or CoNLL with its `columns`."""
    chosen: TableFormat = format_of(path, fmt)
    if chosen == "csv":
        return CsvFile(path)
    if chosen == "jsonl":
        return JsonLinesFile(path)
    if columns is None:
        raise ValueError("a CoNLL file needs columns: [words, ...], its fields in order")
    return ConllFile(path, columns)


class Rows(ABC):
    """Some rows of a table, read as fitting and the text sources need them."""

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    @abstractmethod
    def labels(self) -> list[Any]:
        """Each row's label in messages (its number in the file)."""

    @property
    @abstractmethod
    def column_names(self) -> list[str]: ...

    @abstractmethod
    def chunks(self, columns: Sequence[str], size: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        """The rows, `size` at a time, as tables of `columns` (index: the rows' labels)."""

    @abstractmethod
    def table(self, columns: Sequence[str]) -> pd.DataFrame:
        """Every row as one table of `columns` (for columns of labels and values)."""

    def column(self, name: str) -> list[Any]:
        """One column's cells of every row, read a chunk at a time."""
        return [c for chunk in self.chunks([name]) for c in chunk[name].tolist()]


class FrameRows(Rows):
    """Rows held in memory: a DataFrame."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def labels(self) -> list[Any]:
        return [json_scalar(v) for v in self.frame.index]

    @property
    def column_names(self) -> list[str]:
        return [str(c) for c in self.frame.columns]

    def chunks(self, columns: Sequence[str], size: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        yield self.frame[list(columns)]

    def table(self, columns: Sequence[str]) -> pd.DataFrame:
        return self.frame[list(columns)]

    def column(self, name: str) -> list[Any]:
        return list(self.frame[name].tolist())


class FileRows(Rows):
    """Rows `rows` of a `TextFile`, read from disk when asked for."""

    def __init__(self, file: TextFile, rows: Sequence[int] | np.ndarray) -> None:
        self.file = file
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> list[Any]:
        return [int(r) for r in self.rows]

    @property
    def column_names(self) -> list[str]:
        return self.file.columns

    def chunks(self, columns: Sequence[str], size: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        for start in range(0, len(self.rows), size):
            yield self.file.read(self.rows[start : start + size], columns)

    def read(self, positions: Sequence[int], columns: Sequence[str]) -> pd.DataFrame:
        """The rows at `positions` (0 to len - 1) of these rows, as a table of `columns`."""
        return self.file.read(self.rows[np.asarray(positions, dtype=np.int64)], columns)

    def table(self, columns: Sequence[str]) -> pd.DataFrame:
        if isinstance(self.file, CsvFile):  # types inferred over the whole column, as in memory
            whole = self.file.whole(columns)
            return whole.iloc[self.rows].set_axis(pd.Index(self.rows))
        return pd.concat(list(self.chunks(columns))) if len(self.rows) else \
            self.file.read(self.rows, columns)  # fmt: skip
