"""L2-SP (Li, Grandvalet & Davoine 2018): fine-tuning held near the trained shared weights."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from polytask.adapt.strategies._base import AdaptStrategy
from polytask.models._base import MultiTaskNet


class L2SP(AdaptStrategy):
    """Fine-tunes the shared weights with the penalty `strength`/2 · ‖θ − θ₀‖² toward their
    trained values θ₀ (the "starting point"), so the new task can bend the representation a
    little while the old tasks keep most of theirs."""

    trains_shared = True

    def __init__(self, strength: Annotated[float, Field(ge=0)] = 0.1) -> None:
        self.strength = strength
        self._reference: list[Tensor] | None = None

    def start(self, model: MultiTaskNet) -> None:
        self._reference = [p.detach().clone() for p in model.shared_parameters()]

    def penalty(self, model: MultiTaskNet) -> Tensor | None:
        if self._reference is None:
            raise RuntimeError("L2SP.penalty called before start(model)")
        if not self._reference:  # no shared weights (soft_sharing): nothing to hold
            return None
        terms = [
            (p - ref).pow(2).sum()
            for p, ref in zip(model.shared_parameters(), self._reference, strict=True)
        ]
        return 0.5 * self.strength * torch.stack(terms).sum()
