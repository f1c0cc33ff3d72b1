"""Task specs, kinds, losses and metrics."""

from polytask.tasks._kinds import (
    IGNORE_INDEX,
    BinaryKind,
    ContrastiveKind,
    DenoisingKind,
    DenseRegressionKind,
    Derived,
    KeypointsKind,
    MulticlassKind,
    MultilabelKind,
    NormalsKind,
    ReconstructionKind,
    RegressionKind,
    SegmentationKind,
    SelfSupervisedKind,
    TargetFit,
    TaskKind,
    every_row,
)
from polytask.tasks._losses import LOSSES, ElementLoss, LossSpec, standard_losses
from polytask.tasks._metrics import Metric, Undefined
from polytask.tasks._registry import KINDS, METRICS, TASK_KINDS, label_mask
from polytask.tasks._task import Task, linear_head, reported_tasks

__all__ = [
    "IGNORE_INDEX",
    "KINDS",
    "LOSSES",
    "METRICS",
    "TASK_KINDS",
    "BinaryKind",
    "ContrastiveKind",
    "DenoisingKind",
    "DenseRegressionKind",
    "Derived",
    "ElementLoss",
    "KeypointsKind",
    "LossSpec",
    "Metric",
    "MulticlassKind",
    "MultilabelKind",
    "NormalsKind",
    "ReconstructionKind",
    "RegressionKind",
    "SegmentationKind",
    "SelfSupervisedKind",
    "TargetFit",
    "Task",
    "TaskKind",
    "Undefined",
    "every_row",
    "label_mask",
    "linear_head",
    "reported_tasks",
    "standard_losses",
]
