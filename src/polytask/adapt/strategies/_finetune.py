"""Fine-tuning: the shared weights train with the new head, with nothing holding them."""

from __future__ import annotations

from polytask.adapt.strategies._base import AdaptStrategy


class FineTune(AdaptStrategy):
    """The new task's head and the shared weights both train (the old heads stay frozen): the
    most flexible, and the one that lets the old tasks drift most; see `l2sp` for a held
    version."""

    trains_shared = True
