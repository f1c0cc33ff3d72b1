"""Planning a training step's gradients up front: which mode, what it holds, whether the trunk
is walked by hand, with a clear error when the model or balancer cannot work with the mode."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from polytask.balancers._base import Balancer
from polytask.gradients._losses import LossWeighting
from polytask.gradients._mode import GradientMode, Recorded
from polytask.gradients._registry import DEFAULT_MODE, LEAN_MODE, MODES, make_mode
from polytask.gradients._walk import walkable
from polytask.models._base import MultiTaskNet

AUTO = "auto"


@dataclass(frozen=True)
class GradientPlan:
    """How each step gets its gradients: the mode object, what it holds, and why."""

    method: GradientMode
    held_floats: int
    reason: str = ""
    walk: bool = False
    """An exact mode on a trunk of linear layers and elementwise activations: its forward runs
    without autograd and the task gradients are walked back by hand (`_walk`)."""

    @property
    def mode(self) -> str:
        """The mode's name ("losses" for loss weighting)."""
        return self.method.name

    def record(self, model: MultiTaskNet, x: Tensor) -> Recorded:
        """The forward pass this plan's backward reads."""
        return self.method.record(model, x, self.walk)

    def describe(self) -> str:
        if not self.method.per_task:
            return "gradients: one backward of the combined loss"
        mb = self.held_floats * 4 / 2**20
        walk = " (trunk walked by hand)" if self.walk else ""
        return (
            f"gradients: {self.mode} mode{walk}, holding {self.held_floats:,} floats "
            f"({mb:.1f} MB)" + (f"; {self.reason}" if self.reason else "")
        )


def plan_gradients(
    model: MultiTaskNet,
    balancer: Balancer,
    mode: str = AUTO,
    *,
    batch_size: int,
    max_jacobian_mb: float = 1024.0,
    **options: Any,
) -> GradientPlan:
    """Choose the mode up front (`auto`: the balancer's preferred mode, else the exact path,
    or the lean exact path when J would exceed `max_jacobian_mb`), with a clear error when it
    cannot work for this model and balancer. `options` are the modes' settings
    (`sketch_size`, `subsample_size`, `last_params`)."""
    if not balancer.uses_gradients:
        return GradientPlan(LossWeighting(), 0)
    shared = [p for p in model.shared_parameters() if p.requires_grad]
    if not shared:
        frozen = any(True for _ in model.shared_parameters())
        raise ValueError(
            f"{type(model).__name__} has no parameters shared by all tasks"
            + (" left to train (training.freeze lists 'shared')" if frozen else "")
            + f", so {type(balancer).__name__} has no gradients to balance: use a "
            "loss-weighting balancer (ew, uncertainty, dwa, ...)"
            + (" or unfreeze the shared parameters" if frozen else "")
        )
    k = len(model.task_names)
    full = k * sum(p.numel() for p in shared)
    blocks = model.trunk_blocks()
    name, reason = mode, ""
    if name == AUTO:
        name, reason = auto_mode(
            balancer, model.shared_representation, full, bool(blocks), max_jacobian_mb
        )
        preferred = balancer.preferred_mode
        if preferred is not None and name != preferred:
            warnings.warn(
                f"{type(balancer).__name__} is defined on the {preferred} gradients, which "
                f"{type(model).__name__} does not have (no one shared representation every "
                f"head reads): it runs on the {name} mode's gradients instead, i.e. as the "
                "method it is built on (mgda_ub as mgda); use an architecture with one shared "
                "representation (hard_sharing) for it",
                UserWarning,
                stacklevel=2,
            )
    method = make_mode(name, **options)
    try:
        method.check_balancer(balancer)
    except ValueError as err:
        raise ValueError(f"{err}: set training.gradient_mode accordingly") from None
    method.check_model(model)
    held = method.held_floats(model, balancer, shared, batch_size)
    walks = method.can_walk and _walks(model, blocks, shared)
    return GradientPlan(method, held, reason, walks)


def auto_mode(
    balancer: Balancer,
    representation: bool,
    jacobian_floats: int,
    segments: bool,
    max_jacobian_mb: float = 1024.0,
) -> tuple[str, str]:
    """The mode `auto` picks, and why: the balancer's preferred mode where there is one shared
    representation, else the exact Jacobian path, or the lean exact path (which needs the
    trunk's `segments`) when J would exceed `max_jacobian_mb`."""
    name = (balancer.preferred_mode if representation else None) or DEFAULT_MODE
    too_big = jacobian_floats > max_jacobian_mb * 2**20 / 4
    if name == DEFAULT_MODE and too_big and segments and MODES[LEAN_MODE].refusal(balancer) is None:
        mb = jacobian_floats * 4 / 2**20
        return LEAN_MODE, f"J would take {mb:.0f} MB > max_jacobian_mb"
    return name, ""


def _walks(
    model: MultiTaskNet, blocks: Sequence[nn.Module] | None, shared: Sequence[Tensor]
) -> bool:
    """Whether an exact mode can walk this trunk by hand: linear layers and elementwise
    activations holding every shared parameter (dropout only with p = 0, since the step
    trains), and no model penalty that might read the trunk's forward graph."""
    if not model.shared_representation or not blocks or not walkable(blocks):
        return False
    if any(isinstance(b, nn.Dropout) and b.p for b in blocks):
        return False
    if type(model).penalty is not MultiTaskNet.penalty:
        return False
    in_blocks = {id(p) for b in blocks for p in b.parameters() if p.requires_grad}
    return in_blocks == {id(p) for p in shared}
