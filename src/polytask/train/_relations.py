"""How the tasks relate during training: gradient conflict and task affinity, measured on the
training batches every few steps and summarised over the run.

- **Gradient conflict**: the cosine similarity cos_ij = G_ij / √(G_ii G_jj) and the magnitude
  ratio √(G_ii / G_jj) of the task gradients on the shared parameters, from the Gramian
  G = J Jᵀ. A step whose gradient method formed G anyway (Gramian methods, coordinate-wise ones
  when they fit their weights) hands it over at no extra cost, in the space that method works
  in (shared parameters; the representation for representation modes; a sketch of J for the
  sketch mode). Otherwise (loss weighting) a probe computes the task gradients on the shared
  parameters: one forward and one batched backward on the step's batch.
- **Task affinity** (TAG, Fifty et al. 2021): how a step on task i alone changes task j's loss
  on the same batch, Z_ij = 1 − L_j(θ − η g_i) / L_j(θ) (positive: a step on i helps j). It
  costs one probe plus one forward per labelled task, so it is off unless asked for.

Probes run the model in eval mode on a copy of the step's batch after the update and never
touch the optimizer, the gradients in `.grad`, dropout's random draws or batch-norm statistics:
a monitored run trains exactly as an unmonitored one. Pairs involving a task the batch did not
label, or whose gradient is zero, are left out of that measurement.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call

from polytask._files import json_text, write_text_atomic
from polytask.data._tensors import Batch
from polytask.gradients._engine import _batched_grad, _gramian
from polytask.models._base import MultiTaskNet
from polytask.models._teacher import teaching
from polytask.tasks._task import Task

PROBE_TASKS = 16
"""Up to this many tasks a loss weighting's conflict is probed (one batched backward of K
task gradients); above, only at affinity measurements or from a gradient method's Gramian."""
RELATIONS_FILE = "relations.json"
"""Where a run with a folder writes its `TaskRelations`."""


def cosine_matrix(gramian: np.ndarray) -> np.ndarray:
    """cos_ij = G_ij / √(G_ii G_jj); NaN where a gradient is zero (no direction)."""
    norms = np.sqrt(np.clip(np.diag(gramian), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = gramian / np.outer(norms, norms)
    cos[~np.isfinite(cos)] = np.nan
    return np.clip(cos, -1.0, 1.0)


@dataclass
class _PairStats:
    """Running sums over measurements of one K × K quantity, pair by pair."""

    k: int
    count: np.ndarray = field(init=False)
    total: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.count = np.zeros((self.k, self.k))
        self.total = np.zeros((self.k, self.k))

    def add(self, values: np.ndarray) -> None:
        seen = np.isfinite(values)
        self.count += seen
        self.total += np.where(seen, values, 0.0)

    def mean(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)

    def state(self) -> dict[str, Tensor]:
        """Tensors, not nested lists: with hundreds of tasks a checkpoint holds K² numbers a
        sum, which as Python floats cost seconds to hash and pickle at every save."""
        return {"count": torch.from_numpy(self.count.copy()),
                "total": torch.from_numpy(self.total.copy())}  # fmt: skip

    def load(self, state: Mapping[str, Any]) -> None:
        self.count, self.total = _loaded(state["count"]), _loaded(state["total"])


def _loaded(value: Tensor | Sequence[Sequence[float]]) -> np.ndarray:
    """A saved K × K sum as float64 (a tensor; older checkpoints hold nested lists)."""
    if isinstance(value, Tensor):
        return value.numpy().astype(np.float64)
    return np.array(value, dtype=np.float64)


_CONFLICT_SUMS = ("cos", "conflict", "log_ratio", "t", "tt", "tc")
"""The running sums of `ConflictStats`, one `_PairStats` each."""


@dataclass
class ConflictStats:
    """Gradient-conflict measurements accumulated over a run (t: training progress in [0, 1])."""

    k: int
    cos: _PairStats = field(init=False)
    conflict: _PairStats = field(init=False)
    log_ratio: _PairStats = field(init=False)
    t: _PairStats = field(init=False)
    tt: _PairStats = field(init=False)
    tc: _PairStats = field(init=False)
    measurements: int = 0

    def __post_init__(self) -> None:
        for name in _CONFLICT_SUMS:
            setattr(self, name, _PairStats(self.k))

    def add(self, gramian: np.ndarray, labelled: np.ndarray, t: float) -> np.ndarray:
        """One measurement from G (K, K); pairs with an unlabelled task are left out. Returns
        the cosine matrix it recorded (NaN where left out)."""
        cos = cosine_matrix(gramian)
        both = np.outer(labelled, labelled)
        cos = np.where(both, cos, np.nan)
        np.fill_diagonal(cos, np.nan)
        norms = np.sqrt(np.clip(np.diag(gramian), 0.0, None))
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero norm: left out below
            logs = np.log(norms)
            ratio = np.where(np.isfinite(cos), logs[:, None] - logs[None, :], np.nan)
        self.cos.add(cos)
        self.conflict.add(np.where(np.isfinite(cos), (cos < 0).astype(float), np.nan))
        self.log_ratio.add(ratio)
        tmat = np.where(np.isfinite(cos), t, np.nan)
        self.t.add(tmat)
        self.tt.add(tmat * t)
        self.tc.add(tmat * cos)
        self.measurements += 1
        return cos

    def trend(self) -> np.ndarray:
        """Least-squares slope of each pair's cosine against training progress: the change in
        cosine from the start to the end of the run (NaN with fewer than 3 measurements)."""
        n = self.cos.count
        with np.errstate(divide="ignore", invalid="ignore"):
            var = self.tt.total - self.t.total**2 / n
            cov = self.tc.total - self.t.total * self.cos.total / n
            slope = cov / var
        return np.where((n >= 3) & (var > 1e-12), slope, np.nan)

    def state(self) -> dict[str, Any]:
        return {"measurements": self.measurements,
                **{p: getattr(self, p).state() for p in _CONFLICT_SUMS}}  # fmt: skip

    def load(self, state: Mapping[str, Any]) -> None:
        self.measurements = int(state["measurements"])
        for name in _CONFLICT_SUMS:
            getattr(self, name).load(state[name])


def _matrix(a: np.ndarray) -> list[list[float | None]]:
    """A K × K array as JSON (null where not measured)."""
    return [[None if not math.isfinite(v) else float(v) for v in row] for row in a]


def _array(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)


@dataclass(frozen=True)
class TaskRelations:
    """A run's summary of how its tasks relate (matrices K × K, row i and column j).

    `cosine[i, j]`: mean cosine of the task gradients; `conflict_share[i, j]`: share of the
    measurements with a negative cosine; `magnitude_ratio[i, j]`: geometric mean of
    |g_i| / |g_j|; `trend[i, j]`: change of the cosine over the run (least-squares slope
    against training progress); `affinity[i, j]`: mean TAG affinity of a step on i onto j
    (None when affinity was not measured). `space` is where the gradients were taken; the
    costs are milliseconds per training step, averaged over the run."""

    tasks: tuple[str, ...]
    cosine: np.ndarray
    conflict_share: np.ndarray
    magnitude_ratio: np.ndarray
    trend: np.ndarray
    conflict_measurements: int
    space: str
    affinity: np.ndarray | None = None
    affinity_measurements: int = 0
    lookahead_lr: float | None = None
    monitor_ms_per_step: float = 0.0
    step_ms: float = 0.0

    @property
    def relative_cost(self) -> float:
        """The monitor's time as a fraction of the training steps' time."""
        return self.monitor_ms_per_step / self.step_ms if self.step_ms > 0 else math.nan

    def most_conflicting(self, n: int = 3) -> list[tuple[str, str, float, float]]:
        """The `n` pairs with the lowest mean cosine: (task, task, cosine, conflict share)."""
        k = len(self.tasks)
        pairs = [
            (self.tasks[i], self.tasks[j], float(self.cosine[i, j]),
             float(self.conflict_share[i, j]))
            for i in range(k) for j in range(i + 1, k) if math.isfinite(self.cosine[i, j])
        ]  # fmt: skip
        return sorted(pairs, key=lambda p: p[2])[:n]

    def describe(self) -> str:
        """One line for the log: the overall conflict and its worst pairs."""
        k = len(self.tasks)
        upper = self.cosine[np.triu_indices(k, 1)]
        share = self.conflict_share[np.triu_indices(k, 1)]
        if not np.isfinite(upper).any():
            return "gradient conflict: no pair of tasks was measured together"
        text = (
            f"gradient conflict over {self.conflict_measurements} measurements ({self.space}): "
            f"mean cosine {np.nanmean(upper):.3g}, a pair in conflict "
            f"{100 * np.nanmean(share):.0f}% of its measurements (means over the pairs)"
        )
        worst = [p for p in self.most_conflicting(3) if p[2] < 0]
        if worst:
            text += "; most conflicting: " + ", ".join(
                f"{a}/{b} (cos {c:.2g}, {100 * s:.0f}%)" for a, b, c, s in worst
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": list(self.tasks),
            "space": self.space,
            "conflict_measurements": self.conflict_measurements,
            "cosine": _matrix(self.cosine),
            "conflict_share": _matrix(self.conflict_share),
            "magnitude_ratio": _matrix(self.magnitude_ratio),
            "trend": _matrix(self.trend),
            "affinity": None if self.affinity is None else _matrix(self.affinity),
            "affinity_measurements": self.affinity_measurements,
            "lookahead_lr": self.lookahead_lr,
            "monitor_ms_per_step": self.monitor_ms_per_step,
            "step_ms": self.step_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskRelations:
        affinity = data.get("affinity")
        return cls(
            tasks=tuple(data["tasks"]),
            cosine=_array(data["cosine"]),
            conflict_share=_array(data["conflict_share"]),
            magnitude_ratio=_array(data["magnitude_ratio"]),
            trend=_array(data["trend"]),
            conflict_measurements=int(data["conflict_measurements"]),
            space=str(data["space"]),
            affinity=None if affinity is None else _array(affinity),
            affinity_measurements=int(data.get("affinity_measurements", 0)),
            lookahead_lr=data.get("lookahead_lr"),
            monitor_ms_per_step=float(data.get("monitor_ms_per_step", 0.0)),
            step_ms=float(data.get("step_ms", 0.0)),
        )

    def save(self, path: str | Path) -> Path:
        write_text_atomic(path, json_text(self.to_dict(), indent=1))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> TaskRelations:
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class Probe:
    """Per-task losses and gradients of the shared parameters on one batch (eval mode)."""

    losses: Tensor
    labelled: Tensor
    grads: tuple[Tensor, ...]
    """One (K, *p.shape) tensor per shared parameter."""


def probe_gradients(
    model: MultiTaskNet, tasks: Sequence[Task], batch: Batch, shared: Sequence[Tensor]
) -> Probe:
    """Each task's loss and gradient of the shared parameters on `batch`, with the model in
    eval mode (no dropout draw, no batch-norm update) and nothing written to `.grad`."""
    from polytask.train._step import task_losses

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            with teaching(model, batch.targets):
                outputs = model(batch.x)
            masks = [t.mask(batch.targets[t.name]) for t in tasks]
            losses = task_losses(outputs, batch, tasks, masks)
            labelled = torch.stack([m.any() for m in masks])
            eye = torch.eye(len(tasks), dtype=losses.dtype, device=losses.device)
            try:
                grads = _batched_grad(losses, shared, eye, retain=False)
            except RuntimeError:  # an op without a batching rule: one backward per task
                rows = [
                    torch.autograd.grad(
                        loss, list(shared), retain_graph=True, allow_unused=True,
                        materialize_grads=True,
                    )
                    for loss in losses
                ]  # fmt: skip
                grads = tuple(torch.stack(g) for g in zip(*rows, strict=True))
    finally:
        model.train(was_training)
    k = len(tasks)
    # a parameter no task's loss reached this batch comes back as one unbatched zero
    blocks = tuple(
        g.detach() if g.dim() == p.dim() + 1 else g.detach().expand(k, *p.shape)
        for g, p in zip(grads, shared, strict=True)
    )
    return Probe(losses.detach(), labelled, blocks)


def probe_gramian(probe: Probe) -> Tensor:
    k = probe.losses.shape[0]
    return _gramian([g.reshape(k, -1) for g in probe.grads])


@torch.no_grad()
def lookahead_affinity(
    model: MultiTaskNet,
    tasks: Sequence[Task],
    batch: Batch,
    shared: Sequence[Tensor],
    probe: Probe,
    lr: float,
) -> np.ndarray:
    """TAG's Z (K, K) on `batch`: Z_ij = 1 − L_j(θ_s − lr·g_i) / L_j(θ_s), the heads held; NaN
    where task i or j is unlabelled or L_j is 0. One forward per labelled task."""
    from polytask.train._step import task_losses

    k = len(tasks)
    names = {id(p): n for n, p in model.named_parameters()}
    missing = [p for p in shared if id(p) not in names]
    if missing:
        raise ValueError("lookahead affinity needs the shared parameters to be the model's own")
    before = probe.losses.double()
    labelled = probe.labelled.cpu().numpy()
    z = np.full((k, k), np.nan)
    masks = [t.mask(batch.targets[t.name]) for t in tasks]
    was_training = model.training
    model.eval()
    try:
        for i in np.flatnonzero(labelled):
            moved = {
                names[id(p)]: p.detach() - lr * g[i].to(p.dtype)
                for p, g in zip(shared, probe.grads, strict=True)
            }
            with teaching(model, batch.targets):  # as the probe's loss before the step
                outputs = functional_call(model, moved, (batch.x,))
            after = task_losses(outputs, batch, tasks, masks).double()
            with np.errstate(divide="ignore", invalid="ignore"):
                z[i] = (1.0 - after / before).cpu().numpy()
    finally:
        model.train(was_training)
    valid = np.outer(labelled, labelled) & (before.cpu().numpy() > 0)[None, :]
    return np.where(valid & np.isfinite(z), z, np.nan)


class RelationsMonitor:
    """Measures gradient conflict every `conflict_every` steps and TAG affinity every
    `affinity_every` steps (None: off), keeps per-window figures for the metrics log and the
    run's totals for `summary()`. The Trainer calls `after_step` and `window_logs`."""

    def __init__(
        self,
        task_names: Sequence[str],
        conflict_every: int | None,
        affinity_every: int | None,
        lookahead_lr: float,
    ) -> None:
        self.task_names = tuple(task_names)
        k = len(self.task_names)
        self.conflict_every = conflict_every if k > 1 else None
        self.affinity_every = affinity_every if k > 1 else None
        self.lookahead_lr = lookahead_lr
        self.conflict = ConflictStats(k)
        self.affinity = _PairStats(k)
        self.affinity_measurements = 0
        self.space = ""
        self.monitor_seconds = self.step_seconds = 0.0
        self.steps = 0
        self._window: list[np.ndarray] = []
        self._window_affinity: list[np.ndarray] = []
        self._window_seconds = 0.0
        self._window_steps = 0

    @property
    def active(self) -> bool:
        return self.conflict_every is not None or self.affinity_every is not None

    def due(self, step: int) -> bool:
        """Whether the step numbered `step` (counted from 1) is measured."""
        return any(every is not None and step % every == 0
                   for every in (self.conflict_every, self.affinity_every))  # fmt: skip

    def after_step(
        self,
        step: int,
        total_steps: int,
        model: MultiTaskNet,
        tasks: Sequence[Task],
        batch: Batch,
        gramian: Tensor | None,
        labelled: Tensor | None,
        mode: str,
        step_seconds: float,
    ) -> None:
        """Measure after step number `step` (from 1) if it is due; `gramian` is the one the
        step's gradient method formed (None: probe)."""
        self.steps += 1
        self._window_steps += 1
        self.step_seconds += step_seconds
        if not self.active or not self.due(step):
            return
        started = time.perf_counter()
        t = step / max(total_steps, 1)
        wants_conflict = self.conflict_every is not None and step % self.conflict_every == 0
        wants_affinity = self.affinity_every is not None and step % self.affinity_every == 0
        shared = [p for p in model.shared_parameters() if p.requires_grad]
        if wants_conflict and gramian is None and not wants_affinity:
            wants_conflict = len(self.task_names) <= PROBE_TASKS  # else K backwards: too dear
        probe = None
        if shared and (wants_affinity or (wants_conflict and gramian is None)):
            with torch.compiler.set_stance("force_eager"):  # compiled modules: no vmapped backward
                probe = probe_gradients(model, tasks, batch, shared)
        if wants_conflict:
            if gramian is not None:
                self.space = mode
                seen = labelled
            elif probe is not None:
                gramian, seen = probe_gramian(probe), probe.labelled
                self.space = "shared parameters (probe)"
            if gramian is not None:
                mask = np.ones(len(self.task_names), dtype=bool)
                if seen is not None:
                    mask = seen.cpu().numpy().astype(bool)
                cos = self.conflict.add(gramian.double().cpu().numpy(), mask, t)
                self._window.append(cos)
        if wants_affinity and probe is not None:
            with torch.compiler.set_stance("force_eager"):
                z = lookahead_affinity(model, tasks, batch, shared, probe, self.lookahead_lr)
            self.affinity.add(z)
            self.affinity_measurements += 1
            self._window_affinity.append(z)
        spent = time.perf_counter() - started
        self.monitor_seconds += spent
        self._window_seconds += spent

    def window_logs(self) -> dict[str, float]:
        """This window's means for the metrics log, then a fresh window: mean cosine over the
        measured pairs, share of them in conflict, each task's mean cosine with the others,
        mean affinity, and the monitor's milliseconds per training step."""
        logs: dict[str, float] = {}
        if self._window:
            stack = np.stack(self._window)
            upper = np.triu_indices(stack.shape[1], 1)
            pairs = stack[:, upper[0], upper[1]]
            if np.isfinite(pairs).any():
                logs["conflict/cos_mean"] = float(np.nanmean(pairs))
                logs["conflict/share"] = float(np.nanmean(np.where(np.isfinite(pairs), pairs < 0,
                                                                   np.nan)))  # fmt: skip
            with warnings.catch_warnings():  # a task never measured: NaN, not a warning
                warnings.simplefilter("ignore", RuntimeWarning)
                per_task = np.nanmean(stack, axis=(0, 2))
            for name, value in zip(self.task_names, per_task, strict=True):
                if math.isfinite(value):
                    logs[f"conflict/{name}/cos"] = float(value)
        if self._window_affinity:
            values = np.stack(self._window_affinity)
            off = values[:, ~np.eye(values.shape[1], dtype=bool)]
            if np.isfinite(off).any():  # the diagonal is no pair: a mean of no pairs is NaN
                logs["affinity/mean"] = float(np.nanmean(off))
        if self.active and self._window_steps:
            logs["time/monitor_ms"] = 1000 * self._window_seconds / self._window_steps
        self._window, self._window_affinity = [], []
        self._window_seconds, self._window_steps = 0.0, 0
        return logs

    def summary(self) -> TaskRelations | None:
        """The run's totals (None when nothing was measured)."""
        if self.conflict.measurements == 0 and self.affinity_measurements == 0:
            return None
        c = self.conflict
        k = len(self.task_names)
        eye = np.eye(k, dtype=bool)
        cosine = np.where(eye, 1.0, c.cos.mean())
        share = np.where(eye, 0.0, c.conflict.mean())
        ratio = np.where(eye, 1.0, np.exp(c.log_ratio.mean()))
        affinity = self.affinity.mean() if self.affinity_measurements else None
        steps = max(self.steps, 1)
        return TaskRelations(
            tasks=self.task_names,
            cosine=cosine,
            conflict_share=share,
            magnitude_ratio=ratio,
            trend=c.trend(),
            conflict_measurements=c.measurements,
            space=self.space or "not measured",
            affinity=affinity,
            affinity_measurements=self.affinity_measurements,
            lookahead_lr=self.lookahead_lr if self.affinity_every is not None else None,
            monitor_ms_per_step=1000 * self.monitor_seconds / steps,
            step_ms=1000 * self.step_seconds / steps,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"conflict": self.conflict.state(), "affinity": self.affinity.state(),
                "affinity_measurements": self.affinity_measurements, "space": self.space,
                "monitor_seconds": self.monitor_seconds, "step_seconds": self.step_seconds,
                "steps": self.steps}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.conflict.load(state["conflict"])
        self.affinity.load(state["affinity"])
        self.affinity_measurements = int(state["affinity_measurements"])
        self.space = str(state["space"])
        self.monitor_seconds = float(state["monitor_seconds"])
        self.step_seconds = float(state["step_seconds"])
        self.steps = int(state["steps"])
