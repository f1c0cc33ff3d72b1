"""Speed of a gradient-balancing training step on the text transformer, against the floor.

The floor is what any exact method must pay: the forward pass and one batched backward of K
unit cotangents (the K task gradients of every parameter, as vmap computes them). Each cell is
a full `polytask.train.train_step` on a hard-sharing model with the `transformer` encoder
(K sequence-level regression heads, which pool over the real tokens, or K token-tagging
heads, a class per token), timed interleaved with the floor in the same process so that
drifts in machine load hit both alike. Batches are padded to their longest row, rows of 16 to
64 tokens drawn at random.

    python benchmarks/speed_sequences.py [--ks 3 8] [--steps 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import commit  # noqa: E402
from _floor import time_against_floor  # noqa: E402

TARGET = 1.15  # the exact path's allowed ratio to the floor
BATCH, MAX_LENGTH, MIN_LENGTH, VOCAB, WARMUP = 32, 64, 16, 8000, 3
ENCODER: dict[str, object] = {"width": 128, "depth": 2, "heads": 4, "ff_mult": 4, "dropout": 0.1}
EXACT = ["upgrad", "mgda", "pcgrad"]
TAGS = 9
VARIANTS = {
    "regression": "K sequence-level regression heads (a mean over the real tokens)",
    "token": f"K token-tagging heads ({TAGS} tags, a class at every real token)",
}


def _build(variant: str, k: int):  # type: ignore[no-untyped-def]
    import torch

    from polytask import Task
    from polytask.data import Batch
    from polytask.models import InputShape, build_model

    if variant == "token":
        tasks = [Task(f"t{i}", "token", num_classes=TAGS) for i in range(k)]
    else:
        tasks = [Task(f"t{i}", "regression") for i in range(k)]
    model = build_model(
        "hard_sharing",
        InputShape((MAX_LENGTH,), vocab_size=VOCAB),
        tasks,
        seed=0,
        encoder="transformer",
        encoder_params=ENCODER,
    )
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(MIN_LENGTH, MAX_LENGTH + 1, (BATCH,), generator=g)
    ids = torch.randint(4, VOCAB, (BATCH, int(lengths.max())), generator=g)
    x = ids.masked_fill(torch.arange(ids.shape[1]) >= lengths[:, None], 0)  # PAD_ID = 0
    if variant == "token":  # -100: no label at padding
        tags = torch.randint(0, TAGS, (k, *x.shape), generator=g).masked_fill(x == 0, -100)
        batch = Batch(x, {t.name: tags[i] for i, t in enumerate(tasks)})
    else:
        y = torch.randn(BATCH, k, generator=g)
        batch = Batch(x, {t.name: y[:, i] for i, t in enumerate(tasks)})
    return model, tasks, batch


def run_cell(
    variant: str, k: int, method: str, mode: str, steps: int, threads: int = 2
) -> dict[str, Any]:
    """Time one (variant, K, method, mode) cell in this process, on `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    model, tasks, batch = _build(variant, k)
    return time_against_floor(model, tasks, batch, method, mode, steps, WARMUP)


def _auto_mode(method: str) -> str:
    """The mode `auto` plans for `method` on this model."""
    from polytask.balancers import make_balancer
    from polytask.gradients import plan_gradients

    model, _, _ = _build("regression", 3)
    return plan_gradients(model, make_balancer(method), "auto", batch_size=BATCH).mode


Cell = tuple[str, int, str, str]


def _cells(ks: list[int], variants: list[str]) -> list[Cell]:
    cells: list[Cell] = []
    autos = {m: _auto_mode(m) for m in EXACT}
    for variant in variants:
        for k in ks:
            cells += [(variant, k, m, "jacobian") for m in EXACT]
            cells += [(variant, k, "upgrad", "gramian")]
            cells += [
                (variant, k, m, "auto") for m in EXACT if autos[m] not in ("jacobian", "gramian")
            ]
    return cells


def _report(
    results: dict[Cell, dict[str, Any]], ks: list[int], variants: list[str], threads: int
) -> str:
    lines = [
        "# Text transformer: a balancing step against the floor",
        "",
        f"Batch {BATCH} of token rows of {MIN_LENGTH}–{MAX_LENGTH} tokens (random lengths, "
        f"padded to the longest), vocabulary {VOCAB}, {threads} thread"
        f"{'s' if threads > 1 else ''}; each cell in its own process, "
        "the median of its timed steps interleaved with the floor's (forward + one batched "
        "backward of K unit cotangents). Target for the exact mode (`jacobian`, the default): "
        f"× floor ≤ {TARGET}; `gramian` (the lean exact path, which never holds J) is shown "
        "beside it. An `auto` row appears where the plan would choose a mode that is not "
        "exact, with its fidelity: the cosine between its shared update and the exact one on "
        "the same batch. × floor (CPU) is the same ratio of the processes' CPU time, which "
        "a machine shared with other work disturbs less than the wall clock.",
        "",
        f"Encoder `transformer`: {json.dumps(ENCODER)}.",
        "",
    ]
    for variant in variants:
        for k in ks:
            lines += [
                f"## {variant}, K = {k}",
                "",
                f"{VARIANTS[variant]}.",
                "",
                "| method | mode | step ms | floor ms | × floor | × floor (CPU) | fidelity |",
                "|---|---|---|---|---|---|---|",
            ]
            mine = {c: r for c, r in results.items() if c[0] == variant and c[1] == k}
            for (_, _, method, mode), r in mine.items():
                fid = f"{r['fidelity']:.3f}" if "fidelity" in r else ""
                shown = mode if mode != "auto" else f"auto → {r['plan']}"
                lines.append(
                    f"| {method} | {shown} | {r['ms']:.1f} | {r['floor_ms']:.1f} | "
                    f"{r['x_floor']:.2f} | {r['cpu_x_floor']:.2f} | {fid} |"
                )
            for mode in ("jacobian", "gramian"):
                cells = [r for c, r in mine.items() if c[3] == mode]
                if cells:
                    worst = max(r["x_floor"] for r in cells)
                    worst_cpu = max(r["cpu_x_floor"] for r in cells)
                    verdict = f"meets {TARGET}" if worst <= TARGET else f"over {TARGET}"
                    what = "the exact default" if mode == "jacobian" else "the lean exact path"
                    lines += [
                        "",
                        f"`{mode}` ({what}): worst × floor {worst:.2f} ({verdict}); "
                        f"in CPU time {worst_cpu:.2f}.",
                    ]
            lines += [""]
    return "\n".join(lines) + "\n"


def _footer(record: dict[str, Any]) -> str:
    """Where and how the figures were taken (the machine's load says how far to trust them)."""
    start, end = (", ".join(f"{v:.1f}" for v in record[k]) for k in ("load_start", "load_end"))
    return (
        f"Run: `{record['command']}` at {record['commit']} on {record['date']}; "
        f"{record['machine']}; torch {record['torch']}; load average {start} at the start, "
        f"{end} at the end.\n"
    )


def _machine() -> dict[str, Any]:
    import torch

    return {
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[3, 8])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cell", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "speed_sequences.md")
    args = parser.parse_args()
    if args.cell:
        variant, k, method, mode = args.cell
        print(json.dumps(run_cell(variant, int(k), method, mode, args.steps, args.threads)))
        return
    results = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    load_start = os.getloadavg()
    for cell in _cells(args.ks, args.variants):
        cmd = [sys.executable, __file__, "--steps", str(args.steps), "--threads",
               str(args.threads), "--cell", *map(str, cell)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            print(f"{cell}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        results[cell] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[cell]
        print(
            f"{cell}: {r['ms']:.1f} ms, × floor {r['x_floor']:.2f} (CPU {r['cpu_x_floor']:.2f})",
            flush=True,
        )
    record = {
        **_machine(),
        "command": " ".join(["python", "benchmarks/speed_sequences.py", *sys.argv[1:]]),
        "load_start": list(load_start),
        "load_end": list(os.getloadavg()),
        "steps": args.steps,
        "threads": args.threads,
        "encoder": ENCODER,
        "cells": [
            {"variant": v, "k": k, "method": method, "mode": mode, **r}
            for (v, k, method, mode), r in results.items()
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = _report(results, args.ks, args.variants, args.threads)
    args.out.write_text(report + "\n" + _footer(record))
    json_out = args.out.with_suffix(".json")
    json_out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out} and {json_out.name}")


if __name__ == "__main__":
    main()
