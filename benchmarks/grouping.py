"""Which tasks belong together: automatic grouping against all-in-one and single-task training,
and what the task-relations monitor costs per step.

Three data sets, each through `polytask.analysis._groups.compare_groups` (what `polytask
compare CONFIG --groups auto` runs): planted groups (the built-in `groups` generator, three
groups of two tasks), the built-in customers (examples/customers.yaml's settings) and School
split 0 (139 schools; needs ../shared). Reported per data set: the grouping found (and, on
planted data, its adjusted Rand index against the planted one), then single-task, all-in-one
and grouped rows: models, parameters, training seconds and Δm of the primary test metrics
against single-task (mean ± std over seeds). Then the monitor's cost: the same run with the
conflict monitor, with TAG affinity, and with neither, side by side in one process (minimum of
three repetitions). Results: benchmarks/results/grouping.md.

    python benchmarks/grouping.py [--seeds 3] [--school ../shared/datasets/school]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer
from polytask.analysis import grouping_agreement
from polytask.analysis._groups import GroupComparison, compare_groups
from polytask.app import DataConfig, ModelConfig, RunConfig, load_prepared, prepare
from polytask.cli._render import format_mean_std
from polytask.data._synthetic import customer_tasks, make_related_regression

HERE = Path(__file__).resolve().parent
PLANTED = (("g0_a", "g0_b"), ("g1_a", "g1_b"), ("g2_a", "g2_b"))


def planted_config() -> RunConfig:
    names = [n for group in PLANTED for n in group]
    return RunConfig(
        data=DataConfig(builtin="groups", options={"n": 3000, "group_sizes": [2, 2, 2]}),
        tasks=tuple(Task(n, "regression") for n in names),
        model=ModelConfig(params={"hidden": (16,)}),
        training=TrainConfig(epochs=30, lr=3e-3, progress=False),
    )


def customers_config() -> RunConfig:
    return RunConfig(
        data=DataConfig(
            builtin="customers",
            options={"n": 4000, "relatedness": 0.8, "missing": {"ltv": 0.5, "plan": 0.92}},
        ),
        tasks=tuple(customer_tasks()),
        model=ModelConfig(params={"hidden": (64, 64), "dropout": 0.1}),
        training=TrainConfig(epochs=20, lr=2e-3, weight_decay=1e-4, progress=False),
    )


def table(result: GroupComparison) -> list[str]:
    lines = [
        "| training | models | parameters | train s | Δm % vs single-task |",
        "|---|---|---|---|---|",
    ]
    for row in result.rows():
        dm = row["delta_m"]
        cell = "—" if dm is None else format_mean_std(*dm)  # type: ignore[misc]
        label = str(row["training"])
        if len(label) > 80:  # School: 139 names
            label = f"grouped ({row['models']} groups)"
        lines.append(
            f"| {label} | {row['models']} | {row['parameters']:,} | "
            f"{row['train_seconds']:.1f} | {cell} |"
        )
    return lines


def section(name: str, result: GroupComparison, minutes: float) -> list[str]:
    lines = [f"## {name}", ""]
    if result.grouping is not None:
        if len(result.tasks) <= 12:
            found = " / ".join(",".join(g) for g in result.grouping.groups)
        else:
            found = "groups of " + ", ".join(str(len(g)) for g in result.grouping.groups) + " tasks"
        lines.append(f"Grouping found ({result.grouping.method}): {found}.")
        if name.startswith("Planted"):
            ari = grouping_agreement(result.grouping, PLANTED)
            lines.append(f"Adjusted Rand index against the planted groups: {ari:.2f}.")
    lines += ["", *table(result), "", f"{len(result.seeds)} seed(s), {minutes:.1f} min.", ""]
    return lines


def monitor_cost(repeats: int = 3) -> list[str]:
    """Seconds of the same run without monitor, with conflict every 10 steps, with affinity
    every 5, for a loss weighting (probe) and a Gramian method (free conflict)."""
    x, ya, yb = make_related_regression(n=4000, seed=0)
    data = TaskData(
        torch.tensor(x, dtype=torch.float32),
        {"a": torch.tensor(ya, dtype=torch.float32), "b": torch.tensor(yb, dtype=torch.float32)},
    )
    tasks = [Task("a", "regression"), Task("b", "regression")]
    settings = {"none": (None, None), "conflict / 10": (10, None), "affinity / 5": (None, 5)}
    seconds: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeats):
        for balancer in ("ew", "upgrad"):
            for label, (conflict, affinity) in settings.items():
                config = TrainConfig(epochs=4, batch_size=128, patience=None, progress=False,
                                     conflict_every=conflict, affinity_every=affinity)  # fmt: skip
                model = hard_sharing_mlp(20, tasks, hidden=(64, 64), seed=0)
                trainer = Trainer(model, make_balancer(balancer), config)
                started = time.perf_counter()
                trainer.fit(data)
                seconds.setdefault((balancer, label), []).append(time.perf_counter() - started)
    lines = [
        "## Monitor cost per step",
        "",
        "Two regression tasks, 4000 rows, hidden 64-64, batch 128, 4 epochs (128 steps); "
        f"minimum of {repeats} runs, side by side in one process.",
        "",
        "| balancer | monitor | seconds | vs none |",
        "|---|---|---|---|",
    ]
    for (balancer, label), values in seconds.items():
        base = min(seconds[(balancer, "none")])
        lines.append(f"| {balancer} | {label} | {min(values):.2f} | {min(values) / base:.2f}× |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--school", default=str(HERE.parent.parent / "shared/datasets/school"))
    parser.add_argument("--school-seeds", type=int, default=1)
    parser.add_argument("--out", default=str(HERE / "results/grouping.md"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--sets", default="planted,customers,school,cost", help="which parts, comma-separated"
    )
    args = parser.parse_args()
    sets = set(args.sets.split(","))
    torch.set_num_threads(args.threads)
    lines = [
        "# Which tasks belong together: grouped vs all-in-one vs single-task",
        "",
        "`compare --groups auto`: the seed-0 all-in-one run measures TAG affinity (every 5 "
        "steps), the grouping maximising total affinity is trained; early stopping off, "
        f"paired seeds. {args.threads} thread(s).",
        "",
    ]
    seeds = list(range(args.seeds))
    for key, name, config, groups in (
        ("planted", "Planted groups (3 × 2 regression tasks)", planted_config(), 3),
        ("customers", "Built-in customers (churn, ltv, plan)", customers_config(), 2),
    ):
        if key not in sets:
            continue
        started = time.perf_counter()
        result = compare_groups(config, load_prepared(config), None, seeds, max_groups=groups)
        lines += section(name, result, (time.perf_counter() - started) / 60)
        print("\n".join(lines[-12:]), flush=True)
    school = Path(args.school)
    if "school" not in sets:
        pass
    elif (school / "school.csv.gz").is_file():
        import sys

        sys.path.insert(0, str(HERE))
        from school_architectures import load_school, school_config

        frame, tasks = load_school(school)
        config = school_config(
            school,
            school / "splits" / "school_seed0.npz",
            tasks,
            ModelConfig(params={"hidden": (64, 64)}),
            TrainConfig(epochs=30, batch_size=256, lr=1e-3, weight_decay=1e-2, progress=False),
        )
        started = time.perf_counter()
        result = compare_groups(
            config, prepare(config, frame), None, list(range(args.school_seeds)), max_groups=4
        )
        lines += section("School split 0 (139 schools, at most 4 models)", result,
                         (time.perf_counter() - started) / 60)  # fmt: skip
    else:
        lines += ["## School", "", f"skipped: no School data in {school}", ""]
    if "cost" in sets:
        lines += monitor_cost()
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
