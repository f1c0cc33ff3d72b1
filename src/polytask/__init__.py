"""polytask: multi-task learning on PyTorch."""

from polytask._seeding import seeded
from polytask._version import __version__
from polytask.balancers import BALANCERS, Balancer, make_balancer
from polytask.data import TabularPreprocessor, TaskData, make_customers, random_split
from polytask.gradients import backward
from polytask.models import MLP, MultiTaskModel, hard_sharing_mlp
from polytask.tasks import Metric, Task
from polytask.train import TrainConfig, Trainer

__all__ = [
    "BALANCERS",
    "MLP",
    "Balancer",
    "Metric",
    "MultiTaskModel",
    "TabularPreprocessor",
    "Task",
    "TaskData",
    "TrainConfig",
    "Trainer",
    "__version__",
    "backward",
    "hard_sharing_mlp",
    "make_balancer",
    "make_customers",
    "random_split",
    "seeded",
]
