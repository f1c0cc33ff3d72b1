"""A training step timed against the floor any exact method pays (the forward pass and every
task's gradient of every parameter by autograd's cheapest route on the device: K ordinary
backward passes on CPU, one batched backward of K unit cotangents on an accelerator), shared by
the trunk speed benchmarks (`speed_images.py`, `speed_sequences.py`)."""

from __future__ import annotations

import statistics
import time
from typing import Any


def shared_update(model, balancer, batch, tasks, mode: str):  # type: ignore[no-untyped-def]
    """The shared parameters' update direction of one step in `mode` (no optimizer step; the
    parameters are put back), with the same dropout masks whatever the mode."""
    import torch

    from polytask.gradients import plan_gradients
    from polytask.train import train_step

    plan = plan_gradients(model, balancer, mode, batch_size=batch.x.shape[0])
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    torch.manual_seed(1)
    train_step(model, balancer, opt, batch, tasks, plan=plan, fit_weights=False)
    shared = {id(p) for p in model.shared_parameters()}
    delta = torch.cat([
        (state[n] - p.detach()).reshape(-1)
        for n, p in model.named_parameters() if id(p) in shared
    ])  # fmt: skip
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(state[n])
    return delta


def time_against_floor(  # type: ignore[no-untyped-def]
    model, tasks, batch, method: str, mode: str, steps: int, warmup: int = 3
) -> dict[str, Any]:
    """Median wall and CPU time of `train_step` with `method` in gradient `mode` against the
    floor, the two interleaved (alternating which goes first) so that drifts in machine load
    hit both alike; approximate modes add their fidelity (cosine of their shared update with
    the exact one on the same batch)."""
    import torch

    from polytask.balancers import make_balancer
    from polytask.gradients import plan_gradients
    from polytask.gradients._engine import _batched_grad
    from polytask.train import task_losses, train_step

    balancer = make_balancer(method)
    balancer.setup([t.name for t in tasks])
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    plan = plan_gradients(model, balancer, mode, batch_size=batch.x.shape[0])
    params = list(model.parameters())
    eye = torch.eye(len(tasks))

    def floor() -> None:
        model.train()
        losses = task_losses(model(batch.x), batch, tasks)
        _batched_grad(losses, params, eye, retain=False)

    def step() -> None:
        train_step(model, balancer, opt, batch, tasks, plan=plan, fit_weights=False)

    runs = {"self": step, "floor": floor}
    for _ in range(warmup):
        for run in runs.values():
            run()
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for i in range(steps):
        for name in order[i % 2 :] + order[: i % 2]:
            t0, c0 = time.perf_counter(), time.process_time()
            runs[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    ms = 1000 * statistics.median(wall["self"])
    result: dict[str, Any] = {"ms": ms, "floor_ms": 1000 * statistics.median(wall["floor"])}
    result["x_floor"] = ms / result["floor_ms"]
    result["cpu_x_floor"] = statistics.median(cpu["self"]) / statistics.median(cpu["floor"])
    result["plan"] = plan.mode
    if not plan.method.exact:
        exact = shared_update(model, balancer, batch, tasks, "jacobian")
        approx = shared_update(model, balancer, batch, tasks, mode)
        result["fidelity"] = float(torch.nn.functional.cosine_similarity(exact, approx, dim=0))
    return result
