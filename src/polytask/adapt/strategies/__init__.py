"""How a new task is fitted on a trained model (`polytask.adapt.adapt(strategy=...)`)."""

from polytask.adapt.strategies._base import AdaptStrategy
from polytask.adapt.strategies._registry import STRATEGIES, check_strategy, make_strategy

__all__ = ["STRATEGIES", "AdaptStrategy", "check_strategy", "make_strategy"]
