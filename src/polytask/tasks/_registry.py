"""The registry of task kinds: `Task(kind=...)` names one of these."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping

from torch import Tensor

from polytask.tasks._kinds import (
    BinaryKind,
    ContrastiveKind,
    CTCKind,
    DenoisingKind,
    DenseRegressionKind,
    DetectionKind,
    KeypointsKind,
    MulticlassKind,
    MultilabelKind,
    NormalsKind,
    ReconstructionKind,
    RegressionKind,
    SegmentationKind,
    Seq2SeqKind,
    SequenceKind,
    TaskKind,
    TokenKind,
)
from polytask.tasks._metrics import Metric

KINDS: dict[str, TaskKind] = {
    "binary": BinaryKind(),
    "multiclass": MulticlassKind(),
    "multilabel": MultilabelKind(),
    "regression": RegressionKind(),
    "reconstruction": ReconstructionKind(),
    "denoising": DenoisingKind(),
    "contrastive": ContrastiveKind(),
    "segmentation": SegmentationKind(),
    "dense_regression": DenseRegressionKind(),
    "normals": NormalsKind(),
    "keypoints": KeypointsKind(),
    "detection": DetectionKind(),
    "sequence": SequenceKind(),
    "token": TokenKind(),
    "ctc": CTCKind(),
    "seq2seq": Seq2SeqKind(),
}
"""Task kinds by name. Register a new kind with one line: `KINDS["count"] = CountKind()`."""

TASK_KINDS: tuple[str, ...] = tuple(KINDS)
"""The names of the built-in kinds (`tuple(KINDS)` also lists kinds registered later)."""


def unknown_kind(name: str) -> str:
    """Why `name` is not a kind: the registered ones, and the closest to `name`."""
    close = difflib.get_close_matches(name, list(KINDS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    names = [repr(k) for k in KINDS]
    allowed = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else "".join(names)
    own = "" if close else " by your code (on the command line: polytask --import MODULE ...)"
    return f"Input should be {allowed}{hint}; new kinds are registered in polytask.tasks.KINDS{own}"


def kind_named(name: str) -> TaskKind:
    """The registered kind `name`, or an error listing the registered ones."""
    if name not in KINDS:
        raise ValueError(f"unknown task kind {name!r}: {unknown_kind(name)}")
    return KINDS[name]


def check_loss_name(task: str, kind: str, loss: str) -> None:
    """Refuse a loss that the task's kind does not list, naming the kinds that do."""
    accepted = list(kind_named(kind).losses)
    if loss in accepted:
        return
    others = [k for k, spec in KINDS.items() if loss in spec.losses]
    if not others:
        close = difflib.get_close_matches(loss, accepted, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"task {task!r}: unknown loss {loss!r}{hint}; allowed: {', '.join(accepted)}"
        )
    raise ValueError(
        f"task {task!r}: loss {loss!r} is for {'/'.join(others)} tasks, not {kind}; "
        f"use one of {accepted}"
    )


def label_mask(kind: str, target: Tensor) -> Tensor:
    """Boolean mask of labelled targets of kind `kind`: one entry per row, or per element for
    kinds that mask element by element (multilabel). Same as `KINDS[kind].label_mask`."""
    return kind_named(kind).label_mask(target)


class _MetricsByKind(Mapping[str, Mapping[str, Metric]]):
    """Read-only view: each registered kind's metrics by name (first: default primary)."""

    def __getitem__(self, kind: str) -> Mapping[str, Metric]:
        return KINDS[kind].metrics

    def __iter__(self) -> Iterator[str]:
        return iter(KINDS)

    def __len__(self) -> int:
        return len(KINDS)

    def __repr__(self) -> str:
        return repr({k: list(v.metrics) for k, v in KINDS.items()})


METRICS: Mapping[str, Mapping[str, Metric]] = _MetricsByKind()
"""Built-in metrics by task kind, read from `KINDS`; the first of each is its default primary."""
