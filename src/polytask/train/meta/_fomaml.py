"""First-order MAML (Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning", §5.2).

After an episode's inner steps on the support rows from (θ, φ) to (θ′, φ′), the gradient of the
task's loss on separate query rows at (θ′, φ′) is applied at (θ, φ):
(θ, φ) ← (θ, φ) − β ∇L_query(θ′, φ′), with β = `outer_lr` (the second-order term of MAML is
dropped). The query rows are `support` further labelled training rows of the same task, apart
from the support rows where the task has enough. Departure from the paper: episodes are
interleaved with ordinary multi-task steps (every `every` steps), one task per episode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from torch import Tensor

from polytask.train.meta._base import Episode, MetaLearner

if TYPE_CHECKING:
    from polytask.models._base import MultiTaskNet


class FirstOrderMAML(MetaLearner):
    """A step of size `outer_lr` against the query gradient at the adapted parameters."""

    name: ClassVar[str] = "fomaml"
    query_rows: ClassVar[bool] = True

    def outer(self, model: MultiTaskNet, episode: Episode) -> list[Tensor]:
        grads = self.gradients(model, episode, episode.adapted, episode.query_x, episode.query_y)
        return [-self.outer_lr * g for g in grads]
