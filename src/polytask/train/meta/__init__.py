"""Meta-training for fast adaptation to new tasks: Reptile or first-order MAML episodes
interleaved with multi-task training (`TrainConfig.meta_learning`), and the meta head init a
new task's head starts from (`initial_task_parameters`)."""

from polytask.train.meta._base import Episode, MetaLearner
from polytask.train.meta._fomaml import FirstOrderMAML
from polytask.train.meta._init import (
    MetaInit,
    initial_task_parameters,
    mean_task_parameters,
    meta_init_key,
)
from polytask.train.meta._registry import META_LEARNERS, make_meta_learner
from polytask.train.meta._reptile import Reptile

__all__ = [
    "META_LEARNERS",
    "Episode",
    "FirstOrderMAML",
    "MetaInit",
    "MetaLearner",
    "Reptile",
    "initial_task_parameters",
    "make_meta_learner",
    "mean_task_parameters",
    "meta_init_key",
]
