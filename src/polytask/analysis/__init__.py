"""Analysis: comparison with single-task baselines (Δm)."""

from polytask.analysis._baselines import compare_with_single_task
from polytask.analysis._compare import ComparisonResult, delta_m

__all__ = ["ComparisonResult", "compare_with_single_task", "delta_m"]
