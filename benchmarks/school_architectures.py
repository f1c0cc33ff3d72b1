"""Architectures on School (139 schools = 139 regression tasks), side by side with EW.

Every architecture and one single-task network per school are trained with the same budget on
the fixed split `school_seed<k>.npz` (validation carved from its training rows), through
`polytask.analysis.compare_architectures` (what `polytask compare --architectures` runs).
The School table is long (one row per student, a `school_id`); it is widened in memory to one
target column per school, empty for the other schools' students. Reported: parameters,
training time, pooled explained variance and RMSE on the test students (as in
../shared/datasets/BASELINES.md) and Δm of the per-school RMSE against single-task.
Results: benchmarks/results/architectures_school.md.

    python benchmarks/school_architectures.py [--data ../shared/datasets/school] [--seeds 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from polytask import Task, TrainConfig
from polytask.analysis._architectures import ArchitectureComparison, compare_architectures
from polytask.app import DataConfig, FeaturesConfig, ModelConfig, RunConfig, SplitConfig, prepare
from polytask.models import ARCHITECTURES as REGISTERED

HERE = Path(__file__).resolve().parent
ARCHITECTURES = ["hard_sharing", "mmoe", "cgc", "ple", "cross_stitch", "soft_sharing"]
FEATURES = tuple(f"x{i}" for i in range(27))  # x27 is the constant bias column


def wide(frame: pd.DataFrame) -> pd.DataFrame:
    """One target column per school (s1..s139), NaN for the students of other schools."""
    schools = sorted(frame["school_id"].unique())
    targets = {
        f"s{k}": frame["exam_score"].where(frame["school_id"] == k).astype(float) for k in schools
    }
    return pd.concat([frame, pd.DataFrame(targets, index=frame.index)], axis=1)


def load_school(path: Path) -> tuple[pd.DataFrame, tuple[Task, ...]]:
    """The School table in wide form and one regression task per school; exits if absent."""
    if not (path / "school.csv.gz").is_file():
        raise SystemExit(f"School data not found in {path}: pass --data")
    frame = wide(pd.read_csv(path / "school.csv.gz"))
    tasks = tuple(Task(f"s{k}", "regression") for k in sorted(frame["school_id"].unique()))
    return frame, tasks


def school_config(
    path: Path, split_file: Path, tasks: tuple[Task, ...], model: ModelConfig, training: TrainConfig
) -> RunConfig:
    """The School run: features x0..x26, the split file with 15% of its training rows for
    validation, one regression task per school."""
    return RunConfig(
        data=DataConfig(
            path=str(path / "school.csv.gz"),
            features=FeaturesConfig(numeric=FEATURES),
            split=SplitConfig(file=str(split_file), val_fraction=0.15),
        ),
        tasks=tasks,
        model=model,
        training=training,
    )


def pooled(frame: pd.DataFrame, test: np.ndarray):  # type: ignore[no-untyped-def]
    """Pooled explained variance (%) and RMSE over every test student, from a `predict`."""
    rows = frame.iloc[test]
    y = rows["exam_score"].to_numpy(dtype=float)
    columns = [f"s{k}" for k in rows["school_id"]]

    def summary(predict) -> dict[str, float]:  # type: ignore[no-untyped-def]
        pred = predict(rows)
        p = pred.to_numpy()[np.arange(len(rows)), pred.columns.get_indexer(columns)]
        sse = float(((y - p) ** 2).sum())
        return {
            "explained variance %": 100 * (1 - sse / float(((y - y.mean()) ** 2).sum())),
            "RMSE": float(np.sqrt(sse / len(y))),
        }

    return summary


def report(result: ArchitectureComparison, args: argparse.Namespace, minutes: float) -> str:
    lines = [
        "# Architectures on School (139 regression tasks), EW",
        "",
        f"Split `school_seed{args.split}.npz` (validation: 15% of its training rows); "
        f"seeds {result.seeds}; hidden {args.hidden}, {args.epochs} epochs, batch "
        f"{args.batch_size}, AdamW lr {args.lr}, weight decay {args.weight_decay}; "
        f"{args.threads} thread(s); "
        f"whole run {minutes:.1f} min. Mean ± std over seeds. Δm: mean relative change of the "
        "per-school test RMSE against the single-task networks (+ = better). Classic baselines "
        "on the same splits (BASELINES.md): single-task ridge 32.9%, mean-regularised MTL "
        "37.5% explained variance.",
        "",
        "| model | parameters | train s | explained variance % | RMSE | Δm % |",
        "|---|---|---|---|---|---|",
    ]
    for row in result.rows():
        s = row["summary"]
        ev, rmse = s["explained variance %"], s["RMSE"]  # type: ignore[index]
        dm = row["delta_m"]
        lines.append(
            f"| {row['architecture']} | {row['parameters']:,} | {row['train_seconds']:.0f} | "
            f"{ev[0]:.1f} ± {ev[1]:.1f} | {rmse[0]:.2f} ± {rmse[1]:.2f} | "
            + ("—" if dm is None else f"{dm[0]:+.1f} ± {dm[1]:.1f}")  # type: ignore[index]
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared/datasets/school"))
    parser.add_argument("--out", default=str(HERE / "results/architectures_school.md"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--split", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--architectures", nargs="+", default=ARCHITECTURES, choices=sorted(REGISTERED)
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = Path(args.data)
    frame, tasks = load_school(path)
    split_file = path / "splits" / f"school_seed{args.split}.npz"
    config = school_config(
        path,
        split_file,
        tasks,
        model=ModelConfig(params={"hidden": tuple(args.hidden)}),
        training=TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            progress=False,
        ),
    )
    data = prepare(config, frame)
    started = time.perf_counter()
    result = compare_architectures(
        config,
        data,
        args.architectures,
        list(range(args.seeds)),
        summary=pooled(frame, np.load(split_file)["test_idx"]),
    )
    text = report(result, args, (time.perf_counter() - started) / 60)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
