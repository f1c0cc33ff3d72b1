"""`cosine` (Loshchilov & Hutter 2017, "SGDR", without restarts): an optional linear warm-up,
then half a cosine from each group's base rate down to `min_factor` of it at the run's end."""

from __future__ import annotations

from typing import ClassVar

from polytask.train.lr._base import Floor, LRSchedule, WarmupSteps, cosine_factor, linear_warmup


class Cosine(LRSchedule):
    """Warm up over `warmup` steps (0: none), then decay along a cosine over the rest of the
    run's steps to `min_factor` × the base rate."""

    name: ClassVar[str] = "cosine"

    def __init__(self, warmup: WarmupSteps = 0, min_factor: Floor = 0.0) -> None:
        self.warmup, self.min_factor = warmup, min_factor

    def warmup_steps(self) -> int:
        return self.warmup

    def scale(self, step: int, total: int) -> float:
        if step < self.warmup:
            return linear_warmup(step, self.warmup)
        progress = (step - self.warmup) / max(1, total - self.warmup)
        return cosine_factor(progress, self.min_factor)
