"""Tables for the terminal, and the one rule for writing a number with its spread.

Numbers: a mean with its standard deviation over seeds is written with the std rounded to two
significant digits and the mean rounded to the same decimal place (`0.7749 ± 0.0030`,
`1.5 ± 3.0`, `27900 ± 1200`); a value on its own (one seed, or a single run) has four
significant digits (`0.6500`, `279.1`, `27912`), and the values of one column share their
decimal places (`1.0000` beside `0.6500`). Never in exponent notation, never `-0`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from polytask.analysis._analyze import WEAK_INTERACTION, display_exponent, interaction_strength
from polytask.analysis._architectures import ArchitectureComparison
from polytask.analysis._compare import ComparisonResult, Pooled
from polytask.analysis._grouping import Grouping
from polytask.analysis._groups import GroupComparison
from polytask.analysis._scarcity import LearningCurve
from polytask.train._evaluate import PER_LABEL, TaskMetrics, task_families
from polytask.train._relations import TaskRelations

if TYPE_CHECKING:
    from polytask.tasks._task import Task


PIPE_WIDTH = 10_000
"""Line width when the output is not a terminal (a pipe, a file): wide enough that no table
cell is wrapped or cut; tables are only as wide as their contents."""


def make_console(stderr: bool = False, file: IO[str] | None = None) -> Console:
    """A console that fits the terminal, and that never wraps or cuts a line when the output
    is piped or redirected (rich would otherwise assume 80 columns)."""
    console = Console(stderr=stderr, file=file)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


def _fixed(value: float, decimals: int) -> str:
    """`value` rounded to `decimals` places (negative: tens, hundreds, ...), without `-0`."""
    rounded = round(value, decimals)
    if rounded == 0:
        rounded = 0.0
    return f"{rounded:.{max(decimals, 0)}f}"


def _decimals(value: float, digits: int) -> int:
    """Decimal places that keep `digits` significant digits of `value` (> 0) after rounding."""
    decimals = digits - 1 - math.floor(math.log10(value))
    if round(value, decimals) >= 10 ** (digits - decimals):  # 0.0996 → 0.10, not 0.100
        decimals -= 1
    return decimals


def format_value(value: float | None, digits: int = 4) -> str:
    """A number on its own: `digits` significant digits, but never fewer than its integer
    digits (`0.6500`, `279.1`, `27912`); None (undefined, as strict JSON stores NaN) as nan."""
    if value is None:
        return "nan"
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    return _fixed(value, max(_decimals(abs(value), digits), 0))


def format_metric(value: object, digits: int = 4) -> str:
    """A table cell: a number as `format_value` writes it, `n/a` for a missing or undefined one
    (None, NaN), anything else as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return format_value(float(value), digits)


def format_mean_std(mean: float | None, std: float | None) -> str:
    """`mean ± std`, the std rounded to two significant digits and the mean to the same decimal
    place (`0.7749 ± 0.0030`, `1.5 ± 3.0`); the mean alone when the std is unknown (one seed;
    None or NaN), and `± 0` when the seeds agree exactly."""
    if mean is None or std is None or not math.isfinite(mean) or math.isnan(std):
        return format_value(mean)
    if std == 0 or math.isinf(std):
        return f"{format_value(mean)} ± {std:g}"
    decimals = _decimals(std, 2)
    return f"{_fixed(mean, decimals)} ± {_fixed(std, decimals)}"


def format_column(values: Sequence[float], digits: int = 4) -> list[str]:
    """Numbers of one table column with one number of decimal places: enough for `digits`
    significant digits of each, but at most one more than the largest needs, so that
    `0.6500` stands beside `1.0000` (not `1.000`) and a tiny value does not stretch the column."""
    finite = [abs(v) for v in values if math.isfinite(v) and v != 0]
    if not finite:
        return [format_value(v, digits) for v in values]
    most = max(_decimals(v, digits) for v in finite)
    decimals = max(min(most, _decimals(max(finite), digits) + 1), 0)
    return [_fixed(v, decimals) if math.isfinite(v) else str(v) for v in values]


_pm = format_mean_std


def curve_delta(row: Mapping[str, Any]) -> str:
    """A label-fraction point's change (%): signed, `n/a` where no seed defines it (a
    single-task value of 0), and how many seeds it averages where some did not."""
    value, seeds = row.get("delta_pct"), row.get("seeds")
    defined = row.get("delta_seeds", seeds)
    if value is None or not math.isfinite(value):
        return "n/a: a single-task value of 0 or undefined in every seed"
    text = f"{value:+.1f}"
    return text if defined == seeds else f"{text} ({defined} of {seeds} seeds)"


def format_delta(mean: float | None, std: float | None) -> str:
    """A relative change in %, signed (`+2.60`, `-16.06`; `+1.7 ± 2.6` over seeds): two decimals
    for one seed, else the std's two significant digits (`format_mean_std`)."""
    if mean is None or not math.isfinite(mean):
        return format_value(mean)
    if std is None or math.isnan(std):
        return f"{mean:+.2f}"
    text = format_mean_std(mean, std)
    return f"+{text}" if mean > 0 and not text.startswith("+") else text


def _cell(undefined: object, mean: object, std: object, delta: bool = False) -> str:
    """A mean ± std cell (`delta`: a signed relative change), or `n/a: WHY` when a seed's value
    was undefined."""
    if undefined:
        return f"n/a: {undefined}"
    show = format_delta if delta else _pm
    return show(float(mean), float(std))  # type: ignore[arg-type]


def comparison_table(result: ComparisonResult) -> Table:
    """One row per task; with more than `MANY_TASKS` tasks, the tasks made from a column are
    summarised in one row per column (means over its tasks, how many MTL made worse), and
    the full rows are in compare.json."""
    n = len(result.seeds)
    table = Table(title=f"Multi-task vs single-task on the test split ({n} seed{'s' * (n > 1)})")
    for col in ("task", "metric", "single-task", "multi-task", "Δ (%)", "MTL worse? (p)"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    rows = result.summary()
    defined = set(result.defined_tasks())
    undefined = [str(r["task"]) for r in rows if r["task"] not in defined]
    families = task_families(result.tasks) if len(rows) > MANY_TASKS else {}
    members = {t.name: column for column, ts in families.items() for t in ts}
    for column, tasks in families.items():
        own = [r for r in rows if r["task"] in {t.name for t in tasks}]
        flagged = sum(bool(r["negative_transfer"]) for r in own)
        kept = [r for r in own if r["task"] in defined] or own
        mean = [np.mean([float(r[k]) for r in kept]) for k in  # type: ignore[arg-type]
                ("stl_mean", "mtl_mean", "delta_pct_mean")]  # fmt: skip
        left = f", {len(own) - len(kept)} undefined left out" if len(kept) < len(own) else ""
        table.add_row(
            f"{column} ({len(own)} tasks{left})", f"mean {own[0]['metric']}",
            format_value(float(mean[0])), format_value(float(mean[1])), f"{mean[2]:+.2f}",
            f"{flagged} of {len(own)} ⚠" if flagged else "none flagged",
        )  # fmt: skip
    for row in rows:
        stl, mtl = row["stl_undefined"], row["mtl_undefined"]
        if row["task"] in members:
            continue
        arrow = "↑" if row["higher_is_better"] else "↓"
        table.add_row(
            str(row["task"]),
            f"{row['metric']} {arrow}",
            _cell(stl, row["stl_mean"], row["stl_std"]),
            _cell(mtl, row["mtl_mean"], row["mtl_std"]),
            _cell(row["delta_undefined"], row["delta_pct_mean"], row["delta_pct_std"], True),
            transfer_cell(row),
        )
    for row in result.pooled_rows():  # not in Δm: a column's tasks are already counted there
        arrow = "↑" if row["higher_is_better"] else "↓"
        table.add_row(
            f"{row['column']}: pooled", f"{row['metric']} {arrow}",
            _pm(float(row["stl_mean"]), float(row["stl_std"])),  # type: ignore[arg-type]
            _pm(float(row["mtl_mean"]), float(row["mtl_std"])),  # type: ignore[arg-type]
            format_delta(float(row["delta_pct_mean"]), float(row["delta_pct_std"])),  # type: ignore[arg-type]
            "—",
        )  # fmt: skip
    dm = result.delta_m_per_seed()
    mean_dm = sum(dm) / len(dm)
    std = (
        math.sqrt(sum((d - mean_dm) ** 2 for d in dm) / (len(dm) - 1)) if len(dm) > 1 else math.nan
    )
    table.add_section()
    delta_m = format_delta(mean_dm, std) if math.isfinite(mean_dm) else \
        "n/a: no task's metric is defined"  # fmt: skip
    if undefined and math.isfinite(mean_dm):
        delta_m += f" over {len(rows) - len(undefined)} of {len(rows)} tasks"
    table.add_row("Δm", "(+ = MTL better)", "", "", delta_m)
    shown = [r for r in rows if r["task"] not in members]
    caption = _transfer_caption(shown, result.alpha, n) if shown else None
    chance = chance_note(rows, result.alpha)
    if chance:
        caption = f"{caption}\n{chance}" if caption else chance
    over = " and ".join(w for w, on in (("seed", n > 1), ("task", bool(members))) if on)
    if over:  # e.g. "+0 ± 11" beside means 0.9054 → 0.9045: a mean of ratios
        said = (f"Δ (%): the mean of each {over}'s own change, not the change between the "
                "means shown")  # fmt: skip
        caption = f"{caption}\n{said}" if caption else said
    if members:
        note = f"{len(members)} tasks made from a column summarised; each task: compare.json"
        blank = [str(r["task"]) for r in rows if r["task"] in members and r.get("no_signal")]
        if blank:
            named = ", ".join(blank[:5]) + ", ..." * (len(blank) > 5)
            note += (f"\n≈ {len(blank)} of them ({named}): no model predicts better than a "
                     "constant (compare.json: no_signal)")  # fmt: skip
        caption = f"{caption}\n{note}" if caption else note
    if caption:  # not wrapped to the table's width: a piped line stays whole
        table.caption = Text(caption, justify="left", no_wrap=True, overflow="ignore")
    return table


def classic_table(result: ComparisonResult) -> Table:
    """The multi-task model against each classic baseline: Δm over the tasks it stands in
    for, and each model's mean primary metric over tasks (one column per metric)."""
    table = Table(title="Multi-task vs classic baselines on the same split (settings by "
                  "cross-validation on the training rows)")  # fmt: skip
    metrics = list(dict.fromkeys(t.primary.name for t in result.tasks))  # in task order
    pooled = [(str(r["column"]), str(r["metric"])) for r in result.pooled_rows()]
    names = [f"{c}: pooled {m}" if len({c for c, _ in pooled}) > 1 else f"pooled {m}"
             for c, m in pooled]  # fmt: skip
    stl = {t.name: float(np.mean([s[t.name] for s in result.stl])) for t in result.tasks}
    scored = [result.mtl_mean(), stl, *result.classic.values()]
    # every row's mean over the same tasks: those every model scores (a classic model fits no
    # multilabel task; a metric may be undefined), else a row's mean is over other tasks
    by_metric = {
        m: [t.name for t in result.tasks if t.primary.name == m
            and all(t.name in s and _defined(s[t.name]) for s in scored)]
        for m in metrics
    }  # fmt: skip
    left_out = [t.name for t in result.tasks if t.name not in by_metric[t.primary.name]]
    metrics = [m for m in metrics if by_metric[m]]  # no column no classic model fills
    heads = [f"{by_metric[m][0]} {m}" if len(by_metric[m]) == 1 else
             f"mean {m} ({len(by_metric[m])} tasks)" for m in metrics]  # fmt: skip
    for col in ("model", *heads, *names, "MTL Δm vs it (%)", "fit s"):
        table.add_column(col, justify="left" if col == "model" else "right")

    def means(scores: dict[str, float]) -> list[float | None]:
        return [float(np.mean([scores[t] for t in by_metric[m]])) if by_metric[m] else None
                for m in metrics]  # fmt: skip

    def pooled_cells(per_seed: Sequence[Pooled]) -> list[float | None]:
        cells: list[float | None] = []
        for column, metric in pooled:
            values = [p[column][metric] for p in per_seed if metric in p.get(column, {})]
            cells.append(float(np.mean(values)) if values else None)
        return cells

    rows = [means(result.mtl_mean()) + pooled_cells(result.mtl_pooled),
            means(stl) + pooled_cells(result.stl_pooled),
            *[means(scores) + pooled_cells([result.classic_pooled.get(model, {})])
              for model, scores in result.classic.items()]]  # fmt: skip
    columns = [_column([row[j] for row in rows]) for j in range(len(metrics) + len(pooled))]
    cells = [[column[i] for column in columns] for i in range(len(rows))]
    # training seconds per seed (the single-task models' summed), as the classic rows' fits
    mtl_s = [f"{np.mean([c.mtl.seconds for c in result.costs]):.1f}"] if result.costs else [""]
    stl_s = [f"{np.mean([sum(m.seconds for m in c.stl.values()) for c in result.costs]):.1f}"
             if result.costs else ""]  # fmt: skip
    table.add_row("multi-task (this config)", *cells[0], "—", *mtl_s)
    mean, std = _mean_std(result.delta_m_per_seed())
    spread = f" ± {std:.1f}" if math.isfinite(std) else ""  # one decimal, as the classic rows
    table.add_row("single-task (this config, a model per task)", *cells[1],
                  f"{mean:+.1f}{spread}", *stl_s)  # fmt: skip
    deltas = result.delta_m_classic()
    for i, model in enumerate(result.classic):
        seconds = result.classic_seconds.get(model)
        table.add_row(model, *cells[2 + i], f"{deltas.get(model, math.nan):+.1f}",
                      f"{seconds:.1f}" if seconds is not None else "")  # fmt: skip
    if deltas:
        strongest = min(deltas, key=lambda m: deltas[m])
        verdict = "beats" if deltas[strongest] > 0 else "does not beat"
        named = ", ".join(left_out[:5]) + (f" and {len(left_out) - 5} more" if len(left_out) > 5
                                            else "")  # fmt: skip
        left = (f" and every model scores ({len(left_out)} task{'s' * (len(left_out) > 1)} "
                "left out of these means, not fitted by every model or with an undefined "
                f"metric: {named})") if left_out else ""  # fmt: skip
        table.caption = (
            f"the strongest classic model here is {strongest}: the multi-task model {verdict} "
            f"it (Δm {deltas[strongest]:+.1f}%; strongest: the lowest Δm of the multi-task "
            "model against it). Each column: a task's primary test metric, or the mean over "
            f"the tasks that share it{left}"
            + ("; pooled: all the column's test rows scored together" if pooled else "")
        )
    if result.classic_notes:
        left = "; ".join(result.classic_notes[:5])
        more = (
            f" (and {len(result.classic_notes) - 5} more)" if len(result.classic_notes) > 5 else ""
        )
        table.caption = f"{table.caption or ''}\nclassic models: {left}{more}".strip()
    if isinstance(table.caption, str):  # not wrapped to the table's width: a piped line whole
        table.caption = Text(table.caption, justify="left", no_wrap=True, overflow="ignore")
    return table


def _column(values: Sequence[float | None]) -> list[str]:
    """A column of means in one format; "—" where a model has none."""
    shown = iter(format_column([v for v in values if v is not None]))
    return [next(shown) if v is not None else "—" for v in values]


def _defined(value: float) -> bool:
    return not math.isnan(float(value))


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return mean, std


def transfer_cell(row: Mapping[str, object]) -> str:
    """`⚠ p=0.012` for a flagged task, `p=0.31` for a tested one, `—` when not tested."""
    p = row["transfer_p"]
    if p is None:
        return "—"
    text = f"p={format_value(float(p), 2)}"  # type: ignore[arg-type]
    return f"⚠ {text}" if row["negative_transfer"] else text


def _transfer_caption(rows: list[dict[str, object]], alpha: float, seeds: int) -> str | None:
    """Under the table: each flagged task with what to try, and why a task was not tested."""
    lines: list[str] = []
    flagged = [row for row in rows if row["negative_transfer"]]
    # the same suggestions for several flagged tasks: said once, after them
    same = len(flagged) > 1 and len({tuple(r["suggestions"]) for r in flagged}) == 1  # type: ignore[arg-type]
    for row in flagged:
        p = format_value(float(row["transfer_p"]), 2)  # type: ignore[arg-type]
        mean, std = float(row["delta_pct_mean"]), float(row["delta_pct_std"])  # type: ignore[arg-type]
        size = f"by {format_value(-mean, 2)}% (seeds' std {format_value(std, 2)}%)"
        if std < 0.1 * abs(mean) and abs(mean) < 5:  # e.g. L-BFGS: near-identical seeds
            size += ": the seeds barely differ, so a small change is significant"
        lines.append(
            f"⚠ {row['task']}: worse with the other tasks than alone {size} (one-sided "
            f"paired t-test over {seeds} seeds, p={p} < {alpha:g}: the seeds' noise on "
            "these test rows, not how the rows were drawn)." + ("" if same else " Try:")
        )
        if not same:
            lines += [f"  - {s}" for s in row["suggestions"]]  # type: ignore[attr-defined]
    if flagged and same:
        lines.append("Try, for each:")
        lines += [f"  - {s}" for s in flagged[0]["suggestions"]]  # type: ignore[attr-defined]
    lines += [f"MTL worse? {note}" for note in transfer_notes(rows)]
    lines += [f"≈ {r['task']}: {r['no_signal']}" for r in rows if r.get("no_signal")]
    return "\n".join(lines) or None


def chance_note(rows: Sequence[Mapping[str, object]], alpha: float) -> str | None:
    """Where tasks were flagged among several tested: each test is at `alpha` on its own, so
    about alpha × tested tasks are flagged by chance alone where sharing changed nothing."""
    # a p-value: tested (a note beside one says why a significant change was not flagged)
    tested = [r for r in rows if r.get("transfer_p") is not None]
    flagged = sum(bool(r.get("negative_transfer")) for r in tested)
    if not flagged or len(tested) < 2:
        return None
    return (
        f"{flagged} of {len(tested)} tested tasks flagged; each is tested on its own at "
        f"{alpha:g} (no correction for testing several), so about {alpha * len(tested):.1f} "
        "would be flagged by chance alone where sharing changed nothing"
    )


def transfer_notes(rows: Sequence[Mapping[str, object]]) -> list[str]:
    """Why tasks were not tested for negative transfer: one note when every task has the same
    one (e.g. one seed), else one per task, named."""
    notes = {str(r["task"]): str(r["transfer_note"]) for r in rows if r.get("transfer_note")}
    if len(set(notes.values())) == 1 and len(notes) == len(rows):
        return [next(iter(notes.values()))]
    return [f"{task}: {note}" for task, note in notes.items()]


MANY_TASKS = 20
"""Above this many tasks, a metrics table shows the summaries of tasks made from a column
(their task mean and pooled metrics) instead of one row per task."""


def metrics_table(metrics: TaskMetrics, title: str, tasks: Sequence[Task] = ()) -> Table:
    """One row per task and metric; a loss that is not in the target's units is labelled with
    its kind's `loss_units` (regression: `loss (standardised)`). A multilabel task's per-label
    metrics follow it; summaries of tasks made from a column come first; with more than
    `MANY_TASKS` tasks, only they and the other tasks are shown (the caption says where the
    rest is)."""
    units = {t.name: t.kind_spec.loss_units for t in tasks}
    table = Table(title=title)
    table.add_column("task")
    table.add_column("metric")
    table.add_column("value", justify="right")
    names = {t.name for t in tasks}
    parts = {k.removesuffix(PER_LABEL): k for k in metrics if k.endswith(PER_LABEL)}
    summaries = [k for k in metrics if k not in names and ": " in k and k not in parts.values()]
    order = summaries + [k for k in metrics if k not in summaries and k not in parts.values()]
    hidden = [t for t in tasks if t.where is not None and t.name in metrics]
    if summaries and len(order) - len(summaries) > MANY_TASKS:
        order = [k for k in order if k in summaries or k not in {t.name for t in hidden}]
        table.caption = f"{len(hidden)} tasks made from a column summarised; each task's "
        table.caption += "metrics: test_metrics.json"
    order = [k for task in order for k in (task, parts.get(task)) if k is not None]  # labels
    for task in order:
        values = metrics[task]
        for name, value in values.items():
            label = f"loss ({units[task]})" if name == "loss" and units.get(task) else name
            reason = getattr(value, "reason", None)  # polytask.tasks.Undefined
            shown = f"n/a: {reason}" if reason else format_value(value)
            table.add_row(Text(task), Text(label), shown)  # as written: auc[label] is no markup
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
            "—" if dm is None else format_delta(*dm),
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
            curve_delta(row),
        )
    return table


def _matrix_table(title: str, tasks: Sequence[str], matrix: np.ndarray) -> Table:
    """A K × K matrix, scaled by a power of ten (said in the title) when its entries are tiny
    or huge; "—" where nothing was measured."""
    exponent = display_exponent(matrix)
    if exponent:
        matrix = matrix / 10.0**exponent
        title += f" (values ×10^{exponent})"
    table = Table(title=title, min_width=len(title))  # a piped title stays on one line
    table.add_column("")
    for name in tasks:
        table.add_column(name, justify="right")
    for name, row in zip(tasks, matrix, strict=True):
        table.add_row(name, *["—" if not math.isfinite(v) else format_value(v) for v in row])
    return table


def relations_tables(
    relations: TaskRelations, grouping: Grouping, basis: str = "affinity", max_tasks: int = 10
) -> list[Table]:
    """Gradient cosine and affinity matrices (up to `max_tasks` tasks; above, the most
    conflicting pairs), and the suggested groups with the monitor's cost."""
    tasks = relations.tasks
    tables = []
    n = relations.conflict_measurements
    space = f"{relations.space}, {n} measurement{'s' * (n != 1)}"
    if len(tasks) <= max_tasks:
        tables.append(_matrix_table(f"Gradient cosine ({space})", tasks, relations.cosine))
        tables.append(
            _matrix_table("Share of measurements in conflict", tasks, relations.conflict_share)
        )
        if relations.affinity is not None:
            title = (
                "Task affinity: a step on the row's task → the column's loss (TAG, "
                f"{relations.affinity_measurements} measurements)"
            )
            tables.append(_matrix_table(title, tasks, relations.affinity))
    else:
        worst = Table(title=f"Most conflicting pairs ({space})")
        for col in ("task", "task", "cosine", "in conflict"):
            worst.add_column(col, justify="left" if col == "task" else "right")
        for a, b, cos, share in relations.most_conflicting(10):
            worst.add_row(a, b, format_value(cos, 2), f"{100 * share:.0f}%")
        tables.append(worst)
    n = len(grouping.groups)
    title = f"Suggested groups ({n} model{'s' * (n != 1)}, by {basis})"
    groups = Table(title=title, min_width=len(title))
    groups.add_column("model", justify="right")
    groups.add_column("tasks")
    for i, group in enumerate(grouping.groups, 1):
        groups.add_row(str(i), ", ".join(group))
    tables.append(groups)
    return tables


FEW_MEASUREMENTS = 10
"""Below this many conflict measurements the summary says the estimate is rough."""


def relations_summary(relations: TaskRelations, grouping: Grouping, from_run: bool = False) -> str:
    """The grouping's score and how it was found, and what the measurements cost; `from_run`:
    measured by a finished run (more measurements need training again)."""
    share = relations.relative_cost
    more = (
        "set training.conflict_every and training.affinity_every lower and train again, or "
        "analyse the config (--affinity-every)"
        if from_run
        else "train longer or measure more often (training.conflict_every, --affinity-every)"
    )
    return (
        f"grouping score {format_value(grouping.score)} ({grouping.method} search over "
        f"{grouping.considered:,} groupings); monitor cost "
        f"{format_value(relations.monitor_ms_per_step, 2)} ms per training step"
        + (f" ({100 * share:.0f}% of a step's time)" if math.isfinite(share) else "")
        + (
            f"; few measurements: {more} for a steadier estimate"
            if relations.conflict_measurements < FEW_MEASUREMENTS
            else ""
        )
        + _weak_note(relations)
        + _unmeasured_note(relations, grouping)
    )


def _unmeasured_note(relations: TaskRelations, grouping: Grouping) -> str:
    """A note naming the tasks a suggested group joins that were never measured on one batch
    (they score 0 together: the search's order, not a finding, put them there)."""
    index = {t: i for i, t in enumerate(relations.tasks)}
    measured = np.isfinite(relations.cosine)
    if relations.affinity is not None:
        measured |= np.isfinite(relations.affinity) & np.isfinite(relations.affinity.T)
    pairs = [
        f"{a} and {b}"
        for group in grouping.groups
        for n, a in enumerate(group)
        for b in group[n + 1 :]
        if not measured[index[a], index[b]]
    ]
    if not pairs:
        return ""
    return (
        f"\nnever measured on one batch, yet grouped together: {', '.join(pairs)} (no batch "
        "labelled both: their grouping is not evidence; give the groups, or measure on batches "
        "that label them together)"
    )


def _weak_note(relations: TaskRelations) -> str:
    """A note when the tasks barely act on one another: any grouping then scores near 0."""
    strength = interaction_strength(relations)
    if strength is None or strength >= WEAK_INTERACTION:
        return ""
    what = "affinity" if relations.affinity is not None else "gradient cosine"
    own = " of the receiving task's own step's" if relations.affinity is not None else ""
    return (
        f"\nthe tasks barely act on one another (the largest {what} between two tasks is "
        f"{strength:.1%}{own}): this grouping rests on small differences; check it against one "
        "model for all tasks with `polytask compare CONFIG --groups auto` before relying on it"
    )


def groups_table(result: GroupComparison, max_task_columns: int = 6) -> Table:
    """Single-task, all-in-one and grouped training: models, parameters, training time, test
    metrics (mean ± std over seeds) and Δm against single-task."""
    n = len(result.seeds)
    table = Table(title=f"Grouped vs all-in-one vs single-task on the test split ({n} seed"
                  f"{'s' * (n > 1)})")  # fmt: skip
    tasks = list(result.tasks) if len(result.tasks) <= max_task_columns else []
    for col in ("training", "models", "parameters", "train s"):
        table.add_column(col, justify="left" if col == "training" else "right")
    for t in tasks:
        arrow = "↑" if t.primary.higher_is_better else "↓"
        table.add_column(f"{t.name} {t.primary.name} {arrow}", justify="right")
    table.add_column("Δm % vs single-task", justify="right")
    for row in result.rows():
        metrics: dict[str, tuple[float, float]] = row["metrics"]  # type: ignore[assignment]
        dm: tuple[float, float] | None = row["delta_m"]  # type: ignore[assignment]
        table.add_row(
            str(row["training"]),
            str(row["models"]),
            f"{row['parameters']:,}",
            f"{row['train_seconds']:.1f}",
            *[_pm(*metrics[t.name]) for t in tasks],
            "—" if dm is None else format_delta(*dm),
        )
    return table
