"""polytask: multi-task learning on PyTorch."""

__version__ = "0.1.0"

from polytask.balancers import BALANCERS, Balancer, make_balancer  # noqa: E402
from polytask.data import TabularPreprocessor, TaskData, make_customers  # noqa: E402
from polytask.models import MLP, MultiTaskModel, hard_sharing_mlp  # noqa: E402
from polytask.tasks import Metric, Task  # noqa: E402
from polytask.train import Trainer, TrainConfig  # noqa: E402

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
    "hard_sharing_mlp",
    "make_balancer",
    "make_customers",
]
