"""Speed and memory of a full training step per balancing method, side by side with peers.

MLP trunk 256→512→512→512, K linear heads, batch 256, 2 threads; each (method, K, mode) cell
runs in its own process (peak RSS per cell); the median of 30 timed steps after 5 warm-up
steps. Ratios are to EW at the same K, measured in the same run. Approximate modes also report
their fidelity: the cosine between their shared-parameter update and the exact one on the
same batch. Peers (LibMTL, torchjd) run through ../shared/bench/peers when their environment
exists (PEERS_PYTHON).

    python benchmarks/speed.py [--ks 2 8 32 139] [--no-peers]   # the full run takes about 50 min
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from torch import Tensor, nn

    from polytask.balancers import Balancer, GradientInfo

D_IN, D_HID, BATCH, WARMUP, STEPS, REPEATS = 256, 512, 256, 5, 30, 3
TARGET = 1.15  # the exact path's allowed ratio to the floor
APPROX_TARGET = {8: 1.3, 32: 2.0, 139: 3.0}  # the approximate paths' allowed ratio to EW
FIDELITY_TARGET = 0.95
HERE = Path(__file__).resolve().parent
EXACT = [
    "mgda", "pcgrad", "imtl_g", "imtl", "rgw", "nash_mtl", "upgrad", "cagrad", "gradvac",
    "aligned_mtl", "dualproj", "config", "fairgrad", "sdmgrad", "modo", "metabalance", "krum",
    "gradnorm", "graddrop", "trimmed_mean", "moco", "db_mtl", "excess_mtl",
]  # fmt: skip
LOSS_BASED = ["dwa", "uncertainty", "famo", "gls", "rlw"]
MAIN = ["mgda", "upgrad", "nash_mtl", "pcgrad", "imtl_g"]
BILEVEL = ["auto_lambda", "moml", "forum"]
COORDINATE = ["graddrop", "trimmed_mean", "moco", "db_mtl", "excess_mtl"]
"""Methods on J itself: a random draw, an order statistic or a K × n state per coordinate."""
NEEDS_MORE = ["gradnorm", "modo", "sdmgrad", *BILEVEL, *COORDINATE]  # against a plain version
APPROX = ["representation", "last_layer", "subsample", "sketch"]
PEER_METHODS = [
    "EW", "LibMTL:MGDA", "LibMTL:PCGrad", "LibMTL:IMTL", "LibMTL:Nash_MTL", "LibMTL:CAGrad",
    "LibMTL:GradNorm", "torchjd:UPGrad", "torchjd:MGDA", "torchjd:NashMTL", "torchjd:PCGrad",
    "torchjd-autogram:UPGrad",
]  # fmt: skip


def _cells(ks: list[int]) -> list[tuple[str, int, str]]:
    cells = []
    for k in ks:
        cells += [("ew", k, "losses"), ("floor", k, "plain"), ("floor", k, "split")]
        methods = MAIN if k > 32 else EXACT + LOSS_BASED
        cells += [(m, k, "jacobian" if m not in LOSS_BASED else "losses") for m in methods]
        if k <= 32:
            cells += [(m, k, "jacobian") for m in BILEVEL]
            cells += [(m, k, "naive") for m in NEEDS_MORE]
        cells += [("upgrad", k, "gramian"), ("mgda", k, "gramian")]
        cells += [(m, k, mode) for m in ("upgrad", "mgda") for mode in APPROX]
    return cells


def _build(k: int) -> tuple[nn.Sequential, nn.ModuleList, Tensor, Tensor]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    trunk = nn.Sequential(
        nn.Linear(D_IN, D_HID), nn.ReLU(), nn.Linear(D_HID, D_HID), nn.ReLU(),
        nn.Linear(D_HID, D_HID), nn.ReLU(),
    )  # fmt: skip
    heads = nn.ModuleList([nn.Linear(D_HID, 1) for _ in range(k)])
    return trunk, heads, torch.randn(BATCH, D_IN), torch.randn(BATCH, k)


def _val_loss(trunk: nn.Module, heads: nn.ModuleList, balancer: Balancer | None) -> Tensor | None:
    """A validation loss for the balancers that declare the need (a fixed batch)."""
    import torch

    from polytask.balancers import BilevelBalancer

    if balancer is None or not isinstance(balancer, BilevelBalancer):
        return None
    g = torch.Generator().manual_seed(1)
    xv, yv = torch.randn(BATCH, D_IN, generator=g), torch.randn(BATCH, len(heads), generator=g)
    return _losses(heads, [trunk(xv)] * len(heads), yv).sum()


def _losses(heads: nn.ModuleList, zs: Sequence[Tensor], y: Tensor) -> Tensor:
    return _mse([h(z) for h, z in zip(heads, zs, strict=True)], y)


def _mse(outputs: Sequence[Tensor], y: Tensor) -> Tensor:
    import torch

    return torch.stack([((o.squeeze(1) - y[:, i]) ** 2).mean() for i, o in enumerate(outputs)])


def _engine_step(
    trunk: nn.Sequential,
    heads: nn.ModuleList,
    x: Tensor,
    y: Tensor,
    balancer: Balancer | None,
    mode: str,
) -> None:
    """Forward and `polytask.backward` in `mode`; the representation and lean Gramian modes keep
    the linear heads' gradients factored (`linear_task_features`), and the exact modes run
    this linear/ReLU trunk without autograd and walk it by hand, as the Trainer does."""
    from polytask.gradients import backward, linear_task_features, record_segments, split_features

    segments = None
    if mode in ("gramian", "sketch", "jacobian"):
        z, segments = record_segments(trunk, x, track=mode not in ("jacobian", "gramian"))
    else:
        z = trunk(x)
    maps = None
    if mode in ("representation", "gramian", "sketch"):
        layers = cast("list[nn.Linear]", list(heads))  # _build's heads are all nn.Linear
        zs, maps = linear_task_features(z, layers)
        losses = _mse(zs, y)
    else:
        zs = split_features(z, len(heads))
        losses = _losses(heads, zs, y)
    probe = trunk(x[:32]) if mode == "subsample" else None
    backward(losses, list(trunk.parameters()), balancer, mode=mode, features=z,
             task_features=zs, task_maps=maps, task_params=list(heads.parameters()),
             segments=segments, probe_features=probe,
             val_loss=_val_loss(trunk, heads, balancer), fit_weights=False)  # fmt: skip


def _naive_step(
    trunk: nn.Sequential, heads: nn.ModuleList, x: Tensor, y: Tensor, balancer: Balancer | None
) -> None:
    """The same method written plainly: K backward passes in a loop build J row by row."""
    import torch

    from polytask.balancers import GradientInfo
    from polytask.balancers._base import GramianBalancer, JacobianBalancer

    shared = list(trunk.parameters())
    z = trunk(x)
    losses = _losses(heads, [z] * len(heads), y)
    jac = torch.stack([
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, shared, retain_graph=True)])
        for loss in losses
    ])  # fmt: skip
    val_loss = _val_loss(trunk, heads, balancer)
    g_val, products = None, None
    if val_loss is not None:
        g_val = torch.cat([g.reshape(-1) for g in torch.autograd.grad(val_loss, shared)])
        products = jac.double() @ g_val.double()
    if isinstance(balancer, JacobianBalancer):
        update = balancer.aggregate(GradientInfo(losses.detach(), jacobian=jac))
    else:
        assert isinstance(balancer, GramianBalancer)  # NEEDS_MORE: Jacobian or Gramian methods
        info = GradientInfo(losses.detach(), gramian=(jac @ jac.T).double(), val_products=products)
        c = balancer.coefficients(info).to(jac.dtype)
        update = c[: len(heads)] @ jac
        if len(c) > len(heads) and g_val is not None:
            update = update + c[-1] * g_val
    head_params = list(heads.parameters())
    for p, g in zip(head_params, torch.autograd.grad(losses.sum(), head_params), strict=True):
        p.grad = g
    for p, g in zip(shared, update.split([p.numel() for p in shared]), strict=True):
        p.grad = g.view(p.shape)


def run_cell(method: str, k: int, mode: str) -> dict[str, float]:
    """Time one cell in this process (the Trainer's usual step: coordinate-wise methods skip
    the logging-only effective-weight fit, which it makes on one step in 16)."""
    import torch

    from polytask.balancers import GramianBalancer, make_balancer
    from polytask.gradients import split_features
    from polytask.gradients._engine import _batched_grad

    torch.set_num_threads(2)
    trunk, heads, x, y = _build(k)
    shared = list(trunk.parameters())
    head_params = list(heads.parameters())
    opt = torch.optim.SGD([*shared, *head_params], lr=1e-3, fused=True)  # as the Trainer does
    eye = torch.eye(k)
    balancer = None if method in ("ew", "floor") else make_balancer(method)
    if balancer is not None:
        balancer.setup([f"t{i}" for i in range(k)])
        opt.add_param_group({"params": list(balancer.parameters())})
    own: list[float] = []
    if isinstance(balancer, GramianBalancer):  # the methods with `coefficients`
        inner = balancer.coefficients

        def timed(info: GradientInfo) -> Tensor:
            t0 = time.perf_counter()
            out = inner(info)
            own.append(time.perf_counter() - t0)
            return out

        balancer.coefficients = timed  # type: ignore[method-assign]  # wrapped on purpose

    def floor_step() -> None:  # J by autograd's cheapest route here (K passes on CPU)
        z = trunk(x)
        _batched_grad(_losses(heads, [z] * k, y), [*shared, *head_params], eye, retain=False)

    def ew_step() -> None:
        opt.zero_grad(set_to_none=True)
        _losses(heads, [trunk(x)] * k, y).sum().backward()
        opt.step()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if method == "floor" and mode == "plain":
            floor_step()
            return
        if method == "floor":
            z = trunk(x)
            zs = split_features(z, k)
            dz = torch.autograd.grad(_losses(heads, zs, y).sum(), zs)
            _batched_grad(z, shared, torch.stack(dz), retain=False)
            return
        if mode == "naive":
            _naive_step(trunk, heads, x, y, balancer)
            opt.step()
            return
        if method == "ew" or mode == "losses":
            z = trunk(x)
            losses = _losses(heads, [z] * k, y)
            (losses.sum() if balancer is None else balancer.combine(losses)).backward()
            opt.step()
            return
        _engine_step(trunk, heads, x, y, balancer, mode)
        opt.step()

    for _ in range(WARMUP):
        step()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the paired runs
    # The cell's step is timed interleaved with the EW step (and, for exact paths up to K = 32,
    # the floor) in the same process, so drifts in machine load hit them alike; the report uses
    # these paired ratios. Each round rotates their order: a step runs faster after a similar
    # one (the floor after EW by 3-4% at K = 2), so none always follows the same other.
    runs = {"self": step, "ew": ew_step}
    if k <= 32 and mode in ("jacobian", "gramian", "plain", "split"):
        runs["floor"] = floor_step
    for _ in range(WARMUP):
        for name, run in runs.items():
            if name != "self":
                run()
    own.clear()
    times: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for i in range(STEPS):
        for name in order[i % len(order) :] + order[: i % len(order)]:
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    median = statistics.median(times["self"])
    result = {
        "ms": 1000 * median,
        "rss_mb": rss_mb,
        "own_share": (statistics.median(own) / median) if own else 0.0,
        "x_ew": median / statistics.median(times["ew"]),
    }
    if "floor" in times:
        result["x_floor"] = median / statistics.median(times["floor"])
    if mode in APPROX and balancer is not None:
        result["fidelity"] = _fidelity(method, k, mode)
    return result


def _fidelity(method: str, k: int, mode: str) -> float:
    """Cosine between the approximate and the exact shared update on a fresh batch."""
    import torch

    from polytask.balancers import make_balancer

    trunk, heads, x, y = _build(k)
    shared = list(trunk.parameters())
    updates = []
    for m in ("jacobian", mode):
        b = make_balancer(method)
        b.setup([f"t{i}" for i in range(k)])
        trunk.zero_grad(set_to_none=True)
        _engine_step(trunk, heads, x, y, b, m)
        grads = []
        for p in shared:
            assert p.grad is not None  # _engine_step filled every shared parameter's grad
            grads.append(p.grad.reshape(-1))
        updates.append(torch.cat(grads))
    return float(torch.nn.functional.cosine_similarity(updates[0], updates[1], dim=0))


def _peers(
    ks: list[int], methods: list[str], retain: bool
) -> dict[tuple[str, int], dict[str, float]]:
    python = os.environ.get("PEERS_PYTHON", str(HERE.parent.parent / ".peers-venv/bin/python"))
    harness = HERE.parent.parent / "shared/bench/peers/bench_peers.py"
    if not (Path(python).exists() and harness.exists()):
        print(f"peers skipped: no {python} or {harness}", file=sys.stderr)
        return {}
    out = HERE / "results/peers.csv"
    cmd = [python, str(harness), "--ks", *map(str, ks), "--methods", *methods, "--csv", str(out)]
    from polytask.train._allocator import retained_memory_env

    env = {**os.environ, **(retained_memory_env() if retain else {})}
    subprocess.run(cmd, check=False, cwd=harness.parent, env=env)
    rows: dict[tuple[str, int], dict[str, float]] = {}
    if out.exists():
        with out.open() as f:
            for row in csv.DictReader(f):
                numbers = {k: float(v) for k, v in row.items() if v and _is_float(v)}
                rows[(row["method"], int(row["K"]))] = numbers
    return rows


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 8, 32, 139])
    parser.add_argument("--cell", nargs=3)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--repeats", type=int, default=REPEATS, help=(
        "processes per exact-path cell up to K = 8, where the ratio to the floor is a target "
        "and machine noise is of its size; the report gives their median and range"))  # fmt: skip
    parser.add_argument("--system-malloc", action="store_true", help=(
        "leave glibc's malloc as it is in every process, ours and the peers' (by default "
        "freed blocks are kept, as the CLI does: fewer page faults, less noise)"))  # fmt: skip
    parser.add_argument("--out", default=str(HERE / "results/speed.md"))
    args = parser.parse_args()
    from polytask.train._allocator import retain_freed_memory

    if args.cell:
        if not args.system_malloc:
            retain_freed_memory()
        method, k, mode = args.cell
        print(json.dumps(run_cell(method, int(k), mode)))
        return
    results: dict[tuple[str, int, str], dict[str, float]] = {}
    extra = ["--system-malloc"] if args.system_malloc else []
    for method, k, mode in _cells(args.ks):
        repeats = args.repeats if _is_repeated(method, k, mode) else 1
        cell_runs = (_run_cell(method, k, mode, extra) for _ in range(repeats))
        runs = [r for r in cell_runs if r is not None]
        if runs:
            results[(method, k, mode)] = _summary(runs)
            print(method, k, mode, results[(method, k, mode)], file=sys.stderr, flush=True)
    peer_ks = [k for k in args.ks if k <= 32]
    peers = {} if args.no_peers else _peers(peer_ks, PEER_METHODS, not args.system_malloc)
    Path(args.out).write_text(_report(results, peers, args.ks, not args.system_malloc))
    print(Path(args.out).read_text())


def _is_target(method: str, k: int, mode: str) -> bool:
    """Cells whose ratio to the floor the issue targets, at K where noise is of its size."""
    return mode == "jacobian" and method in EXACT and method not in NEEDS_MORE and k <= 8


def _is_repeated(method: str, k: int, mode: str) -> bool:
    """Cells run in several processes: targets at K where machine noise is of their margin."""
    return _is_target(method, k, mode) or (k <= 8 and mode in APPROX)


def _run_cell(method: str, k: int, mode: str, extra: list[str]) -> dict[str, float] | None:
    proc = subprocess.run(
        [sys.executable, __file__, "--cell", method, str(k), mode, *extra],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        print(f"{method} K={k} {mode} failed: {proc.stderr[-400:]}", file=sys.stderr)
        return None
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _summary(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median of each figure over repeated processes, and the range of the floor ratio."""
    out = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    for key in ("x_floor", "x_ew"):
        if len(runs) > 1 and key in out:
            out[f"{key}_lo"] = min(r[key] for r in runs)
            out[f"{key}_hi"] = max(r[key] for r in runs)
    return out


def _approx_summary(results: dict[tuple[str, int, str], dict[str, float]], k: int) -> list[str]:
    """Per approximate mode: its slowest × EW and lowest fidelity against the targets."""
    if k not in APPROX_TARGET:
        return []
    parts = []
    for mode in APPROX:
        cells = [r for (m, kk, md), r in results.items() if kk == k and md == mode]
        if not cells:
            continue
        slowest = max(r["x_ew"] for r in cells)
        lowest = min(r.get("fidelity", float("nan")) for r in cells)
        meets = slowest <= APPROX_TARGET[k] and lowest >= FIDELITY_TARGET
        parts.append(f"{mode} × EW ≤ {slowest:.2f}, fidelity ≥ {lowest:.3f}"
                     + (" (meets both)" if meets else ""))  # fmt: skip
    if not parts:
        return []
    return ["", f"Approximate paths (UPGrad and MGDA; targets × EW ≤ {APPROX_TARGET[k]}, fidelity "
            f"≥ {FIDELITY_TARGET}): " + "; ".join(parts) + "."]  # fmt: skip


def _report(
    results: dict[tuple[str, int, str], dict[str, float]],
    peers: dict[tuple[str, int], dict[str, float]],
    ks: list[int],
    retain: bool,
) -> str:
    lines = [
        "# Step speed and memory (2 threads, MLP 256→512→512→512, batch 256)",
        "",
        "Time: median of 30 steps after 5 warm-up steps, each cell in its own process. × EW: "
        "the cell's steps are interleaved with EW steps in the same process (the order rotating "
        "each round) and the ratio is of those paired medians (drifts in machine load hit both "
        "alike); × floor likewise for exact paths up to K = 32, otherwise it divides by the "
        "floor cell. Exact-path and "
        "approximate cells up to K = 8 run in several processes: their figures are the median "
        "over the processes, with the range of the targeted ratio in brackets. Memory: extra "
        "peak RSS over the EW cell. `own` is the method's share of the step spent computing its "
        "coefficients from the Gramian. Floor (plain): forward plus one batched backward of K "
        "unit cotangents giving the full Jacobian; floor (split heads): the same Jacobian with "
        "per-task head gradients from one ordinary backward. malloc: "
        + (
            "freed blocks kept for reuse in every process, peers' included "
            "(`polytask.retain_freed_memory`, as the CLI does)."
            if retain
            else "glibc's defaults (freed blocks handed back to the kernel)."
        ),
        "",
    ]
    for k in ks:
        ew = results.get(("ew", k, "losses"))
        if ew is None:
            continue
        lines += [f"## K = {k} (EW step {ew['ms']:.1f} ms, peak RSS {ew['rss_mb']:.0f} MB)", "",
                  "| method | mode | ms | × EW | × floor (plain) | own | extra MB | fidelity |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        floor = results.get(("floor", k, "plain"), {}).get("ms", float("nan"))
        for (m, kk, mode), r in results.items():
            if kk != k:
                continue
            fid = f"{r['fidelity']:.3f}" if "fidelity" in r else ""
            own = f"{100 * r['own_share']:.1f}%" if r.get("own_share") else ""
            x_ew = f"{r.get('x_ew', r['ms'] / ew['ms']):.2f}"
            if "x_ew_lo" in r and mode in APPROX:
                x_ew += f" ({r['x_ew_lo']:.2f}–{r['x_ew_hi']:.2f})"
            x_floor = f"{r.get('x_floor', r['ms'] / floor):.2f}"
            if "x_floor_lo" in r:
                x_floor += f" ({r['x_floor_lo']:.2f}–{r['x_floor_hi']:.2f})"
            lines.append(
                f"| {m} | {mode} | {r['ms']:.1f} | {x_ew} | "
                f"{x_floor} | {own} | {r['rss_mb'] - ew['rss_mb']:.0f} | {fid} |"
            )
        targets = sorted(r["x_floor"] for (m, kk, mode), r in results.items()
                         if kk == k and _is_target(m, kk, mode) and "x_floor" in r)  # fmt: skip
        if targets:
            within = sum(x <= TARGET for x in targets)
            lines += ["", f"Exact path, one Jacobian per step ({len(targets)} methods): × floor "
                      f"median {statistics.median(targets):.2f}, highest {targets[-1]:.2f}; "
                      f"{within} of {len(targets)} within {TARGET}."]  # fmt: skip
        lines += _approx_summary(results, k)
        plain = [(m, results[(m, k, "jacobian")], results[(m, k, "naive")]) for m in NEEDS_MORE
                 if (m, k, "jacobian") in results and (m, k, "naive") in results]  # fmt: skip
        if plain:
            lines += ["", f"Methods that need more, against a plain implementation at K = {k} "
                      "(the same method with J from K backward passes in a loop; GradNorm, MoDo, "
                      "SDMGrad and the bilevel methods take extra passes, the coordinate-wise ones "
                      "a random draw, an order statistic or a K × n state update per coordinate):",
                      "", "| method | polytask × EW | plain × EW | polytask / plain |",
                      "|---|---|---|---|"]  # fmt: skip
            for m, ours, naive in plain:  # each cell × the EW step of its own process: paired
                a = ours.get("x_ew", ours["ms"] / ew["ms"])
                b = naive.get("x_ew", naive["ms"] / ew["ms"])
                lines.append(f"| {m} | {a:.2f} | {b:.2f} | {a / b:.2f} |")
        peer_ew = peers.get(("EW", k))
        if peer_ew:
            lines += ["", f"Peers at K = {k} (their harness, same run; × their EW):", "",
                      "| peer method | ms | × EW |", "|---|---|---|"]  # fmt: skip
            for (pm, pk), r in peers.items():
                if pk == k and "ms_median" in r:
                    ratio = r.get("ratio_to_EW", r["ms_median"] / peer_ew["ms_median"])
                    lines.append(f"| {pm} | {r['ms_median']:.1f} | {ratio:.2f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
