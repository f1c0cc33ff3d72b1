"""`plateau`: the learning rate is multiplied by `factor` whenever the monitored validation
value (`TrainConfig.monitor`, in its direction, as early stopping reads it) has not improved
for `patience` evaluations; never below `min_factor` of each group's base rate."""

from __future__ import annotations

from typing import ClassVar, cast

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from polytask.train.lr._base import Floor, LRSchedule, Shrink, Steps


class Plateau(LRSchedule):
    """After `patience` evaluations in a row without a strict improvement, multiply by
    `factor` (and count again from there); the rate stops at `min_factor` × the base rate."""

    name: ClassVar[str] = "plateau"
    per_evaluation: ClassVar[bool] = True

    def __init__(self, factor: Shrink = 0.5, patience: Steps = 3, min_factor: Floor = 0.0) -> None:
        self.factor, self.patience, self.min_factor = factor, patience, min_factor

    def make(self, optimizer: Optimizer, total_steps: int, maximise: bool) -> LRScheduler:
        floors = [self.min_factor * group["lr"] for group in optimizer.param_groups]
        # torch lowers once more than `patience` evaluations were bad; ours at `patience` (as
        # early stopping counts), and any strict improvement counts (threshold 0)
        return ReduceLROnPlateau(
            optimizer,
            mode="max" if maximise else "min",
            factor=self.factor,
            patience=self.patience - 1,
            threshold=0.0,
            min_lr=floors,
        )

    def evaluated(self, scheduler: LRScheduler, value: float) -> None:
        cast(ReduceLROnPlateau, scheduler).step(value)
