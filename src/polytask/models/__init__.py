"""Multi-task architectures: all keep the `MultiTaskNet` contract."""

from polytask.models.base import MultiTaskNet
from polytask.models.experts import PLE, MMoE
from polytask.models.hard_sharing import MultiTaskModel, hard_sharing_mlp
from polytask.models.mlp import MLP
from polytask.models.towers import task_tower

__all__ = ["MLP", "PLE", "MMoE", "MultiTaskModel", "MultiTaskNet", "hard_sharing_mlp", "task_tower"]
