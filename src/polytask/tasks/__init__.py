"""Task specs, kinds, losses and metrics."""

from polytask.tasks._kinds import IGNORE_INDEX, LOSSES, TASK_KINDS, TaskKind, label_mask
from polytask.tasks._metrics import METRICS, Metric
from polytask.tasks._task import Task, linear_head

__all__ = [
    "IGNORE_INDEX",
    "LOSSES",
    "METRICS",
    "TASK_KINDS",
    "Metric",
    "Task",
    "TaskKind",
    "label_mask",
    "linear_head",
]
