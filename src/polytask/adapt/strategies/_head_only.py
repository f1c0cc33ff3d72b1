"""Head only: the trained model stays frozen; only the new task's own weights are fitted."""

from __future__ import annotations

from polytask.adapt.strategies._base import AdaptStrategy


class HeadOnly(AdaptStrategy):
    """A linear probe (or tower) on the frozen shared representation: the old tasks' outputs
    stay bit-identical, and few labels suffice when the trunk already encodes what the new task
    needs."""

    trains_shared = False
