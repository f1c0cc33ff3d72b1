"""Task kinds: the `TaskKind` base class and one module per built-in kind."""

from polytask.tasks._kinds._base import IGNORE_INDEX, Scale, TargetFit, TaskKind
from polytask.tasks._kinds._binary import BinaryKind
from polytask.tasks._kinds._multiclass import MulticlassKind
from polytask.tasks._kinds._multilabel import MultilabelKind
from polytask.tasks._kinds._regression import RegressionKind

__all__ = [
    "IGNORE_INDEX",
    "BinaryKind",
    "MulticlassKind",
    "MultilabelKind",
    "RegressionKind",
    "Scale",
    "TargetFit",
    "TaskKind",
]
