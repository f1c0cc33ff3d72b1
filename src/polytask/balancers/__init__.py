"""Loss-weighting and gradient-balancing methods behind one interface, found by name in
`BALANCERS` (`make_balancer(name, **params)` validates the parameters)."""

from polytask.balancers._base import (
    Balancer,
    BilevelBalancer,
    GradientInfo,
    GramianBalancer,
    JacobianBalancer,
    weighted_sum,
)
from polytask.balancers._dwa import DynamicWeightAverage
from polytask.balancers._equal import EqualWeights
from polytask.balancers._fixed import FixedWeights
from polytask.balancers._registry import BALANCERS, balancer_params, make_balancer
from polytask.balancers._uncertainty import UncertaintyWeighting

__all__ = [
    "BALANCERS",
    "Balancer",
    "BilevelBalancer",
    "DynamicWeightAverage",
    "EqualWeights",
    "FixedWeights",
    "GradientInfo",
    "GramianBalancer",
    "JacobianBalancer",
    "UncertaintyWeighting",
    "balancer_params",
    "make_balancer",
    "weighted_sum",
]

_MOVED = ("MODES", "BackwardResult", "backward", "record_segments")


def __getattr__(name: str) -> object:
    """The engine's names moved to `polytask.gradients`; the old imports warn and still work."""
    if name in _MOVED:
        import warnings

        import polytask.gradients

        warnings.warn(
            f"polytask.balancers.{name} moved to polytask.gradients.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(polytask.gradients, name)
    raise AttributeError(f"module 'polytask.balancers' has no attribute {name!r}")
