"""The examples' MTL vs single-task tables, shared by examples/*/tables.py: for each seed, one
single-task model per task and each multi-task variant (architecture × balancer) on the
example's split, same budget; each task's primary test metric (mean ± std over seeds), Δm
against the single-task models and training time, as Markdown.

An example folder's tables.py names its variants and calls `main`:

    import sys; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tables_common import main
    main(Path(__file__).resolve().parent, {"multi_mnist": [("hard_sharing", "ew")]}, __doc__)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from polytask.analysis._baselines import fit_single_task, primary_metrics, single_task_metrics
from polytask.analysis._compare import delta_m
from polytask.app import BalancerConfig, ModelConfig, fit, load_prepared
from polytask.cli._config_io import load_config
from polytask.tasks import Task, reported_tasks

Variant = tuple[str, str] | tuple[str, str, dict[str, Any]]
"""(architecture, balancer), or with model params that replace the config's (e.g. a wider
encoder: {"encoder_params": {"channels": [45, 90, 90]}}); the single-task models keep the
config's."""
Variants = dict[str, Sequence[Variant]]
REPOSITORY = Path(__file__).resolve().parents[1]


def fmt(values: list[float], digits: int = 3) -> str:
    """Mean ± sample standard deviation (± 0 for one value)."""
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.{digits}f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.{digits}f}"


def _delta_m(mtl: dict[str, float], stl: dict[str, float], better: dict[str, bool]) -> float:
    """Δm in %, or NaN (with a note) when a single-task metric is 0 and Δm is undefined."""
    try:
        return delta_m(mtl, stl, better)
    except ValueError as e:
        print(f"Δm left out: {e}", flush=True)
        return float("nan")


Rows = dict[str, dict[str, list[float]]]
"""Per model label: each task's primary metric, "time" (s) and "dm" (%), one value per seed."""


def measure(
    config_path: Path,
    variants: Sequence[Variant],
    seeds: list[int],
    epochs: int | None = None,
    resplit: bool = False,
) -> tuple[list[Task], Rows]:
    """Train the single-task models and every variant for each seed on the example configured at
    `config_path` (`epochs`: another training budget than the config's, every model alike;
    `resplit`: each seed also draws its own split, `data.split.seed`, for a random split)."""
    config = load_config(config_path)
    if epochs is not None:
        config = dataclasses.replace(
            config, training=dataclasses.replace(config.training, epochs=epochs)
        )
    data = load_prepared(config)
    tasks = reported_tasks(data.tasks)
    better = {t.name: t.primary.higher_is_better for t in tasks}
    rows: dict[str, dict[str, list[float]]] = {}

    def record(label: str, metrics: dict[str, float], seconds: float, dm: float | None) -> None:
        row = rows.setdefault(label, {"time": [], "dm": []})
        for task, value in metrics.items():
            row.setdefault(task, []).append(value)
        row["time"].append(seconds)
        if dm is not None:
            row["dm"].append(dm)

    for seed in seeds:
        training = dataclasses.replace(
            config.training, seed=seed, patience=None, monitor="loss", keep_last=0,
            keep_best=False,
        )  # fmt: skip
        cfg = dataclasses.replace(config, training=training)
        if resplit:
            split = dataclasses.replace(config.data.split, seed=seed)
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(config.data, split=split))
            data = load_prepared(cfg)
        started = time.perf_counter()
        singles = fit_single_task(cfg, data, None, f"seed {seed}")
        stl = single_task_metrics(singles, data)
        record("single-task (one model per task)", stl, time.perf_counter() - started, None)
        for architecture, balancer, *changed in variants:
            own = changed[0] if changed else {}
            model = ModelConfig(architecture=architecture, params={**config.model.params, **own})
            variant = dataclasses.replace(cfg, model=model, balancer=BalancerConfig(name=balancer))
            label = f"MTL {architecture} + {balancer}" + _shown(own)
            started = time.perf_counter()
            fitted = fit(variant, data, description=f"seed {seed} {label[4:]}")
            assert fitted.trainer is not None
            mtl = primary_metrics(fitted.trainer.evaluate(data.test), data)
            record(label, mtl, time.perf_counter() - started, _delta_m(mtl, stl, better))
    return list(tasks), rows


def _shown(params: dict[str, Any]) -> str:
    """A label's note of the params a variant changes: " (channels [45, 90, 90])"."""
    leaves: list[str] = []

    def walk(value: dict[str, Any]) -> None:
        for key, inner in value.items():
            if isinstance(inner, dict):
                walk(inner)
            else:
                leaves.append(f"{key} {inner}")

    walk(params)
    return f" ({', '.join(leaves)})" if leaves else ""


@functools.cache
def commit() -> str:
    """The repository's short commit hash when the run started (results say which code made
    them; "+changes" where src, benchmarks or examples differed from it; "unknown" outside a
    git checkout): read once, at import, so that a commit made while a long run goes on is not
    the one its results name."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False,
                              cwd=REPOSITORY)  # fmt: skip
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "src", "benchmarks",
                  "examples")  # fmt: skip
    return head + ("+changes" if changed else "")


commit()


def render(
    config_path: Path,
    tasks: list[Task],
    rows: Rows,
    seeds: list[int],
    epochs: int | None,
    resplit: bool = False,
) -> str:
    """The Markdown table of `measure`'s rows."""
    better = {t.name: t.primary.higher_is_better for t in tasks}
    header = " | ".join(
        f"{t.name} {t.primary.name} {'↑' if better[t.name] else '↓'}" for t in tasks
    )
    try:
        shown = config_path.resolve().relative_to(REPOSITORY).as_posix()
    except ValueError:  # a config outside the repository
        shown = str(config_path)
    lines = [
        f"# {config_path.stem}: multi-task vs single-task",
        "",
        f"Config `{shown}`"
        + (f" at {epochs} epochs (every model alike)" if epochs is not None else "")
        + f", seeds {seeds} (mean ± std), test split"
        + (" (each seed its own split: `data.split.seed`)" if resplit else "")
        + "; "
        f"commit {commit()}. Δm: mean over tasks of the signed relative change of the primary "
        "metric against the single-task models of the same seed (positive: MTL better). Time: "
        "wall-clock training seconds per seed (single-task: all K models together) on a 2-core "
        "machine that was running other jobs too.",
        "",
        f"| model | {header} | Δm % | time s |",
        "|---" * (len(tasks) + 3) + "|",
    ]
    for label, row in rows.items():
        cells = " | ".join(fmt(row[t.name]) for t in tasks)
        dm = "0" if not row["dm"] else "n/a" if np.isnan(row["dm"]).any() else fmt(row["dm"], 1)
        lines.append(f"| {label} | {cells} | {dm} | {np.mean(row['time']):.0f} |")
    return "\n".join(lines) + "\n"


def run(
    config_path: Path,
    variants: Sequence[Variant],
    seeds: list[int],
    epochs: int | None = None,
) -> str:
    """The table of the example configured at `config_path`, as Markdown."""
    tasks, rows = measure(config_path, variants, seeds, epochs)
    return render(config_path, tasks, rows, seeds, epochs)


def main(here: Path, variants: Variants, doc: str | None) -> None:
    """Parse `[EXAMPLE ...] [--seeds N]` and write here/results/<example>.md for each example
    (the config here/<example>.yaml)."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("examples", nargs="*", default=list(variants), help=", ".join(variants))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--epochs", type=int, default=None, help="train every model this long (the config's)"
    )
    args = parser.parse_args()
    unknown = [n for n in args.examples if n not in variants]
    if unknown:
        parser.error(f"unknown example(s) {', '.join(unknown)}; choose from {', '.join(variants)}")
    out = here / "results"
    out.mkdir(exist_ok=True)
    for name in args.examples:
        table = run(here / f"{name}.yaml", variants[name], list(range(args.seeds)), args.epochs)
        (out / f"{name}.md").write_text(table)
        print(table, flush=True)
