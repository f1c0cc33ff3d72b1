"""Training at scale on this machine: the step time of bf16 / float16 autocast against float32,
of gradient accumulation against one batch, and the communication volume per step of each
distributed path (two gloo processes under torchrun), measured side by side in one run.

    make bench-scale          # results to benchmarks/results/scale.md
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from polytask import Task, TrainConfig, hard_sharing_mlp, make_balancer
from polytask.data._tensors import Batch
from polytask.models import MultiTaskModel
from polytask.models._base import MultiTaskNet
from polytask.train._precision import LossScale
from polytask.train._spread import Spread
from polytask.train._step import plan_gradients, train_step

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "scale.md"
TASKS = [Task("a", "regression"), Task("b", "multiclass", num_classes=5), Task("c", "binary")]
PATHS = {  # distributed path: (balancer, settings)
    "loss weighting (EW)": ("ew", {}),
    "loss weighting (uncertainty)": ("uncertainty", {}),
    "jacobian mode (UPGrad)": ("upgrad", {"gradient_mode": "jacobian"}),
    "gramian mode (UPGrad)": ("upgrad", {"gradient_mode": "gramian"}),
    "accumulate 2, J summed (MGDA)": ("mgda", {"accumulate": 2}),
}


class ConvTrunk(nn.Sequential):
    """A small CNN trunk (3×32×32 images → 128 features)."""

    out_dim = 128

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(), nn.Linear(256, 128), nn.ReLU(),
        )  # fmt: skip


def _batch(x: torch.Tensor) -> Batch:
    g = torch.Generator().manual_seed(1)
    n = x.shape[0]
    targets = {
        "a": torch.randn(n, generator=g),
        "b": torch.randint(0, 5, (n,), generator=g),
        "c": torch.randint(0, 2, (n,), generator=g).float(),
    }
    return Batch(x, targets)


def _models() -> dict[str, tuple[Callable[[], MultiTaskNet], Batch]]:
    g = torch.Generator().manual_seed(0)
    return {
        "MLP 128→256→256→256, batch 256": (
            lambda: hard_sharing_mlp(128, TASKS, hidden=(256, 256, 256)),
            _batch(torch.randn(256, 128, generator=g)),
        ),
        "CNN on 3×32×32, batch 64": (
            lambda: MultiTaskModel(ConvTrunk(), TASKS),
            _batch(torch.randn(64, 3, 32, 32, generator=g)),
        ),
    }


def _step_ms(make: Callable[[], MultiTaskNet], batch: Batch, balancer: str, spread: Spread,
             steps: int = 6) -> float:  # fmt: skip
    torch.manual_seed(0)
    model = make()
    chosen = make_balancer(balancer)
    chosen.setup(model.task_names)
    plan = plan_gradients(model, chosen, TrainConfig(batch_size=batch.x.shape[0], progress=False))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(steps + 1):
        started = time.perf_counter()
        train_step(model, chosen, optimizer, batch, TASKS, plan, spread=spread, step=i)
        if i >= 1:
            times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def precision_table() -> list[str]:
    rows = ["| model | balancer | float32 ms | bf16 ms (×) | float16 ms (×) |",
            "|---|---|---|---|---|"]  # fmt: skip
    for name, (make, batch) in _models().items():
        for balancer in ("ew", "upgrad"):
            full = _step_ms(make, batch, balancer, Spread())
            bf16 = _step_ms(make, batch, balancer, Spread(precision="bf16"))
            half = _step_ms(make, batch, balancer, Spread(precision="16", scale=LossScale(2.0**8)))
            rows.append(f"| {name} | {balancer} | {full:.1f} | {bf16:.1f} ({bf16 / full:.2f}×) | "
                        f"{half:.1f} ({half / full:.2f}×) |")  # fmt: skip
    return rows


def accumulation_table() -> list[str]:
    rows = ["| model | balancer | one batch ms | accumulate 2 ms (×) | accumulate 4 ms (×) |",
            "|---|---|---|---|---|"]  # fmt: skip
    for name, (make, batch) in _models().items():
        for balancer in ("ew", "upgrad"):
            one = _step_ms(make, batch, balancer, Spread())
            two = _step_ms(make, batch, balancer, Spread(accumulate=2))
            four = _step_ms(make, batch, balancer, Spread(accumulate=4))
            rows.append(f"| {name} | {balancer} | {one:.1f} | {two:.1f} ({two / one:.2f}×) | "
                        f"{four:.1f} ({four / one:.2f}×) |")  # fmt: skip
    return rows


# -- the distributed part: this file is also the torchrun worker ----------------------------


def _worker(out: Path) -> None:
    import torch.distributed as dist

    from polytask import TaskData, Trainer

    sent = {"bytes": 0, "calls": 0}
    originals = {name: getattr(dist, name) for name in ("all_reduce", "broadcast")}

    def counted(name: str) -> Callable[..., object]:
        def call(tensor: torch.Tensor, *args: object, **kwargs: object) -> object:
            sent["bytes"] += tensor.numel() * tensor.element_size()
            sent["calls"] += 1
            return originals[name](tensor, *args, **kwargs)

        return call

    for name in originals:
        setattr(dist, name, counted(name))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 64, generator=g)
    y = x @ torch.randn(64, generator=g)
    data = TaskData(x, {"a": y, "b": (y > 0).long() * 2 + (y > 1).long(), "c": (y > 0.5).float()})
    results = {}
    for label, (balancer, settings) in PATHS.items():
        torch.manual_seed(0)
        model = hard_sharing_mlp(64, TASKS, hidden=(256, 256))
        steps = 20
        config = TrainConfig(epochs=None, steps=steps, batch_size=256, progress=False,
                             conflict_every=None, **settings)  # type: ignore[arg-type]  # fmt: skip
        trainer = Trainer(model, make_balancer(balancer), config)
        sent.update(bytes=0, calls=0)
        started = time.perf_counter()
        trainer.fit(data)
        seconds = time.perf_counter() - started
        shared = sum(p.numel() for p in model.shared_parameters())
        total = sum(p.numel() for p in model.parameters())
        results[label] = {
            "bytes": sent["bytes"] / steps,
            "calls": sent["calls"] / steps,
            "ms": 1000 * seconds / steps,
            "shared": shared,
            "params": total,
        }
    if dist.get_rank() == 0:
        out.write_text(json.dumps(results))


def distributed_table() -> list[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = ROOT / "benchmarks" / "results" / ".scale_distributed.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
                    "--master-addr=127.0.0.1", f"--master-port={port}", __file__, "--worker",
                    str(out)], env=env, check=True)  # fmt: skip
    results = json.loads(out.read_text())
    out.unlink()
    any_run = next(iter(results.values()))
    rows = [f"MLP 64→256→256, K = 3, global batch 256 over 2 processes: {any_run['shared']:,} "
            f"shared parameters, {any_run['params']:,} in all (float32).", "",
            "| path | sent per step and process | collectives per step | ms per step |",
            "|---|---|---|---|"]  # fmt: skip
    for label, r in results.items():
        rows.append(f"| {label} | {r['bytes'] / 1e6:.2f} MB ({r['bytes'] / 4 / r['params']:.2f}"
                    f" × params) | {r['calls']:.0f} | {r['ms']:.1f} |")  # fmt: skip
    return rows


def main() -> None:
    torch.set_num_threads(2)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()  # fmt: skip
    cpu = torch.backends.cpu.get_cpu_capability()
    lines = [
        "# Training at scale: mixed precision, accumulation, distributed communication",
        "",
        f"`make bench-scale` at commit {commit}, torch {torch.__version__}, CPU capability {cpu}, "
        f"{torch.get_num_threads()} threads. Medians of 6 steps after a warm-up step "
        "(`train_step`, AdamW); ratios are against the float32 / one-batch step of the same run.",
        "",
        "## Step time by precision",
        "",
        *precision_table(),
        "",
        "## Gradient accumulation (same global batch, split into micro-batches)",
        "",
        "Loss-weighting balancers run one forward without gradients per micro-batch first (the "
        "whole batch's losses set the combination's weights); gradient balancers sum the exact "
        "per-task Jacobian over the micro-batches.",
        "",
        *accumulation_table(),
        "",
        "## Distributed: what each path sends per step",
        "",
        *distributed_table(),
        "",
        "Every path sums the per-task label counts and losses (a few floats). Loss weighting "
        "then sums one gradient (the parameters' size), as DDP does; the Jacobian path sums "
        "the K per-task gradients of the shared parameters (K × shared) plus the heads'; the "
        "Gramian path sums the same blocks one trunk layer at a time (never holding all of J) "
        "plus the combined gradient. No approximate path is offered: each makes exactly the "
        "one-process update (tests/train/test_distributed.py).",
    ]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker(Path(sys.argv[2]))
    else:
        main()
