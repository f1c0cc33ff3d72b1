"""Did multi-task learning help? MTL against single-task baselines, per task and as Δm.

Δm (Maninis et al. 2019; Vandenhende et al. 2021) is the mean relative change of each task's
primary metric against its single-task baseline, signed so that positive means MTL is better:

    Δm = 100 / K · Σ_k s_k · (M_mtl,k − M_stl,k) / |M_stl,k|,   s_k = +1 if higher is better else −1
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polytask._files import json_text, write_text_atomic
from polytask.analysis._transfer import (
    DEFAULT_ALPHA,
    NEGLIGIBLE_PCT,
    SUGGESTIONS,
    TransferTest,
    transfer_test,
)
from polytask.tasks._task import Task

NO_SIGNAL = 0.02
"""`ComparisonResult.no_signal`: a task whose best model closes less than this share of the gap
between a constant prediction and a perfect score is said to carry no signal the features
give."""

Pooled = dict[str, dict[str, float]]
"""Pooled metrics of tasks made from a column: `[column][metric]`."""


def delta_m(
    mtl: Mapping[str, float], stl: Mapping[str, float], higher_is_better: Mapping[str, bool]
) -> float:
    """Δm in percent over the tasks in `stl` (positive: MTL better). A task whose baseline
    metric is 0 (e.g. BLEU 0 after a short run) has no relative change, and one whose metric is
    undefined on either side (e.g. AUC on test rows of one class) none either: each is left
    out of the mean with a warning (NaN when no task is left), so a long comparison reports."""
    if not stl:
        raise ValueError("delta_m needs at least one task")
    terms = []
    for task, base in stl.items():
        if not (_finite(base) and _finite(mtl[task])):
            warnings.warn(
                f"task {task!r}: its metric is undefined (NaN) for one of the two models; Δm "
                "is the mean over the other tasks",
                UserWarning,
                stacklevel=2,
            )
            continue
        if base == 0:
            warnings.warn(
                f"task {task!r}: the single-task metric is 0, so its relative change is "
                "undefined; Δm is the mean over the other tasks",
                UserWarning,
                stacklevel=2,
            )
            continue
        sign = 1.0 if higher_is_better[task] else -1.0
        terms.append(sign * (mtl[task] - base) / abs(base))
    return 100.0 * float(np.mean(terms)) if terms else float("nan")


@dataclass(frozen=True)
class ModelCost:
    """One trained model's size (parameters; bytes of its parameters and buffers) and its
    training time in seconds."""

    parameters: int
    bytes: int
    seconds: float
    snapshots: int = 1
    """Copies of the shared part it serves (`selection: per_task`: one per distinct best
    evaluation; 1: none), which `parameters` and `bytes` count."""
    architecture_parameters: int | None = None
    """One copy's parameters, the architecture's own size (None: as `parameters`)."""


@dataclass(frozen=True)
class SeedCost:
    """One seed's multi-task model and its single-task models by task name."""

    mtl: ModelCost
    stl: dict[str, ModelCost]


@dataclass
class ComparisonResult:
    """Per-seed primary metrics of the multi-task model and of each single-task baseline;
    `alpha`: the significance level of the negative-transfer test (`transfer`)."""

    tasks: Sequence[Task]
    mtl: list[dict[str, float]] = field(default_factory=list)
    stl: list[dict[str, float]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    alpha: float = DEFAULT_ALPHA
    costs: list[SeedCost] = field(default_factory=list)
    """Per seed, when measured: the size and training time of each model."""
    classic: dict[str, dict[str, float]] = field(default_factory=dict)
    """Classic baselines on the same split (`classic_baselines`): model → task → primary
    test metric (one fit each, no seeds)."""
    classic_seconds: dict[str, float] = field(default_factory=dict)
    classic_notes: list[str] = field(default_factory=list)
    """Tasks and models the classic baselines left out, with the reason."""
    mtl_pooled: list[Pooled] = field(default_factory=list)
    stl_pooled: list[Pooled] = field(default_factory=list)
    """Per seed, for tasks made from a column: `[column][metric]` of all their test rows
    scored together, each row predicted by its own task (the single-task side: each task's
    own model), the figure data-set papers report (School's explained variance)."""
    classic_pooled: dict[str, Pooled] = field(default_factory=dict)
    """The same for each classic model fitted to every task of a column."""
    advice: tuple[str, ...] = SUGGESTIONS
    """What `transfer` suggests for a flagged task (`suggestions` for the compared model's
    balancer and towers)."""
    negligible_pct: float = NEGLIGIBLE_PCT
    """A drop smaller than this (%) is not flagged as negative transfer (`transfer_test`)."""
    single_task_settings: dict[str, object] | None = None
    """The model and training settings the single-task models took from another config
    (`compare --baseline-config FILE`: its file, model and training), or None: the config's."""
    constant: dict[str, float] = field(default_factory=dict)
    """Each task's primary test metric of a constant prediction (`constant_scores`: the
    training mean or class frequencies), the floor `no_signal` measures the models against."""

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    def add(
        self,
        seed: int,
        mtl: dict[str, float],
        stl: dict[str, float],
        cost: SeedCost | None = None,
        pooled: tuple[Pooled, Pooled] | None = None,
    ) -> None:
        """One seed's primary metrics, costs, and (`pooled`, multi-task then single-task) the
        pooled metrics of tasks made from a column."""
        self.seeds.append(seed)
        self.mtl.append(mtl)
        self.stl.append(stl)
        if cost is not None:
            self.costs.append(cost)
        if pooled is not None:
            self.mtl_pooled.append(pooled[0])
            self.stl_pooled.append(pooled[1])

    def pooled_rows(self) -> list[dict[str, object]]:
        """One row per column and pooled metric, in every seed: single-task and multi-task
        mean and std over seeds, and the relative change (%, + = MTL better)."""
        if not self.mtl_pooled or len(self.mtl_pooled) != len(self.seeds):
            return []
        higher = {m.name: m.higher_is_better for t in self.tasks for m in t.metric_objects()}
        rows: list[dict[str, object]] = []
        for column, metrics in self.mtl_pooled[0].items():
            for metric in metrics:
                try:
                    mtl = np.array([p[column][metric] for p in self.mtl_pooled], dtype=float)
                    stl = np.array([p[column][metric] for p in self.stl_pooled], dtype=float)
                except KeyError:
                    continue
                sign = 1.0 if higher.get(metric, False) else -1.0
                with np.errstate(divide="ignore", invalid="ignore"):
                    rel = 100.0 * sign * (mtl - stl) / np.abs(stl)
                rows.append({
                    "column": column, "metric": metric, "higher_is_better": sign > 0,
                    "stl_mean": float(stl.mean()), "stl_std": _std(stl),
                    "mtl_mean": float(mtl.mean()), "mtl_std": _std(mtl),
                    "delta_pct_mean": float(rel.mean()), "delta_pct_std": _std(rel),
                })  # fmt: skip
        return rows

    @property
    def directions(self) -> dict[str, bool]:
        return {t.name: t.primary.higher_is_better for t in self.tasks}

    def defined_tasks(self) -> list[str]:
        """The tasks whose relative change is defined in every seed (both metrics defined, the
        single-task one not 0): Δm's tasks."""
        return _comparable([t.name for t in self.tasks], self.mtl, self.stl)

    def delta_m_per_seed(self) -> list[float]:
        """Δm of each seed over `defined_tasks` (the tables say how many were left out)."""
        return delta_m_per_seed(self.mtl, self.stl, self.directions)

    def mtl_mean(self) -> dict[str, float]:
        """Each task's primary metric of the multi-task model, averaged over seeds."""
        return {t.name: float(np.mean([m[t.name] for m in self.mtl])) for t in self.tasks}

    def delta_m_classic(self) -> dict[str, float]:
        """Δm (%) of the multi-task model (seed mean) against each classic model, over the
        tasks that model stands in for (+ = MTL better)."""
        mtl, directions = self.mtl_mean(), self.directions
        out = {}
        for model, scores in self.classic.items():
            shared = [t for t in scores if t in mtl and _finite(mtl[t]) and _finite(scores[t])]
            if shared:
                out[model] = delta_m(
                    {t: mtl[t] for t in shared}, {t: scores[t] for t in shared}, directions
                )
        return out

    def transfer(self) -> list[TransferTest]:
        """Per task, the paired one-sided test over seeds that MTL is worse than single-task
        (`polytask.analysis.transfer_test` at `alpha`)."""
        return [
            transfer_test(
                t.name,
                [m[t.name] for m in self.mtl],
                [s[t.name] for s in self.stl],
                t.primary.higher_is_better,
                self.alpha,
                self.advice,
                self.negligible_pct,
            )
            for t in self.tasks
        ]

    def no_signal(self) -> dict[str, str]:
        """The tasks that no model (single-task, multi-task, classic) learns: the best one's
        gain over the constant prediction is under `NO_SIGNAL` of the way from the constant to
        a perfect score (metrics to minimise: 0; to maximise: 1, as AUC, F1, accuracy and R²
        are); each with a note that gives the figures."""
        notes = {}
        for t in self.tasks:
            floor = self.constant.get(t.name)
            if floor is None:
                continue
            higher = t.primary.higher_is_better
            room = (1.0 - floor) if higher else floor
            scores = {"single-task": float(np.mean([s[t.name] for s in self.stl])),
                      "multi-task": float(np.mean([m[t.name] for m in self.mtl]))}  # fmt: skip
            scores |= {m: v[t.name] for m, v in self.classic.items() if t.name in v}
            scores = {m: v for m, v in scores.items() if _finite(v)}
            if room <= 0 or not scores:
                continue
            best = max(scores, key=lambda m: scores[m] if higher else -scores[m])
            gain = (scores[best] - floor) / room if higher else (floor - scores[best]) / room
            if gain < NO_SIGNAL:
                what = "training mean" if t.kind_spec.classic == "value" else \
                    "training class frequencies"  # fmt: skip
                figures = ", ".join(f"{m} {v:.4g}" for m, v in scores.items())
                notes[t.name] = (
                    f"no model beats predicting the {what} by more than {NO_SIGNAL:.0%} of the "
                    f"way to a perfect {t.primary.name} (constant {floor:.4g}; {figures}): the "
                    "features hardly predict it. Check its labels; beside the other tasks it "
                    "adds only noise to the shared layers, so leaving it out may help them"
                )
        return notes

    def summary(self) -> list[dict[str, object]]:
        """One row per task: metric, STL mean/std, MTL mean/std, relative change (%), and the
        negative-transfer test: its p-value (None when not tested), whether the task is
        flagged, why it was not tested, and what to try when flagged."""
        rows: list[dict[str, object]] = []
        no_signal = self.no_signal()
        for t, test in zip(self.tasks, self.transfer(), strict=True):
            stl = np.array([s[t.name] for s in self.stl])
            mtl = np.array([m[t.name] for m in self.mtl])
            sign = 1.0 if t.primary.higher_is_better else -1.0
            zero = bool((stl == 0).any())
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(stl == 0, np.nan, 100.0 * sign * (mtl - stl) / np.abs(stl))
            stl_undefined = _undefined([s[t.name] for s in self.stl])
            mtl_undefined = _undefined([m[t.name] for m in self.mtl])
            rows.append(
                {
                    "task": t.name,
                    "metric": t.primary.name,
                    "higher_is_better": t.primary.higher_is_better,
                    "stl_mean": float(stl.mean()),
                    "stl_std": _std(stl),
                    "mtl_mean": float(mtl.mean()),
                    "mtl_std": _std(mtl),
                    "delta_pct_mean": float(rel.mean()),
                    "delta_pct_std": _std(rel),
                    "stl_undefined": stl_undefined,
                    "mtl_undefined": mtl_undefined,
                    "delta_undefined": stl_undefined
                    or mtl_undefined
                    or ("the single-task metric is 0 in some seed" if zero else None),
                    "transfer_p": test.p_value,
                    "negative_transfer": test.flagged,
                    "transfer_note": test.reason,
                    "suggestions": list(test.suggestions),
                    "constant": self.constant.get(t.name),
                    "no_signal": no_signal.get(t.name),
                }
            )
        return rows

    def to_json(self, path: str | Path) -> None:
        dm = self.delta_m_per_seed()
        payload = {
            "seeds": self.seeds,
            "alpha": self.alpha,
            "tasks": self.summary(),
            "delta_m_per_seed": dm,
            "delta_m_mean": float(np.mean(dm)),
            "delta_m_std": _std(np.array(dm)),
            "delta_m_tasks": self.defined_tasks(),
            "mtl_per_seed": self.mtl,
            "stl_per_seed": self.stl,
        }
        if self.single_task_settings is not None:
            payload["single_task_settings"] = self.single_task_settings
        if self.costs:  # read by `polytask report`: one model against K
            payload["cost_per_seed"] = [dataclasses.asdict(c) for c in self.costs]
        if self.mtl_pooled:
            payload["pooled"] = self.pooled_rows()
            payload["mtl_pooled_per_seed"] = self.mtl_pooled
            payload["stl_pooled_per_seed"] = self.stl_pooled
        if self.classic:
            payload["classic"] = {
                "metrics": self.classic,
                "seconds": self.classic_seconds,
                "delta_m": self.delta_m_classic(),
                "notes": self.classic_notes,
                "pooled": self.classic_pooled,
            }
        write_text_atomic(path, json_text(payload))  # never a partial file


def primary_metrics_of(tasks: Sequence[Task]) -> dict[str, dict[str, object]]:
    """Each task's primary metric and its direction, as the result files name them for the
    report's headers."""
    return {
        t.name: {"metric": t.primary.name, "higher_is_better": t.primary.higher_is_better}
        for t in tasks
    }


def delta_m_per_seed(
    mtl: Sequence[Mapping[str, float]],
    stl: Sequence[Mapping[str, float]],
    directions: Mapping[str, bool],
) -> list[float]:
    """Δm of each seed (`mtl[i]` against `stl[i]`) over the tasks whose relative change is
    defined in every seed (`_comparable`), so that every seed averages the same tasks; NaN for
    every seed when none is."""
    kept = _comparable(list(directions), mtl, stl)
    if not kept:
        return [math.nan for _ in mtl]
    return [
        delta_m({t: m[t] for t in kept}, {t: s[t] for t in kept}, directions)
        for m, s in zip(mtl, stl, strict=True)
    ]


def _finite(value: float) -> bool:
    return not math.isnan(float(value))


def _comparable(
    tasks: Sequence[str], mtl: Sequence[Mapping[str, float]], stl: Sequence[Mapping[str, float]]
) -> list[str]:
    """The tasks whose relative change is defined in every seed: both metrics defined and the
    single-task one not 0 (a task left out of one seed's Δm is left out of every seed's)."""
    return [
        t for t in tasks
        if all(_finite(r[t]) for r in (*mtl, *stl)) and all(float(r[t]) != 0 for r in stl)
    ]  # fmt: skip


def _undefined(values: list[float]) -> str | None:
    """Why a task's metric is undefined in some seed (`polytask.tasks.Undefined`), or None."""
    reasons = sorted({str(getattr(v, "reason", "not a number")) for v in values if math.isnan(v)})
    return "; ".join(reasons) if reasons else None


def _std(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan
