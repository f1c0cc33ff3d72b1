"""Per-task losses by name, with their parameters: the standard ones, label smoothing, and
losses that tolerate noisy labels.

- `gce`, generalized cross entropy (Zhang & Sabuncu, NeurIPS 2018): (1 − p_y^q) / q; q → 0 is
  cross entropy, q = 1 the (noise-robust) mean absolute error; q = 0.7 by default.
- `sce`, symmetric cross entropy (Wang et al., ICCV 2019): α CE + β RCE with the reverse cross
  entropy RCE = −Σ_k p_k log y_k = −A (1 − p_y), log 0 clipped to A = −4; α = 0.1, β = 1.
- `huber` (robust regression): quadratic within `delta` of the target, linear beyond.

Binary tasks use the two classes {0, 1} with p_1 = σ(logit). Label smoothing (`bce`,
`cross_entropy`) moves ε of each target's mass to the uniform distribution over classes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

ElementLoss = Callable[[Tensor, Tensor], Tensor]
"""Maps (predictions, targets) of labelled rows to per-element losses (no reduction)."""


def _expected(
    pred: Tensor, target: Tensor, binary: bool, loss: Callable[[Tensor], Tensor]
) -> Tensor:
    """Σ_k y_k loss(log p_k): the loss of each row's labelled class, or for a binary target
    given as a probability y, y · loss(log p₁) + (1 − y) · loss(log p₀) (the loss under the
    label distribution, as bce reads such a target; truncating y to a class lost it)."""
    logits = torch.stack([torch.zeros_like(pred), pred], dim=-1) if binary else pred  # σ(pred)
    per_class = loss(F.log_softmax(logits, dim=-1))
    if binary:
        y = target.to(per_class.dtype)
        return (1 - y) * per_class[..., 0] + y * per_class[..., 1]
    return per_class.gather(-1, target.long().unsqueeze(-1)).squeeze(-1)


def bce(pred: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    target = target.to(pred.dtype)
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / 2
    return F.binary_cross_entropy_with_logits(pred, target, reduction="none")


def cross_entropy(pred: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    return F.cross_entropy(pred, target.long(), reduction="none", label_smoothing=label_smoothing)


def gce(pred: Tensor, target: Tensor, binary: bool, q: float = 0.7) -> Tensor:
    return _expected(pred, target, binary, lambda log_p: (1 - torch.exp(q * log_p)) / q)


def sce(
    pred: Tensor,
    target: Tensor,
    binary: bool,
    alpha: float = 0.1,
    beta: float = 1.0,
    log_clip: float = -4.0,
) -> Tensor:
    return _expected(
        pred, target, binary, lambda log_p: alpha * -log_p + beta * -log_clip * (1 - log_p.exp())
    )


def _widened(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Both in the wider of their float types: a half-precision output (autocast) compared
    with float32 targets in float32, not with the targets rounded to half (100.3 → 100.5)."""
    if not target.is_floating_point():
        return pred, target.to(pred.dtype)
    dtype = torch.promote_types(pred.dtype, target.dtype)
    return pred.to(dtype), target.to(dtype)


def huber(pred: Tensor, target: Tensor, delta: float = 1.0) -> Tensor:
    return F.huber_loss(*_widened(pred, target), reduction="none", delta=delta)


def mse(pred: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(*_widened(pred, target), reduction="none")


def l1(pred: Tensor, target: Tensor) -> Tensor:
    return F.l1_loss(*_widened(pred, target), reduction="none")


@dataclass(frozen=True)
class LossSpec:
    """An element-wise loss offered by name: its function, the parameters a task may set, and
    whether it takes `label_smoothing`. Task kinds list the losses they accept as LossSpecs."""

    fn: Callable[..., Tensor]
    params: tuple[str, ...] = ()
    smoothing: bool = False


SPECS: dict[str, LossSpec] = {
    "bce": LossSpec(bce, smoothing=True),
    "cross_entropy": LossSpec(cross_entropy, smoothing=True),
    "gce": LossSpec(gce, ("q",)),
    "sce": LossSpec(sce, ("alpha", "beta", "log_clip")),
    "mse": LossSpec(mse),
    "l1": LossSpec(l1),
    "huber": LossSpec(huber, ("delta",)),
}
"""The built-in losses by name; each task kind picks the ones that fit it (`standard_losses`)."""

LOSSES: dict[str, ElementLoss] = {
    "bce": bce,
    "cross_entropy": cross_entropy,
    "mse": mse,
    "l1": l1,
    "huber": huber,
}
"""The standard element-wise losses with default parameters (all by name: `SPECS`)."""


def standard_losses(*names: str) -> dict[str, LossSpec]:
    """The built-in losses `names`, in that order (a kind's first loss is its default)."""
    return {name: SPECS[name] for name in names}


def check_loss(
    task: str, name: str, spec: LossSpec, params: Mapping[str, float], label_smoothing: float
) -> None:
    """Refuse unknown parameters and bad values for loss `name` (that the task's kind accepts)."""
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        allowed = list(spec.params) or "none"
        raise ValueError(
            f"task {task!r}: loss {name!r} has no parameter {unknown}; its parameters: {allowed}"
        )
    if label_smoothing and not spec.smoothing:
        raise ValueError(
            f"task {task!r}: label_smoothing applies to bce and cross_entropy, not {name!r}"
        )
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"task {task!r}: label_smoothing must be in [0, 1), got {label_smoothing}")
    q = params.get("q")
    if q is not None and not 0 < q <= 1:
        raise ValueError(f"task {task!r}: gce q must be in (0, 1], got {q}")
    for key in ("alpha", "beta"):
        if params.get(key, 0) < 0:
            raise ValueError(f"task {task!r}: sce {key} must be >= 0, got {params[key]}")
    if params.get("delta", 1) <= 0:
        raise ValueError(f"task {task!r}: huber delta must be > 0, got {params['delta']}")


def make_loss(
    spec: LossSpec,
    params: Mapping[str, float],
    label_smoothing: float = 0.0,
    options: Mapping[str, object] | None = None,
) -> ElementLoss:
    """The loss of `spec` with the task's parameters and the kind's `options` bound (e.g.
    `binary=True` for gce / sce on binary tasks); checked beforehand by `check_loss`."""
    bound: dict[str, object] = {**(options or {}), **params}
    if spec.smoothing and label_smoothing:
        bound["label_smoothing"] = label_smoothing
    return functools.partial(spec.fn, **bound)
