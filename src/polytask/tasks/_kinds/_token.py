"""Token classification: a tag per word of a text (named entities as BIO tags, parts of speech),
predicted at each word's first sub-token and trained and scored token by token.

Target (one tensor per task): (N, L) int64 aligned with the input tokens (the same L as the
batch's token ids): the tag's class index at the first sub-token of each word, −100 at its other
sub-tokens, at special tokens, at padding and everywhere in an unlabelled row. A raw cell is the
row's tags, one per whitespace-separated word of its text: a JSON list (`["B-PER", "O"]`), a
Python list, or the tags separated by spaces (`"B-PER O"`).

`kind_params` `scheme`: "bio" (default: IOB2 tags `B-X` / `I-X` / `O`; entity-level span F1 with
seqeval) or "none" (plain classes such as parts of speech: token accuracy)."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score
from torch import Tensor, nn

from polytask.tasks._columns import DataError
from polytask.tasks._kinds._base import (
    IGNORE_INDEX,
    MetricAccumulator,
    Scale,
    TargetFit,
    TaskKind,
    TextRow,
)
from polytask.tasks._kinds._multiclass import MulticlassKind
from polytask.tasks._losses import ElementLoss, standard_losses
from polytask.tasks._metrics import Metric, Undefined

if TYPE_CHECKING:
    from polytask.models.encoders import Features
    from polytask.tasks._task import Task

SCHEMES = ("bio", "none")
SPAN_METRICS = ("span_f1", "span_precision", "span_recall")


# --- reading tag cells ----------------------------------------------------------------------


def is_missing(value: Any) -> bool:
    """A cell that labels nothing: None, NaN or pandas' NA."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def tag_list(value: Any) -> list[str]:
    """A cell's tags: a JSON list, a list (or tuple / array), or text with the tags separated by
    whitespace; a ValueError says what is wrong with another cell."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"its tags {text[:60]!r} are not a JSON list ({err.msg}): write each row's "
                    "tags as JSON (json.dumps(tags): double quotes, as pandas' to_csv of Python "
                    "lists does not) or as one string of tags separated by spaces"
                ) from err
        else:
            return text.split()
    if not isinstance(value, list | tuple):
        raise ValueError(
            f"{value!r} is not a list of tags: give a JSON list (['B-PER', 'O']), a list, or the "
            "tags separated by spaces, one per word of the text"
        )
    bad = [t for t in value if isinstance(t, bool) or not isinstance(t, str | int) or t == ""]
    if bad:
        raise ValueError(f"its tags hold {bad[0]!r}, which is not a tag (a non-empty string)")
    return [str(t) for t in value]


def is_bio(tag: str) -> bool:
    """An IOB2 tag: O, B-TYPE or I-TYPE (or a bare B / I, an entity without type)."""
    return tag in ("O", "B", "I") or (tag[:2] in ("B-", "I-") and len(tag) > 2)


def ordered_tags(tags: set[str]) -> list[str]:
    """The tag set in class-index order: sorted, with "O" first when present."""
    return sorted(tags, key=lambda t: (t != "O", t))


# --- metrics --------------------------------------------------------------------------------


def _spans(rows: Sequence[Sequence[str]]) -> set[tuple[int, str, int, int]]:
    """Every entity of the rows as (row, type, first token, last token), read by seqeval."""
    try:
        from seqeval.metrics.sequence_labeling import (  # type: ignore[import-untyped]
            get_entities,
        )
    except ImportError as err:  # pragma: no cover - a polytask dependency
        raise ImportError(
            "span F1 of BIO tags needs seqeval (a polytask dependency): pip install seqeval"
        ) from err
    return {(i, *entity) for i, row in enumerate(rows) for entity in get_entities(list(row))}


def span_scores(
    truths: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Entity-level micro precision, recall and F1 (conlleval's, as seqeval computes them): an
    entity counts when its type and its first and last tokens match."""
    true, predicted = _spans(truths), _spans(predictions)
    hits = len(true & predicted)
    no_entity = Undefined("no entities in the truths or predictions")
    return {
        "span_precision": hits / len(predicted) if predicted else Undefined("no predicted entity"),
        "span_recall": hits / len(true) if true else Undefined("no entities in the truths"),
        "span_f1": 2 * hits / (len(true) + len(predicted)) if true or predicted else no_entity,
    }


def tag_metrics(
    truths: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    names: Sequence[Any] | None,
    wanted: Sequence[str],
) -> dict[str, float]:
    """The metrics `wanted` of rows' true and predicted class indices (labelled tokens only);
    `names` are the tags of the classes (None: the indices, which span metrics refuse)."""
    if not sum(len(t) for t in truths):
        return {n: Undefined("no labelled tokens") for n in wanted}
    y, p = np.concatenate(truths), np.concatenate(predictions)
    out: dict[str, float] = {}
    if "token_accuracy" in wanted:
        out["token_accuracy"] = float(np.mean(y == p))
    if "macro_f1" in wanted:
        present = np.union1d(np.unique(y), np.unique(p))
        out["macro_f1"] = float(f1_score(y, p, labels=present, average="macro", zero_division=0.0))
    if any(n in SPAN_METRICS for n in wanted):
        tags = check_bio_names(names)
        spans = span_scores(
            [[tags[int(i)] for i in row] for row in truths],
            [[tags[int(i)] for i in row] for row in predictions],
        )
        out.update({n: v for n, v in spans.items() if n in wanted})
    return {n: out[n] for n in wanted}


def check_bio_names(names: Sequence[Any] | None) -> list[str]:
    """The tag names as strings, refused (span metrics cannot read entities from them) when
    unknown or not BIO tags."""
    if names is None:
        raise ValueError(
            "span_f1, span_precision and span_recall read entities from the tag names (B-X, "
            "I-X, O), but this data gives only class indices: use a text data source (it keeps "
            "the tags), or choose metrics token_accuracy / macro_f1, or set kind_params "
            "scheme: none"
        )
    tags = [str(n) for n in names]
    bad = [t for t in tags if not is_bio(t)]
    if bad:
        raise ValueError(
            f"span metrics read BIO tags (B-X, I-X, O), but the tags include {bad[:5]}: for "
            "plain tags (e.g. parts of speech) set kind_params scheme: none"
        )
    return tags


def _rows(y: np.ndarray, p: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each row's true and predicted (argmax) class indices at its labelled tokens, from targets
    (n, L) and probabilities (n, L, C)."""
    best = p.argmax(axis=-1)
    keep = y != IGNORE_INDEX
    return [r[k] for r, k in zip(y, keep, strict=True)], [
        b[k] for b, k in zip(best, keep, strict=True)
    ]


def _array_metric(name: str, y: np.ndarray, p: np.ndarray) -> float:
    """Metric `name` of targets (n, L) and probabilities (n, L, C), tags unknown (indices)."""
    truths, predictions = _rows(np.asarray(y), np.asarray(p))
    return tag_metrics(truths, predictions, None, [name])[name]


def _metric(name: str) -> Metric:
    return Metric(name, functools.partial(_array_metric, name), True)


class TagAccumulator(MetricAccumulator):
    """Keeps each row's true and predicted tags (class indices) at its labelled tokens, and
    computes the task's metrics from them: token accuracy and macro F1 over the tokens, span
    precision, recall and F1 over the entities the tags spell (seqeval)."""

    def __init__(self, task: Task, names: Sequence[Any] | None) -> None:
        self.task, self.names = task, names
        self.wanted = [m.name for m in task.metric_objects()]
        if any(n in SPAN_METRICS for n in self.wanted):
            try:
                check_bio_names(names)
            except ValueError as err:
                raise ValueError(f"task {task.name!r}: {err}") from None
        self.truths: list[np.ndarray] = []
        self.predictions: list[np.ndarray] = []
        self.finite = True

    def update(self, output: Tensor, target: Tensor) -> None:
        keep = target != IGNORE_INDEX
        if not bool(torch.isfinite(output[keep]).all()):
            self.finite = False
            return
        best = output.argmax(dim=-1)
        for row in range(target.shape[0]):
            if bool(keep[row].any()):
                self.truths.append(target[row][keep[row]].numpy())
                self.predictions.append(best[row][keep[row]].numpy())

    def compute(self) -> dict[str, float]:
        if not self.finite:
            return {n: Undefined("predictions not finite") for n in self.wanted}
        return tag_metrics(self.truths, self.predictions, self.names, self.wanted)


# --- the head -------------------------------------------------------------------------------


class PerPosition(nn.Module):
    """A sequence representation (N, L, C + 1) → `body` at each position: (N, L, out)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, z: Tensor) -> Tensor:
        from polytask.models.encoders import split_mask

        out: Tensor = self.body(split_mask(z)[0])
        return out


# --- the kind -------------------------------------------------------------------------------


class TokenKind(TaskKind):
    """A tag per word (see the module's docstring for targets and cells): the head gives (N, L,
    C) logits, one per tag at each token; the loss is the cross entropy averaged over the
    labelled tokens of the batch (a padded or partly labelled row trains on its labelled
    tokens); `predict` gives each token's tag probabilities, and a row's prediction is the tag
    of each word (`decode_row`). The tags are learnt from the training rows (`num_classes` is
    their number).

    `kind_params` scheme "bio" (default): metrics span_f1 (primary), span_precision,
    span_recall (entities, micro over the set, via seqeval), token_accuracy and macro_f1 (over
    the labelled tokens); scheme "none": token_accuracy (primary) and macro_f1."""

    served_meaning = "probability of each tag at each token, shape (batch, tokens, tags)"

    losses = standard_losses("cross_entropy")
    metrics: ClassVar[Mapping[str, Metric]] = {
        n: _metric(n) for n in (*SPAN_METRICS, "token_accuracy", "macro_f1")
    }
    params: ClassVar[Mapping[str, Any]] = {"scheme": "bio"}
    squeeze = False
    sequential = True
    cut_with_input = True

    def for_task(self, task: Task) -> TaskKind:
        """Scheme "none": the kind without span metrics (its primary is token_accuracy)."""
        if (task.kind_params or {}).get("scheme") == "none":
            return PlainTokenKind()
        return self

    def validate(self, task: Task) -> None:
        scheme = self.param(task, "scheme")
        if scheme not in SCHEMES:
            raise ValueError(
                f"task {task.name!r}: token kind_params scheme must be 'bio' (BIO entity tags) "
                f"or 'none' (plain tags such as parts of speech), got {scheme!r}"
            )
        if task.num_classes is not None and task.num_classes < 2:
            raise ValueError(
                f"task {task.name!r}: a token task needs num_classes >= 2 (got "
                f"{task.num_classes}); leave it unset to read the tags from the training rows"
            )
        if len(task.target_columns) != 1:
            raise ValueError(
                f"task {task.name!r}: a token task reads one column (the tags of each row), not "
                f"{list(task.target_columns)}"
            )
        for m in task.metrics or ():
            if not isinstance(m, str):
                raise ValueError(
                    f"task {task.name!r}: token metrics are computed over the tokens and "
                    f"entities by the kind; choose among {', '.join(self.metrics)} (a custom "
                    "Metric is not supported)"
                )
            if m in SPAN_METRICS and m not in self.metrics:
                raise ValueError(
                    f"task {task.name!r}: {m} reads entities from BIO tags: set kind_params "
                    "scheme: bio, or choose among token_accuracy and macro_f1"
                )

    def out_features(self, task: Task) -> int:
        if task.num_classes is None:
            raise ValueError(
                f"task {task.name!r}: num_classes (the number of tags) is unknown; set it, or "
                "read the data with a text data source, which learns the tags from the "
                "training rows"
            )
        return task.num_classes

    def expected_output(self, task: Task) -> str:
        return f"{task.num_classes} logits per token"

    def build_head(self, task: Task, features: Features) -> nn.Module:
        """The task's head factory (or one linear layer) at each position of the sequence;
        anything but a sequence of one position per input token is refused."""
        from polytask.tasks._task import linear_head

        if not features.sequence:
            what = "a feature map of an image" if features.spatial else "a vector per row"
            raise ValueError(
                f"task {task.name!r} (token) predicts a tag per token, but this model's trunk "
                f"gives {what}: use a sequence encoder (hard_sharing with encoder transformer "
                "on text data)"
            )
        if features.stride != 1:
            raise ValueError(
                f"task {task.name!r} (token) predicts a tag per input token, but this encoder "
                f"gives one position per {features.stride} inputs: use a text encoder (one "
                "position per token)"
            )
        factory = task.head or linear_head
        return PerPosition(factory(features.channels, self.out_features(task)))

    def check_output(self, task: Task, output: Tensor, target: Tensor) -> None:
        """Refuse an output that is not (N, L, num_classes) for targets (N, L)."""
        classes = task.num_classes
        fits = output.ndim == 3 and target.ndim == 2 and output.shape[:2] == target.shape
        if fits and (classes is None or output.shape[2] == classes):
            return
        raise ValueError(
            f"task {task.name!r} (token): its head gives outputs of shape {tuple(output.shape)} "
            f"for targets of shape {tuple(target.shape)}; a token head gives (N, L, "
            f"{classes if classes is not None else 'tags'}): {self.expected_output(task)} at "
            "each of the L input tokens the targets are aligned with"
        )

    def label_mask(self, target: Tensor) -> Tensor:
        """One entry per row: does any token of the row hold a tag."""
        return self.element_mask(target).reshape(target.shape[0], -1).any(dim=1)

    def label_count(self, target: Tensor) -> int:
        """The labelled tokens: the loss is their mean."""
        return int(self.element_mask(target).sum())

    def loss(self, fn: ElementLoss, output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Mean of `fn` over the labelled tokens of the rows `mask` keeps (a row mask, or a token
        mask), all the batch's tokens as one pool; 0, still in the graph, when none is."""
        tokens = self.element_mask(target)
        tokens = tokens & (mask.unsqueeze(1) if mask.ndim == 1 else mask)
        if not bool(tokens.any()):
            return output.sum() * 0.0
        return fn(output[tokens], target[tokens]).mean()

    def predict(self, output: Tensor) -> Tensor:
        return torch.softmax(output, dim=-1)

    def truth(self, target: Tensor, scale: Scale | None) -> np.ndarray:
        """Class indices as they are (−100: not labelled)."""
        return target.numpy()

    def accumulator(
        self, task: Task, scale: Scale | None, fit: TargetFit | None = None
    ) -> MetricAccumulator:
        """Metrics over each row's tags at its labelled tokens; the tag names come from `fit`
        (class indices stand for them without one, which span metrics refuse)."""
        return TagAccumulator(task, fit.classes if fit is not None else None)

    def degenerate(self, task: Task, target: Tensor, fit: TargetFit) -> str | None:
        """Every labelled token has the same tag."""
        tags = target[self.element_mask(target)]
        if not len(tags) or bool((tags != tags[0]).any()):
            return super().degenerate(task, target, fit)
        names = fit.classes or list(range(int(tags[0]) + 1))
        return f"every labelled token is tag {names[int(tags[0])]!r}"

    # --- text data --------------------------------------------------------------------------

    def fit_text(self, task: Task, values: Sequence[Any]) -> TargetFit:
        """The tag set of the training rows, sorted with "O" first: the classes."""
        found: set[str] = set()
        for i, value in enumerate(values):
            if is_missing(value):
                continue
            try:
                found.update(tag_list(value))
            except ValueError as err:
                raise DataError(f"task {task.name!r}: training row {i}: {err}") from None
        if len(found) < 2:
            raise DataError(
                f"task {task.name!r}: a token task needs at least 2 tags in the training rows, "
                f"found {sorted(found)}"
            )
        classes = ordered_tags(found)
        if self.param(task, "scheme") == "bio":
            bad = [t for t in classes if not is_bio(t)]
            glued = [t for t in bad if _joined_bio(t)]
            if glued:  # "B-PER,O,O": BIO tags joined by commas, not one tag
                raise DataError(
                    f"task {task.name!r}: its tags {glued[:3]} are BIO tags separated by "
                    "commas: separate them with spaces (B-PER O O) or give a JSON list "
                    "(['B-PER', 'O', 'O'])"
                )
            upper = [t for t in bad if is_bio(t.upper()) and t[:1].islower()]
            if upper:  # "b-loc": the prefixes B, I and O are upper case
                raise DataError(
                    f"task {task.name!r}: its tags {upper[:5]} have lower-case BIO prefixes; "
                    "tags are read as written (case-sensitive): write B-, I- and O in upper "
                    "case (B-LOC, I-LOC, O), or set kind_params scheme: none to learn them as "
                    "plain tags"
                )
            if bad:
                raise DataError(
                    f"task {task.name!r}: its tags {bad[:5]} are not BIO tags (B-X, I-X, O), "
                    "which scheme: bio reads entities from: for plain tags (e.g. parts of "
                    "speech) set kind_params scheme: none"
                )
        if task.num_classes is not None and task.num_classes != len(classes):
            raise DataError(
                f"task {task.name!r}: num_classes is {task.num_classes} but the training rows "
                f"hold {len(classes)} tags ({', '.join(classes[:10])}): remove num_classes (it "
                "is read from the data)"
            )
        return TargetFit(classes=classes)

    resolve = MulticlassKind.resolve
    """`num_classes`: the number of tags seen in training, when the task leaves it unset."""

    def text_target(self, task: Task, value: Any, row: TextRow, fit: TargetFit) -> Tensor:
        """(len(row.ids),) int64: each word's tag index at its first sub-token, −100 elsewhere;
        words that truncation cut off have no token, so no target."""
        try:
            tags = tag_list(value)
        except ValueError as err:
            raise ValueError(f"task {task.name!r}: {err}") from None
        if len(tags) != len(row.words):
            raise ValueError(
                f"task {task.name!r}: {len(tags)} tags for {len(row.words)} words: give one tag "
                "per whitespace-separated word of the text"
            )
        classes = [str(c) for c in fit.class_list(task)]
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({t for t in tags if t not in index})
        if unknown:
            known = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
            raise ValueError(
                f"task {task.name!r}: tag {unknown[0]!r} is not among the training rows' tags "
                f"({known}): correct it, or add training rows that hold it"
            )
        target = torch.full((len(row.ids),), IGNORE_INDEX, dtype=torch.long)
        seen: set[int] = set()
        for position, word in enumerate(row.word_ids):
            if word is not None and word not in seen:
                seen.add(word)
                target[position] = index[tags[word]]
        return target

    def decode_row(self, task: Task, output: Tensor, row: TextRow, fit: TargetFit) -> Any:
        """The predicted tag of each word of the row (one per word, in order), read at its
        first sub-token; a word that truncation cut off has no token, so no prediction: None
        (null in JSON), never a tag that would pass for one."""
        classes = [str(c) for c in fit.class_list(task)]
        best = output.argmax(dim=-1).tolist()
        first: dict[int, int] = {}
        for position, word in enumerate(row.word_ids):
            if word is not None and word not in first and position < len(best):
                first[word] = position
        return [classes[best[first[w]]] if w in first else None for w in range(len(row.words))]

    def pad_rows(self, task: Task, rows: Sequence[Tensor]) -> Tensor:
        """Rows of different lengths as (N, longest), padded with −100."""
        longest = max((int(r.shape[-1]) for r in rows), default=0)
        out = torch.full((len(rows), longest), IGNORE_INDEX, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : r.shape[-1]] = r
        return out

    def missing_target(self, task: Task, like: Tensor) -> Tensor:
        """An unlabelled row: −100 at each of its tokens (`like`: the row's length)."""
        return torch.full(tuple(like.shape), IGNORE_INDEX, dtype=torch.long)

    def fit_target(self, task: Task, df: pd.DataFrame) -> TargetFit:
        raise TypeError(self._tokens_only(task))

    def encode_target(self, task: Task, df: pd.DataFrame, fit: TargetFit) -> Tensor:
        raise TypeError(self._tokens_only(task))

    def _tokens_only(self, task: Task) -> str:
        return (
            f"task {task.name!r}: token tags are read against the tokenised text (a tag per "
            "word): read the data with a text data source, not as a table"
        )


class PlainTokenKind(TokenKind):
    """A token task with scheme "none": plain tags (e.g. parts of speech), scored by token
    accuracy (primary) and macro F1 over the labelled tokens."""

    metrics: ClassVar[Mapping[str, Metric]] = {
        n: m for n, m in TokenKind.metrics.items() if n not in SPAN_METRICS
    }

    def for_task(self, task: Task) -> TaskKind:
        return self


def _joined_bio(tag: str) -> bool:
    """Whether `tag` is BIO tags joined by commas ("B-PER,O"; not the tag "," of Penn POS)."""
    parts = [p.strip() for p in tag.split(",") if p.strip()]
    return bool(parts) and all(is_bio(p) for p in parts)
