"""From the config's files (or the built-in generator) to split, encoded data."""

from __future__ import annotations

import difflib
import hashlib
import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from polytask._files import require_file
from polytask.app._config import (
    AudioConfig,
    DataConfig,
    ImagesConfig,
    RunConfig,
    SourceConfig,
    SplitConfig,
    TextConfig,
    TokenizerFile,
)
from polytask.app._encoding import Encoding
from polytask.data._audio import AudioEncoding
from polytask.data._builtin import builtin_data, builtin_features
from polytask.data._images import ImageEncoding, ImageSource, check_images, image_folder_frame
from polytask.data._molecules import MoleculeEncoding
from polytask.data._readers import read_table
from polytask.data._sequences import SequenceSource
from polytask.data._source import DataSource
from polytask.data._split import (
    Split,
    random_split,
    split_by_group,
    split_from_file,
    split_within,
)
from polytask.data._tabular import DataError, TabularPreprocessor, read_csv
from polytask.data._tensors import TaskData
from polytask.data._text import TextEncoding, load_tokenizer
from polytask.data._text_files import FileRows, TextFile, text_file
from polytask.models.encoders._molecule import MAX_ATOMIC_NUMBER
from polytask.tasks._columns import DataWarning, listed_columns, row_labels
from polytask.tasks._from_column import task_family
from polytask.tasks._kinds._base import TaskKind
from polytask.tasks._task import Task


def load_frame(config: RunConfig) -> pd.DataFrame:
    """The raw rows the config names."""
    data = config.data
    if data.images is not None:
        return image_frame(data.images)[0]
    if data.text is not None:
        return text_frame(data.text, config.tasks)
    if data.audio is not None:
        return audio_frame(data.audio, config.tasks)[0]
    if data.molecules is not None:
        return read_csv(data.molecules.path)
    if data.builtin is not None:
        make = builtin_data(data.builtin).make
        try:
            return make(**data.options)
        except TypeError as err:
            raise DataError(_bad_options(make, data.options, err)) from None
    assert data.path is not None
    return read_csv(data.path)


def task_column_frame(data: DataConfig, columns: list[str]) -> tuple[pd.DataFrame, str]:
    """The `columns` of the rows `data` names (for making tasks from a column), and the
    data's name for messages."""
    if data.path is not None:
        path = require_file(data.path, "data file", DataError)
        try:
            header = pd.read_csv(path, nrows=0).columns
            if any(c not in header for c in columns):  # the tasks' check names what is wrong
                return pd.DataFrame(columns=header), str(path)
            frame = pd.read_csv(path, usecols=columns)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise DataError(f"cannot read {path} as CSV: {err}") from None
        return frame, str(path)
    if data.builtin is not None:
        make = builtin_data(data.builtin).make
        try:
            return make(**data.options), f"builtin {data.builtin}"
        except TypeError as err:
            raise DataError(_bad_options(make, data.options, err)) from None
    if data.images is not None:
        return image_frame(data.images)[0], data.images.location
    if data.text is not None and not data.text.stream:
        return text_frame(data.text), data.text.path
    if data.audio is not None:
        return audio_frame(data.audio)[0], data.audio.manifest
    if data.molecules is not None:
        return read_csv(data.molecules.path), data.molecules.path
    raise DataError(
        "tasks from a column need one table of rows (data.path, builtin, images, text or "
        "audio, not several sources or a streamed text file): list the tasks instead"
    )


def _bad_options(make: Callable[..., Any], options: dict[str, Any], err: TypeError) -> str:
    """data.options that the generator does not take: which, the nearest, the allowed ones."""
    allowed = list(inspect.signature(make).parameters)
    unknown = [k for k in options if k not in allowed]
    if not unknown:
        return f"data.options: {err}".replace(f"{make.__name__}() ", "")
    close = difflib.get_close_matches(unknown[0], allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"data.options: unknown option {unknown[0]!r}{hint}; allowed: {', '.join(allowed)}"


def feature_columns(config: RunConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if config.data.features is None:  # built-in data set
        assert config.data.builtin is not None
        return builtin_features(config.data.builtin, config.data.options)
    return config.data.features.numeric, config.data.features.categorical


def log_columns(config: RunConfig) -> tuple[str, ...]:
    """The numeric feature columns read as their logarithm (`data.features.log`)."""
    return config.data.features.log if config.data.features is not None else ()


def make_split(
    config: RunConfig | SplitConfig,
    n: int,
    source: str | None = None,
    frame: pd.DataFrame | None = None,
) -> Split:
    """The rows of each part; a part left without rows is refused (`source`: the file the rows
    come from, for the message). With `split.within`, the rows of `frame` are split within
    each value of that column; with `split.by`, each value's rows go whole to one part."""
    s = config.data.split if isinstance(config, RunConfig) else config
    if source is None and isinstance(config, RunConfig):
        source = data_location(config)
    groups = None
    column = s.within or s.by
    if column is not None:
        which = "within" if s.within else "by"
        if frame is None or column not in frame.columns:
            names = [] if frame is None else [str(c) for c in frame.columns]
            close = difflib.get_close_matches(column, names, n=1) or [
                c for c in names if c.lower() == column.lower()
            ]
            shown = (f" (did you mean {close[0]!r}?)" if close else "") + (
                "; its columns are: " + listed_columns(names) if names else ""
            )
            raise DataError(f"data {source}: split.{which} column {column!r} not found{shown}")
        blank = frame[column].isna().to_numpy()
        if s.by is not None and blank.any():  # a row of no group cannot go whole anywhere
            rows = ", ".join(map(str, np.flatnonzero(blank)[:5].tolist()))
            raise DataError(
                f"data {source}: split.{which} column {column!r} is blank on "
                f"{int(blank.sum())} row(s) (rows {rows}{', ...' if blank.sum() > 5 else ''}): "
                "give every row its group, or drop those rows"
            )
        groups = frame[column].to_numpy()
        if s.within is not None and isinstance(config, RunConfig):
            groups = labelled_groups(config, frame, groups)
    try:
        if s.file is not None:
            require_file(s.file, "split file", DataError)
            if s.by is not None:  # the file's parts; validation carved as whole groups
                return split_from_file(s.file, n, s.val_fraction, s.seed, whole=groups)
            return split_from_file(s.file, n, s.val_fraction, s.seed, groups)
        if s.by is not None:
            assert groups is not None
            return split_by_group(groups, s.val_fraction, s.test_fraction, s.seed)
        if groups is not None:
            return split_within(groups, s.val_fraction, s.test_fraction, s.seed)
        return random_split(n, s.val_fraction, s.test_fraction, s.seed)
    except DataError as err:
        raise DataError(f"data {source}: {err}" if source else str(err)) from None


def labelled_groups(config: RunConfig, frame: pd.DataFrame, groups: np.ndarray) -> np.ndarray:
    """`groups` with the rows that label none of the tasks made from the `within` column (their
    target blank) made blank too, so that they join the rows of no value in one group of their
    own and each task's parts are cut from its labelled rows (a blank row in a small task's
    test part would leave it unscored)."""
    within = config.data.split.within
    if task_family(config.tasks) != within:
        return groups
    targets = sorted({c for t in config.tasks for c in t.target_columns} & set(frame.columns))
    if not targets:
        return groups
    blank = frame[targets].isna().all(axis=1).to_numpy()
    if not blank.any():
        return groups
    apart = groups.astype(object)
    apart[blank] = np.nan
    return apart


Parts = TaskData | ImageSource | SequenceSource | dict[str, TaskData]
"""One data set, or several by name (each labelling some of the tasks)."""


@dataclass(frozen=True)
class PreparedData:
    """The config's data split and encoded: `preprocessor` is the fitted encoding (tabular or
    images), `tasks` the tasks with what the training data settle filled in."""

    preprocessor: Encoding
    tasks: list[Task]
    train: Parts
    val: Parts | None
    test: Parts
    groups: np.ndarray | None = None
    """With `split.by`: the group of each training row, then of each validation row, so that
    the classic baselines' cross-validation keeps a group's rows in one fold, as the split does."""
    test_groups: np.ndarray | None = None
    """With `split.by`: the group of each test row (for the split's summary)."""
    split: Split | None = None
    """The rows of each part: positions in the data as read (None for several data sets)."""

    def describe(self) -> str:
        """Rows in each part, and with `split.by` the groups in each (whole groups apart)."""
        parts = [("training", self.train), ("validation", self.val), ("test", self.test)]
        counts = [(name, _rows(p)) for name, p in parts if p is not None]
        text = "rows: " + ", ".join(f"{n:,} {name}" for name, n in counts)
        if self.groups is None or self.test_groups is None:
            return text
        n_train = _rows(self.train)
        seen = [self.groups[:n_train], self.groups[n_train:], self.test_groups]
        found = [len(set(g.tolist())) for g in seen]
        names = ["training", "validation", "test"]
        return (
            text
            + "; groups: "
            + ", ".join(f"{n:,} {name}" for name, n in zip(names, found, strict=True) if n)
        )


def data_fingerprint(data: PreparedData) -> dict[str, Any]:
    """What a resumed run compares of its data (`Trainer.run_meta`): the rows of each part and
    a digest of the split's positions. Rows added to or taken from the file, or another split,
    would otherwise resume silently, scoring the old training rows as test rows."""
    parts = (data.train, data.val, data.test)
    rows = [_rows(p) if p is not None else 0 for p in parts]
    digest = None
    if data.split is not None:
        h = hashlib.sha256()
        for part in (data.split.train, data.split.val, data.split.test):
            h.update(np.asarray(part, dtype=np.int64).tobytes() + b"|")
        digest = h.hexdigest()[:16]
    return {"rows": rows, "split": digest}


def _rows(part: Parts) -> int:
    """Rows of one part (of every source for several)."""
    return sum(len(d) for d in part.values()) if isinstance(part, dict) else len(part)


def load_prepared(config: RunConfig) -> PreparedData:
    """The config's data, split and encoded: one table, each of `data.sources`, or images."""
    if config.data.images is not None:
        return prepare_images(config)
    if config.data.text is not None:
        return prepare_text(config)
    if config.data.audio is not None:
        return prepare_audio(config)
    if config.data.molecules is not None:
        return prepare_molecules(config)
    if config.data.sources is not None:
        return prepare_sources(config)
    return prepare(config, load_frame(config))


def image_frame(images: ImagesConfig) -> tuple[pd.DataFrame, Path, str]:
    """The manifest table of `images`, the folder its paths are relative to, and its name
    for messages."""
    if images.manifest is not None:
        root = Path(images.root) if images.root is not None else Path(images.manifest).parent
        return read_csv(images.manifest), root, images.manifest
    assert images.folders is not None
    return image_folder_frame(images.folders), Path(images.folders), images.folders


def data_location(config: RunConfig) -> str | None:
    """The file, folder or generator the config's rows come from (for messages)."""
    data = config.data
    if data.images is not None:
        return data.images.location
    if data.text is not None:
        return data.text.path
    if data.audio is not None:
        return data.audio.manifest
    if data.molecules is not None:
        return data.molecules.path
    return data.path or data.builtin


def written_columns(tasks: Sequence[Task]) -> list[str]:
    """The target columns of tasks that predict a sequence (translations, transcripts, tags):
    texts, read as written."""
    return [c for t in tasks if t.kind_spec.sequential for c in t.target_columns]


def text_frame(text: TextConfig, tasks: Sequence[Task] = ()) -> pd.DataFrame:
    """The rows of `text`'s file: a CSV or JSON lines table (its texts and `tasks`' sequence
    targets as written, as a streamed file reads them), or a CoNLL file's sentences."""
    written = [text.text_column, *written_columns(tasks)]
    return read_table(text.path, text.file_format, text.columns, written)


def audio_frame(audio: AudioConfig, tasks: Sequence[Task] = ()) -> tuple[pd.DataFrame, Path]:
    """The manifest table of `audio` (`tasks`' transcripts as written) and the folder its
    paths are relative to."""
    root = Path(audio.root) if audio.root is not None else Path(audio.manifest).parent
    return read_table(audio.manifest, audio.format, text_columns=written_columns(tasks)), root


SPLIT_VALUES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
"""What a manifest's split column may hold (any case), and the part each names."""


def column_split(frame: pd.DataFrame, column: str, where: str) -> Split:
    """The parts a manifest's split `column` names; other values, or no train or test row,
    are refused naming the rows."""
    if column not in frame.columns:
        shown = listed_columns(list(frame.columns))
        raise DataError(f"{where}: split column {column!r} not found; its columns are: {shown}")
    values = frame[column].map(lambda v: SPLIT_VALUES.get(str(v).strip().lower(), ""))
    bad = values == ""
    if bad.any():
        example = frame.loc[bad, column].iloc[0]
        raise DataError(
            f"{where}: split column {column!r} holds {example!r} in "
            f"{row_labels(bad, frame.index)}; write train, val or test"
        )
    parts = {p: np.flatnonzero(values.to_numpy() == p) for p in ("train", "val", "test")}
    empty = [p for p in ("train", "test") if not len(parts[p])]
    if empty:
        raise DataError(f"{where}: split column {column!r} marks no {' and no '.join(empty)} row")
    return Split(parts["train"], parts["val"], parts["test"])


def prepare_images(config: RunConfig) -> PreparedData:
    """Images of a manifest or folders: split, the encoding fitted on the training rows, and
    each part an `ImageSource` (the training one augmented by `images.augment`, its draws
    seeded by `training.seed`)."""
    images = config.data.images
    assert images is not None
    frame, root, where = image_frame(images)
    check_images(frame, images.image_column, root, where)  # every part's bad files at once
    if images.split_column is not None:
        split = column_split(frame, images.split_column, where)
    else:
        split = make_split(config, len(frame), where, frame)
    train_frame = frame.iloc[split.train]
    encoding = ImageEncoding.fit(
        train_frame, root, config.tasks, images.size, images.channels, images.mean, images.std,
        images.image_column, where, verify=False,  # check_images read every file above
    )  # fmt: skip
    tasks = encoding.resolve_tasks(config.tasks)
    train = encoding.source(train_frame, root, tasks, images.augment, config.training.seed, where,
                            verify=False)  # fmt: skip
    for task in tasks:
        if not task.kind_spec.derives_targets and not train.labelled_rows(task.name):
            raise DataError(
                f"task {task.name!r} has no label in the training rows: check its target "
                f"columns {list(task.target_columns)} and the split"
            )

    def part(rows: np.ndarray, name: str) -> ImageSource:
        warn_unseen(tasks, encoding, frame.iloc[rows], name, where)
        return encoding.source(frame.iloc[rows], root, tasks, where=where, verify=False)

    val = part(split.val, "validation") if len(split.val) else None
    prepared = PreparedData(encoding, tasks, train, val, part(split.test, "test"), split=split)
    warn_degenerate(prepared)
    return prepared


def _sequence_split(
    config: RunConfig, frame: pd.DataFrame, split_column: str | None, where: str
) -> Split:
    if split_column is not None:
        return column_split(frame, split_column, where)
    return make_split(config, len(frame), where, frame)


def _sequence_parts(
    config: RunConfig,
    encoding: TextEncoding | AudioEncoding,
    frame: pd.DataFrame | TextFile,
    split: Split,
    root: Path | None,
    where: str,
    bucket: bool,
    bucket_size: int | None,
) -> PreparedData:
    """Each part of `split` as a `SequenceSource` (the training one bucketed by length when
    `bucket`), after checking every task labels some training row."""
    tasks = encoding.resolve_tasks(config.tasks)
    batch_size = config.training.batch_size

    def part(rows: np.ndarray, name: str, **order: Any) -> SequenceSource:
        if isinstance(frame, TextFile):  # streamed from the file
            assert isinstance(encoding, TextEncoding)
            classed = [t for t in tasks if type(t.kind_spec).unseen_labels is not
                       TaskKind.unseen_labels]  # fmt: skip
            if name != "train" and classed:  # their labels' columns only, read once
                needed = {c for t in classed for c in (*t.target_columns, *(t.where or {}))}
                labels = FileRows(frame, rows).table(sorted(needed & set(frame.columns)))
                warn_unseen(classed, encoding, labels, name, where)
            return encoding.stream(FileRows(frame, rows), tasks, where=where,
                                   batch_size=batch_size, split=name, **order)  # fmt: skip
        if name != "train":
            warn_unseen(tasks, encoding, frame.iloc[rows], name, where)
        return encoding.source(frame.iloc[rows], root, tasks, where=where,
                               batch_size=batch_size, split=name, **order)  # fmt: skip

    train = part(split.train, "train", bucket=bucket, bucket_size=bucket_size)
    for task in tasks:
        if not task.kind_spec.derives_targets and not train.labelled_rows(task.name):
            raise DataError(
                f"task {task.name!r} has no label in the training rows: check its target "
                f"columns {list(task.target_columns)} and the split"
            )

    val = part(split.val, "validation") if len(split.val) else None
    prepared = PreparedData(encoding, tasks, train, val, part(split.test, "test"), split=split)
    warn_degenerate(prepared)
    return prepared


def prepare_text(config: RunConfig) -> PreparedData:
    """Texts of a table or CoNLL file: split, the tokenizer (trained on the training rows, or
    loaded) and targets fitted on the training rows, and each part a `SequenceSource` of token
    ids (the training one bucketed by length unless `text.bucket` is off); with
    `text.stream`, sources that read the file a batch at a time."""
    text = config.data.text
    assert text is not None
    conll = text.columns if text.file_format == "conll" else None
    if isinstance(text.tokenizer, TokenizerFile):
        tokenizer: Any = load_tokenizer(text.tokenizer.path)
    else:
        tokenizer = text.tokenizer
    if not text.stream:
        frame = text_frame(text, config.tasks)
        split = _sequence_split(config, frame, text.split_column, text.path)
        train: pd.DataFrame | FileRows = frame.iloc[split.train]
    else:
        file = text_file(text.path, text.file_format, text.columns)
        every = FileRows(file, np.arange(len(file)))
        wanted = [c for c in (text.split_column, config.data.split.within, config.data.split.by)
                  if c is not None and c in every.column_names]  # fmt: skip
        columns = every.table(wanted) if wanted else pd.DataFrame(index=range(len(file)))
        if text.split_column is not None:
            if text.split_column not in columns:
                columns = pd.DataFrame(columns=every.column_names)
            split = column_split(columns, text.split_column, text.path)
        else:
            split = make_split(config, len(file), text.path, columns)
        train = FileRows(file, split.train)
    encoding = TextEncoding.fit(
        train, config.tasks, tokenizer, text.vocab_size, text.lowercase, text.max_length,
        text.too_long, text.text_column, text.path, conll,
    )  # fmt: skip
    if not text.stream:
        return _sequence_parts(
            config, encoding, frame, split, None, text.path, text.bucket, text.bucket_size
        )
    return _sequence_parts(
        config, encoding, file, split, None, text.path, text.bucket, text.bucket_size
    )


def prepare_audio(config: RunConfig) -> PreparedData:
    """Audio files of a manifest: split, targets fitted on the training rows, and each part
    a `SequenceSource` reading its files per batch (the training one bucketed by length
    unless `audio.bucket` is off)."""
    audio = config.data.audio
    assert audio is not None
    frame, root = audio_frame(audio, config.tasks)
    split = _sequence_split(config, frame, audio.split_column, audio.manifest)
    encoding = AudioEncoding.fit(
        frame.iloc[split.train], config.tasks, audio.sample_rate, audio.max_seconds,
        audio.too_long, audio.audio_column, audio.manifest,
    )  # fmt: skip
    return _sequence_parts(
        config, encoding, frame, split, root, audio.manifest, audio.bucket, audio.bucket_size
    )


def prepare_molecules(config: RunConfig) -> PreparedData:
    """A table of molecules: split (within a column or by group as for a table), targets
    fitted on the training rows, each part's atoms read into memory."""
    molecules = config.data.molecules
    assert molecules is not None
    frame = read_csv(molecules.path)
    folder = Path(molecules.root) if molecules.root else Path(molecules.path).parent
    split = make_split(config, len(frame), molecules.path, frame)
    given = config.model.params.get("encoder_params") or {}
    encoding = MoleculeEncoding.fit(
        frame, config.tasks, molecules.column, folder, molecules.path, split.train,
        int(given.get("max_atomic_number", MAX_ATOMIC_NUMBER)),
    )  # fmt: skip
    tasks = encoding.resolve_tasks(config.tasks)

    def part(rows: np.ndarray, name: str) -> TaskData:
        if name != "train":
            warn_unseen(tasks, encoding, frame.iloc[rows], name, molecules.path)
        return encoding.source(frame.iloc[rows], folder, tasks, where=molecules.path)

    val = part(split.val, "validation") if len(split.val) else None
    train, test = part(split.train, "train"), part(split.test, "test")
    return PreparedData(encoding, tasks, train, val, test, split=split)


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
        # tasks that derive their targets from the inputs learn from every row of every source
        chosen += [t.name for t in config.tasks if not t.target_columns and t.name not in chosen]
        lacking = [t for t in chosen if t not in has]
        if lacking or not chosen:
            raise DataError(
                f"data source {source.path}: " + (f"no target columns for tasks {lacking}"
                if lacking else "it has the target columns of none of the tasks")
            )  # fmt: skip
        frames[name], splits[name], labels[name] = (
            frame,
            make_split(_source_split(source, config.data.split), len(frame), source.path, frame),
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
    pre = TabularPreprocessor.fit(
        train_all, numeric, categorical, config.tasks, log=log_columns(config)
    )
    tasks = pre.resolve_tasks(config.tasks)
    resolved = {t.name: t for t in tasks}

    def encode(which: str) -> dict[str, TaskData]:
        out = {}
        for n in frames:
            rows = getattr(splits[n], which)
            if len(rows) and which != "train":
                part = {"val": "validation"}.get(which, which)
                warn_unseen([resolved[t] for t in labels[n]], pre, frames[n].iloc[rows], part, n)
            if len(rows):
                out[n] = pre.transform(frames[n].iloc[rows], [resolved[t] for t in labels[n]])
        return out

    train = encode("train")
    for name in by_name:
        if not any(name in d.targets and bool(resolved[name].mask(d.targets[name]).any())
                   for d in train.values()):  # fmt: skip
            raise DataError(f"task {name!r} has no label in the training rows of any source")
    prepared = PreparedData(pre, tasks, train, encode("val") or None, encode("test"))
    warn_degenerate(prepared)
    return prepared


def prepare(config: RunConfig, df: pd.DataFrame) -> PreparedData:
    """Split rows, fit the encoding on the training rows only, and encode every part."""
    split = make_split(config, len(df), frame=df)
    numeric, categorical = feature_columns(config)
    by = config.data.split.by
    if by is not None and by in (*numeric, *categorical):
        warnings.warn(
            f"split.by column {by!r} is also a feature: the test part's groups are new, so "
            "their values were never seen in training; drop it from the features",
            DataWarning,
            stacklevel=2,
        )
    if by is not None and df[by].nunique() == len(df):
        warnings.warn(
            f"split.by column {by!r} differs on every row: each group is one row, so the split "
            "is a random split by row; name the column that groups rows (a patient, a school)",
            DataWarning,
            stacklevel=2,
        )
    train_df = df.iloc[split.train]
    pre = TabularPreprocessor.fit(
        train_df, numeric, categorical, config.tasks, log=log_columns(config)
    )
    tasks = pre.resolve_tasks(config.tasks)
    for task in tasks:
        if not bool(task.mask(pre.transform_target(task, train_df)).any()):
            raise DataError(
                f"task {task.name!r} has no label in the training rows: check its target "
                f"columns {list(task.target_columns)} and the split"
            )
    where = data_location(config) or "the data"
    for rows, name in ((split.val, "validation"), (split.test, "test")):
        warn_unseen(tasks, pre, df.iloc[rows], name, where)
    val = pre.transform(df.iloc[split.val], tasks) if len(split.val) else None
    test = pre.transform(df.iloc[split.test], tasks)
    ids = df[by].to_numpy() if by else None
    groups = None if ids is None else ids[np.concatenate([split.train, split.val])]
    prepared = PreparedData(
        pre, tasks, pre.transform(train_df, tasks), val, test, groups,
        None if ids is None else ids[split.test], split,
    )  # fmt: skip
    warn_degenerate(prepared)
    return prepared


def warn_degenerate(data: PreparedData) -> None:
    """A `DataWarning` for each task and split whose labels make the task unlearnable or some
    of its metrics undefined (one class only, a constant target, no labelled row)."""
    for split, part in (("train", data.train), ("validation", data.val), ("test", data.test)):
        if part is None:
            continue
        sources = list(part.values()) if isinstance(part, dict) else [part]
        parts = [known_targets(p) for p in sources]
        for task in data.tasks:
            targets = [p[task.name] for p in parts if task.name in p]
            given = any(task.name in source.target_like for source in sources)  # files' maps too
            if not given and split != "train" and not task.kind_spec.derives_targets:
                warnings.warn(  # several sources, none of them with rows of this task here
                    f"task {task.name!r}, {split} split: no data source gives it rows there, so "
                    "its loss and metrics are not computed (early stopping and model selection "
                    "cannot read it): give the source that labels it a "
                    f"{'val_fraction' if split == 'validation' else 'test_fraction'}",
                    DataWarning,
                    stacklevel=2,
                )
            if not targets:
                continue
            fit = data.preprocessor.target_fit(task)
            problem = task.kind_spec.degenerate(task, torch.cat(targets), fit)
            if problem:
                warnings.warn(
                    f"task {task.name!r}, {split} split: {problem}", DataWarning, stacklevel=2
                )


def warn_unseen(
    tasks: Sequence[Task], encoding: Encoding, frame: pd.DataFrame, part: str, where: str
) -> None:
    """A `DataWarning` for each task whose labels in `frame` (one part of the split) hold a
    class no training row has: such a row cannot be predicted, so it counts as unlabelled, and
    leaving it out of the metrics without a word would score the part without it."""
    for task in tasks:
        if not set(task.target_columns) <= set(frame.columns):
            continue
        unseen = task.unseen_labels(frame, encoding.target_fit(task))
        if unseen:
            kinds = sorted({str(v) for v in unseen})
            more = " ..." if len(kinds) > 5 else ""
            warnings.warn(
                f"task {task.name!r}, {part} rows of {where}: {len(unseen)} "
                f"{'row holds a class' if len(unseen) == 1 else 'rows hold classes'} no "
                f"training row has ({kinds[:5]}{more}): the model cannot predict them, so they "
                "count as unlabelled (left out of the loss and the metrics); put some of them "
                "in the training rows, or merge them into a known class",
                DataWarning,
                stacklevel=3,
            )


def predict_frame(encoding: Encoding, path: str | Path) -> tuple[pd.DataFrame, Path]:
    """New rows to predict on from `path`, read as the model's data are, and the folder the
    paths in it are relative to: a CSV of table rows or an image manifest; texts from a CSV or
    JSON lines table, a .txt file (one text per line) or a CoNLL file; an audio manifest or a
    folder of audio files, or of images (every image file in it and its sub-folders)."""
    if isinstance(encoding, TextEncoding):
        return encoding.read(path), Path(path).parent
    if isinstance(encoding, AudioEncoding):
        return encoding.read(path)
    if isinstance(encoding, ImageEncoding) and Path(path).is_dir():
        return images_in(Path(path), encoding.image_column), Path(path)
    return read_csv(path), Path(path).parent


def images_in(folder: Path, column: str) -> pd.DataFrame:
    """A manifest of every image file under `folder` (paths relative to it, sorted), in the
    model's image column."""
    from polytask.data._images import IMAGE_SUFFIXES

    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)  # fmt: skip
    if not files:
        raise DataError(
            f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)}): give a folder of "
            "images, or a manifest CSV with an image column"
        )
    return pd.DataFrame({column: files})


def known_targets(part: DataSource) -> Mapping[str, Tensor]:
    """The targets of a part held in memory (an image source's per-row files are not: they
    are read only when training needs them; a text or audio source's are all known)."""
    if isinstance(part, TaskData):
        return part.targets
    if isinstance(part, ImageSource | SequenceSource):
        return part.known_targets()
    return {}


def _source_split(source: SourceConfig, default: SplitConfig) -> SplitConfig:
    """A source's own split, else data.split."""
    return source.split or default
