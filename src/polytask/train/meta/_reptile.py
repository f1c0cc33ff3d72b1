"""Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms").

After an episode's inner steps from (θ, φ) to (θ′, φ′): θ ← θ + ε (θ′ − θ), φ ← φ + ε (φ′ − φ),
with ε = `outer_lr`. Departure from the paper: episodes are interleaved with ordinary
multi-task steps (every `every` steps) instead of being the only training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from torch import Tensor

from polytask.train.meta._base import Episode, MetaLearner

if TYPE_CHECKING:
    from polytask.models._base import MultiTaskNet


class Reptile(MetaLearner):
    """Moves (θ, φ) a fraction `outer_lr` of the way to the adapted (θ′, φ′)."""

    name: ClassVar[str] = "reptile"

    def outer(self, model: MultiTaskNet, episode: Episode) -> list[Tensor]:
        return [
            self.outer_lr * (a - s) for a, s in zip(episode.adapted, episode.start, strict=True)
        ]
