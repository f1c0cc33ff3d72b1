"""Gradient modes by name. Adding a mode: one file (a `GradientMode` subclass) and one line here."""

from __future__ import annotations

from typing import Any

from polytask._params import lookup
from polytask.balancers._base import Balancer
from polytask.gradients._gramian import GramianMode
from polytask.gradients._jacobian import JacobianMode
from polytask.gradients._last_layer import LastLayerMode
from polytask.gradients._mode import GradientMode
from polytask.gradients._representation import RepresentationMode
from polytask.gradients._sketch import SketchMode
from polytask.gradients._subsample import SubsampleMode

MODES: dict[str, type[GradientMode]] = {
    "jacobian": JacobianMode,
    "gramian": GramianMode,
    "representation": RepresentationMode,
    "last_layer": LastLayerMode,
    "subsample": SubsampleMode,
    "sketch": SketchMode,
}
DEFAULT_MODE = "jacobian"
"""What `auto` picks: the exact path (unless the balancer prefers its own space)."""
LEAN_MODE = "gramian"
"""What `auto` falls back to when J would exceed `max_jacobian_mb`: the lean exact path."""


def make_mode(name: str, **options: Any) -> GradientMode:
    """The mode `name` with its settings from `options` (each mode reads its own)."""
    return lookup("gradient mode", name, MODES).create(**options)


def modes_for(balancer: Balancer) -> list[str]:
    """The registered modes that can serve `balancer`."""
    return [name for name, cls in MODES.items() if cls.refusal(balancer) is None]
