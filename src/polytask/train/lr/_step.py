"""`step`: the learning rate is multiplied by `gamma` every `every` steps."""

from __future__ import annotations

from typing import ClassVar

from polytask.train.lr._base import LRSchedule, Shrink, Steps


class StepDecay(LRSchedule):
    """Step k (from 1) uses `gamma` ** ((k - 1) // `every`) × each group's base rate."""

    name: ClassVar[str] = "step"

    def __init__(self, every: Steps, gamma: Shrink = 0.1) -> None:
        self.every, self.gamma = every, gamma

    def scale(self, step: int, total: int) -> float:
        return float(self.gamma ** (step // self.every))
