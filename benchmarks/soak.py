"""Long-run health: resident memory over 20,000 small training steps.

Each variant trains in its own fresh process: a hard-sharing MLP (16 → 64 → 64) with three
tasks (binary, regression, 4-class), batch 32, through the Trainer with everything a long run
has on (validation and a checkpoint every 500 steps, best-by-metric kept, metrics CSV), or
through `polytask.backward` in a plain loop. Resident memory (RSS, /proc) and the number of
live Python objects are sampled every 1,000 steps; growth is measured from step 2,000 (after
warm-up) to the end, with a least-squares slope. Results: benchmarks/results/soak.md.

    python benchmarks/soak.py [--steps 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Required, TypedDict

import numpy as np
import torch

from polytask import Task, TaskData, TrainConfig, Trainer, backward, hard_sharing_mlp, make_balancer
from polytask.train._callbacks import Callback

HERE = Path(__file__).resolve().parent


class _Variant(TypedDict, total=False):
    balancer: Required[str]
    num_workers: int
    plain: bool


VARIANTS: dict[str, _Variant] = {
    "Trainer, EW": {"balancer": "ew"},
    "Trainer, UPGrad (Jacobian engine)": {"balancer": "upgrad"},
    "Trainer, FAMO (state per step)": {"balancer": "famo"},
    "Trainer, DWA, 2 data workers": {"balancer": "dwa", "num_workers": 2},
    "backward() in a plain loop, UPGrad": {"balancer": "upgrad", "plain": True},
}
EVERY = 1000
WARM = 2000
EVAL_EVERY = 500


def _rss_mb() -> float:
    """Resident memory after a garbage collection and, on glibc, `malloc_trim` (which hands
    freed heap pages back), so that only memory still in use is counted."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _data(n: int, seed: int) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    score = x[:, :4].sum(1)
    return TaskData(
        x,
        {
            "churn": (score + torch.randn(n, generator=g) > 0).float(),
            "ltv": score + 0.5 * torch.randn(n, generator=g),
            "plan": torch.bucketize(x[:, 4].contiguous(), torch.tensor([-0.7, 0.0, 0.7])),
        },
    )


TASKS = [
    Task("churn", "binary"),
    Task("ltv", "regression"),
    Task("plan", "multiclass", num_classes=4),
]


class _Sampler(Callback):
    def __init__(self, samples: list[tuple[int, float, int]]) -> None:
        self.samples = samples

    def on_step_end(self, trainer: Trainer, result: Any) -> None:
        if trainer.step % EVERY == 0:
            self.samples.append((trainer.step, _rss_mb(), len(gc.get_objects())))


def _plain_loop(steps: int, balancer_name: str, samples: list[tuple[int, float, int]]) -> None:
    model = hard_sharing_mlp(16, TASKS, hidden=(64, 64))
    balancer = make_balancer(balancer_name)
    balancer.setup(model.task_names)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    train = _data(2000, 0)
    g = torch.Generator().manual_seed(0)
    step = 0
    while step < steps:
        for batch in train.batches(32, shuffle=True, generator=g):
            out = model(batch.x)
            y = batch.targets
            losses = torch.stack([t.compute_loss(out[t.name], y[t.name]) for t in TASKS])
            optimizer.zero_grad()
            backward(losses, model.shared_parameters(), balancer)
            optimizer.step()
            step += 1
            if step % EVERY == 0:
                samples.append((step, _rss_mb(), len(gc.get_objects())))
            if step == steps:
                break


def run_variant(name: str, steps: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    spec = VARIANTS[name]
    samples: list[tuple[int, float, int]] = []
    started = time.perf_counter()
    if spec.get("plain"):
        _plain_loop(steps, spec["balancer"], samples)
    else:
        with tempfile.TemporaryDirectory() as run_dir:
            config = TrainConfig(
                epochs=None, steps=steps, eval_every=EVAL_EVERY, batch_size=32, progress=False,
                patience=None, keep_last=1, keep_best=True, monitor="churn/auc",
                num_workers=spec.get("num_workers", 0),
            )  # fmt: skip
            model = hard_sharing_mlp(16, TASKS, hidden=(64, 64))
            trainer = Trainer(
                model, make_balancer(spec["balancer"]), config, [_Sampler(samples)], run_dir
            )
            trainer.fit(_data(2000, 0), _data(500, 1))
    seconds = time.perf_counter() - started
    steps_at, rss, objects = (np.array(v, dtype=float) for v in zip(*samples, strict=True))
    late = steps_at >= WARM
    slope = np.polyfit(steps_at[late], rss[late], 1)[0] * 10_000
    return {
        "name": name,
        "steps": int(steps_at[-1]),
        "seconds": seconds,
        "rss_warm": float(rss[late][0]),
        "rss_end": float(rss[-1]),
        "rss_max": float(rss.max()),
        "growth": float(rss[-1] - rss[late][0]),
        "slope_per_10k": float(slope),
        "objects_warm": int(objects[late][0]),
        "objects_end": int(objects[-1]),
        "series": {int(s): round(float(r), 2) for s, r in zip(steps_at, rss, strict=True)},
        "evaluations": 0 if spec.get("plain") else int((steps_at[-1] - WARM) // EVAL_EVERY),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--out", default=str(HERE / "results/soak.md"))
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # one variant, in this process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.steps)))
        return
    rows = []
    for name in VARIANTS:
        done = subprocess.run(
            [sys.executable, __file__, "--variant", name, "--steps", str(args.steps)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["series"] = {int(k): v for k, v in row["series"].items()}  # JSON keys are text
        rows.append(row)
        print(rows[-1], flush=True)
    lines = [
        f"# Soak: resident memory over {args.steps:,} training steps",
        "",
        "Each variant in a fresh process; hard-sharing MLP 16→64→64, three tasks, batch 32, "
        f"1 thread; the Trainer validates and checkpoints every {EVAL_EVERY} steps (best kept) "
        "and keeps one row of metrics history per evaluation. RSS sampled every "
        f"{EVERY:,} steps after a garbage collection and glibc malloc_trim; growth from step "
        f"{WARM:,} to the end, and the least-squares slope over those samples.",
        "",
        "| variant | steps | s | RSS MB at 2k → end | growth MB | slope MB/10k steps "
        "| growth per evaluation KB | RSS MB at 2k, 25%, 50%, 75%, end "
        "| Python objects 2k → end |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        at = sorted(int(s) for s in r["series"])
        marks = [WARM, *(at[int(f * (len(at) - 1))] for f in (0.25, 0.5, 0.75)), at[-1]]
        series = ", ".join(f"{r['series'][m]:.1f}" for m in marks)
        per_eval = f"{1024 * r['growth'] / r['evaluations']:.1f}" if r["evaluations"] else "—"
        lines.append(
            f"| {r['name']} | {r['steps']:,} | {r['seconds']:.0f} | {r['rss_warm']:.1f} → "
            f"{r['rss_end']:.1f} | {r['growth']:+.2f} | {r['slope_per_10k']:+.2f} | "
            f"{per_eval} | {series} | "
            f"{r['objects_warm']:,} → {r['objects_end']:,} |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
