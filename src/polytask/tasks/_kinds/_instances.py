"""What the kinds of variable-length instance targets (boxes, keypoint sets) share: one JSON
column per image, and losses and decoding that read the task's `kind_params`, so each is bound
to its task (`TaskKind.for_task`)."""

from __future__ import annotations

import functools
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Self

from polytask.tasks._kinds._base import TaskKind
from polytask.tasks._metrics import Undefined

if TYPE_CHECKING:
    from polytask.tasks._task import Task


class InstanceKind(TaskKind):
    """A kind bound to one task: `settings(task)` parses its `kind_params` (refusing bad ones in
    `validate`), and `bound` gives the bound task's settings to the hooks that are not given
    the task (`loss`, `predict`, `served`)."""

    label: ClassVar[str]
    """The kind's name in messages (e.g. "detection")."""
    squeeze = False
    dense = True
    reads_files = True

    def __init__(self, task: Task | None = None) -> None:
        self.task = task

    def for_task(self, task: Task) -> Self:
        return type(self)(task)

    @abstractmethod
    def settings(self, task: Task) -> Any:
        """The task's parsed `kind_params` (a ValueError names a bad one)."""

    @functools.cached_property
    def bound(self) -> Any:
        """The bound task's settings (what `loss`, `predict` and `served` use)."""
        if self.task is None:
            raise TypeError(
                f"the {self.label} kind needs its task's kind_params here: use task.kind_spec "
                f"(bound to the task) rather than KINDS[{self.label!r}]"
            )
        return self.settings(self.task)

    def validate(self, task: Task) -> None:
        self.settings(task)
        if len(task.target_columns) != 1:
            raise ValueError(
                f"task {task.name!r}: a {self.label} task reads one column (a .json path or the "
                f"JSON text per image), got {list(task.target_columns)}"
            )
        for key, value in (task.loss_params or {}).items():
            if value < 0:
                raise ValueError(f"task {task.name!r}: loss {key} must be >= 0, got {value}")


def coco_precision_mean(precision: Any, none: Undefined) -> float:
    """The mean of COCOeval's accumulated precisions where defined (-1: a class or recall
    point without true instances); `none` where none is."""
    defined = precision[precision > -1]
    return float(defined.mean()) if len(defined) else none
