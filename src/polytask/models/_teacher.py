"""Heads that read their task's targets while training (a sequence-to-sequence decoder fed the
reference with teacher forcing): `teaching(model, targets)` hands each such head its task's
targets for one forward pass, so that a model still takes one input tensor."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from torch import Tensor, nn


class TeacherForced(nn.Module):
    """A head that reads its task's targets (`teacher`) during a forward pass under
    `teaching`; without them it runs free (decodes on its own), as at prediction time."""

    def __init__(self, task_name: str) -> None:
        super().__init__()
        self.task_name = task_name
        self.teacher: Tensor | None = None


@contextmanager
def teaching(model: nn.Module, targets: Mapping[str, Tensor]) -> Iterator[None]:
    """Inside the block, each `TeacherForced` head of `model` reads its task's rows of
    `targets` (a batch's targets, on the model's device); outside it, none does. Training
    and evaluation wrap their forward passes in it; your own loop does the same:

        with polytask.teaching(model, targets):
            outputs = model(x)
    """
    heads = [m for m in model.modules() if isinstance(m, TeacherForced)]
    for head in heads:
        head.teacher = targets.get(head.task_name)
    try:
        yield
    finally:
        for head in heads:
            head.teacher = None
