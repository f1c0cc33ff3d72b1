"""Data read from sharded Parquet or CSV files on demand, never held in memory whole.

A source indexes its files' row groups (Parquet) or files (CSV) once, from their footers or a
counting pass, and reads a group when a batch needs one of its rows, keeping the last
`cache_groups` groups decoded: memory is bounded by those groups, whatever the data's size.
Rows are addressed by index, so the sampler's shuffled orders work unchanged; `shuffle="blocks"`
draws a cheaper order (shuffled groups, then rows within a buffer of groups) that reads each
group once per epoch. File handles and the cache belong to one process: a data worker opens its
own. pyarrow is an optional dependency (`pip install polytask[parquet]`).
"""

from __future__ import annotations

import glob
import json
import os
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from polytask.data._source import Batch, DataSource
from polytask.data._tabular import TabularPreprocessor
from polytask.tasks._columns import DataError, listed_columns
from polytask.tasks._kinds import IGNORE_INDEX
from polytask.tasks._task import Task

CLASSES_KEY = b"polytask:classes"
"""Parquet schema metadata: JSON {column: [class labels]}, read when `classes` omits a task."""

Chunk = tuple[Tensor, dict[str, Tensor]]


def pyarrow() -> ModuleType:
    """The pyarrow module, or one clear error saying how to install it."""
    try:
        import pyarrow as pa
        import pyarrow.compute
        import pyarrow.csv
        import pyarrow.parquet
    except ImportError:
        raise ImportError(
            "reading Parquet or CSV files in a streaming way needs pyarrow: "
            "pip install polytask[parquet]"
        ) from None
    return pa


SHARD_SUFFIXES = (".parquet", ".pq", ".csv", ".gz")
"""What a folder of shards is read for."""


def expand_files(files: str | Path | Sequence[str | Path]) -> list[Path]:
    """The files named, a glob pattern expanded (sorted); an error names what matched none."""
    given = [files] if isinstance(files, str | Path) else list(files)
    found: list[Path] = []
    for item in given:
        text = str(item)
        if glob.has_magic(text):
            matched = sorted(glob.glob(text, recursive=True))
            if not matched:
                raise DataError(f"no file matches {text!r}")
            found += [Path(m) for m in matched]
        elif Path(text).is_dir():  # a folder of shards
            inside = sorted(p for p in Path(text).iterdir() if p.suffix in SHARD_SUFFIXES)
            if not inside:
                raise DataError(
                    f"{text} is a directory with no .parquet or .csv files: name the files, "
                    f"or a glob such as {str(Path(text) / '*.parquet')!r}"
                )
            found += inside
        elif not Path(text).is_file():
            raise DataError(f"data file {text} not found")
        else:
            found.append(Path(text))
    if not found:
        raise DataError("give at least one data file")
    return found


def _numeric(pa: Any, kind: Any) -> bool:
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind) or pa.types.is_null(kind)
    )  # fmt: skip


class _Encoder:
    """Turns a table of one group into inputs and per-task targets."""

    columns: list[str]
    input_shape: tuple[int, ...]
    target_like: dict[str, Tensor]
    target_scale: dict[str, tuple[float, float]]

    @abstractmethod
    def encode(self, table: Any, first: int = 0) -> Chunk:
        """A group's rows as tensors; `first`: its first row's position in its file (so
        that an error names the file's rows)."""


def _floats(column: Any) -> np.ndarray:
    pc = pyarrow().compute
    values = pc.cast(column, pyarrow().float32(), safe=False).to_numpy()
    return np.require(values, np.float32, "W")  # arrow's buffers are read-only


class _Columns(_Encoder):
    """Feature columns taken as they are (float32, missing: NaN); per task one target column:
    float → regression (missing: NaN), else class labels → indices (missing or unknown:
    −100), over `classes` or the file's metadata; integer columns without classes are indices."""

    def __init__(
        self,
        features: Sequence[str],
        targets: Mapping[str, str],
        classes: Mapping[str, Sequence[Any]],
        target_scale: Mapping[str, tuple[float, float]],
        schema: Any,
    ) -> None:
        pa = pyarrow()
        if not features:
            raise DataError("name at least one feature column")
        self.features, self.targets = list(features), dict(targets)
        self.columns = list(dict.fromkeys([*self.features, *self.targets.values()]))
        missing = [c for c in self.columns if c not in schema.names]
        if missing:
            raise DataError(f"columns {missing} not found in the data; its columns are: "
                            + listed_columns(schema.names))  # fmt: skip
        text = [c for c in self.features if not _numeric(pa, schema.field(c).type)]
        if text:
            raise DataError(
                f"feature columns {text} are not numeric: encode them first, or pass a fitted "
                "TabularPreprocessor (preprocessor=..., tasks=...) that encodes categories"
            )
        stored = json.loads((schema.metadata or {}).get(CLASSES_KEY, b"{}"))
        self.classes: dict[str, list[Any] | None] = {}
        self.target_like = {}
        for task, column in self.targets.items():
            kind = schema.field(column).type
            if pa.types.is_dictionary(kind):
                kind = kind.value_type
            if task in classes or column in stored:
                self.classes[task] = list(classes[task] if task in classes else stored[column])
            elif pa.types.is_floating(kind):
                self.target_like[task] = torch.zeros(0)
                continue
            elif pa.types.is_integer(kind) or pa.types.is_boolean(kind):
                self.classes[task] = None  # already class indices
            else:
                raise DataError(
                    f"task {task!r}: column {column!r} holds labels ({kind}); give its classes "
                    f"(classes={{{task!r}: [...]}}) or store them in the files' metadata under "
                    f"{CLASSES_KEY.decode()}"
                )
            self.target_like[task] = torch.zeros(0, dtype=torch.long)
        self.input_shape = (len(self.features),)
        self.target_scale = {t: s for t, s in target_scale.items() if t in self.targets}

    def _indices(self, task: str, column: Any) -> np.ndarray:
        pa = pyarrow()
        pc = pa.compute
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        classes = self.classes[task]
        if classes is None:
            index = column.cast(pa.int64())
        else:
            try:
                values = pa.array(classes).cast(column.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                column, values = column.cast(pa.string()), pa.array([str(c) for c in classes])
            index = pc.index_in(column, value_set=values)
        return np.require(pc.fill_null(index, IGNORE_INDEX).to_numpy(), np.int64, "W")

    def encode(self, table: Any, first: int = 0) -> Chunk:
        x = np.stack([_floats(table.column(c)) for c in self.features], axis=1)
        targets = {}
        for task, column in self.targets.items():
            values = table.column(column)
            if self.target_like[task].is_floating_point():
                targets[task] = torch.from_numpy(_floats(values))
            else:
                targets[task] = torch.from_numpy(self._indices(task, values))
        return torch.from_numpy(x), targets


class _Preprocessed(_Encoder):
    """Rows encoded by a fitted `TabularPreprocessor`, as `TabularPreprocessor.transform`
    encodes an in-memory table (same inputs, same targets)."""

    def __init__(self, preprocessor: TabularPreprocessor, tasks: Sequence[Task]) -> None:
        self.preprocessor, self.tasks = preprocessor, list(tasks)
        targets = [c for t in self.tasks for c in t.target_columns]
        self.columns = list(dict.fromkeys([*preprocessor.numeric, *preprocessor.categorical,
                                           *targets]))  # fmt: skip
        self.input_shape = (preprocessor.in_dim,)
        self.target_like = {}  # from the first group read (the kinds settle dtype and shape)
        scale = preprocessor.target_scale
        self.target_scale = {t.name: scale[t.name] for t in self.tasks if t.name in scale}

    def encode(self, table: Any, first: int = 0) -> Chunk:
        frame = table.to_pandas()
        frame.index = pd.RangeIndex(first, first + len(frame))
        data = self.preprocessor.transform(frame, self.tasks)
        return data.x, dict(data.targets)


class FileSource(DataSource):
    """Rows of sharded files, read one group at a time on demand (see the module docs)."""

    def __init__(
        self,
        files: str | Path | Sequence[str | Path],
        features: Sequence[str] = (),
        targets: Mapping[str, str] | None = None,
        *,
        classes: Mapping[str, Sequence[Any]] | None = None,
        target_scale: Mapping[str, tuple[float, float]] | None = None,
        preprocessor: TabularPreprocessor | None = None,
        tasks: Sequence[Task] = (),
        shuffle: Literal["rows", "blocks"] = "rows",
        block_groups: int = 4,
        cache_groups: int = 8,
    ) -> None:
        pyarrow()
        if shuffle not in ("rows", "blocks"):
            raise ValueError(f"shuffle must be 'rows' or 'blocks', not {shuffle!r}")
        if block_groups < 1 or cache_groups < 1:
            raise ValueError("block_groups and cache_groups must be at least 1")
        if shuffle == "blocks" and cache_groups < block_groups:
            raise ValueError(
                f"cache_groups ({cache_groups}) must hold a whole block of block_groups "
                f"({block_groups}) groups, or block shuffling reads groups more than once"
            )
        self.files = expand_files(files)
        self.shuffle, self.block_groups, self.cache_groups = shuffle, block_groups, cache_groups
        self._handles: OrderedDict[int, Any] = OrderedDict()
        self._cache: OrderedDict[int, Chunk] = OrderedDict()
        self._pid = os.getpid()
        self.groups = self._index()
        """(file, group within the file, rows) per group, in the order the rows are numbered."""
        sizes = torch.tensor([rows for _, _, rows in self.groups], dtype=torch.long)
        self.starts = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
        self.encoder: _Encoder
        if preprocessor is not None:
            if features or targets:
                raise ValueError("give either features and targets, or a preprocessor and tasks")
            self.encoder = _Preprocessed(preprocessor, tasks)
            self.encoder.target_like = {t: v[:0] for t, v in self._group(0)[1].items()}
        else:
            if targets is None:
                raise ValueError("give the target column of each task (targets={task: column})")
            self.encoder = _Columns(
                features, targets, classes or {}, target_scale or {}, self._schema()
            )
        self.target_scale = self.encoder.target_scale

    @abstractmethod
    def _index(self) -> list[tuple[int, int, int]]:
        """Each group's (file, group within the file, rows)."""

    @abstractmethod
    def _schema(self) -> Any:
        """The first file's columns (a pyarrow schema)."""

    @abstractmethod
    def _read(self, group: int, columns: list[str]) -> Any:
        """One group's `columns` as a pyarrow table."""

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.encoder.input_shape

    @property
    def target_like(self) -> Mapping[str, Tensor]:
        return self.encoder.target_like

    def _handle(self, file: int, opener: Any) -> Any:
        """The open handle of `file` (at most 64 kept open)."""
        if file not in self._handles:
            self._handles[file] = opener(self.files[file])
            while len(self._handles) > 64:
                self._handles.popitem(last=False)
        self._handles.move_to_end(file)
        return self._handles[file]

    def _own_process(self) -> None:
        if self._pid != os.getpid():  # a forked data worker: its own handles and cache
            self._handles, self._cache, self._pid = OrderedDict(), OrderedDict(), os.getpid()

    def _group(self, group: int) -> Chunk:
        """One group's rows, decoded (from the cache, or read and kept in it)."""
        self._own_process()
        if group in self._cache:
            self._cache.move_to_end(group)
            return self._cache[group]
        table = self._read(group, self.encoder.columns)
        file, _, rows = self.groups[group]
        if table.num_rows != rows:
            raise DataError(f"{self.files[file]} changed while being read: reopen the source")
        before = sum(n for f, _, n in self.groups[:group] if f == file)
        try:
            chunk = self.encoder.encode(table, before)
        except DataError as err:
            raise DataError(f"{self.files[file]}: {err}") from None
        self._cache[group] = chunk
        while len(self._cache) > self.cache_groups:
            self._cache.popitem(last=False)
        return chunk

    def rows(self, index: Tensor) -> Batch:
        index = torch.as_tensor(index, dtype=torch.long)
        group = torch.searchsorted(self.starts, index, right=True) - 1
        x = torch.empty(len(index), *self.input_shape)
        targets = {
            t: torch.empty((len(index), *v.shape[1:]), dtype=v.dtype)
            for t, v in self.target_like.items()
        }
        self._own_process()
        needed = torch.unique(group).tolist()  # cached groups first: a read evicts none needed
        for g in sorted(needed, key=lambda g: g not in self._cache):
            where = (group == g).nonzero().squeeze(1)
            local = index[where] - self.starts[g]
            gx, gtargets = self._group(g)
            x[where] = gx[local]
            for t, v in targets.items():
                v[where] = gtargets[t][local]
        return Batch(x, targets)

    def order(self, generator: torch.Generator) -> Tensor:
        """Shuffled rows, or with `shuffle="blocks"`: groups shuffled, then taken
        `block_groups` at a time with their rows shuffled together."""
        if self.shuffle == "rows":
            return torch.randperm(len(self), generator=generator)
        parts = []
        groups = torch.randperm(len(self.groups), generator=generator).tolist()
        for i in range(0, len(groups), self.block_groups):
            block = groups[i : i + self.block_groups]
            rows = torch.cat([torch.arange(int(self.starts[g]), int(self.starts[g + 1]))
                              for g in block])  # fmt: skip
            parts.append(rows[torch.randperm(len(rows), generator=generator)])
        return torch.cat(parts)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without open handles or cached groups (a worker opens its own)."""
        state = dict(self.__dict__)
        state["_handles"], state["_cache"] = OrderedDict(), OrderedDict()
        return state


class ParquetSource(FileSource):
    """Rows of Parquet files (a list, or a glob pattern), read one row group at a time.

    Either `features` (numeric columns, taken as they are) and `targets` (task → column: a
    float column is a regression target, missing: NaN; labels map to indices over
    `classes[task]` or the files' `polytask:classes` metadata, missing or unknown: −100; an
    integer column without classes holds indices), or a fitted `preprocessor` and its
    `tasks` (encoded exactly as `TabularPreprocessor.transform` encodes a table in memory).
    `shuffle="blocks"` trades randomness for reading each row group once per epoch; memory
    holds at most `cache_groups` decoded row groups."""

    def _index(self) -> list[tuple[int, int, int]]:
        pq = pyarrow().parquet
        groups = []
        for i, path in enumerate(self.files):
            try:
                meta = pq.ParquetFile(path).metadata
            except (OSError, pyarrow().ArrowInvalid) as err:
                raise DataError(f"cannot read {path} as Parquet: {err}") from None
            groups += [(i, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
        groups = [g for g in groups if g[2] > 0]
        if not groups:
            raise DataError(f"the Parquet files {[str(f) for f in self.files[:5]]} have no rows")
        return groups

    def _schema(self) -> Any:
        return pyarrow().parquet.read_schema(self.files[0])

    def _read(self, group: int, columns: list[str]) -> Any:
        file, within, _ = self.groups[group]
        handle = self._handle(file, pyarrow().parquet.ParquetFile)
        return handle.read_row_group(within, columns=columns)


PANDAS_NULLS = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
]  # fmt: skip
"""The cells pandas' read_csv reads as missing by default (pyarrow's list lacks the last
two words)."""


class CsvSource(FileSource):
    """Rows of CSV files (a list, or a glob pattern; .csv or .csv.gz), each file one group:
    read whole when a batch needs one of its rows, so keep files modest (shards of up to a
    few hundred thousand rows) or convert to Parquet. Rows are counted in one streaming pass
    when the source is made. Arguments as for `ParquetSource` (classes from `classes` only)."""

    def _index(self) -> list[tuple[int, int, int]]:
        pv = pyarrow().csv
        groups = []
        for i, path in enumerate(self.files):
            try:
                reader = pv.open_csv(path, parse_options=pv.ParseOptions(newlines_in_values=True))
                first = reader.schema.names[0]
                reader = pv.open_csv(
                    path,
                    parse_options=pv.ParseOptions(newlines_in_values=True),
                    convert_options=pv.ConvertOptions(
                        include_columns=[first], column_types={first: pyarrow().string()}
                    ),
                )
                rows = sum(batch.num_rows for batch in reader)
            except (OSError, pyarrow().ArrowInvalid) as err:
                raise DataError(f"cannot read {path} as CSV: {err}") from None
            if rows:
                groups.append((i, 0, rows))
        if not groups:
            raise DataError(f"the CSV files {[str(f) for f in self.files[:5]]} have no rows")
        return groups

    def _schema(self) -> Any:
        return self._read(0, None).schema

    def _read(self, group: int, columns: list[str] | None) -> Any:
        """Columns of one file as pandas reads them: dates and times kept as written (pyarrow
        would parse "09:00" as a time and write it back "09:00:00", a category unseen), a
        blank text cell missing (pyarrow: "") and pandas' missing words too ("None", "<NA>",
        which pyarrow reads as text, failing a numeric column)."""
        pa = pyarrow()
        path = self.files[self.groups[group][0]]

        def read(types: dict[str, Any]) -> Any:
            convert = pa.csv.ConvertOptions(
                include_columns=columns or [],
                column_types=types,
                strings_can_be_null=True,
                null_values=PANDAS_NULLS,
            )
            parse = pa.csv.ParseOptions(newlines_in_values=True)
            try:
                return pa.csv.read_csv(path, parse_options=parse, convert_options=convert)
            except (OSError, pa.ArrowInvalid) as err:
                raise DataError(f"cannot read {path} as CSV: {err}") from None

        table = read({})
        temporal = {f.name: pa.string() for f in table.schema if pa.types.is_temporal(f.type)}
        return read(temporal) if temporal else table
