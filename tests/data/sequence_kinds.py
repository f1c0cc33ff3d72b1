"""Test stand-in for the text tests: a tiny text sequence encoder (`bag`: token embeddings,
padding masked), registered per test with monkeypatch, so nothing outside the test sees it."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from polytask.models.encoders import ENCODERS, Encoder, Features, join_mask
from polytask.tasks._kinds import PAD_ID


class BagEncoder(Encoder):
    """Token embeddings, padding masked: the cheapest text sequence encoder."""

    def __init__(self, input_shape: Any, vocab_size: int, channels: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, channels)
        self._declare(tuple(input_shape), Features(channels, sequence=True))

    def forward(self, x: Tensor) -> Tensor:
        return join_mask(torch.tanh(self.embed(x)), x != PAD_ID)


def build_bag(input_shape: tuple[int, ...], /, *, channels: int = 8) -> BagEncoder:
    vocab = getattr(input_shape, "vocab_size", None)
    if vocab is None:
        raise ValueError("bag takes InputShape((L,), vocab_size=V)")
    return BagEncoder(input_shape, vocab, channels)


@pytest.fixture
def sequence_kinds(monkeypatch):
    """The test encoder `bag`, for one test."""
    monkeypatch.setitem(ENCODERS, "bag", build_bag)
