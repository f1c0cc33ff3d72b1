"""Sequence tasks: one label per sequence (a sentence, an utterance), read from a pooled sequence
representation. `kind_params` `output` picks a class (like multiclass) or a value (like
regression), and `pool` how the positions are summarised; the kind is bound to its task
(`TaskKind.for_task`) as the matching variant."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from polytask.tasks._kinds._base import TaskKind
from polytask.tasks._kinds._multiclass import MulticlassKind
from polytask.tasks._kinds._regression import RegressionKind
from polytask.tasks._losses import LossSpec
from polytask.tasks._metrics import Metric

if TYPE_CHECKING:
    from polytask.models.encoders import Features
    from polytask.tasks._task import Task

OUTPUTS = ("class", "value")
POOLS = ("mean", "max", "first")
PARAMS: Mapping[str, Any] = {"output": "class", "pool": "mean"}


class MaskedMaxPool(nn.Module):
    """(N, L, C + 1) sequence representation → (N, C), the maximum over real positions (0 for
    a row without any)."""

    def forward(self, z: Tensor) -> Tensor:
        from polytask.models.encoders import split_mask

        h, mask = split_mask(z)
        real = mask.unsqueeze(-1)
        top = h.masked_fill(~real, float("-inf")).amax(dim=1)
        return torch.where(real.any(dim=1), top, torch.zeros_like(top))


class FirstPool(nn.Module):
    """(N, L, C + 1) sequence representation → (N, C), its first position's features (e.g. a
    [BOS] / [CLS] token that the encoder lets attend to the whole sequence)."""

    def forward(self, z: Tensor) -> Tensor:
        from polytask.models.encoders import split_mask

        return split_mask(z)[0][:, 0]


def make_pool(name: str) -> nn.Module:
    """The pooling module `name` (one of `POOLS`)."""
    from polytask.models.encoders import MaskedPool

    pools: dict[str, type[nn.Module]] = {
        "mean": MaskedPool,
        "max": MaskedMaxPool,
        "first": FirstPool,
    }
    return pools[name]()


def sequence_head(kind: TaskKind, task: Task, features: Features) -> nn.Module:
    """The task's pooling (`kind_params` pool), then its head factory (or one linear layer);
    a representation that is not a sequence is refused."""
    from polytask.tasks._task import linear_head

    if not features.sequence:
        what = "a feature map of an image" if features.spatial else "a vector per row"
        raise ValueError(
            f"task {task.name!r} (sequence) predicts one label per sequence, but this model's "
            f"trunk gives {what}: use a sequence encoder (hard_sharing with encoder transformer "
            "on text data, or audio on audio data)"
        )
    factory = task.head or linear_head
    return nn.Sequential(
        make_pool(kind.param(task, "pool")), factory(features.channels, kind.out_features(task))
    )


def check_sequence(kind: TaskKind, task: Task) -> None:
    """Refuse bad `kind_params`, and a loss or metric of the other `output` variant, naming it."""
    params = task.kind_params or {}
    output, pool = params.get("output", "class"), params.get("pool", "mean")
    if output not in OUTPUTS:
        raise ValueError(
            f"task {task.name!r}: sequence kind_params output must be 'class' (a class per "
            f"sequence) or 'value' (a number per sequence), got {output!r}"
        )
    if pool not in POOLS:
        raise ValueError(
            f"task {task.name!r}: sequence kind_params pool must be one of "
            f"{', '.join(repr(p) for p in POOLS)}, got {pool!r}"
        )
    other = VARIANTS["value" if output == "class" else "class"]
    switch = f"set kind_params output: {other.output}"
    if isinstance(task.loss, str) and task.loss not in kind.losses:
        theirs = task.loss in other.losses
        where = f" (it is for output: {other.output}: {switch})" if theirs else ""
        raise ValueError(
            f"task {task.name!r}: loss {task.loss!r} does not fit a sequence task with output: "
            f"{output}{where}; use one of {list(kind.losses)}"
        )
    for m in task.metrics or ():
        if isinstance(m, str) and m not in kind.metrics and m in other.metrics:
            raise ValueError(
                f"task {task.name!r}: metric {m!r} is for sequence tasks with output: "
                f"{other.output}, not {output} ({switch}); its metrics: "
                f"{', '.join(kind.metrics)}"
            )


class SequenceClassKind(MulticlassKind):
    """A sequence task with output: class: one of `num_classes` classes per sequence (read from
    the training rows when unset), as multiclass (losses, metrics, predictions), on the pooled
    sequence."""

    output: ClassVar[str] = "class"
    params = PARAMS

    def validate(self, task: Task) -> None:
        check_sequence(self, task)
        super().validate(task)

    def build_head(self, task: Task, features: Features) -> nn.Module:
        return sequence_head(self, task, features)


class SequenceValueKind(RegressionKind):
    """A sequence task with output: value: a number per sequence, as regression (standardised
    targets, metrics in original units), on the pooled sequence."""

    output: ClassVar[str] = "value"
    params = PARAMS

    def validate(self, task: Task) -> None:
        check_sequence(self, task)
        if task.num_classes is not None:
            raise ValueError(
                f"task {task.name!r}: num_classes applies to sequence tasks with output: class, "
                "not value: remove it"
            )
        super().validate(task)

    def build_head(self, task: Task, features: Features) -> nn.Module:
        return sequence_head(self, task, features)


VARIANTS: dict[str, type[SequenceClassKind] | type[SequenceValueKind]] = {
    "class": SequenceClassKind,
    "value": SequenceValueKind,
}


class SequenceKind(TaskKind):
    """One label per sequence (text or audio), from a sequence encoder's output pooled over its
    real positions. `kind_params`: `output` "class" (default: a class per sequence, as multiclass:
    cross_entropy / gce / sce, macro_f1 and accuracy) or "value" (a number, as regression: mse /
    l1 / huber on standardised targets, rmse / mae / r2 in original units); `pool` "mean"
    (default), "max" (over real positions) or "first" (the first position, e.g. [BOS] / [CLS]).

    This registered object accepts the losses and metrics of both outputs; `Task.kind_spec` is
    the variant of the task's `output` (`SequenceClassKind`, `SequenceValueKind`), which refuses
    the other's."""

    params = PARAMS
    losses: ClassVar[Mapping[str, LossSpec]] = {
        **SequenceClassKind.losses,
        **SequenceValueKind.losses,
    }
    loss_options = SequenceClassKind.loss_options
    metrics: ClassVar[Mapping[str, Metric]] = {
        **SequenceClassKind.metrics,
        **SequenceValueKind.metrics,
    }
    squeeze = False

    def for_task(self, task: Task) -> TaskKind:
        """The variant of the task's `output`; itself when that is not one (`validate` says so)."""
        variant = VARIANTS.get(str((task.kind_params or {}).get("output", "class")))
        return self if variant is None else variant()

    def validate(self, task: Task) -> None:
        check_sequence(self, task)

    def build_head(self, task: Task, features: Features) -> nn.Module:
        return sequence_head(self.for_task(task), task, features)

    def predict(self, output: Tensor) -> Tensor:
        raise TypeError(
            "a sequence task predicts through its bound kind: use task.kind_spec (the variant of "
            "its kind_params output) rather than KINDS['sequence']"
        )
