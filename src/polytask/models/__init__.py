"""Multi-task architectures: all keep the `MultiTaskNet` contract."""

from polytask.models.aitm import AITM
from polytask.models.base import MultiTaskNet
from polytask.models.branching import LearningToBranch
from polytask.models.esmm import ESMM
from polytask.models.experts import PLE, MMoE
from polytask.models.hard_sharing import MultiTaskModel, hard_sharing_mlp
from polytask.models.mean_regularised import MeanRegularised
from polytask.models.mlp import MLP
from polytask.models.mtan import MTAN, mtan_mlp
from polytask.models.multi_input import MultiInput
from polytask.models.towers import task_tower
from polytask.models.towers_coupled import CrossStitch, SoftSharing

__all__ = [
    "AITM",
    "ESMM",
    "MLP",
    "MTAN",
    "PLE",
    "CrossStitch",
    "LearningToBranch",
    "MMoE",
    "MeanRegularised",
    "MultiInput",
    "MultiTaskModel",
    "MultiTaskNet",
    "SoftSharing",
    "hard_sharing_mlp",
    "mtan_mlp",
    "task_tower",
]
