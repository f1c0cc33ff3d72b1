"""Mixed precision: the forward pass under autocast, and a dynamic loss scale for float16.

The balancers' solvers always run in float32 or float64: only the forward (and the loss) is
autocast; the backward runs outside it and the per-task gradients and Gramians are formed in
the parameters' dtype (float32). torch's `GradScaler` unscales one optimizer's combined
gradient; here the per-task gradients are unscaled before any balancer reads them (see
the training step), so this small scaler only keeps the scale and its update rule, which
is `GradScaler`'s: start at 2^16, halve on an overflow (the step is skipped), double after
2000 finite steps.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch
from torch import Tensor

Precision = Literal["32", "bf16", "16"]
PRECISIONS: dict[str, torch.dtype | None] = {
    "32": None,
    "bf16": torch.bfloat16,
    "16": torch.float16,
}


def normalise_precision(value: object) -> str:
    """`precision` as written in a config (32, "32", "bf16", 16, "16", "fp16") → its name."""
    text = str(value).lower().removeprefix("fp")
    text = {"bfloat16": "bf16", "float16": "16", "float32": "32", "half": "16"}.get(text, text)
    if text not in PRECISIONS:
        raise ValueError(
            f"precision must be 32, bf16 or 16, got {value!r} (bf16: bfloat16 autocast, no loss "
            "scale needed; 16: float16 autocast with a dynamic loss scale)"
        )
    return text


def autocast(precision: str, device: torch.device) -> AbstractContextManager[Any]:
    """The forward pass's autocast context for `precision` (a no-op for 32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def full_precision(t: Tensor) -> Tensor:
    """`t` in float32 when autocast made it half precision (losses, penalties), else itself."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class LossScale:
    """The dynamic loss scale of float16 training (GradScaler's rule), saved in checkpoints."""

    def __init__(
        self, init: float = 2.0**16, growth_interval: int = 2000, minimum: float = 2.0**-14
    ) -> None:
        self.value = init
        self.growth_interval = growth_interval
        self.minimum = minimum
        self.good_steps = 0
        self.overflows = 0

    def finite_step(self) -> None:
        """A step whose gradients were finite: grow the scale after `growth_interval` of them."""
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            self.value *= 2.0
            self.good_steps = 0

    def overflow(self) -> bool:
        """A step whose gradients overflowed: halve the scale; False once it cannot shrink
        further (the gradients are not finite at any scale: a real divergence)."""
        self.overflows += 1
        self.good_steps = 0
        if self.value / 2.0 < self.minimum:
            return False
        self.value /= 2.0
        return True

    def state_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "good_steps": self.good_steps, "overflows": self.overflows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])
        self.good_steps = int(state["good_steps"])
        self.overflows = int(state["overflows"])
