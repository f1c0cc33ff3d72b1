"""Constrained parameter types for the architecture builders: the registry validates a config's
`model` parameters against the builders' signatures, so these constraints fail up front, with
a message naming the parameter, before any data is read."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field


def _layer_sizes(sizes: tuple[int, ...]) -> tuple[int, ...]:
    if not sizes or min(sizes) < 1:
        raise ValueError(f"must list positive layer sizes, got {list(sizes)}")
    return sizes


def _tower_sizes(sizes: tuple[int, ...]) -> tuple[int, ...]:
    if sizes and min(sizes) < 1:
        raise ValueError(f"must list positive layer sizes (or none), got {list(sizes)}")
    return sizes


def _rates(rates: dict[str, float]) -> dict[str, float]:
    bad = {n: r for n, r in rates.items() if not 0 <= r < 1}
    if bad:
        raise ValueError(f"rates must be in [0, 1), got {bad}")
    return rates


LayerSizes = Annotated[tuple[int, ...], AfterValidator(_layer_sizes)]
"""Hidden layer sizes: at least one, each >= 1."""
TowerSizes = Annotated[tuple[int, ...], AfterValidator(_tower_sizes)]
"""A task tower's hidden sizes: possibly none (a linear head), each >= 1."""
Rate = Annotated[float, Field(ge=0, lt=1)]
"""A dropout rate in [0, 1)."""
TaskRates = Annotated[dict[str, float], AfterValidator(_rates)]
"""Per-task dropout rates (task name → rate in [0, 1))."""
Count = Annotated[int, Field(ge=1)]
"""A number of experts, levels, branches, units: >= 1."""
Strength = Annotated[float, Field(ge=0)]
"""A penalty's weight: >= 0 (0 turns it off)."""
Fraction = Annotated[float, Field(ge=0, le=1)]
"""A share in [0, 1] (a shrinkage towards a simpler estimate)."""
Positive = Annotated[float, Field(gt=0)]
"""A strictly positive number (a temperature)."""
