"""Sampling schedules on tasks with their own data sets of very unequal sizes.

Two regression tasks share hidden features: `big` has 5,000 rows, `tiny` 60. A hard-sharing
MLP (10 → 64 → 64) trains 600 steps of batch 32 with EW under each schedule; reported: each
task's test RMSE (2,000 fresh rows each), mean ± std over 5 seeds, and the share of steps that
drew `tiny`. Results: benchmarks/results/sampling.md.

    python benchmarks/sampling.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer
from polytask.data._synthetic import make_unequal_tasks

HERE = Path(__file__).resolve().parent
SCHEDULES = [
    ("proportional", {}),
    ("temperature", {"temperature": 2.0}),
    ("temperature", {"temperature": 3.0}),
    ("uniform", {}),
    ("round_robin", {}),
    ("annealed", {}),
    ("dynamic", {}),
    ("joint", {}),
]


def _sources(sizes: dict[str, int], seed: int) -> dict[str, TaskData]:
    raw = make_unequal_tasks(sizes, seed=seed)
    return {
        n: TaskData(torch.tensor(x, dtype=torch.float32), {n: torch.tensor(y, dtype=torch.float32)})
        for n, (x, y) in raw.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(HERE / "results/sampling.md"))
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tasks = [Task("big", "regression"), Task("tiny", "regression")]
    test = _sources({"big": 2000, "tiny": 2000}, seed=999)
    lines = [
        "# Sampling schedules: a 5,000-row task and a 60-row task",
        "",
        f"600 steps of batch 32, EW, hard-sharing MLP 10→64→64; mean ± std over {args.seeds} "
        "seeds; test RMSE on 2,000 fresh rows per task (lower is better).",
        "",
        "| schedule | tiny RMSE | big RMSE | steps on tiny |",
        "|---|---|---|---|",
    ]
    for name, params in SCHEDULES:
        tiny, big, share = [], [], []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            config = TrainConfig(epochs=None, steps=600, eval_every=100, batch_size=32, lr=3e-3,
                                 patience=None, progress=False, seed=seed, restore_best=False,
                                 schedule=name, schedule_params=params)  # fmt: skip
            trainer = Trainer(hard_sharing_mlp(10, tasks, (64, 64)), make_balancer("ew"), config)
            trainer.fit(_sources({"big": 5000, "tiny": 60}, seed))
            metrics = trainer.evaluate(test)
            tiny.append(metrics["tiny"]["rmse"])
            big.append(metrics["big"]["rmse"])
            assert trainer.sampler is not None
            share.append(trainer.sampler.counts[1] / trainer.sampler.counts.sum())
        label = name + "".join(f" T={v:g}" for v in params.values())
        lines.append(
            f"| {label} | {np.mean(tiny):.3f} ± {np.std(tiny, ddof=1):.3f} | "
            f"{np.mean(big):.3f} ± {np.std(big, ddof=1):.3f} | {100 * np.mean(share):.1f}% |"
        )
        print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
