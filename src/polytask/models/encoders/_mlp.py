"""Encoder `mlp`: the tabular trunk (`polytask.models.MLP`) as an encoder of (F,) rows."""

from __future__ import annotations

from collections.abc import Sequence

from polytask.models._hints import LayerSizes, Rate
from polytask.models._mlp import MLP
from polytask.models.encoders._base import Encoder, Features, tabular_shape


class MLPEncoder(MLP, Encoder):
    """An `MLP` (same layers, same initialisation order, same state-dict keys) that declares
    its `Features`: a vector of the last hidden size."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (128, 128), dropout: float = 0.0):
        super().__init__(in_dim, hidden, dropout)
        self._declare((in_dim,), Features(self.out_dim))


def build_mlp(
    input_shape: tuple[int, ...],
    /,
    *,
    hidden: LayerSizes = (128, 128),
    dropout: Rate = 0.0,
) -> MLPEncoder:
    """`mlp`: Linear → ReLU (→ Dropout) layers of `hidden` sizes on rows of F features."""
    return MLPEncoder(tabular_shape("mlp", input_shape), hidden, dropout)
