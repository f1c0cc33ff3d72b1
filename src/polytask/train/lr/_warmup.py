"""`warmup`: the learning rate rises linearly over the first `warmup` steps, then stays."""

from __future__ import annotations

from typing import ClassVar

from polytask.train.lr._base import LRSchedule, Steps, linear_warmup


class Warmup(LRSchedule):
    """Step k (from 1) uses min(1, k / `warmup`) × each group's base rate."""

    name: ClassVar[str] = "warmup"

    def __init__(self, warmup: Steps = 100) -> None:
        self.warmup = warmup

    def warmup_steps(self) -> int:
        return self.warmup

    def scale(self, step: int, total: int) -> float:
        return linear_warmup(step, self.warmup)
