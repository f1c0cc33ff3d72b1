"""Deprecated location of the gradient engine: import from `polytask.gradients` instead."""

import warnings
from typing import Any

import polytask.gradients as _public
import polytask.gradients._engine as _engine

warnings.warn(
    "polytask.balancers.engine is deprecated and will be removed: import backward, "
    "record_segments, split_features and linear_task_features from polytask.gradients",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    return getattr(_public, name) if hasattr(_public, name) else getattr(_engine, name)
