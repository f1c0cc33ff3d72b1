"""School over the ten fixed splits, against the classic baselines of BASELINES.md.

hard_sharing and mean_regularised (a shared head plus a penalised deviation per school), both
with EW and the settings of the architectures table (hidden 64-64, 30 epochs, batch 256,
AdamW lr 1e-3, weight decay 1e-2, default coupling; nothing tuned on test data), trained once
per split `school_seed<k>.npz` (validation: 15% of its training rows). Reported: pooled test
explained variance and RMSE, mean ± std over the splits, beside the classic rows (same splits,
same definition). Results: benchmarks/results/school_splits.md.

    python benchmarks/school_splits.py [--data ../shared/datasets/school] [--splits 10]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from school_architectures import load_school, pooled, school_config  # the same School data, run

from polytask import TrainConfig
from polytask.app import ModelConfig, fit, prepare

HERE = Path(__file__).resolve().parent
CLASSIC = [  # BASELINES.md: explained variance mean ± std over the ten splits, RMSE
    ("single-task ridge per school", 32.9, 0.7, 10.43),
    ("one pooled ridge (school ignored)", 33.8, 1.0, 10.36),
    ("pooled ridge + free school intercepts", 37.1, 0.9, 10.10),
    ("mean-regularised MTL (Evgeniou & Pontil 2004)", 37.5, 0.9, 10.07),
    ("gradient boosting, school id as a category", 37.2, 0.9, 10.09),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared/datasets/school"))
    parser.add_argument("--out", default=str(HERE / "results/school_splits.md"))
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--architectures", nargs="+", default=["hard_sharing", "mean_regularised"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = Path(args.data)
    frame, tasks = load_school(path)
    scores: dict[str, list[tuple[float, float]]] = {a: [] for a in args.architectures}
    started = time.perf_counter()
    for split in range(args.splits):
        split_file = path / "splits" / f"school_seed{split}.npz"
        test = np.load(split_file)["test_idx"]
        for architecture in args.architectures:
            config = school_config(
                path,
                split_file,
                tasks,
                model=ModelConfig(architecture=architecture, hidden=(64, 64)),
                training=TrainConfig(
                    epochs=30, batch_size=256, lr=1e-3, weight_decay=1e-2, progress=False
                ),
            )
            fitted = fit(config, prepare(config, frame))
            summary = pooled(frame, test)(fitted.predict)
            scores[architecture].append((summary["explained variance %"], summary["RMSE"]))
            print(split, architecture, scores[architecture][-1], flush=True)
    minutes = (time.perf_counter() - started) / 60
    lines = [
        f"# School over {args.splits} fixed splits, against the classic baselines",
        "",
        "Splits `school_seed0..{}.npz`; EW, hidden 64-64, 30 epochs, batch 256, AdamW lr 1e-3, "
        "weight decay 1e-2, mean_regularised with its default coupling (1e-3); validation: 15% "
        "of each split's training rows; nothing tuned on test data. Pooled test explained "
        "variance and RMSE, mean ± std over the splits. Classic rows: "
        f"../shared/datasets/BASELINES.md (same splits and definition). {args.threads} "
        f"thread(s), {minutes:.1f} min.".format(args.splits - 1),
        "",
        "| model | explained variance % | RMSE |",
        "|---|---|---|",
    ]
    for name, mean, std, rmse in CLASSIC:
        lines.append(f"| {name} (classic) | {mean:.1f} ± {std:.1f} | {rmse:.2f} |")
    for architecture, rows in scores.items():
        ev, rmse = np.array(rows).T
        lines.append(
            f"| polytask {architecture} | {ev.mean():.1f} ± {ev.std():.1f} | "
            f"{rmse.mean():.2f} ± {rmse.std():.2f} |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
