"""Multi-task architectures."""

from polytask.models.hard_sharing import MultiTaskModel, hard_sharing_mlp
from polytask.models.mlp import MLP

__all__ = ["MLP", "MultiTaskModel", "hard_sharing_mlp"]
