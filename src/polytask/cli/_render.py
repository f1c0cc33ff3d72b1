"""Tables for the terminal."""

from __future__ import annotations

import math

from rich.table import Table

from polytask.analysis._architectures import ArchitectureComparison
from polytask.analysis._compare import ComparisonResult
from polytask.analysis._scarcity import LearningCurve
from polytask.train._evaluate import TaskMetrics


def _pm(mean: float, std: float) -> str:
    return f"{mean:.4g}" if math.isnan(std) else f"{mean:.4g} ± {std:.2g}"


def comparison_table(result: ComparisonResult) -> Table:
    n = len(result.seeds)
    table = Table(title=f"Multi-task vs single-task on the test split ({n} seed{'s' * (n > 1)})")
    for col in ("task", "metric", "single-task", "multi-task", "Δ (%)"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    for row in result.summary():
        arrow = "↑" if row["higher_is_better"] else "↓"
        table.add_row(
            str(row["task"]),
            f"{row['metric']} {arrow}",
            _pm(float(row["stl_mean"]), float(row["stl_std"])),  # type: ignore[arg-type]
            _pm(float(row["mtl_mean"]), float(row["mtl_std"])),  # type: ignore[arg-type]
            _pm(float(row["delta_pct_mean"]), float(row["delta_pct_std"])),  # type: ignore[arg-type]
        )
    dm = result.delta_m_per_seed()
    mean = sum(dm) / len(dm)
    std = math.sqrt(sum((d - mean) ** 2 for d in dm) / (len(dm) - 1)) if len(dm) > 1 else math.nan
    table.add_section()
    table.add_row("Δm", "(+ = MTL better)", "", "", _pm(mean, std))
    return table


def metrics_table(metrics: TaskMetrics, title: str) -> Table:
    table = Table(title=title)
    table.add_column("task")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for task, values in metrics.items():
        for name, value in values.items():
            reason = getattr(value, "reason", None)  # polytask.tasks.Undefined
            table.add_row(task, name, f"n/a: {reason}" if reason else f"{value:.4g}")
    return table


def architecture_table(result: ArchitectureComparison, max_task_columns: int = 6) -> Table:
    """Parameters, training time, test metrics and Δm per architecture (mean ± std over seeds);
    per-task columns only up to `max_task_columns` tasks."""
    n = len(result.seeds)
    table = Table(title=f"Architectures on the test split ({n} seed{'s' * (n > 1)})")
    tasks = list(result.tasks) if len(result.tasks) <= max_task_columns else []
    rows = result.rows()
    extra = list(rows[0]["summary"])  # type: ignore[call-overload]
    for col in ("architecture", "parameters", "train s"):
        table.add_column(col, justify="left" if col == "architecture" else "right")
    for t in tasks:
        arrow = "↑" if t.primary.higher_is_better else "↓"
        table.add_column(f"{t.name} {t.primary.name} {arrow}", justify="right")
    for key in [*extra, "Δm % vs single-task"]:
        table.add_column(key, justify="right")
    for row in rows:
        metrics: dict[str, tuple[float, float]] = row["metrics"]  # type: ignore[assignment]
        summary: dict[str, tuple[float, float]] = row["summary"]  # type: ignore[assignment]
        dm: tuple[float, float] | None = row["delta_m"]  # type: ignore[assignment]
        table.add_row(
            str(row["architecture"]),
            f"{row['parameters']:,}",
            f"{row['train_seconds']:.1f}",
            *[_pm(*metrics[t.name]) for t in tasks],
            *[_pm(*summary[k]) for k in extra],
            "—" if dm is None else _pm(*dm),
        )
    return table


def curve_table(curve: LearningCurve) -> Table:
    """A task's test metric against its fraction of training labels, MTL vs single-task."""
    n = len(curve.seeds)
    metric = curve.task.primary
    arrow = "↑" if metric.higher_is_better else "↓"
    table = Table(
        title=f"{curve.task.name}: {metric.name} {arrow} vs its label fraction "
        f"({n} seed{'s' * (n > 1)})"
    )
    for col in ("fraction", "labelled rows", "single-task", "multi-task", "Δ (%)"):
        table.add_column(col, justify="right")
    for row in curve.rows():
        table.add_row(
            f"{row['fraction']:g}",
            f"{int(row['labelled']):,}",
            _pm(row["stl_mean"], row["stl_std"]),
            _pm(row["mtl_mean"], row["mtl_std"]),
            f"{row['delta_pct']:+.1f}",
        )
    return table
