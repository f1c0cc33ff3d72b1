"""Learning-rate schedules (`TrainConfig.lr_schedule`): warm-up, cosine decay, step decay and
reduce-on-plateau, built on `torch.optim.lr_scheduler` so that every parameter group keeps its
own base rate; saved in checkpoints and restored on resume."""

from polytask.train.lr._base import LRSchedule, LRScheduling, lr_logs
from polytask.train.lr._cosine import Cosine
from polytask.train.lr._plateau import Plateau
from polytask.train.lr._registry import LR_SCHEDULES, make_lr_schedule
from polytask.train.lr._step import StepDecay
from polytask.train.lr._warmup import Warmup

__all__ = [
    "LR_SCHEDULES",
    "Cosine",
    "LRSchedule",
    "LRScheduling",
    "Plateau",
    "StepDecay",
    "Warmup",
    "lr_logs",
    "make_lr_schedule",
]
