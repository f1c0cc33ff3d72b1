"""polytask: multi-task learning on PyTorch.

The names below are imported on first use (PEP 562), so that `import polytask` and the
command line's `--help` do not load torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from polytask._version import __version__

if TYPE_CHECKING:
    from polytask.balancers import BALANCERS, Balancer, make_balancer
    from polytask.data import TabularPreprocessor, TaskData, make_customers, random_split
    from polytask.gradients import backward
    from polytask.models import MLP, MultiTaskModel, hard_sharing_mlp, seeded, teaching
    from polytask.tasks import Metric, Task
    from polytask.train import TrainConfig, Trainer

_HOME = {
    "BALANCERS": "polytask.balancers",
    "Balancer": "polytask.balancers",
    "make_balancer": "polytask.balancers",
    "TabularPreprocessor": "polytask.data",
    "TaskData": "polytask.data",
    "make_customers": "polytask.data",
    "random_split": "polytask.data",
    "backward": "polytask.gradients",
    "MLP": "polytask.models",
    "MultiTaskModel": "polytask.models",
    "hard_sharing_mlp": "polytask.models",
    "seeded": "polytask.models",
    "teaching": "polytask.models",
    "Metric": "polytask.tasks",
    "Task": "polytask.tasks",
    "TrainConfig": "polytask.train",
    "Trainer": "polytask.train",
}
"""Each public name and the package it comes from."""

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
    "teaching",
]


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'polytask' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
