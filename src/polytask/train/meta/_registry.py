"""Meta-learning methods by name (`TrainConfig.meta_learning`). Adding one: a file with a
`MetaLearner` subclass and one line in `META_LEARNERS`."""

from __future__ import annotations

from typing import Any

from polytask._params import check_params, lookup
from polytask.train.meta._base import MetaLearner
from polytask.train.meta._fomaml import FirstOrderMAML
from polytask.train.meta._reptile import Reptile

META_LEARNERS: dict[str, type[MetaLearner]] = {
    "reptile": Reptile,
    "fomaml": FirstOrderMAML,
}


def make_meta_learner(name: str, **params: Any) -> MetaLearner:
    """The meta-learning method `name` with its parameters validated (a message names a bad or
    unknown one and lists those it takes)."""
    cls = lookup("meta-learning method", name, META_LEARNERS)
    return cls(**check_params("meta-learning method", name, cls, params))
