"""Text data: rows of a table (CSV, JSON lines, or a CoNLL token file) whose text column is the
input, tokenised by a tokenizer trained on the training rows with the `tokenizers` library
(a polytask dependency).

`TextEncoding` is the text counterpart of `ImageEncoding`: fitted on the training rows (the
tokenizer, each task's `TargetFit`), saved with a model (the tokenizer's JSON included, so a
reloaded model tokenises to the same ids), and turned into `SequenceSource`s for any rows.

Tokenisation: a text is split on whitespace into words, and the words are tokenised together
(`is_pretokenized`), so that each token knows its word (`TextRow.word_ids`): per-word tags are
read and predicted against them. The tokenizer's ids start with the special tokens [PAD],
[BOS], [EOS], [UNK] (`PAD_ID` = 0, `BOS_ID` = 1, `EOS_ID` = 2, `UNK_ID` = 3). An input is
[BOS] then its tokens (the [BOS] position can summarise the text: sequence kind_params
pool: first), at most `max_length` in all (`too_long`: cut the rest, or refuse the row); the
tokenizer itself adds no special token (targets tokenised with it are the text's tokens only).
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from polytask.data._sequences import (
    SequenceInputs,
    SequenceSource,
    check_columns,
    fit_error,
    missing_cell,
    report_too_long,
    row_where,
)
from polytask.data._text_files import FileRows, FrameRows, Rows
from polytask.tasks._columns import DataError, DataWarning, json_scalar
from polytask.tasks._kinds import BOS_ID, EOS_ID, PAD_ID, UNK_ID, TargetFit, TextRow
from polytask.tasks._task import Task

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from polytask.data._text_stream import StreamedTextSource
    from polytask.models.encoders import InputShape

SPECIAL_TOKENS = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")
"""The first ids of every polytask tokenizer, in this order (PAD_ID, BOS_ID, EOS_ID, UNK_ID)."""

TokenizerType = Literal["bpe", "wordpiece", "word", "file"]
"""How the tokenizer was made: trained on the training rows (bpe, wordpiece, word), or
loaded from a `tokenizer.json` made elsewhere (`file`, e.g. a checkpoint's own)."""

START_TOKENS = ("[CLS]", "<s>", "[BOS]", "<bos>")
"""The tokens a loaded tokenizer may start inputs with, in order of preference."""

PAD_TOKENS = ("[PAD]", "<pad>")
TooLong = Literal["truncate", "refuse"]

TEXT_EXTRA = "pip install tokenizers (a polytask dependency)"


def _tokenizers() -> Any:
    """The `tokenizers` package, or an ImportError saying how to install it."""
    try:
        import tokenizers
    except ImportError:
        raise ImportError(f"text data need the tokenizers package: {TEXT_EXTRA}") from None
    return tokenizers


def tokenized_targets(task: Task) -> bool:
    """Whether a task's targets are texts tokenised by the data's tokenizer (a translation or
    summary: the `seq2seq` kind, or a kind that says `tokenizes_targets`): the tokenizer then
    learns from them too."""
    kind = task.kind_spec
    return bool(getattr(kind, "tokenizes_targets", task.kind == "seq2seq"))


def train_tokenizer(
    texts: Iterable[str], kind: str = "bpe", vocab_size: int = 4000, lowercase: bool = False
) -> Tokenizer:
    """A tokenizer trained on `texts`, the same on every run: `bpe` (byte-pair merges; ▁
    marks a word's first piece), `wordpiece` (the pieces of those merges, `##` marking a
    word's later ones), or `word` (one token per whitespace-separated word, the `vocab_size`
    most frequent kept); punctuation is split from words for the subword ones; `lowercase`
    folds case first. [PAD], [BOS], [EOS], [UNK] are ids 0 to 3."""
    tk = _tokenizers()
    models, trainers = tk.models, tk.trainers
    specials = list(SPECIAL_TOKENS)
    normalizer = tk.normalizers.Lowercase() if lowercase else None
    if kind in ("bpe", "wordpiece"):
        # word starts marked by ▁ (part of the alphabet): the tokenizers trainers number the
        # pieces they make up inside words (##x) in hash order, which made runs differ
        tokenizer = tk.Tokenizer(models.BPE(unk_token="[UNK]"))
        # each punctuation mark or symbol its own piece, a word's first one keeping the word's
        # ▁: split off by Punctuation(), "," "(" "$5" all began with one bare ▁ token, where a
        # token task reads each word's tag (their tags were learnt from it: accuracy 0.74)
        tokenizer.pre_tokenizer = tk.pre_tokenizers.Sequence([
            tk.pre_tokenizers.Metaspace(prepend_scheme="always"),
            tk.pre_tokenizers.Split(tk.Regex(r"▁?[\p{P}\p{S}&&[^▁]]"), behavior="isolated"),
        ])  # fmt: skip
        tokenizer.decoder = tk.decoders.Metaspace(prepend_scheme="always")
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, show_progress=False
        )
    elif kind == "word":
        tokenizer = tk.Tokenizer(models.WordLevel(unk_token="[UNK]"))
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size, special_tokens=specials, show_progress=False
        )
        tokenizer.pre_tokenizer = tk.pre_tokenizers.WhitespaceSplit()
    else:
        raise ValueError(f"unknown tokenizer {kind!r}: choose bpe, wordpiece or word")
    if normalizer is not None:
        tokenizer.normalizer = normalizer
    if kind == "word":  # a literal "[UNK]" counted as a word took a second id: ids off by one
        texts = (" ".join(w for w in t.split() if w not in SPECIAL_TOKENS) for t in texts)
    tokenizer.train_from_iterator(texts, trainer)
    if kind == "wordpiece":
        tokenizer = _as_wordpiece(tokenizer, normalizer)
    ids = [tokenizer.token_to_id(t) for t in specials]
    if ids != [0, 1, 2, 3]:  # the trainers put special tokens first; make sure
        raise RuntimeError(f"the tokenizer gave the special tokens ids {ids}, not 0 to 3")
    return tokenizer


def _as_wordpiece(bpe: Tokenizer, normalizer: Any) -> Tokenizer:
    """The WordPiece tokenizer of a trained BPE one's vocabulary (as the tokenizers library's
    WordPiece trainer makes one): a piece that starts a word (▁x) becomes x, any other ##x;
    every character of the alphabet both, so that no word is unknown for want of one."""
    tk = _tokenizers()
    vocab: dict[str, int] = {}
    pieces = sorted(bpe.get_vocab().items(), key=lambda item: item[1])
    for token, _ in pieces:
        if token in SPECIAL_TOKENS:
            vocab.setdefault(token, len(vocab))
        elif token.startswith("▁"):
            if len(token) > 1:
                vocab.setdefault(token[1:], len(vocab))
        else:
            vocab.setdefault("##" + token, len(vocab))
    for token, _ in pieces:  # single characters, both places
        char = token[1:] if token.startswith("▁") else token
        if len(char) == 1 and token not in SPECIAL_TOKENS:
            vocab.setdefault(char, len(vocab))
            vocab.setdefault("##" + char, len(vocab))
    tokenizer = tk.Tokenizer(tk.models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tk.pre_tokenizers.Whitespace()
    tokenizer.decoder = tk.decoders.WordPiece(prefix="##")
    if normalizer is not None:
        tokenizer.normalizer = normalizer
    return tokenizer


def unknown_id(tokenizer: Tokenizer) -> int:
    """The id of `tokenizer`'s unknown token (`UNK_ID` when it names none)."""
    from polytask.tasks._kinds._seq2seq import unknown_id as named

    found = named(tokenizer)
    return UNK_ID if found is None else found


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer made elsewhere: `path` is a `tokenizer.json` (the `tokenizers` library's
    format, which Hugging Face fast tokenizers save) or a folder holding one. Its padding and
    truncation settings are dropped (polytask pads and cuts), and its padding token must have
    id 0, the id polytask pads with (BERT-family tokenizers do)."""
    given = Path(path).expanduser()
    file = given / "tokenizer.json" if given.is_dir() else given
    if not file.is_file():
        raise DataError(
            f"text.tokenizer.path {str(path)!r}: no tokenizer.json there; give the file, or the "
            "folder a Hugging Face fast tokenizer was saved to (tokenizer.save_pretrained(dir))"
        )
    try:
        tokenizer = _tokenizers().Tokenizer.from_file(str(file))
    except Exception as err:  # the Rust side raises plain Exceptions on a bad file
        raise DataError(f"cannot read {file} as a tokenizers JSON file: {err}") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    pads = {t: tokenizer.token_to_id(t) for t in PAD_TOKENS if tokenizer.token_to_id(t) is not None}
    if PAD_ID not in pads.values():
        found = ", ".join(f"{t} = {i}" for t, i in pads.items()) or "no [PAD] or <pad> token"
        raise DataError(
            f"the tokenizer {file} does not pad with id {PAD_ID} ({found}), the id polytask pads "
            "token ids with: use a tokenizer whose [PAD] is id 0 (the BERT family's), or let "
            "polytask train one (text.tokenizer: bpe | wordpiece | word)"
        )
    start_id(tokenizer, str(file))
    return tokenizer


def start_id(tokenizer: Tokenizer, where: str = "the tokenizer") -> int:
    """The id a loaded tokenizer's inputs start with: its [CLS] (or <s>, [BOS], <bos>)."""
    for token in START_TOKENS:
        found = tokenizer.token_to_id(token)
        if found is not None:
            return int(found)
    raise DataError(
        f"{where} has none of the start tokens {list(START_TOKENS)}, one of which begins every "
        "input (the position `pool: first` reads): add one to the tokenizer, or let polytask "
        "train one (text.tokenizer: bpe | wordpiece | word)"
    )


def warn_round_trip(
    task: Task, tokenizer: Tokenizer, values: Sequence[Any], lowercase: bool, kind: str
) -> None:
    """Warn where training target texts do not read back as written through `tokenizer`
    (WordPiece puts a space around every punctuation mark: "3.5" reads "3. 5"): the model
    writes, and BLEU / chrF score, texts as the tokenizer writes them. Texts holding an unknown
    token are left to the unknown-token warning."""
    unknown = unknown_id(tokenizer)
    checked = changed = 0
    example: tuple[str, str] | None = None
    for value in values[:2000]:
        if value is None or not str(value).strip():
            continue
        text = " ".join(str(value).split())
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        if unknown in ids:
            continue
        checked += 1
        back = tokenizer.decode(ids, skip_special_tokens=True)
        if back != (text.lower() if lowercase else text):
            changed += 1
            example = example or (text, back)
    if example is None:
        return
    warnings.warn(
        f"task {task.name!r}: {changed} of {checked} training target texts read back "
        f"otherwise through the {kind} tokenizer (e.g. {example[0][:60]!r} as "
        f"{example[1][:60]!r}): the model writes its texts, and BLEU / chrF score them, as the "
        "tokenizer writes them; tokenizer: bpe reads them back as written",
        DataWarning,
        stacklevel=2,
    )


def check_decoder_ids(tokenizer: Tokenizer, task: Task) -> None:
    """Refuse a loaded tokenizer for a task that generates text (`seq2seq`) when the ids its
    decoder starts and ends texts with (BOS_ID, EOS_ID) are tokens of text: the decoder would
    read them as the start or end."""
    unknown = getattr(tokenizer.model, "unk_token", None)
    for i in (BOS_ID, EOS_ID):
        token = tokenizer.id_to_token(i)
        special = token is not None and re.fullmatch(r"\[[^\]]+\]|<[^>]+>", token) is not None
        if not special or token == unknown:
            raise DataError(
                f"task {task.name!r} generates text, and its decoder starts and ends a text "
                f"with token ids {BOS_ID} and {EOS_ID}; the tokenizer's id {i} is {token!r}, a "
                "token of text: use a tokenizer whose ids 1 and 2 are unused or special "
                "(BERT's [unused0], [unused1]), or let polytask train one (text.tokenizer: "
                "bpe | wordpiece | word)"
            )


def _corpus(rows: Rows, text_column: str, tokenized: Sequence[Task], where: str) -> Iterator[str]:
    """The texts of `rows` (each refused by row when empty), then the target texts of the
    `tokenized` tasks, read a chunk at a time: what a tokenizer is trained on."""
    for chunk in rows.chunks([text_column]):
        yield from frame_texts(chunk, text_column, where)
    for task in tokenized:
        for chunk in rows.chunks(task.target_columns[:1]):
            yield from (str(c) for c in chunk[task.target_columns[0]] if not missing_cell(c))


def _text(cell: Any, where: str, label: Any) -> str:
    """A row's text; an empty or missing one is refused naming the row."""
    if missing_cell(cell) or isinstance(cell, list | tuple | dict):
        what = (
            ("empty" if isinstance(cell, str) else "missing (null or blank)")
            if missing_cell(cell)
            else f"a {type(cell).__name__}, not text"
        )
        raise DataError(f"{row_where(where, label)}: the text is {what}")
    return str(cell)


def frame_texts(frame: pd.DataFrame, column: str, where: str) -> list[str]:
    """The texts of `frame`'s `column`, each refused by row when empty."""
    check_columns(frame, [column], "text column", where)
    labels = [json_scalar(v) for v in frame.index]
    return [_text(c, where, label) for c, label in zip(frame[column].tolist(), labels, strict=True)]


class TextInputs(SequenceInputs):
    """Tokenised texts, held as one array of token ids (and one of their word indices) with
    each row's offset into it, and the texts themselves (their words, for predictions)."""

    modality = "text"

    def __init__(
        self,
        texts: Sequence[str],
        tokenizer: Tokenizer,
        max_length: int,
        pad: int = PAD_ID,
        start: int = BOS_ID,
    ) -> None:
        self.texts = list(texts)
        self.tokenizer = tokenizer
        self.max_length = max_length
        encoded = tokenizer.encode_batch(
            [t.split() for t in self.texts], is_pretokenized=True, add_special_tokens=False
        )
        full = np.array([len(e.ids) + 1 for e in encoded], dtype=np.int64)
        self.tokenless: dict[int, list[str]] = {}
        """Per row, the words the tokenizer made no token of (a zero-width space, a control
        character, a lone combining mark under BERT's normaliser): no tag of theirs is read."""
        for row, (e, text) in enumerate(zip(encoded, self.texts, strict=True)):
            split = text.split()
            kept = {w for w in e.word_ids if w is not None}
            if len(kept) < len(split):
                self.tokenless[row] = [w for i, w in enumerate(split) if i not in kept]
        self.full_lengths = full
        """Each row's token count before truncation ([BOS] included)."""
        self.lengths = np.minimum(full, max_length)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        total = int(self.offsets[-1])
        self.ids = np.empty(total, dtype=np.int32)
        self.word_ids = np.empty(total, dtype=np.int32)
        unknown = unknown_id(tokenizer)
        for e, at, n in zip(encoded, self.offsets[:-1], self.lengths, strict=True):
            self.ids[at] = start
            self.word_ids[at] = -1
            content = np.asarray(e.ids[: n - 1], dtype=np.int32)
            # a literal "[PAD]" in the text: read as padding, its word unseen by the encoder
            content[content == pad] = unknown
            self.ids[at + 1 : at + n] = content
            words = [-1 if w is None else w for w in e.word_ids[: n - 1]]
            self.word_ids[at + 1 : at + n] = words
        self.pad = pad

    def batch(self, rows: Sequence[int]) -> Tensor:
        width = int(self.lengths[rows].max())
        x = torch.full((len(rows), width), self.pad, dtype=torch.long)
        for j, row in enumerate(rows):
            start, n = int(self.offsets[row]), int(self.lengths[row])
            x[j, :n] = torch.from_numpy(self.ids[start : start + n].astype(np.int64))
        return x

    def empty(self) -> Tensor:
        return torch.zeros((0, 1), dtype=torch.long)

    def text_row(self, row: int) -> TextRow:
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        word_ids = [None if w < 0 else int(w) for w in self.word_ids[start:end]]
        return TextRow(
            [int(i) for i in self.ids[start:end]], word_ids, self.texts[row].split(),
            self.tokenizer,
        )  # fmt: skip


@dataclass(frozen=True)
class TextEncoding:
    """How texts and targets are encoded, fitted on the training rows (`fit`) and saved with a
    model (`to_dict` / `from_dict`): the tokenizer (its JSON in `tokenizer_json`), the input
    length `max_length` and what to do with longer texts (`too_long`), the `text_column`, and
    each task's `TargetFit` in `fits`."""

    tokenizer_json: str
    fits: Mapping[str, TargetFit]
    max_length: int = 128
    too_long: TooLong = "truncate"
    text_column: str = "text"
    tokenizer_type: TokenizerType = "bpe"
    lowercase: bool = False
    conll_columns: tuple[str, ...] | None = None
    """The columns of the CoNLL file trained on (None: not a CoNLL file), to read new ones."""
    start_id: int = BOS_ID
    """The token every input starts with: [BOS], or a loaded tokenizer's [CLS] (or <s>)."""
    tokenizer: Any = field(init=False, repr=False, compare=False)
    """The `tokenizers.Tokenizer` built from `tokenizer_json`."""

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2 ([BOS] and a token), got "
                             f"{self.max_length}")  # fmt: skip
        if self.too_long not in ("truncate", "refuse"):
            raise ValueError(f"too_long must be truncate or refuse, got {self.too_long!r}")
        tokenizer = _tokenizers().Tokenizer.from_str(self.tokenizer_json)
        tokenizer.no_padding()
        tokenizer.no_truncation()
        object.__setattr__(self, "tokenizer", tokenizer)
        if self.conll_columns is not None:
            object.__setattr__(self, "conll_columns", tuple(self.conll_columns))

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame | Rows,
        tasks: Sequence[Task],
        tokenizer: TokenizerType | Tokenizer = "bpe",
        vocab_size: int = 4000,
        lowercase: bool = False,
        max_length: int = 128,
        too_long: TooLong = "truncate",
        text_column: str = "text",
        where: str | None = None,
        conll_columns: Sequence[str] | None = None,
    ) -> TextEncoding:
        """Learn the encoding from the training rows `frame` (a table, or `Rows` of a file read
        a chunk at a time): the tokenizer from their texts (and the target texts of tasks that
        tokenise them: `seq2seq`), or a `tokenizers.Tokenizer` made elsewhere as given
        (`load_tokenizer`; `vocab_size` and `lowercase` then unused); each task's targets by
        its kind (sequence-level tasks from the table, sequential ones from their cells)."""
        where = where or "the text data"
        rows = frame if isinstance(frame, Rows) else FrameRows(frame)
        names = rows.column_names
        check_columns(names, [text_column], "text column", where)
        wanted = [t for t in tasks if not t.kind_spec.derives_targets]
        for task in wanted:
            if (
                conll_columns is not None
                and not task.kind_spec.sequential
                and not set(task.target_columns) <= set(names)
            ):
                raise DataError(
                    f"{where}: task {task.name!r} reads one value per text from "
                    f"{list(task.target_columns)}, but a CoNLL file holds only columns of one "
                    f"value per word ({', '.join(conll_columns)}): give sentence labels in a "
                    "CSV or JSON lines file (a text column, a tags column as a list or a "
                    "space-separated string, and the label column)"
                )
            check_columns(names, task.target_columns, f"task {task.name!r}: target columns",
                          where)  # fmt: skip
        if isinstance(tokenizer, str):
            texts = _corpus(rows, text_column, [t for t in wanted if tokenized_targets(t)], where)
            made, kind = train_tokenizer(texts, tokenizer, vocab_size, lowercase), tokenizer
            start = BOS_ID
        else:
            made, kind, lowercase, start = tokenizer, "file", False, start_id(tokenizer)
            for task in wanted:
                if task.kind_spec.sequential and tokenized_targets(task):
                    check_decoder_ids(made, task)
        vocab, fits = made.get_vocab_size(), {}
        held = [c for t in wanted if not t.kind_spec.sequential for c in t.target_columns]
        table = rows.table(list(dict.fromkeys(held))) if held else None
        for task in wanted:
            kind_spec = task.kind_spec
            try:
                if kind_spec.sequential:
                    cells = rows.column(task.target_columns[0])
                    values = [None if missing_cell(c, blank=False) else c for c in cells]
                    fit = kind_spec.fit_text(task, values)
                    fits[task.name] = dataclasses.replace(fit, vocab=vocab, tokenizer=made)
                    if tokenized_targets(task):
                        warn_round_trip(task, made, values, lowercase, kind)
                else:
                    assert table is not None
                    fits[task.name] = task.fit_target(table)
            except ValueError as err:
                raise fit_error(err, task, where, rows.labels) from None
        columns = tuple(conll_columns) if conll_columns is not None else None
        return cls(
            made.to_str(), fits, max_length, too_long, text_column, kind, lowercase, columns,
            start,
        )  # fmt: skip

    @property
    def vocab_size(self) -> int:
        """How many token ids there are (the tokenizer's vocabulary, specials included)."""
        return int(self.tokenizer.get_vocab_size())

    @property
    def input_shape(self) -> tuple[int]:
        return (self.max_length,)

    @property
    def model_input(self) -> InputShape:
        """What an architecture builder is given: `InputShape((max_length,), vocab_size=V)`."""
        from polytask.models.encoders import InputShape

        return InputShape(self.input_shape, vocab_size=self.vocab_size)

    def target_fit(self, task: Task) -> TargetFit:
        """What fitting learned about `task`'s targets; a sequential task's holds the
        tokenizer and its vocabulary size."""
        fit = dataclasses.replace(self.fits.get(task.name, TargetFit()), inputs=self.max_length)
        if task.kind_spec.sequential:
            return dataclasses.replace(fit, vocab=self.vocab_size, tokenizer=self.tokenizer)
        return fit

    def resolve_tasks(self, tasks: Sequence[Task]) -> list[Task]:
        """Fill in what the training data settle (e.g. multiclass `num_classes`)."""
        return [t.kind_spec.resolve(t, self.target_fit(t)) for t in tasks]

    def encode(self, texts: Sequence[str]) -> TextInputs:
        """`texts` tokenised as the model reads them (ids cut to `max_length`)."""
        return TextInputs(texts, self.tokenizer, self.max_length, start=self.start_id)

    def source(
        self,
        frame: pd.DataFrame,
        base: str | Path | None = None,
        tasks: Sequence[Task] = (),
        *,
        where: str | None = None,
        batch_size: int = 32,
        bucket: bool = False,
        bucket_size: int | None = None,
        split: str | None = None,
    ) -> SequenceSource:
        """The rows of `frame` tokenised, with `tasks`' targets (none: inputs only, e.g. to
        predict); `where` names the file in messages, `split` the part in the warning about
        truncated rows; `batch_size`, `bucket` and `bucket_size` set the training order
        (`SequenceSource`). `base` is unused (texts hold no paths)."""
        where = where or "the text data"
        texts = frame_texts(frame, self.text_column, where)
        inputs = self.encode(texts)
        labels = [json_scalar(v) for v in frame.index]
        report_too_long(
            where, labels, inputs.full_lengths, self.max_length, self.too_long, "tokens",
            "shorten the text, or train with a larger data.text.max_length", split,
            tasks=tasks,
        )  # fmt: skip
        per_word = [t.name for t in tasks if t.kind_spec.cut_with_input]
        if per_word and inputs.tokenless:
            words = [w for row in inputs.tokenless.values() for w in row]
            warnings.warn(
                f"{where}: {len(words)} words in {len(inputs.tokenless)} rows (e.g. "
                f"{', '.join(repr(w) for w in words[:3])}) become no token with this tokenizer "
                f"(zero-width or control characters, lone combining marks), so tasks {per_word} "
                "neither train nor score their tags, and predict gives them None: clean the "
                "texts, or give such words a visible form",
                UserWarning,
                stacklevel=2,
            )
        return SequenceSource(
            inputs, frame, tasks, self.target_fit, where, batch_size=batch_size, bucket=bucket,
            bucket_size=bucket_size,
        )  # fmt: skip

    def stream(
        self,
        rows: FileRows,
        tasks: Sequence[Task] = (),
        *,
        where: str | None = None,
        batch_size: int = 32,
        bucket: bool = False,
        bucket_size: int | None = None,
        split: str | None = None,
    ) -> StreamedTextSource:
        """Rows `rows` of a text file as a source that reads them from disk per batch
        (`StreamedTextSource`); arguments as for `source`."""
        from polytask.data._text_stream import StreamedTextSource

        return StreamedTextSource(
            self, rows, tasks, where or str(rows.file.path), batch_size=batch_size,
            bucket=bucket, bucket_size=bucket_size, split=split,
        )  # fmt: skip

    def read(self, path: str | Path) -> pd.DataFrame:
        """New rows to predict on from `path`: a CSV or JSON lines table with the text column,
        a plain text file (.txt: one text per line), or a CoNLL file like the training one."""
        from polytask.data._readers import read_conll, read_lines, read_table

        name = Path(path).name.lower()
        if name.endswith(".txt") and self.conll_columns is None:
            return read_lines(path, self.text_column)
        if name.endswith((".txt", ".conll")) and self.conll_columns is not None:
            return read_conll(path, self.conll_columns[:1], tagged=len(self.conll_columns))
        if name.endswith(".conll"):
            raise DataError(
                f"{path}: a CoNLL file, but this model was trained on a table of texts: give "
                f"predict a CSV or JSON lines file with a {self.text_column!r} column, or a .txt "
                "file (one text per line)"
            )
        return read_table(path, text_columns=[self.text_column])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, saved in a model's checkpoint (`kind: text`), the tokenizer included."""
        return {
            "kind": "text",
            "tokenizer": self.tokenizer_json,
            "tokenizer_type": self.tokenizer_type,
            "lowercase": self.lowercase,
            "max_length": self.max_length,
            "too_long": self.too_long,
            "text_column": self.text_column,
            "conll_columns": list(self.conll_columns) if self.conll_columns else None,
            "start_id": self.start_id,
            "targets": fits_to_dict(self.fits),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TextEncoding:
        columns = d.get("conll_columns")
        return cls(
            tokenizer_json=d["tokenizer"],
            fits=fits_from_dict(d["targets"]),
            max_length=int(d["max_length"]),
            too_long=d.get("too_long", "truncate"),
            text_column=d.get("text_column", "text"),
            tokenizer_type=d.get("tokenizer_type", "bpe"),
            lowercase=bool(d.get("lowercase", False)),
            conll_columns=tuple(columns) if columns else None,
            start_id=int(d.get("start_id", BOS_ID)),
        )


def fits_to_dict(fits: Mapping[str, TargetFit]) -> dict[str, dict[str, Any]]:
    """Each task's `TargetFit`, JSON-safe (the tokenizer and input size left out: the encoding
    keeps them)."""
    out = {}
    for name, fit in fits.items():
        values = {f.name: getattr(fit, f.name) for f in dataclasses.fields(fit)}
        kept = {k: v for k, v in values.items()
                if v is not None and k not in ("inputs", "tokenizer")}  # fmt: skip
        out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in kept.items()}
    return out


def fits_from_dict(saved: Mapping[str, Mapping[str, Any]]) -> dict[str, TargetFit]:
    """`fits_to_dict` read back."""
    fits = {}
    for name, values in saved.items():
        values = dict(values)
        if values.get("scale") is not None:
            values["scale"] = (float(values["scale"][0]), float(values["scale"][1]))
        fits[name] = TargetFit(**values)
    return fits
