"""Loss-weighting and gradient-balancing methods behind one interface."""

from polytask.balancers.base import Balancer
from polytask.balancers.dwa import DynamicWeightAverage
from polytask.balancers.equal import EqualWeights
from polytask.balancers.fixed import FixedWeights
from polytask.balancers.registry import BALANCERS, make_balancer
from polytask.balancers.uncertainty import UncertaintyWeighting

__all__ = [
    "BALANCERS",
    "Balancer",
    "DynamicWeightAverage",
    "EqualWeights",
    "FixedWeights",
    "UncertaintyWeighting",
    "make_balancer",
]
