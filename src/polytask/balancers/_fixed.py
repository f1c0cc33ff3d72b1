"""Fixed user weights: Σ_k w_k L_k with constant w_k chosen by the user."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from polytask.balancers._base import Balancer


class FixedWeights(Balancer):
    """Constant weights, given per task name (missing names get `default`)."""

    repeatable: ClassVar[bool] = True

    def __init__(self, weights: Mapping[str, float], default: float | None = None) -> None:
        super().__init__()
        bad = {k: v for k, v in weights.items() if not (v >= 0 and v < float("inf"))}
        if bad:
            raise ValueError(f"fixed weights must be finite and >= 0, got {bad}")
        self.given = dict(weights)
        self.default = default
        self.register_buffer("_w", torch.zeros(0))

    @classmethod
    def params_for(cls, params: Mapping[str, Any], task_names: Sequence[str]) -> dict[str, Any]:
        weights = params.get("weights") or {}
        return {**params, "weights": {k: v for k, v in weights.items() if k in task_names}}

    def setup(self, task_names: Sequence[str]) -> None:
        super().setup(task_names)
        unknown = sorted(set(self.given) - set(task_names))
        if unknown:
            raise ValueError(
                f"fixed weights name unknown tasks {unknown}; the tasks are {list(task_names)}"
            )
        missing = [t for t in task_names if t not in self.given]
        if missing and self.default is None:
            raise ValueError(
                f"fixed weights are missing for tasks {missing}: give a weight for each task "
                "or set `default`"
            )
        values = [self.given.get(t, self.default or 0.0) for t in task_names]
        self._w = torch.tensor(values, dtype=torch.float32)

    def loss_weights(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)
        return self._w.to(losses.dtype)
