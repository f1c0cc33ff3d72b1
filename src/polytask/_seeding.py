"""Seeded draws without touching the caller's random state."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Inside, torch's CPU generator starts from `seed` (None: left as it is); the caller's
    state is restored on exit, so building a model with a seed is reproducible on its own."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
