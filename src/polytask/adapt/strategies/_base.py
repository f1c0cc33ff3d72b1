"""The adaptation-strategy interface: which weights a new task trains, and what holds the rest."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from polytask.models._base import MultiTaskNet


class AdaptStrategy:
    """How a new task's head is fitted on a trained model. The old tasks' own weights never
    train; `trains_shared` says whether the shared weights do, and `penalty` (added to the new
    task's loss) may hold them near their trained values."""

    trains_shared: ClassVar[bool] = False

    def start(self, model: MultiTaskNet) -> None:
        """Called once before fitting, on the model as trained (e.g. to keep reference values)."""

    def penalty(self, model: MultiTaskNet) -> Tensor | None:
        """A term added to the loss at every step, or None."""
        return None

    def trainable(self, model: MultiTaskNet, task: str) -> list[nn.Parameter]:
        """The parameters this strategy updates: the new task's own, and the shared ones when
        `trains_shared`."""
        params = list(model.task_parameters(task))
        if self.trains_shared:
            params += list(model.shared_parameters())
        return params
