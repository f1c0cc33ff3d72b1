"""`TaskKind`: everything that differs between kinds of task (binary, regression, ...), in one
object per kind, so that a new kind is one file and one registry line."""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from polytask.tasks._columns import numeric_values
from polytask.tasks._losses import ElementLoss, LossSpec, make_loss
from polytask.tasks._metrics import Metric

if TYPE_CHECKING:
    from polytask.models.encoders import Features
    from polytask.tasks._task import Task

IGNORE_INDEX = -100
"""Class targets equal to this value are missing labels (as in `torch.nn.CrossEntropyLoss`)."""

Scale = tuple[float, float]
"""The (mean, std) a task's targets were standardised with."""

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
"""The special token ids of every polytask tokenizer: padding (also the padding of input rows
and of sequence targets), start and end of a sequence, unknown."""


@dataclass(frozen=True)
class TextRow:
    """One row's input as the text pipeline tokenised it, which per-token and sequence targets
    are read against (`TaskKind.text_target`) and predictions written back with
    (`TaskKind.decode_row`); audio rows have no tokens (`ids` and `word_ids` empty)."""

    ids: list[int]
    """The input's token ids, after truncation (what the model reads)."""
    word_ids: list[int | None]
    """For each token, the index of the word (whitespace-separated) it comes from; None for
    special tokens."""
    words: list[str]
    """The input's words (for messages and per-word predictions)."""
    tokenizer: Any = None
    """The fitted `tokenizers.Tokenizer` (sequence-to-sequence targets are tokenised by it)."""


@dataclass(frozen=True)
class TargetFit:
    """What a kind learned from a task's training targets, kept by `TabularPreprocessor`: the
    classes in class-index order, or the (mean, std) that standardised the targets; `inputs`
    is the size of one encoded input row (the targets of kinds that reconstruct their input)."""

    classes: list[Any] | None = None
    scale: Scale | None = None
    inputs: int | None = None
    vocab: int | None = None
    """Sequence targets tokenised with the data's tokenizer: its vocabulary size."""
    tokenizer: Any = field(default=None, compare=False, repr=False)
    """That tokenizer (a `tokenizers.Tokenizer`), to decode predicted ids into text; not
    saved with the fit (the text encoding saves it once)."""

    def class_list(self, task: Task) -> list[Any]:
        """The classes, or an error naming the fix when none were fitted for `task`."""
        if self.classes is None:
            raise ValueError(
                f"task {task.name!r}: its classes are unknown; fit the TabularPreprocessor "
                "with this task first"
            )
        return self.classes


@dataclass(frozen=True)
class Derived:
    """What a self-supervised task trains on for one batch (`TaskKind.derive`): `inputs` go
    through the model as rows of their own (the other tasks see the clean batch), and the task's
    outputs on them are compared with `target` by its loss."""

    inputs: Tensor
    """(m, *row shape): e.g. the corrupted rows, or two augmented views of each row."""
    target: Tensor
    """One target per row of `inputs` (NaN where an element does not count)."""


@dataclass(frozen=True)
class Geometry:
    """A geometric augmentation applied to one image, so that each kind moves its targets with
    it (`TaskKind.transform_target`): a horizontal flip, then a crop of the (flipped) image
    (`crop`: top, left, height, width in pixels of the image before it) resized to `size`."""

    size: tuple[int, int]
    """(height, width) of the image after the augmentation: the model's input size."""
    hflip: bool = False
    crop: tuple[int, int, int, int] | None = None
    source_size: tuple[int, int] | None = None
    """(height, width) the target is given at, before the augmentation (None: `size`)."""


class MetricAccumulator(ABC):
    """A task's metrics over a data set, fed one batch at a time (`TaskKind.accumulator`), so
    that evaluation never holds every prediction of the set at once."""

    @abstractmethod
    def update(self, output: Tensor, target: Tensor) -> None:
        """One batch: the task's shaped head output and its encoded targets (on the CPU)."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """Every metric of the task by name, over the batches seen."""

    def breakdown(self) -> dict[str, float]:
        """The task's metrics per part (e.g. per label), over the batches seen; {} when its
        kind has none or the accumulator keeps no rows."""
        return {}


class Concatenated(MetricAccumulator):
    """The default: keeps each batch's predictions and truths (one row each for most kinds,
    a few numbers) and evaluates the task's metrics on all of them at the end."""

    def __init__(self, task: Task, scale: Scale | None) -> None:
        self.task, self.scale = task, scale
        self.predictions: list[np.ndarray] = []
        self.truths: list[np.ndarray] = []

    def update(self, output: Tensor, target: Tensor) -> None:
        kind = self.task.kind_spec
        self.predictions.append(kind.prediction(output, self.scale))
        self.truths.append(kind.truth(target, self.scale))

    def compute(self) -> dict[str, float]:
        if not self.predictions:
            return self.task.evaluate(np.zeros((0,)), np.zeros((0,)))
        return self.task.evaluate(np.concatenate(self.predictions), np.concatenate(self.truths))

    def breakdown(self) -> dict[str, float]:
        kind = self.task.kind_spec
        if not self.predictions or type(kind).breakdown is TaskKind.breakdown:  # none: no copy
            return {}
        predictions, truths = np.concatenate(self.predictions), np.concatenate(self.truths)
        return kind.breakdown(self.task, predictions, truths)


class GlobalPool(nn.Module):
    """(N, C, h, w) feature map → (N, C) by its mean over positions: how an image-level head
    reads a spatial representation."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=tuple(range(2, x.ndim)))


def unscale(values: Tensor, scale: Scale | None) -> Tensor:
    """Standardised values back in original units (unchanged without a scale)."""
    if scale is None:
        return values
    mean, std = scale
    return values.double() * std + mean  # float64: no overflow near float32's limit


def numeric_targets(task: Task, df: pd.DataFrame) -> np.ndarray:
    """The task's target columns of `df` as floats, shape (rows, columns); missing: NaN."""
    what = f"task {task.name!r}: target"
    columns = [numeric_values(df, c, f"{what} {c!r}") for c in task.target_columns]
    return np.stack(columns, axis=1)


def element_loss_mean(fn: ElementLoss, output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean of `fn` over the elements `mask` keeps (kinds masked element by element); 0,
    still in the graph, when none is."""
    if not bool(mask.any()):
        return output.sum() * 0.0
    safe = torch.where(mask, target, torch.zeros_like(target))
    return fn(output, safe)[mask].mean()


class TaskKind(ABC):
    """A kind of task: its losses and metrics, head size, label mask, predictions, and how its
    targets are read from tables and its predictions written back.

    The defaults fit one numeric value per row: a single head output, NaN targets are missing,
    the target is the task's (first) column as floats, and `predict` writes one column named
    after the task. Kinds override what differs.

    Adding a kind takes one file and one line:

    1. In a file of its own, subclass `TaskKind`: set `losses` (name → `LossSpec`, default first;
       `polytask.tasks.standard_losses("mse", ...)` picks built-in ones) and `metrics` (name →
       `Metric`, default primary metric first), implement `predict` (raw head output →
       prediction), and override what else differs: `out_features` and `validate` (Task
       fields), `squeeze`, `element_mask` / `label_mask`, `loss` and `evaluate` (masking),
       `fit_target` / `encode_target` / `resolve` / `decode` (tables), `truth`, `loss_units`.
    2. Register one instance under its name: a line in `KINDS` (polytask/tasks/_registry.py),
       or `polytask.tasks.KINDS["count"] = CountKind()` from your own code.

    `Task("visits", "count")` then trains, evaluates and predicts through the new kind.
    """

    losses: ClassVar[Mapping[str, LossSpec]]
    """The losses a task of this kind may name; the first is its default."""
    loss_options: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    """Arguments this kind binds into a loss by name (e.g. gce / sce's `binary=`)."""
    metrics: ClassVar[Mapping[str, Metric]]
    """Built-in metrics by name; the first is the default primary metric."""
    squeeze: ClassVar[bool] = True
    """Single-output heads return shape (N,) instead of (N, 1)."""
    loss_units: ClassVar[str] = ""
    """How the reported loss is measured when not in the targets' own units, shown beside it
    (`loss (standardised)` for regression, whose loss is on standardised targets while its
    metrics are in the original units); empty when there is nothing to say."""
    params: ClassVar[Mapping[str, Any]] = {}
    """The kind's own parameters (`Task.kind_params`) with their defaults, e.g. a mask rate."""
    derives_targets: ClassVar[bool] = False
    """Self-supervised: the targets come from the inputs (`derive`), not from a column; every
    row is labelled, and such a task is auxiliary (trained, never reported)."""
    reads_files: ClassVar[bool] = False
    """Each row's target is read from a file or a JSON cell (`read_target`: masks, depth maps,
    boxes) rather than encoded from a column of values (`encode_target`)."""
    dense: ClassVar[bool] = False
    """The task predicts something per position of the input (pixels, boxes, keypoints): it
    needs an encoder that keeps the spatial layout, and its head is built for one."""
    several_columns: ClassVar[bool] = False
    """The task reads a label from each of several target columns (multilabel); the others
    read one, and a task listing more is refused."""
    sequential: ClassVar[bool] = False
    """The task predicts per position of a sequence, or a sequence (tokens, transcripts,
    translations): it needs a sequence encoder (text or audio), and its head is built for one."""
    cut_with_input: ClassVar[bool] = False
    """The task's targets are per position of the input (a tag per token), so a row cut to a
    length limit loses the targets past it: its metrics score only the positions kept."""
    classic: ClassVar[str | None] = None
    """What classic model can stand in for the task in `compare`'s baselines: "value" (ridge,
    a boosting regressor on the encoded target) or "class" (logistic regression, a boosting
    classifier on class indices); None: none (see `classic_output`)."""

    def classic_output(self, task: Task, values: np.ndarray) -> Tensor:
        """The head output that a classic model's predictions stand for: `values` are its
        predictions of the encoded target ("value") or its class probabilities ("class": rows
        × classes, in class-index order)."""
        raise TypeError(f"{type(self).__name__} has no classic stand-in")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse a concrete kind without losses or metrics when it is defined, not at first
        use."""
        super().__init_subclass__(**kwargs)
        abstract = any(
            getattr(getattr(cls, n, None), "__isabstractmethod__", False) for n in dir(cls)
        )
        missing = [a for a in ("losses", "metrics") if not getattr(cls, a, None)]
        if missing and not abstract:
            raise TypeError(
                f"task kind {cls.__name__} must set {' and '.join(missing)}: losses maps names "
                "to LossSpec and metrics names to Metric, the default first"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @property
    def default_loss(self) -> str:
        """The loss of tasks that name none: the first of `losses`."""
        return next(iter(self.losses))

    def validate(self, task: Task) -> None:
        """Refuse kind-specific Task fields that do not fit (none by default)."""
        return None

    def out_features(self, task: Task) -> int:
        """Size of the task's head output."""
        return 1

    def build_head(self, task: Task, features: Features) -> nn.Module:
        """The task's head on a representation of `features`: the task's own head factory (or
        one linear layer) on a vector; on a feature map or a sequence, the same after a mean
        over its (real) positions. Dense and sequential kinds override it with a head that
        keeps the positions."""
        from polytask.models.encoders import MaskedPool
        from polytask.tasks._task import linear_head

        factory = task.head or linear_head
        head = factory(features.channels, self.out_features(task))
        if features.sequence:
            return nn.Sequential(MaskedPool(), head)
        return nn.Sequential(GlobalPool(), head) if features.spatial else head

    def check_output(self, task: Task, output: Tensor, target: Tensor) -> None:
        """Refuse a head output that does not fit the targets (a wrong head or shape), naming
        the task and both shapes, instead of letting the loss broadcast it silently."""
        rows_differ = output.shape[0] != target.shape[0]
        if rows_differ or output.ndim > max(target.ndim, 1) + 1:
            raise ValueError(
                f"task {task.name!r} ({task.kind}): its head gives outputs of shape "
                f"{tuple(output.shape)} for targets of shape {tuple(target.shape)}; a "
                f"{task.kind} head gives {self.expected_output(task)} per row"
            )

    def expected_output(self, task: Task) -> str:
        """In words, the head output one row should have (for `check_output`'s message)."""
        size = self.out_features(task)
        return "one value" if size == 1 and self.squeeze else f"{size} values"

    def label_count(self, target: Tensor) -> int:
        """How many units (rows; elements for kinds masked element by element; boxes) a
        batch's loss is the mean over, additive over the parts of a batch; with
        `loss_denominator`, what evaluation and split batches weigh each part's loss by."""
        return int(self.label_mask(target).sum())

    def loss_denominator(self, count: Tensor, labelled: Tensor) -> Tensor:
        """What a batch's loss divides its sum by, from its `label_count` and whether any of
        its rows is labelled: the count itself, unless the kind's loss says otherwise."""
        return count

    def breakdown(
        self, task: Task, predictions: np.ndarray, targets: np.ndarray
    ) -> dict[str, float]:
        """Metrics per part of the task (a multilabel task's per label) for the test table,
        by name; {} for kinds without parts."""
        return {}

    def accumulator(
        self, task: Task, scale: Scale | None, fit: TargetFit | None = None
    ) -> MetricAccumulator:
        """A fresh accumulator of the task's metrics over batches (see `MetricAccumulator`);
        `fit` is what the data's encoding learnt of the task (e.g. its tokenizer), when known."""
        return Concatenated(task, scale)

    def read_target(
        self,
        task: Task,
        value: Any,
        base: Path,
        fit: TargetFit,
        size: tuple[int, int],
    ) -> Tensor:
        """One row's encoded target from its manifest cell `value` (a path relative to `base`,
        or JSON text) at the model's input `size` (height, width), for kinds that
        `reads_files`; a bad cell raises `DataError` saying what is wrong."""
        raise TypeError(f"{type(self).__name__} encodes its targets from a column of values")

    def fit_text(self, task: Task, values: Sequence[Any]) -> TargetFit:
        """What encoding a `sequential` task's targets need, from the training rows' raw cells
        (`values`: tag lists, transcripts, texts; None where missing), e.g. the tag set or the
        characters; nothing by default."""
        return TargetFit()

    def text_target(self, task: Task, value: Any, row: TextRow, fit: TargetFit) -> Tensor:
        """One row's encoded target from its raw cell `value` (not missing), read against the
        row's tokenised input `row`, for `sequential` kinds; a bad cell raises `ValueError`
        saying what is wrong (the data pipeline adds the file and row)."""
        raise TypeError(f"{type(self).__name__} encodes its targets from a column of values")

    def decode_row(self, task: Task, output: Tensor, row: TextRow, fit: TargetFit) -> Any:
        """One row's prediction, from its shaped head output (the row's own positions and
        channels, on the CPU), as `predict` writes it: e.g. a tag per word, a translation, a
        transcript (JSON-safe); for `sequential` kinds."""
        raise TypeError(f"{type(self).__name__} decodes its predictions with `decode`")

    def rescale_target(
        self, task: Task, target: Tensor, original_size: tuple[int, int], size: tuple[int, int]
    ) -> Tensor:
        """A row's target read in the pixels of its original image (`original_size`, height
        and width) in those of the model's input `size` (coordinates of boxes and keypoints;
        maps are resized by `read_target` itself, and image-level targets do not change)."""
        return target

    def pad_rows(self, task: Task, rows: Sequence[Tensor]) -> Tensor:
        """Rows' targets as one batch tensor: stacked by default; kinds whose rows differ in
        length (boxes, instances) pad them to the longest."""
        return torch.stack(list(rows))

    def fit_files(self, task: Task, targets: Sequence[Tensor]) -> TargetFit:
        """What encoding a file-read task's targets need, learnt from the training rows' raw
        targets (e.g. a depth scale), for kinds that `reads_files`; nothing by default."""
        return TargetFit()

    def missing_target(self, task: Task, like: Tensor) -> Tensor:
        """One row's target marked unlabelled, shaped like `like` (an encoded row)."""
        if like.is_floating_point():
            return torch.full_like(like, float("nan"))
        return torch.full_like(like, IGNORE_INDEX)

    def transform_target(self, task: Task, target: Tensor, geometry: Geometry) -> Tensor:
        """One row's target after a geometric augmentation of its image; image-level targets
        (the default) do not move."""
        return target

    def default_primary(self, task: Task) -> str | None:
        """The metric that counts for `task` when it names none (`primary_metric`), where it
        depends on its `kind_params`; None: the first of its metrics."""
        return None

    def for_task(self, task: Task) -> TaskKind:
        """This kind bound to one task (what `Task.kind_spec` returns), for kinds whose loss
        and predictions depend on the task's `kind_params` (`loss`, `predict`, `served` are not
        given the task); the kind itself by default. Called before `validate`: bind lazily."""
        return self

    def param(self, task: Task, name: str) -> Any:
        """The kind parameter `name` of `task`: its `kind_params` entry, or the default."""
        return (task.kind_params or {}).get(name, self.params[name])

    def check_params(self, task: Task) -> None:
        """Refuse `kind_params` the kind does not declare, naming those it does."""
        unknown = sorted(set(task.kind_params or {}) - set(self.params))
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(self.params), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            allowed = ", ".join(self.params) or "none"
            raise ValueError(
                f"task {task.name!r}: {task.kind} tasks have no parameter {unknown} in "
                f"kind_params{hint}; their parameters: {allowed}"
            )

    def target_columns(self, task: Task) -> tuple[str, ...]:
        """The data columns the task's labels are read from: `target`, or the task's name."""
        if task.target is None:
            return (task.name,)
        return task.target if isinstance(task.target, tuple) else (task.target,)

    def derive(self, task: Task, x: Tensor, generator: torch.Generator | None) -> Derived:
        """For kinds that derive their targets from the inputs (`derives_targets`): the inputs
        the task's outputs are taken on and its targets, from a batch's input rows `x`, with
        randomness drawn from `generator` (torch's global one when None)."""
        raise TypeError(f"{type(self).__name__} reads its targets from the data")

    def shape_output(self, raw: Tensor) -> Tensor:
        """Raw head output as losses and metrics take it: (N,) for single-output heads."""
        if self.squeeze and raw.ndim == 2 and raw.shape[1] == 1:
            return raw.squeeze(1)
        return raw

    @abstractmethod
    def predict(self, output: Tensor) -> Tensor:
        """Shaped head output → prediction (e.g. probabilities), in model units."""

    def element_mask(self, target: Tensor) -> Tensor:
        """Which target elements hold a label: not NaN (floats), not `IGNORE_INDEX` (integers)."""
        if target.is_floating_point():
            return ~torch.isnan(target)
        return target != IGNORE_INDEX

    def label_mask(self, target: Tensor) -> Tensor:
        """Which rows are labelled: all of a row's target elements are (one entry per row)."""
        mask = self.element_mask(target)
        if mask.ndim > 1:
            mask = mask.reshape(mask.shape[0], -1).all(dim=1)
        return mask

    def make_loss(
        self, name: str, params: Mapping[str, float], label_smoothing: float = 0.0
    ) -> ElementLoss:
        """Loss `name` (one of `losses`) with the task's parameters and this kind's options."""
        return make_loss(self.losses[name], params, label_smoothing, self.loss_options.get(name))

    def loss(self, fn: ElementLoss, output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Mean of `fn` over the labelled rows (`mask`); 0, still in the graph, when none is."""
        if not bool(mask.any()):
            return output.sum() * 0.0
        return fn(output[mask], target[mask]).mean()

    def evaluate(
        self, metrics: Sequence[Metric], predictions: np.ndarray, targets: np.ndarray
    ) -> dict[str, float]:
        """Each metric on the labelled rows only."""
        keep = self.label_mask(torch.as_tensor(targets)).numpy()
        y, p = targets[keep], predictions[keep]
        return {m.name: m(y, p) for m in metrics}

    def degenerate(self, task: Task, target: Tensor, fit: TargetFit) -> str | None:
        """What makes these encoded targets (one split's) useless for learning or for some
        metric, in a few words; None when nothing does. Here: no labelled row."""
        if not bool(self.label_mask(target).any()):
            return "no labelled rows, so its loss and metrics are not computed"
        return None

    def fit_target(self, task: Task, df: pd.DataFrame) -> TargetFit:
        """Learn what encoding the targets needs from the training rows `df` (nothing here)."""
        return TargetFit()

    def resolve(self, task: Task, fit: TargetFit) -> Task:
        """The task with fields the training data settle filled in (unchanged here)."""
        return task

    def unseen_labels(self, task: Task, df: pd.DataFrame, fit: TargetFit) -> list[Any]:
        """The labels of `df`'s rows that `fit` cannot encode (a class no training row has),
        one per such row: they count as unlabelled. None here."""
        return []

    def encode_target(self, task: Task, df: pd.DataFrame, fit: TargetFit) -> Tensor:
        """The targets of `df` as the loss takes them: the (first) target column as floats."""
        return torch.tensor(numeric_targets(task, df)[:, 0], dtype=torch.float32)

    def truth(self, target: Tensor, scale: Scale | None) -> np.ndarray:
        """Encoded targets as metrics compare them: floats, in original units (an integer
        target's `IGNORE_INDEX`, a missing label, as NaN: metrics would score it as a value)."""
        if not target.is_floating_point():
            target = target.float().masked_fill(target == IGNORE_INDEX, float("nan"))
        return unscale(target.float(), scale).numpy()

    def prediction(self, output: Tensor, scale: Scale | None) -> np.ndarray:
        """Shaped head output → predictions in original units, for metrics and `decode`."""
        return unscale(self.predict(output), scale).numpy()

    served_meaning: ClassVar[str] = "the task's prediction in original units"
    """What `served` outputs, in words, for an export's manifest and the server's metadata."""

    def served(self, output: Tensor, scale: Scale | None) -> Tensor:
        """Shaped head output → what an exported graph outputs for the task: `predict`, in
        original units, in traceable float32 tensor ops (`prediction` is its NumPy twin)."""
        served = self.predict(output)
        if scale is None:
            return served
        mean, std = scale
        return served * std + mean

    def output_labels(self, task: Task) -> list[Any] | None:
        """What each position of the served output's last axis stands for, where that is not
        `classes` (a multilabel task's labels); None by default."""
        return None

    def decode(self, task: Task, prediction: np.ndarray, fit: TargetFit) -> dict[str, Any]:
        """The columns `FittedModel.predict` writes for the task, named by one scheme: `<task>`
        for the predicted label or value, `<task>_prob` for a binary task's probability of its
        positive class, `<task>_prob_<class>` for each class of a multiclass task, and
        `<task>_<label>` / `<task>_prob_<label>` for each label of a multilabel one. Here: the
        value."""
        return {task.name: prediction}
