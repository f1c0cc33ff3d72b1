"""polytask: multi-task learning on PyTorch."""

__version__ = "0.1.0"

from polytask.balancers import BALANCERS, Balancer, backward, make_balancer
from polytask.data import TabularPreprocessor, TaskData, make_customers, random_split
from polytask.models import MLP, MultiTaskModel, hard_sharing_mlp
from polytask.tasks import Metric, Task
from polytask.train import TrainConfig, Trainer, retain_freed_memory

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
    "retain_freed_memory",
]
