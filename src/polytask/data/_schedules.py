"""Task sampling schedules: which data source(s) each training step draws its batch from.

A source is one data set (one task's own, or a joint one labelling several tasks). With sizes
n_i and S sources:

- `joint`: every source every step (one batch from each, collated together);
- `round_robin`: source (step mod S), in the order given;
- `uniform`: p_i = 1/S;
- `proportional`: p_i ∝ n_i;
- `temperature`: p_i ∝ n_i^(1/T) (T = 1 proportional, T → ∞ uniform; T = 2 by default);
- `annealed` (Stickland & Murray 2019, as MT-DNN-style multi-task fine-tuning): p_i ∝ n_i^α with
  α = 1 − 0.8 (e − 1)/(E − 1) over epochs e = 1..E: proportional first, flatter later;
- `dynamic`: p_i ∝ n_i^(1/T) · r_i^γ with r_i = L_i / L_i(start), the ratio of source i's mean
  training loss in the last window to its first window's: a source whose loss has fallen least
  (learning slowest, or hardest) is drawn more. Until a window has ended, r_i = 1. A source not
  drawn in a window keeps its ratio, and its start is its first window with a draw (an unmeasured
  loss read as 0 took every draw for one source, or none ever again).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from polytask._params import lookup


@dataclass
class Schedule:
    """Per-step source probabilities from the sources' sizes and the training progress."""

    name: ClassVar[str]
    joint: ClassVar[bool] = False
    """Every source every step (no sampling)."""
    cyclic: ClassVar[bool] = False
    """Sources in turn (no sampling)."""
    reads_losses: ClassVar[bool] = False
    """Whether `update` reads the sources' training losses."""

    def probabilities(self, sizes: np.ndarray, epoch: int, epochs: int) -> np.ndarray:
        """p (S,) for a step in 0-based `epoch` of `epochs`."""
        raise NotImplementedError

    def update(self, source_losses: np.ndarray) -> None:
        """Called at the end of each window with each source's mean training loss."""

    def state_dict(self) -> dict[str, list[float]]:
        return {}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        """Restore what `state_dict` saved."""


def _normalised(weights: np.ndarray) -> np.ndarray:
    return weights / weights.sum()


def _powered(sizes: np.ndarray, power: float, factor: np.ndarray | None = None) -> np.ndarray:
    """p ∝ n^power (· factor), computed from logarithms: n^(1/T) overflows for a small T
    (5000^100), which torch.multinomial then refused with a traceback."""
    logs = power * np.log(sizes.astype(float))
    if factor is not None:
        logs = logs + np.log(factor)
    return _normalised(np.exp(logs - logs.max()))


@dataclass
class Joint(Schedule):
    name: ClassVar[str] = "joint"
    joint: ClassVar[bool] = True

    def probabilities(self, sizes: np.ndarray, epoch: int, epochs: int) -> np.ndarray:
        return np.ones(len(sizes))


@dataclass
class RoundRobin(Schedule):
    name: ClassVar[str] = "round_robin"
    cyclic: ClassVar[bool] = True

    def probabilities(self, sizes: np.ndarray, epoch: int, epochs: int) -> np.ndarray:
        return np.full(len(sizes), 1.0 / len(sizes))


@dataclass
class Uniform(Schedule):
    name: ClassVar[str] = "uniform"

    def probabilities(self, sizes: np.ndarray, epoch: int, epochs: int) -> np.ndarray:
        return np.full(len(sizes), 1.0 / len(sizes))


@dataclass
class Proportional(Schedule):
    name: ClassVar[str] = "proportional"

    def probabilities(self, sizes: np.ndarray, epoch: int, epochs: int) -> np.ndarray:
        return _normalised(sizes.astype(float))


@dataclass
class Temperature(Schedule):
    name: ClassVar[str] = "temperature"
    temperature: float = 2.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:  # NaN too
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def probabilities(self, sizes: np.ndarray, epoch: int, epochs: int) -> np.ndarray:
        return _powered(sizes, 1.0 / self.temperature)


@dataclass
class Annealed(Schedule):
    name: ClassVar[str] = "annealed"

    @staticmethod
    def alpha(epoch: int, epochs: int) -> float:
        """1 − 0.8 (e − 1)/(E − 1) for the 1-based epoch e = epoch + 1."""
        return 1.0 if epochs <= 1 else 1.0 - 0.8 * min(epoch, epochs - 1) / (epochs - 1)

    def probabilities(self, sizes: np.ndarray, epoch: int, epochs: int) -> np.ndarray:
        return _normalised(sizes.astype(float) ** self.alpha(epoch, epochs))


@dataclass
class Dynamic(Schedule):
    name: ClassVar[str] = "dynamic"
    reads_losses: ClassVar[bool] = True
    temperature: float = 2.0
    gamma: float = 1.0
    start: list[float] = field(default_factory=list)
    ratio: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and 0 <= self.gamma < float("inf")):  # NaN too
            raise ValueError(
                f"dynamic needs temperature > 0 and a finite gamma >= 0, got "
                f"{self.temperature}, {self.gamma}"
            )

    def probabilities(self, sizes: np.ndarray, epoch: int, epochs: int) -> np.ndarray:
        ratio = np.array(self.ratio) if self.ratio else np.ones(len(sizes))
        return _powered(sizes, 1.0 / self.temperature, ratio**self.gamma)

    def update(self, source_losses: np.ndarray) -> None:
        """The window's mean loss per source, NaN for a source not drawn in it."""
        losses = np.maximum(np.asarray(source_losses, dtype=float), 1e-12)  # NaN stays NaN
        drawn = ~np.isnan(losses)
        start = np.array(self.start) if self.start else np.zeros(len(losses))  # 0: not yet
        first = drawn & (start == 0)
        start[first] = losses[first]
        ratio = np.array(self.ratio) if self.ratio else np.ones(len(losses))
        ratio[drawn] = losses[drawn] / start[drawn]
        self.start, self.ratio = start.tolist(), ratio.tolist()

    def state_dict(self) -> dict[str, list[float]]:
        return {"start": list(self.start), "ratio": list(self.ratio)}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        self.start, self.ratio = list(state["start"]), list(state["ratio"])


SCHEDULES: dict[str, type[Schedule]] = {
    s.name: s for s in (Joint, RoundRobin, Uniform, Proportional, Temperature, Annealed, Dynamic)
}


def make_schedule(name: str, **params: float) -> Schedule:
    """A schedule by name, with a clear error for unknown names or parameters."""
    cls = lookup("schedule", name, SCHEDULES)
    allowed = [f.name for f in dataclasses.fields(cls) if f.name not in ("start", "ratio")]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        close = difflib.get_close_matches(unknown[0], allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"schedule {name!r} has no parameter {unknown}{hint}; its parameters: "
            f"{allowed or 'none'}"
        )
    return cls(**params)
