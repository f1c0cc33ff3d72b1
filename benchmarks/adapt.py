"""k-shot adaptation to held-out tasks: School's held-out schools (when ../shared has it) and
generated task families.

For each suite a multi-task model is trained on the training tasks only, plainly and (where
polytask has meta-learning) meta-trained; then each held-out task is learnt from k labelled
rows (k = 5, 10, 20, 50; several draws) with each adaptation strategy on each trained model,
and by a network of the same architecture trained from scratch on the same k rows. Every fit is
scored on the held-out task's other rows (never used for fitting). Reported: the mean of the
per-task primary metric (RMSE) over held-out tasks and draws, per method and k.
Results: benchmarks/results/adapt.md.

    python benchmarks/adapt.py [--data ../shared/datasets/school] [--schools 20] [--repeats 2]
                               [--families 2] [--new-tasks 5] [--suites family school]
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from school_architectures import FEATURES as SCHOOL_FEATURES
from school_architectures import load_school

from polytask import TrainConfig
from polytask.adapt import AdaptConfig, kshot_curve
from polytask.app import FittedModel, ModelConfig, RunConfig, fit, prepare
from polytask.app._config import DataConfig, FeaturesConfig, SplitConfig
from polytask.data import TaskFamily
from polytask.data._synthetic import family_feature_names, family_task_names
from polytask.tasks import Task

HERE = Path(__file__).resolve().parent
KS = (5, 10, 20, 50)


def trainings(plain: TrainConfig) -> dict[str, TrainConfig]:
    """The trained models to adapt: plain MTL, and the same meta-trained with Reptile."""
    meta = dataclasses.replace(plain, meta_learning="reptile", meta_params={"every": 2})
    return {"plain MTL": plain, "meta-trained": meta}


def adapt_suite(
    name: str,
    train_frame: pd.DataFrame,
    features: tuple[str, ...],
    train_tasks: tuple[Task, ...],
    held_out: dict[str, pd.DataFrame],
    model: ModelConfig,
    training: TrainConfig,
    repeats: int,
    config: AdaptConfig,
    log: Callable[[str], None],
) -> tuple[dict[str, dict[int, list[float]]], list[str]]:
    """Per method and k, the held-out tasks' metric (one value per task and draw)."""
    run = RunConfig(
        data=DataConfig(
            path="unused.csv",
            features=FeaturesConfig(numeric=features),
            split=SplitConfig(val_fraction=0.15, test_fraction=0.05, seed=0),
        ),
        tasks=train_tasks,
        model=model,
    )
    trained: dict[str, FittedModel] = {}
    notes = []
    for label, how in trainings(training).items():
        started = time.perf_counter()
        trained[label] = fit(dataclasses.replace(run, training=how), prepare(run, train_frame))
        notes.append(f"{label}: trained in {time.perf_counter() - started:.0f} s")
        log(f"{name}: {notes[-1]}")
    main, *others = trained
    results: dict[str, dict[int, list[float]]] = {}
    for column, rows in held_out.items():
        curve = kshot_curve(
            trained[main],
            Task(column, "regression"),
            rows,
            ks=KS,
            repeats=repeats,
            strategies=("head_only", "l2sp"),
            config=config,
            inits=("fresh", "mean", "meta"),
            others={o: trained[o] for o in others},
            label=main,
        )
        for method, by_k in curve.results.items():
            for k, values in by_k.items():
                results.setdefault(method, {}).setdefault(k, []).extend(values)
        at5 = ", ".join(f"{m} {curve.mean(m, 5):.3g}" for m in curve.results)
        log(f"{name}: {column} at k=5: {at5}")
    return results, notes


def table(results: dict[str, dict[int, list[float]]]) -> list[str]:
    lines = ["| method | " + " | ".join(f"k={k}" for k in KS) + " |", "|---" * (len(KS) + 1) + "|"]
    best = {
        k: min((np.mean(r[k]), m) for m, r in results.items() if k in r)[1]
        for k in KS
        if any(k in r for r in results.values())
    }
    for method, by_k in results.items():
        cells = []
        for k in KS:
            if k not in by_k:
                cells.append("—")
                continue
            v = np.array(by_k[k])
            text = f"{v.mean():.3f} ± {v.std() / np.sqrt(len(v)):.3f}"
            cells.append(f"**{text}**" if best.get(k) == method else text)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def school(args: argparse.Namespace, config: AdaptConfig, log: Callable[[str], None]) -> list[str]:
    path = Path(args.data)
    if not (path / "school.csv.gz").is_file():
        return [f"School: not run ({path} has no school.csv.gz)."]
    frame, tasks = load_school(path)
    sizes = frame["school_id"].value_counts()
    rng = np.random.default_rng(0)
    big = sorted(sizes[sizes >= 2 * max(KS) + 20].index)
    held_ids = sorted(rng.choice(big, size=args.schools, replace=False).tolist())
    held_cols = {f"s{k}" for k in held_ids}
    train_tasks = tuple(t for t in tasks if t.name not in held_cols)
    train_frame = frame[~frame["school_id"].isin(held_ids)].drop(columns=sorted(held_cols))
    held_out = {
        f"s{k}": frame[frame["school_id"] == k][[*SCHOOL_FEATURES, f"s{k}"]] for k in held_ids
    }
    results, notes = adapt_suite(
        "School",
        train_frame.reset_index(drop=True),
        SCHOOL_FEATURES,
        train_tasks,
        held_out,
        ModelConfig(hidden=(64, 64)),
        TrainConfig(epochs=args.epochs, batch_size=256, lr=1e-3, weight_decay=1e-2, progress=False),
        args.repeats,
        config,
        log,
    )
    return [
        f"## School: {args.schools} held-out schools",
        "",
        f"Trained on the other {len(train_tasks)} schools (hidden 64-64, EW, {args.epochs} "
        "epochs, batch 256, AdamW lr 1e-3, weight decay 1e-2; meta-trained: the same with "
        "Reptile episodes every 2 steps). Held out: schools "
        f"{', '.join(map(str, held_ids))} (drawn with seed 0 among schools with at least "
        f"{2 * max(KS) + 20} students); for each, half of its students are set aside for "
        f"scoring and k are drawn from the other half, {args.repeats} draws per k. Test RMSE "
        "in exam-score points, mean ± standard error over schools × draws; best per k in bold. "
        + "; ".join(notes)
        + ".",
        "",
        *table(results),
    ]


def family(args: argparse.Namespace, config: AdaptConfig, log: Callable[[str], None]) -> list[str]:
    """Generated task families: train on 20 tasks, adapt to 10 new tasks of each family."""
    results: dict[str, dict[int, list[float]]] = {}
    notes = []
    for seed in range(args.families):
        spec = TaskFamily(latent_dim=12, spread=0.05, family=seed)
        frame = spec.frame(n_tasks=20, rows_per_task=200, seed=seed)
        held = spec.held_out(n_tasks=args.new_tasks, rows_per_task=400, seed=seed + 100)
        features = tuple(family_feature_names(spec.n_features))
        names = family_task_names(args.new_tasks, held_out=True)
        held_out = {n: held[held[n].notna()][[*features, n]] for n in names}
        part, how = adapt_suite(
            f"family {seed}",
            frame,
            features,
            tuple(Task(n, "regression") for n in family_task_names(20)),
            held_out,
            ModelConfig(hidden=(64, 32)),
            TrainConfig(
                epochs=None, steps=1500, eval_every=300, batch_size=128, lr=3e-3, progress=False
            ),
            args.repeats,
            config,
            log,
        )
        notes += how
        for method, by_k in part.items():
            for k, values in by_k.items():
                results.setdefault(method, {}).setdefault(k, []).extend(values)
    return [
        f"## Generated task families: {args.families} families × {args.new_tasks} new tasks",
        "",
        "`TaskFamily(latent_dim=12, spread=0.05, family=f)` (polytask.data): y = a_t · h(x) + "
        "b_t + noise with a shared hidden map h and task vectors a_t near a common mean. Trained "
        "on 20 tasks × 200 rows (hidden 64-32, EW, 1500 steps of 128 rows, AdamW lr 3e-3; "
        "meta-trained: the same with Reptile episodes every 2 steps); new tasks: 400 rows each, "
        f"half for scoring, k drawn from the other half, {args.repeats} draws per k. Test RMSE "
        "(noise floor 0.1), mean ± standard error over families × new tasks × draws; best per k "
        "in bold. " + "; ".join(notes) + ".",
        "",
        *table(results),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared/datasets/school"))
    parser.add_argument("--out", default=str(HERE / "results/adapt.md"))
    parser.add_argument("--schools", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--families", type=int, default=2)
    parser.add_argument("--new-tasks", type=int, default=5)
    parser.add_argument("--suites", nargs="+", default=["family", "school"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = AdaptConfig(steps=args.steps)
    started = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {line}", flush=True)

    suites = {"family": family, "school": school}
    commit = subprocess.run(  # the code the run starts with
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    sections = [suites[name](args, config, log) for name in args.suites]
    lines = [
        "# Adapting to held-out tasks from k labelled rows",
        "",
        f"`make bench-adapt` at commit {commit}; adaptation: {args.steps} AdamW steps, lr "
        f"{config.lr}, all k rows per step; `l2sp` strength 0.1. The new head starts fresh "
        "(random), from the mean of the trained heads (`mean`), or from the meta head init "
        "that meta-training learnt (`meta`). Scratch: a network of the same architecture for "
        "the new task alone, trained the same way on the same rows. "
        f"{args.threads} thread(s), {(time.perf_counter() - started) / 60:.1f} min.",
        "",
    ]
    for section in sections:
        lines += [*section, ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
