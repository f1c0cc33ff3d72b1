"""Speed of a gradient-balancing training step on image trunks, against the floor.

The floor for a trunk is what any exact method must pay: the forward pass and one batched
backward of K unit cotangents (the K task gradients of every parameter, as vmap computes them).
Each cell is a full `polytask.train.train_step` on a hard-sharing model with that encoder (K
image-level regression heads on the pooled feature map), the Trainer's own step, timed
interleaved with the floor in the same process so that drifts in machine load hit both alike.
Approximate gradient modes also report their fidelity: the cosine between their shared update
and the exact one on the same batch.

    python benchmarks/speed_images.py [--ks 3 8] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _floor import time_against_floor  # noqa: E402

if TYPE_CHECKING:
    from polytask import Task
    from polytask.data import Batch
    from polytask.models import MultiTaskNet

TARGET = 1.15  # the exact path's allowed ratio to the floor
BATCH, SIZE, WARMUP = 32, 64, 3
TRUNKS: dict[str, dict[str, object]] = {
    "cnn": {"channels": [32, 64, 128]},
    "vit": {"patch": 8, "dim": 128, "depth": 4, "heads": 4},
}
EXACT = ["upgrad", "mgda", "pcgrad"]
APPROX = ["representation", "last_layer", "subsample"]
"""`sketch` needs a trunk whose last trainable layer is linear: image trunks end in a norm."""


def _build(trunk: str, k: int) -> tuple[MultiTaskNet, list[Task], Batch]:
    import torch

    from polytask import Task
    from polytask.data import Batch
    from polytask.models import InputShape, build_model

    tasks = [Task(f"t{i}", "regression") for i in range(k)]
    model = build_model(
        "hard_sharing",
        InputShape((3, SIZE, SIZE)),
        tasks,
        seed=0,
        encoder=trunk,
        encoder_params=TRUNKS[trunk],
    )
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=g)
    y = torch.randn(BATCH, k, generator=g)
    batch = Batch(x, {t.name: y[:, i] for i, t in enumerate(tasks)})
    return model, tasks, batch


def run_cell(trunk: str, k: int, method: str, mode: str, steps: int) -> dict[str, float]:
    """Time one (trunk, K, method, mode) cell in this process."""
    import torch

    torch.set_num_threads(2)
    model, tasks, batch = _build(trunk, k)
    return time_against_floor(model, tasks, batch, method, mode, steps, WARMUP)


def _cells(ks: list[int]) -> list[tuple[str, int, str, str]]:
    cells = []
    for trunk in TRUNKS:
        for k in ks:
            cells += [(trunk, k, m, "jacobian") for m in EXACT]
            cells += [(trunk, k, "upgrad", "gramian")]
            cells += [(trunk, k, "upgrad", mode) for mode in APPROX]
    return cells


def _report(results: dict[tuple[str, int, str, str], dict[str, float]], ks: list[int]) -> str:
    lines = [
        "# Image trunks: a balancing step against the floor",
        "",
        f"Batch {BATCH} of 3×{SIZE}×{SIZE} images, K image-level regression heads, 2 threads; "
        "each cell in its own process, the median of its timed steps interleaved with the "
        "floor's (forward + one batched backward of K unit cotangents). Target for the exact "
        f"mode (`jacobian`, the default): × floor ≤ {TARGET}; `gramian` (the lean exact path, "
        "which never holds J) is shown beside it. Fidelity: cosine between the approximate and "
        "the exact shared update on the same batch. `sketch` is left out: it needs a trunk "
        "whose last trainable layer is linear, and these end in a normalisation layer.",
        "",
        f"Trunks: {json.dumps(TRUNKS)}.",
        "",
    ]
    for trunk in TRUNKS:
        for k in ks:
            lines += [
                f"## {trunk}, K = {k}",
                "",
                "| method | mode | step ms | floor ms | × floor | fidelity |",
                "|---|---|---|---|---|---|",
            ]
            for (tr, kk, method, mode), r in results.items():
                if tr != trunk or kk != k:
                    continue
                fid = f"{r['fidelity']:.3f}" if "fidelity" in r else ""
                lines.append(
                    f"| {method} | {mode} | {r['ms']:.1f} | {r['floor_ms']:.1f} | "
                    f"{r['x_floor']:.2f} | {fid} |"
                )
            for mode in ("jacobian", "gramian"):
                ratios = [
                    r["x_floor"]
                    for (tr, kk, _, m), r in results.items()
                    if tr == trunk and kk == k and m == mode
                ]
                if ratios:
                    worst = max(ratios)
                    verdict = f"meets {TARGET}" if worst <= TARGET else f"over {TARGET}"
                    what = "the exact default" if mode == "jacobian" else "the lean exact path"
                    lines += ["", f"`{mode}` ({what}): worst × floor {worst:.2f} ({verdict})."]
            lines += [""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[3, 8])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--cell", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "speed_images.md")
    args = parser.parse_args()
    if args.cell:
        trunk, k, method, mode = args.cell
        print(json.dumps(run_cell(trunk, int(k), method, mode, args.steps)))
        return
    results = {}
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    for cell in _cells(args.ks):
        cmd = [sys.executable, __file__, "--steps", str(args.steps), "--cell", *map(str, cell)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            print(f"{cell}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        results[cell] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[cell]
        print(f"{cell}: {r['ms']:.1f} ms, × floor {r['x_floor']:.2f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(_report(results, args.ks))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
