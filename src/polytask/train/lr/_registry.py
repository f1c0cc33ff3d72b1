"""Learning-rate schedules by name (`TrainConfig.lr_schedule`). Adding one: a file with an
`LRSchedule` subclass and one line in `LR_SCHEDULES`."""

from __future__ import annotations

from typing import Any

from polytask._params import check_params, lookup
from polytask.train.lr._base import LRSchedule
from polytask.train.lr._cosine import Cosine
from polytask.train.lr._plateau import Plateau
from polytask.train.lr._step import StepDecay
from polytask.train.lr._warmup import Warmup

LR_SCHEDULES: dict[str, type[LRSchedule]] = {
    "warmup": Warmup,
    "cosine": Cosine,
    "step": StepDecay,
    "plateau": Plateau,
}


def make_lr_schedule(name: str, **params: Any) -> LRSchedule:
    """The learning-rate schedule `name` with its parameters validated (a message names a bad
    or unknown one and lists those it takes; an unknown name gets the closest one)."""
    cls = lookup("learning-rate schedule", name, LR_SCHEDULES)
    return cls(**check_params("learning-rate schedule", name, cls, params))
