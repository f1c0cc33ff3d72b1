"""Readers of the files that hold text and audio rows, each giving one table (rows numbered
from 0 in file order) whose columns the tasks read: CSV, JSON lines, and CoNLL-style token
files (one token per line, sentences separated by blank lines)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from polytask._files import require_file
from polytask.data._tabular import read_csv
from polytask.tasks._columns import DataError

TableFormat = Literal["csv", "jsonl", "conll"]
"""The file formats rows of text (and audio manifests: csv, jsonl) are read from."""

SUFFIXES: dict[str, TableFormat] = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".conll": "conll",
}
"""The format each file suffix implies when the config names none (a `.txt` file needs
`format: conll` said)."""


def format_of(path: str | Path, given: str | None = None) -> TableFormat:
    """`given`, or the format `path`'s suffix implies; a ValueError says how to name it."""
    if given is not None:
        if given not in ("csv", "jsonl", "conll"):
            raise ValueError(f"unknown format {given!r}: choose csv, jsonl or conll")
        return given  # type: ignore[return-value]
    name = Path(path).name.lower()
    for suffix, fmt in SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise ValueError(
        f"cannot tell the format of {path} from its suffix: name it .csv, .jsonl or .conll, "
        "or give format: csv | jsonl | conll"
    )


def json_problem(err: json.JSONDecodeError | UnicodeDecodeError) -> str:
    """What is wrong with a line of JSON, and where ('Invalid control character at column 9':
    json's own message for that one ends in 'at')."""
    if isinstance(err, UnicodeDecodeError):
        return str(err)
    return f"{err.msg.removesuffix(' at')} at column {err.colno}"


def read_jsonl(path: str | Path) -> pd.DataFrame:
    """A JSON lines file (one JSON object per line; blank lines skipped) as a table: one row
    per object, one column per key; a line that is not a JSON object is refused by number."""
    path = require_file(path, "data file", DataError)
    records = []
    try:
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line.rstrip("\r\n"))  # unterminated, not "control"
                except json.JSONDecodeError as err:
                    raise DataError(
                        f"{path}, line {number}: not valid JSON ({json_problem(err)}); each "
                        "line must hold one JSON object"
                    ) from None
                if not isinstance(record, dict):
                    raise DataError(
                        f"{path}, line {number}: a JSON {type(record).__name__}, not an object; "
                        'each line must hold one JSON object, e.g. {"text": "...", "label": 1}'
                    )
                records.append(record)
    except UnicodeDecodeError as err:
        raise DataError(f"cannot read {path} as UTF-8 text: {err}") from None
    if not records:
        raise DataError(f"data file {path} has no rows")
    return pd.DataFrame.from_records(records)


def read_conll(path: str | Path, columns: Sequence[str], tagged: int | None = None) -> pd.DataFrame:
    """A CoNLL-style token file as a table of sentences: one token per line, its fields
    separated by spaces or tabs and named by `columns` (the first: the word), a blank line
    between sentences, `-DOCSTART-` lines skipped. Columns `text` (the words joined by spaces)
    and, for each other column, the list of its tags per sentence. A line with another number
    of fields than `columns` is refused by number; with one column only, each line's first
    field is the word of a line of one field or of `tagged` (predicting on a tagged file)."""
    path = require_file(path, "data file", DataError)
    columns = list(columns)
    if not columns:
        raise ValueError("a CoNLL file needs columns: [words, ...], its fields in order")
    try:
        with open(path, encoding="utf-8") as lines:
            sentences = [conll_sentence(block, columns, path, first, tagged)
                         for first, block in _conll_blocks(lines)]  # fmt: skip
    except UnicodeDecodeError as err:
        raise DataError(f"cannot read {path} as UTF-8 text: {err}") from None
    if not sentences:
        raise DataError(f"data file {path} has no sentences")
    return pd.DataFrame({c: [s[c] for s in sentences] for c in ["text", *columns[1:]]})


def _conll_blocks(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """Each sentence's lines with the number of its first line (blank and -DOCSTART- lines
    end a sentence)."""
    block: list[str] = []
    first = 0
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if block:
                yield first, block
            block = []
            continue
        if not block:
            first = number
        block.append(line)
    if block:
        yield first, block


def conll_sentence(
    lines: Sequence[str],
    columns: Sequence[str],
    path: str | Path,
    first: int,
    tagged: int | None = None,
) -> dict[str, Any]:
    """One CoNLL sentence (its token lines, the first at line `first`) as `text` (the words
    joined by spaces) and, for each other column, its tags; a line with another number of
    fields than `columns` is refused by number (with one column, a line of one field or of
    `tagged`, its first field the word; any number when `tagged` is None)."""
    tokens = []
    for number, line in enumerate(lines, start=first):
        fields = line.split()
        if len(columns) == 1 and tagged is not None and len(fields) not in (1, tagged):
            raise DataError(
                f"{path}, line {number}: {len(fields)} fields ({line.strip()!r}); this model "
                "reads a CoNLL layout, one word per line (or a tagged line of its "
                f"{tagged} training fields) and a blank line between sentences: give a .jsonl "
                "or .csv of texts to predict on whole sentences"
            )
        if len(columns) == 1:
            fields = fields[:1]
        elif len(fields) != len(columns):
            raise DataError(
                f"{path}, line {number}: {len(fields)} fields for the {len(columns)} "
                f"columns {list(columns)} ({line.strip()!r}); give one token per line with "
                "all its fields, or fix columns"
            )
        tokens.append(fields)
    sentence: dict[str, Any] = {"text": " ".join(t[0] for t in tokens)}
    for i, column in enumerate(columns[1:], start=1):
        sentence[column] = [t[i] for t in tokens]
    return sentence


def read_lines(path: str | Path, column: str) -> pd.DataFrame:
    """A plain text file, one row per line (blank lines kept: the text pipeline refuses them
    by row), as a table of one column."""
    path = require_file(path, "data file", DataError)
    try:
        # lines end at a newline only: str.splitlines also splits at U+2028, form feeds and
        # other separators a text may hold, which shifts every later row's prediction
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as err:
        raise DataError(f"cannot read {path} as UTF-8 text: {err}") from None
    while lines and not lines[-1].strip():
        lines.pop()  # a trailing newline is not an empty row
    if not lines:
        raise DataError(f"data file {path} has no rows")
    return pd.DataFrame({column: lines})


def read_table(
    path: str | Path,
    fmt: str | None = None,
    columns: Sequence[str] | None = None,
    text_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """The rows of `path` in format `fmt` (by its suffix when None): CSV (`text_columns` read
    as written, not as numbers), JSON lines, or CoNLL with its `columns`."""
    chosen = format_of(path, fmt)
    if chosen == "csv":
        return read_csv(path, text_columns)
    if chosen == "jsonl":
        return read_jsonl(path)
    if columns is None:
        raise ValueError("a CoNLL file needs columns: [words, ...], its fields in order")
    return read_conll(path, columns)
