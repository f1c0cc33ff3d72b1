"""Analysis: comparison with single-task baselines (Δm), task groupings, negative transfer."""

from polytask.analysis._analyze import Analysis, analyze, analyze_run
from polytask.analysis._baselines import compare_with_single_task
from polytask.analysis._classic import ClassicResult, classic_baselines, constant_scores
from polytask.analysis._compare import NO_SIGNAL, ComparisonResult, delta_m
from polytask.analysis._grouping import (
    Grouping,
    best_grouping,
    group_score,
    grouping_agreement,
    parse_groups,
    relative_affinity,
)
from polytask.analysis._groups import GroupComparison, compare_groups
from polytask.analysis._transfer import TransferTest, transfer_test
from polytask.analysis._tune import TuneResult, cv_folds, default_space, tune

__all__ = [
    "NO_SIGNAL",
    "Analysis",
    "ClassicResult",
    "ComparisonResult",
    "GroupComparison",
    "Grouping",
    "TransferTest",
    "TuneResult",
    "analyze",
    "analyze_run",
    "best_grouping",
    "classic_baselines",
    "compare_groups",
    "compare_with_single_task",
    "constant_scores",
    "cv_folds",
    "default_space",
    "delta_m",
    "group_score",
    "grouping_agreement",
    "parse_groups",
    "relative_affinity",
    "transfer_test",
    "tune",
]
