"""An ensemble: several models trained apart whose outputs are averaged, equally (a seed
ensemble of one configuration: `model.ensemble: N`) or with weights (a blend of unlike models:
`model.blend`); `polytask.app.fit` trains the members."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import cast

import torch
from torch import Tensor, nn

from polytask.models._base import MultiTaskNet
from polytask.models._teacher import TeacherForced


class Ensemble(MultiTaskNet):
    """The mean of its members' head outputs, task by task (regression values on the model
    scale; classification logits, so probabilities are a normalised geometric mean), or their
    weighted mean with `weights` (one per member, summing to 1). Members are trained one by
    one; heads that read their targets (`TeacherForced`, e.g. seq2seq) are refused, as their
    outputs cannot be averaged."""

    def __init__(
        self, members: Sequence[MultiTaskNet], weights: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        if weights is not None and (
            len(weights) != len(members) or min(weights) <= 0 or abs(sum(weights) - 1) > 1e-6
        ):
            raise ValueError(
                f"an ensemble's weights must be one per member ({len(members)}), each above 0, "
                f"summing to 1; got {list(weights)}"
            )
        names = members[0].task_names
        if any(m.task_names != names for m in members):
            raise ValueError(
                "every ensemble or blend member must have the same tasks, in one order"
            )
        taught = sorted({t for m in members for t in _taught(m)})
        if taught:
            raise ValueError(
                f"model.ensemble cannot average heads that read their targets ({taught}: "
                "generated sequences); train those tasks with model.ensemble: 1"
            )
        self._init_tasks(members[0].tasks)
        self.members = nn.ModuleList(members)
        self.weights = None if weights is None else tuple(float(w) for w in weights)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outputs = [member(x) for member in self.members]
        if self.weights is None:
            return {name: torch.stack([o[name] for o in outputs]).mean(0) for name in outputs[0]}
        return {
            name: sum(w * o[name] for w, o in zip(self.weights, outputs, strict=True))
            for name in outputs[0]
        }

    def shared_prediction(self, x: Tensor) -> Tensor | None:
        """The members' shared predictions averaged as their outputs are; None unless every
        member has one."""
        parts = [member.shared_prediction(x) for member in self._each()]
        given = [p for p in parts if p is not None]
        if len(given) < len(parts):
            return None
        weights = self.weights or (1 / len(given),) * len(given)
        return torch.stack([w * p for w, p in zip(weights, given, strict=True)]).sum(0)

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        for member in self._each():
            yield from member.shared_parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        for member in self._each():
            yield from member.task_parameters(name)

    def _each(self) -> list[MultiTaskNet]:
        return [cast(MultiTaskNet, m) for m in self.members]


def _taught(model: nn.Module) -> list[str]:
    """The names of `model`'s submodules that read their targets (teacher forcing)."""
    return [name for name, m in model.named_modules() if isinstance(m, TeacherForced)]
