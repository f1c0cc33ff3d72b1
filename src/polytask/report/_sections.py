"""The report's sections, each built from one kind of file in the run folder; a section whose
data is absent says so and which command writes it."""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from polytask.cli._render import (
    chance_note,
    curve_delta,
    format_delta,
    format_mean_std,
    format_metric,
    transfer_cell,
    transfer_notes,
)
from polytask.report._html import esc, figure, paragraph, table
from polytask.report._plots import Panel, Series, heatmap_figure, line_figure
from polytask.report._run import BLEND_FILE, History, RunData, finite, primary_metric

TASK_PLOTS = 24
"""At most this many per-task curve plots (the first tasks): a page stays quick to write."""


@dataclass(frozen=True)
class Section:
    """One part of the report: `key` (its anchor), `title`, and either its HTML `body` or,
    when its data is absent, the sentence saying why (`absent`). `plots`: its plots' keys."""

    key: str
    title: str
    body: str = ""
    absent: str | None = None
    plots: tuple[str, ...] = ()

    def html(self) -> str:
        content = paragraph(self.absent, "absent") if self.absent is not None else self.body
        cls = "absent" if self.absent is not None else "present"
        return (
            f'<section id="{esc(self.key)}" class="{cls}"><h2>{esc(self.title)}</h2>'
            f"{content}</section>"
        )


class _Plots:
    """Collects a section's figures; each SVG's element ids get a prefix from its plot's key
    (unique on the page), so that figures never share an id."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.html: list[str] = []

    def add(self, key: str, caption: str, draw: Callable[[str], str]) -> None:
        prefix = "p" + hashlib.sha1(key.encode()).hexdigest()[:10] + "-"
        self.keys.append(key)
        self.html.append(figure(key, draw(prefix), caption))


def _series(history: History, column: str, label: str) -> Series | None:
    """A column against the step, or None when it holds no number."""
    rows = [r for r in history if column in r]
    ys = [r[column] for r in rows]
    if not finite(ys):
        return None
    return label, [r.get("step", i) for i, r in enumerate(rows)], ys


def _some(*series: Series | None) -> list[Series]:
    return [s for s in series if s is not None]


def _pm(pair: object, signed: bool = False) -> str:
    """A JSON [mean, std] as `mean ± std` (`signed`: a change, `+` when positive, as the CLI
    writes Δm)."""
    if not isinstance(pair, Sequence) or len(pair) != 2:
        return "—"
    mean, std = (math.nan if v is None else float(v) for v in pair)
    return format_delta(mean, std) if signed and math.isfinite(mean) else format_mean_std(mean, std)


def _size(n: float) -> str:
    """Bytes in B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def _source(run: RunData) -> str:
    if run.history_source is None or run.history_source == run.folder:
        return "metrics.json of this run"
    return f"{run.history_source.relative_to(run.folder)}/metrics.json (the first seed's MTL run)"


# ---- sections -------------------------------------------------------------------------------


def test_section(run: RunData) -> Section:
    title = "Test metrics"
    if not run.test_metrics:
        return Section(
            "test",
            title,
            absent="no test_metrics.json in this folder: it is written by `polytask train CONFIG`",
        )
    members = run.blend_members or []
    rows = []
    for task, values in run.test_metrics.items():
        primary = run.primary.get(task)
        for name, value in values.items():
            alone = [format_metric(m["metrics"].get(task, {}).get(name)) for m in members]
            units = run.loss_units.get(task) if name == "loss" else None
            shown = f"loss ({units})" if units else name  # as the CLI's table
            shown = f"{name} (primary)" if name == primary else shown
            rows.append([task, shown, format_metric(value), *alone])
    headers = ["task", "metric", "blend" if members else "value"]
    headers += [f"{m['architecture']} alone (weight {m['weight']:g})" for m in members]
    body = table(headers, rows, text_columns=2)
    source = "From test_metrics.json, on the test split."
    last = int(run.history[-1].get("step", 0)) if run.history else None
    epoch = run.weights_epoch
    if epoch is not None and run.weights_step != last:
        source += (
            f" The model holds the weights of the evaluation at epoch {epoch} (step "
            f"{run.weights_step}, the best on validation), not the last one's: these metrics "
            "are that evaluation's."
        )
    if members:
        source += f" Each blend member alone: from {BLEND_FILE}, on the same rows."
    return Section("test", title, body + paragraph(source))


def curves_section(run: RunData) -> Section:
    title = "Training and validation curves"
    if not run.history:
        return Section(
            "curves",
            title,
            absent="no metrics.csv in this folder: train with "
            "`polytask train CONFIG` to log curves",
        )
    plots = _Plots()
    h = run.history
    total = _some(_series(h, "train/loss", "train"), _series(h, "val/loss", "validation"))
    if total:
        panel = Panel("summed loss", total, "loss")
        plots.add("loss", "Summed loss over the tasks.", lambda ids: line_figure([panel], ids))
    for task in run.tasks[:TASK_PLOTS]:
        loss = _some(
            _series(h, f"train/{task}/loss", "train"), _series(h, f"val/{task}/loss", "validation")
        )
        panels = [Panel(f"{task}: loss", loss, "loss")] if loss else []
        metric = primary_metric(run, task)
        if metric is not None:
            stl = run.stl_histories.get(task, ())
            lines = _some(
                _series(h, f"val/{task}/{metric}", "multi-task"),
                _series(stl, f"val/{task}/{metric}", "single-task") if stl else None,
            )
            if lines:
                panels.append(Panel(f"{task}: validation {metric}", lines, metric))
        if panels:
            caption = f"{task}: training and validation loss, and its validation {metric}"
            if task in run.stl_histories:
                caption += " against its single-task model's (first seed)"
            plots.add(f"curves-{task}", caption + ".", functools.partial(line_figure, panels))
    note = paragraph(f"From {_source(run)}; one point per evaluation.")
    if len(run.tasks) > TASK_PLOTS:
        note += paragraph(f"The first {TASK_PLOTS} of the {len(run.tasks)} tasks are shown.")
    return Section("curves", title, note + "".join(plots.html), plots=tuple(plots.keys))


def _group_plot(
    run: RunData, key: str, title: str, prefix: str, caption: str, ylabel: str, log: bool = False
) -> Section:
    """One plot of every history column under `prefix` (e.g. every task's weight)."""
    columns = run.columns(prefix)
    series = _some(*(_series(run.history, c, c.removeprefix(prefix)) for c in columns))
    if not series:
        return Section(key, title, absent=f"no {prefix}* columns in the metrics of this folder")
    plots = _Plots()
    panel = Panel(title, series, ylabel, log=log)
    plots.add(key, caption, lambda ids: line_figure([panel], ids))
    return Section(key, title, "".join(plots.html), plots=tuple(plots.keys))


def weights_section(run: RunData) -> Section:
    if not run.history:
        return Section("weights", "Task weights", absent="no metrics in this folder")
    return _group_plot(
        run,
        "weights",
        "Task weights",
        "weight/",
        "Each task's loss weight as the balancer set it (mean over the steps between evaluations).",
        "weight",
    )


def gradients_section(run: RunData) -> Section:
    if not run.history:
        return Section("gradients", "Gradient norms", absent="no metrics in this folder")
    return _group_plot(
        run,
        "gradients",
        "Gradient norms",
        "grad_norm/",
        "Norm of each task's gradient and of the combined update on the shared "
        "parameters ('shared'), log scale.",
        "norm",
        log=True,
    )


def _matrix(rows: Any) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)


def relations_section(run: RunData) -> Section:
    title = "Gradient conflict and task affinity"
    plots = _Plots()
    h = run.history
    over_time = _some(
        _series(h, "conflict/cos_mean", "mean cosine (all pairs)"),
        *(_series(h, f"conflict/{t}/cos", f"{t} vs the others") for t in run.tasks),
    )
    affinity = _some(_series(h, "affinity/mean", "mean affinity"))
    panels = [Panel("gradient cosine", over_time, "cosine")] if over_time else []
    panels += [Panel("TAG affinity", affinity, "affinity")] if affinity else []
    if panels:
        plots.add(
            "conflict-over-time",
            "Gradient cosine between the tasks over training (below "
            "0: in conflict), and TAG affinity where measured.",
            lambda ids: line_figure(panels, ids),
        )
    body = ""
    rel = run.relations
    if rel is not None:
        keep = [i for i, t in enumerate(rel["tasks"]) if str(t) not in run.auxiliary]
        tasks = [str(rel["tasks"][i]) for i in keep]
        cosine = _matrix(rel["cosine"])[np.ix_(keep, keep)]
        if np.isfinite(cosine[~np.eye(len(keep), dtype=bool)]).any():
            plots.add(
                "heatmap-cosine",
                "Mean cosine of the task gradients on the shared parameters, "
                f"over {rel['conflict_measurements']} measurements ({rel['space']}).",
                lambda ids: heatmap_figure(cosine, tasks, "gradient cosine", ids),
            )
        else:  # a heatmap of its diagonal alone would read as a measurement
            body += paragraph(
                "No two tasks were measured on the same batch (each batch labelled one task: "
                "one data source per task under a sampling schedule), so there is no gradient "
                "cosine between tasks to show."
            )
        if rel.get("affinity") is not None:
            aff = _matrix(rel["affinity"])[np.ix_(keep, keep)]
            plots.add(
                "heatmap-affinity",
                "TAG affinity: how a step on the row's task changes the "
                f"column's loss (positive: helps), {rel['affinity_measurements']} "
                "measurements.",
                lambda ids: heatmap_figure(aff, tasks, "affinity", ids),
            )
        else:
            elsewhere = run.folder / "analysis" / "affinity.csv"
            body += paragraph(
                "Task affinity was not measured in this run (training.affinity_every)"
                + (f"; `polytask analyze CONFIG` wrote {elsewhere}, measured in its own "
                   "training (analysis/run)." if elsewhere.is_file() else ".")
            )  # fmt: skip
        cost = rel.get("monitor_ms_per_step", 0.0), rel.get("step_ms", 0.0)
        body += paragraph(
            f"From relations.json: {rel['conflict_measurements']} conflict measurements in "
            f"{rel['space']}; the monitor cost {cost[0]:.2f} ms per step against "
            f"{cost[1]:.2f} ms per training step."
        )
    if not plots.keys and rel is None:
        why = "the run had one task, or training.conflict_every null"
        if run.history_source not in (None, run.folder):
            why = "a comparison's runs do not measure them"
        return Section(
            "relations",
            title,
            absent=f"no relations.json and no conflict columns in this folder: {why}; "
            "`polytask analyze CONFIG` measures them",
        )
    return Section("relations", title, body + "".join(plots.html), plots=tuple(plots.keys))


def comparison_section(run: RunData) -> Section:
    title = "Multi-task vs single-task"
    result = run.compare
    if result is None:
        return Section(
            "comparison",
            title,
            absent="no single-task comparison in this folder: run `polytask compare CONFIG`",
        )
    seeds = len(result["seeds"])
    rows = []
    for row in result["tasks"]:
        arrow = "↑" if row["higher_is_better"] else "↓"
        test = transfer_cell({"transfer_p": None, **row})  # as the CLI's table writes it
        rows.append(
            [
                row["task"],
                f"{row['metric']} {arrow}",
                _undefined(row["stl_undefined"])
                or format_mean_std(row["stl_mean"], row["stl_std"]),
                _undefined(row["mtl_undefined"])
                or format_mean_std(row["mtl_mean"], row["mtl_std"]),
                _undefined(  # compare.json of older versions has no delta_undefined
                    row.get("delta_undefined", row["stl_undefined"] or row["mtl_undefined"])
                )
                or format_delta(row["delta_pct_mean"], row["delta_pct_std"]),
                test,
            ]
        )
    for row in result.get("pooled", []):  # tasks made from a column: all their rows at once
        arrow = "↑" if row["higher_is_better"] else "↓"
        rows.append([
            f"{row['column']}: pooled", f"{row['metric']} {arrow}",
            *(format_mean_std(_nan(row[f"{k}_mean"]), _nan(row[f"{k}_std"]))
              for k in ("stl", "mtl")),
            _pm([row["delta_pct_mean"], row["delta_pct_std"]], signed=True),
            "—",
        ])  # fmt: skip
    dm = format_delta(result["delta_m_mean"], _nan(result.get("delta_m_std")))
    over, every = result.get("delta_m_tasks"), len(result["tasks"])
    if isinstance(over, list) and 0 < len(over) < every:  # as the CLI says it
        dm += f" over {len(over)} of {every} tasks"
    headers = ["task", "metric", "single-task", "multi-task", "Δ (%)", "MTL worse? (p)"]
    body = table(headers, rows, total=["Δm", "(+ = MTL better)", "", "", dm, ""], text_columns=2)
    notes = transfer_notes(result["tasks"])  # as the CLI
    chance = chance_note(result["tasks"], float(result.get("alpha", 0.05)))
    for row in result["tasks"]:
        if row.get("negative_transfer"):
            tips = "; ".join(str(s) for s in row.get("suggestions", []))
            body += paragraph(
                f"⚠ {row['task']}: worse with the other tasks than alone. {tips}", "warn"
            )
    body += "".join(paragraph(f"MTL worse? {n}") for n in notes)
    if chance:
        body += paragraph(chance)
    if seeds > 1:  # as the CLI: a mean of ratios can disagree in sign with the means shown
        body += paragraph(
            "Δ (%): the mean of each seed's own change, not the change between the means shown."
        )
    single = result.get("single_task_settings")
    if isinstance(single, dict):
        body += paragraph(f"Single-task models: the model and training settings of "
                          f"{single.get('file')} (--baseline-config).")  # fmt: skip
    body += "".join(paragraph(f"≈ {row['task']}: {row['no_signal']}", "warn")
                    for row in result["tasks"] if row.get("no_signal"))  # fmt: skip
    body += paragraph(
        "From compare.json: test split, "
        + (f"{seeds} seeds, mean ± std. " if seeds > 1 else "1 seed. ")
        + "Δm = mean over tasks of ±(M_mtl − M_stl)/|M_stl| in %, signed so that + means the "
        "multi-task model is better."
        + (" Rows COLUMN: pooled score all the test rows of the tasks made from that column "
           "together (not part of Δm)." if result.get("pooled") else "")
    )  # fmt: skip
    return Section("comparison", title, body)


def _nan(value: object) -> float:
    return math.nan if value is None else float(value)  # type: ignore[arg-type]


def _undefined(reason: object) -> str | None:
    return f"n/a: {reason}" if reason else None


def cost_section(run: RunData) -> Section:
    title = "Model size: one model against K"
    costs = (run.compare or {}).get("cost_per_seed")
    if costs:
        return Section("cost", title, _measured_cost(costs))
    size = run.size
    if size is None:
        return Section(
            "cost",
            title,
            absent="no model.pt and no compare results with sizes in "
            "this folder: `polytask train` writes model.pt, `polytask compare` "
            "measures each model",
        )
    rows = [["one multi-task model", f"{size.parameters:,}", _size(size.bytes)]]
    body = ""
    if size.stl_parameters is not None and size.stl_bytes is not None:
        k = len(size.stl_parameters)
        p, b = sum(size.stl_parameters.values()), sum(size.stl_bytes.values())
        rows.append([f"{k} single-task models (one per task)", f"{p:,}", _size(b)])
        rows.append(
            ["single-task / multi-task", f"{p / size.parameters:.2f}×", f"{b / size.bytes:.2f}×"]
        )
        body = paragraph(
            "The single-task models are built with the same architecture and one task each "
            "(counted, not trained); `polytask compare` also measures their training time."
        )
    elif size.stl_absent is not None:
        body = paragraph(f"No single-task sizes: {size.stl_absent}; `polytask compare` trains "
                         "and measures the single-task models.")  # fmt: skip
    body = table(["models", "parameters", "bytes"], rows) + body
    body += paragraph(
        f"model.pt on disk: {_size(size.file_bytes)} (weights, optimizer and "
        "balancer state, the input encoding)."
    )
    return Section("cost", title, body)


def _measured_cost(costs: Sequence[Mapping[str, Any]]) -> str:
    """The table of `compare`'s measured sizes and times (seconds: mean over seeds)."""
    first = costs[0]
    seconds_mtl = float(np.mean([c["mtl"]["seconds"] for c in costs]))
    tasks = list(first["stl"])
    per_task = {t: float(np.mean([c["stl"][t]["seconds"] for c in costs])) for t in tasks}
    mtl = first["mtl"]
    stl_p = sum(int(first["stl"][t]["parameters"]) for t in tasks)
    stl_b = sum(int(first["stl"][t]["bytes"]) for t in tasks)
    stl_s = sum(per_task.values())
    copies = int(mtl.get("snapshots", 1))
    rows = [
        [
            "one multi-task model"
            + (
                f" ({copies} per-task snapshots of its shared part; the architecture alone: "
                f"{mtl['architecture_parameters']:,} parameters)"
                if copies > 1
                else ""
            ),
            f"{mtl['parameters']:,}",
            _size(mtl["bytes"]),
            f"{seconds_mtl:.1f}",
        ],
        *[
            [
                f"single-task {t}",
                f"{first['stl'][t]['parameters']:,}",
                _size(first["stl"][t]["bytes"]),
                f"{per_task[t]:.1f}",
            ]
            for t in tasks
        ],
    ]
    ratio = [
        "single-task / multi-task",
        f"{stl_p / max(mtl['parameters'], 1):.2f}×",
        f"{stl_b / max(mtl['bytes'], 1):.2f}×",
        f"{stl_s / seconds_mtl:.2f}×" if seconds_mtl > 0 else "n/a",
    ]
    total = [f"{len(tasks)} single-task models", f"{stl_p:,}", _size(stl_b), f"{stl_s:.1f}"]
    body = table(["models", "parameters", "bytes", "train s"], [*rows, total], total=ratio)
    return body + paragraph(
        f"Measured by `polytask compare` ({len(costs)} seed{'s' * (len(costs) > 1)}; training "
        "seconds are the mean over seeds, including each model's evaluations)."
    )


def _setups_table(
    result: Mapping[str, Any],
    lead_headers: Sequence[str],
    lead: Callable[[Mapping[str, Any]], list[Any]],
    delta_header: str,
    text_columns: int = 1,
) -> str:
    """One row per trained setup of architectures.json / groups.json: its `lead` cells, then
    parameters, training seconds, each task's metric and Δm."""
    tasks = list(result["rows"][0]["metrics"]) if result["rows"] else []
    rows = [
        [
            *lead(r),
            f"{r['parameters']:,}",
            f"{r['train_seconds']:.1f}",
            *[_pm(r["metrics"][t]) for t in tasks],
            _pm(r["delta_m"], signed=True),
        ]
        for r in result["rows"]
    ]
    primary = result.get("primary", {})  # absent in files of older versions

    def header(task: str) -> str:
        if task not in primary:
            return task
        arrow = "↑" if primary[task]["higher_is_better"] else "↓"
        return f"{task} {primary[task]['metric']} {arrow}"

    headers = [*lead_headers, "parameters", "train s", *map(header, tasks), delta_header]
    return table(headers, rows, text_columns=text_columns)


def architectures_section(run: RunData) -> Section:
    title = "Architectures side by side"
    result = run.architectures
    if result is None:
        return Section(
            "architectures",
            title,
            absent="no architecture comparison in this folder:"
            " `polytask compare CONFIG --architectures hard_sharing,mmoe,ple`",
        )
    return Section(
        "architectures",
        title,
        _setups_table(
            result, ["architecture"], lambda r: [r["architecture"]], "Δm % vs single-task"
        )
        + paragraph(
            f"From architectures.json: test split, {len(result['seeds'])} seed(s); the first row "
            "is one single-task model per task (parameters and seconds summed)."
        ),
    )


def groups_section(run: RunData) -> Section:
    title = "Grouped vs all-in-one vs single-task"
    result = run.groups
    if result is None:
        return Section(
            "groups",
            title,
            absent="no grouped comparison in this folder: `polytask compare CONFIG --groups auto`",
        )
    return Section(
        "groups",
        title,
        _setups_table(
            result,
            ["training", "groups", "models"],
            lambda r: [r["training"], " / ".join(",".join(g) for g in r["groups"]), r["models"]],
            "Δm %",
            text_columns=2,
        )
        + paragraph(f"From groups.json: test split, {len(result['seeds'])} seed(s)."),
    )


def label_fraction_section(run: RunData) -> Section:
    title = "Learning curve under label scarcity"
    curve = run.label_fraction
    if curve is None:
        return Section(
            "label-fraction",
            title,
            absent="no label-fraction curve in this folder: "
            "`polytask compare CONFIG --label-fraction TASK=0.1,0.5,1`",
        )
    rows = curve["rows"]
    fractions = [r["fraction"] for r in rows]
    series = _some(
        ("single-task", fractions, [r["stl_mean"] for r in rows]),
        ("multi-task", fractions, [r["mtl_mean"] for r in rows]),
    )
    plots = _Plots()
    panel = Panel(f"{curve['task']}: test {curve['metric']}", series, str(curve["metric"]))
    plots.add(
        "label-fraction",
        f"{curve['task']}'s test {curve['metric']} against the fraction "
        "of its training labels kept.",
        lambda ids: line_figure([panel], ids, xlabel="label fraction"),
    )
    body = table(
        ["fraction", "labelled rows", "single-task", "multi-task", "Δ (%)"],
        [
            [
                f"{r['fraction']:g}",
                f"{int(r['labelled']):,}",
                format_mean_std(r["stl_mean"], _nan(r["stl_std"])),
                format_mean_std(r["mtl_mean"], _nan(r["mtl_std"])),
                curve_delta(r),
            ]
            for r in rows
        ],
    )
    return Section("label-fraction", title, "".join(plots.html) + body, plots=tuple(plots.keys))


SECTIONS = (
    test_section,
    curves_section,
    weights_section,
    gradients_section,
    relations_section,
    comparison_section,
    cost_section,
    architectures_section,
    groups_section,
    label_fraction_section,
)
"""The report's sections in page order."""
