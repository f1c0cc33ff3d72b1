"""A multi-task Gaussian process: what every task shares plus what is each task's own.

The covariance of two labelled rows (x, s) and (x', t) is a pooled part, the same for every
pair of tasks, plus a task part that counts only when s = t:

    k = [c + Σ_j a_j x_j x'_j + r · exp(−½ Σ_j (x_j − x'_j)² / ℓ_j²)]
        + [s = t] · [b + Σ_j β_j x_j x'_j + q · exp(−½ Σ_j (x_j − x'_j)² / λ_j²)]

so each task's function is a shared smooth function plus its own smooth deviation (a
multilevel model with random slopes, made nonparametric: Bakker & Heskes' and Bonilla et al.'s
multi-task GPs are of this family). Every variance and length scale is fitted by type-II
maximum likelihood (the marginal likelihood of the training targets) on random subsets of the
labelled rows; then the exact posterior mean is solved on all of them. With `warp: boxcox`
the targets are modelled through a shifted Box-Cox transform whose power and shift are fitted
with the rest (a warped GP, Snelson et al. 2004), and a prediction is the posterior mean
mapped back as the mean over the noise (Gauss-Hermite; the function's own posterior variance
is left out), which suits skewed targets such as exam scores. Like a forest it is grown by
`refit`, then predicts with tensor ops alone (serving and export need nothing else); its size
grows with the training rows (it keeps them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from polytask._validation import checked
from polytask.models._base import GrownNet, require_mse_regression
from polytask.models._hints import Count
from polytask.tasks._task import Task

log = logging.getLogger(__name__)
Warp = Literal["none", "boxcox"]
NODES = 20
"""Gauss-Hermite nodes for the mean of a warped prediction."""
CHUNK = 1 << 22
"""Rows × training rows compared at once: bounds the memory of a forward pass."""
VECTORS = ("lin", "scale", "task_lin", "task_scale")
"""Per-column hyper-parameters (log): the pooled and task parts' linear weights and length
scales."""
SCALARS = ("const", "rbf", "task_const", "task_rbf", "noise", "power", "shift")
"""Scalar hyper-parameters: log variances (noise: of the standardised targets), the warp's
power (raw) and its shift's log excess over the smallest target."""


def _initial(columns: int) -> dict[str, Tensor]:
    """Starting hyper-parameters for standardised columns and targets: most variance in the
    noise and the pooled linear part, a little in each task's own."""
    start = {
        "lin": math.log(0.01), "scale": math.log(3.0),
        "task_lin": math.log(0.001), "task_scale": math.log(3.0),
        "const": -3.0, "rbf": -3.0, "task_const": math.log(0.05), "task_rbf": -3.0,
        "noise": math.log(0.6), "power": 1.0, "shift": math.log(0.5),
    }  # fmt: skip
    return {
        k: torch.full((columns,) if k in VECTORS else (), v, dtype=torch.float64)
        for k, v in start.items()
    }


def _squared(a: Tensor, b: Tensor) -> Tensor:
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T).clamp_min(0)


def _parts(h: Mapping[str, Tensor], a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """The pooled and the task covariance of rows `a` with rows `b` (standardised columns)."""
    e = torch.exp
    pooled = e(h["const"]) + (a * e(h["lin"])) @ b.T
    pooled = pooled + e(h["rbf"]) * e(-0.5 * _squared(a / e(h["scale"]), b / e(h["scale"])))
    task = e(h["task_const"]) + (a * e(h["task_lin"])) @ b.T
    task = task + e(h["task_rbf"]) * e(
        -0.5 * _squared(a / e(h["task_scale"]), b / e(h["task_scale"]))
    )
    return pooled, task


def _offset(h: Mapping[str, Tensor], lowest: Tensor) -> Tensor:
    """The warp's shift: the targets plus it are positive (it exceeds −lowest)."""
    return torch.exp(h["shift"]) - lowest


def _warp(h: Mapping[str, Tensor], y: Tensor, lowest: Tensor) -> tuple[Tensor, Tensor]:
    """Box-Cox of y + shift, and the log of its derivative (the likelihood's Jacobian)."""
    power, shifted = h["power"], y + _offset(h, lowest)
    near_log = power.abs() < 1e-4
    safe = torch.where(near_log, torch.ones_like(power), power)
    warped = torch.where(near_log, torch.log(shifted), (shifted**safe - 1) / safe)
    return warped, (power - 1) * torch.log(shifted)


def _unwarp(h: Mapping[str, Tensor], u: Tensor, lowest: Tensor) -> Tensor:
    """The inverse of `_warp` (clipped where the inverse leaves the transform's range)."""
    power = h["power"]
    near_log = power.abs() < 1e-4
    safe = torch.where(near_log, torch.ones_like(power), power)
    base = (safe * u + 1).clamp_min(1e-12)
    back = torch.where(near_log, torch.exp(u), base ** (1 / safe))
    return back - _offset(h, lowest)


class _GaussianFit(torch.autograd.Function):
    """½ uᵀK⁻¹u + ½ log|K| (a Gaussian's negative log density, less its constant) with its
    gradient written out, ½ (K⁻¹ − ααᵀ) for K and α = K⁻¹u for u: autograd through the Cholesky
    factor costs about ten times the factorisation, this one inverse from the factor."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, k: Tensor, u: Tensor) -> Tensor:
        chol = torch.linalg.cholesky(k)
        alpha = torch.cholesky_solve(u[:, None], chol)[:, 0]
        ctx.save_for_backward(chol, alpha)
        return 0.5 * (u * alpha).sum() + torch.log(torch.diagonal(chol)).sum()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, Tensor]:
        chol, alpha = ctx.saved_tensors  # type: ignore[attr-defined]
        inverse = torch.cholesky_inverse(chol)
        return grad * 0.5 * (inverse - alpha[:, None] * alpha[None, :]), grad * alpha


def gaussian_fit(k: Tensor, u: Tensor) -> Tensor:
    """½ uᵀK⁻¹u + ½ log|K| for a positive definite K (see `_GaussianFit`)."""
    return _GaussianFit.apply(k, u)


class MultiTaskGP(GrownNet):
    """A multi-task Gaussian process (module docstring) for one-output mse regression tasks,
    grown from the whole training batch by `refit`: hyper-parameters by marginal likelihood
    (`steps` Adam steps at rate `lr` on random subsets of `subset` labelled rows), then the
    exact posterior mean on all the labelled rows (at most `max_rows`: the solve costs their
    cube). Until grown it predicts 0."""

    refit_reason: ClassVar[str | None] = (
        "architecture gp fits its kernel and solves for its weights on the whole training set"
    )
    inputs: Tensor
    owner: Tensor
    alpha: Tensor
    own: Tensor
    center: Tensor
    spread: Tensor
    lowest: Tensor
    target_mean: Tensor
    target_std: Tensor
    nodes: Tensor
    node_weights: Tensor
    _VARIABLE: ClassVar[tuple[str, ...]] = ("inputs", "owner", "alpha")

    @checked
    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[Task],
        warp: Warp = "boxcox",
        steps: int = 200,
        subset: int = 2000,
        lr: float = 0.05,
        max_rows: int = 20000,
    ) -> None:
        super().__init__()
        require_mse_regression(
            tasks,
            "architecture gp models each task's value with Gaussian noise",
            "another architecture",
        )
        self._init_grown(tasks)
        self.in_dim, self.warp = in_dim, warp
        self.steps, self.subset, self.lr, self.max_rows = steps, subset, lr, max_rows
        for name, value in _initial(in_dim).items():
            self.register_buffer(name, value)
        self.register_buffer("lowest", torch.zeros((), dtype=torch.float64))
        self.register_buffer("center", torch.zeros(in_dim, dtype=torch.float64))
        self.register_buffer("spread", torch.ones(in_dim, dtype=torch.float64))
        self.register_buffer("target_mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("target_std", torch.ones((), dtype=torch.float64))
        self.register_buffer("inputs", torch.zeros(0, in_dim, dtype=torch.float64))
        self.register_buffer("owner", torch.zeros(0, dtype=torch.long))
        self.register_buffer("alpha", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("own", torch.zeros(0, len(tasks), dtype=torch.float64),
                             persistent=False)  # fmt: skip
        nodes, weights = np.polynomial.hermite_e.hermegauss(NODES)
        self.register_buffer("nodes", torch.as_tensor(nodes), persistent=False)
        self.register_buffer("node_weights", torch.as_tensor(weights / weights.sum()),
                             persistent=False)  # fmt: skip

    @property
    def fitted(self) -> bool:
        return self.alpha.numel() > 0

    def hyper(self) -> dict[str, Tensor]:
        """The fitted hyper-parameters (logs, but the warp's power), by name."""
        return {name: getattr(self, name) for name in (*VECTORS, *SCALARS)}

    def _targets(self, h: Mapping[str, Tensor], y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The targets as the process models them (warped, standardised), the log of that
        map's derivative per row (zero unwarped), and the warped targets' mean and spread."""
        if self.warp == "none":
            return y, torch.zeros_like(y), y.new_zeros(()), y.new_ones(())
        u, log_slope = _warp(h, y, self.lowest)
        mean, spread = u.mean(), u.std().clamp_min(1e-12)  # constant targets: no spread
        return (u - mean) / spread, log_slope - torch.log(spread), mean, spread

    @torch.no_grad()
    def refit(
        self,
        x: Tensor,
        targets: Mapping[str, Tensor],
        masks: Sequence[Tensor],
        weights: Tensor,
    ) -> bool:
        """Fit the hyper-parameters and solve for the weights on every task's labelled rows of
        the training batch (once: a grown process stays as it is); True when it did."""
        if self.fitted:
            return False
        rows, owners, ys = [], [], []
        flat = x.detach().reshape(len(x), -1).double()
        for k, task in enumerate(self.tasks):
            m = self._labelled(task, masks[k], "a Gaussian process").to(flat.device)
            rows.append(flat[m])
            ys.append(targets[task.name].reshape(len(x), -1)[:, 0].double()[m])
            owners.append(torch.full((int(m.sum()),), k, dtype=torch.long, device=flat.device))
        z, owner, y = torch.cat(rows), torch.cat(owners), torch.cat(ys)
        if len(y) < 2:
            raise ValueError(
                "architecture gp fits its kernel to the spread of the labels, and the training "
                f"rows hold {len(y)}: give it at least 2 labelled rows"
            )
        if len(y) > self.max_rows:
            raise ValueError(
                f"architecture gp solves a system with one equation per training label (a row "
                f"labelled for two tasks counts twice), and this data has {len(y)} (max_rows: "
                f"{self.max_rows}); its time grows with their cube and its memory with their "
                "square (about 50·labels² bytes: 5 GB at 10,000): raise max_rows if memory and "
                "time allow, or use another architecture (multilevel is the linear model of the "
                "same family)"
            )
        self.center = z.mean(0)
        self.spread = z.std(0).clamp_min(1e-9) if len(z) > 1 else torch.ones_like(z[0])
        z = (z - self.center) / self.spread
        self.lowest = y.min()
        with torch.enable_grad():
            h, start, end = self._marginal_likelihood_fit(z, owner, y)
        log.info(
            "gp: fitted by marginal likelihood on %d labels in %d steps (negative log likelihood "
            "a label %.3f -> %.3f); warp power %s, noise %.1f%% of the modelled variance",
            len(y), self.steps, start, end,
            f"{float(h['power']):.3f}" if self.warp == "boxcox" else "(none)",
            100 * float(torch.exp(h["noise"])),
        )  # fmt: skip
        for name, value in h.items():
            getattr(self, name).copy_(value)
        self._solve(z, owner, y)
        return True

    def _covariance(self, h: Mapping[str, Tensor], z: Tensor, owner: Tensor) -> Tensor:
        pooled, task = _parts(h, z, z)
        same = (owner[:, None] == owner[None, :]).to(z.dtype)
        noise = torch.exp(h["noise"]) + 1e-6
        return pooled + same * task + noise * torch.eye(len(z), dtype=z.dtype, device=z.device)

    def _marginal_likelihood_fit(
        self, z: Tensor, owner: Tensor, y: Tensor
    ) -> tuple[dict[str, Tensor], float, float]:
        """Adam on the negative log marginal likelihood per row (with the warp's Jacobian),
        each step on a random subset of the rows, the rate decayed to 0 by a cosine; the
        fitted values, and the objective's mean over the first and the last tenth of steps."""
        h = {k: v.clone().to(z.device).requires_grad_(True) for k, v in self.hyper().items()}
        if self.warp == "none":
            h["power"].requires_grad_(False)
            h["shift"].requires_grad_(False)
        optimizer = torch.optim.Adam([v for v in h.values() if v.requires_grad], lr=self.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, self.steps))
        generator = torch.Generator().manual_seed(int(self.seed))
        trace: list[float] = []
        for _ in range(self.steps):
            pick = torch.randperm(len(y), generator=generator)[: self.subset].to(z.device)
            modelled, log_slope, _, _ = self._targets(h, y)
            nll = gaussian_fit(self._covariance(h, z[pick], owner[pick]), modelled[pick])
            nll = (nll - log_slope[pick].sum()) / len(pick)
            optimizer.zero_grad()
            nll.backward()
            optimizer.step()
            schedule.step()
            trace.append(float(nll.detach()))
        tenth = max(1, len(trace) // 10)
        start = float(np.mean(trace[:tenth])) if trace else float("nan")
        end = float(np.mean(trace[-tenth:])) if trace else float("nan")
        return {k: v.detach() for k, v in h.items()}, start, end

    def _solve(self, z: Tensor, owner: Tensor, y: Tensor) -> None:
        """The posterior mean's weights on all the rows (and the warped targets' scale)."""
        h = self.hyper()
        u, _, self.target_mean, self.target_std = self._targets(h, y)
        chol = torch.linalg.cholesky(self._covariance(h, z, owner))
        self.inputs, self.owner = z, owner
        self.alpha = torch.cholesky_solve(u[:, None], chol)[:, 0]
        self._loaded()

    def _loaded(self) -> None:
        # each task's weights: alpha on its own rows, 0 elsewhere (derived, not saved)
        own = self.alpha.new_zeros(len(self.alpha), len(self.tasks))
        self.own = own.scatter(1, self.owner[:, None], self.alpha[:, None])

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = x.reshape(x.shape[0], -1)
        z = (x.double() - self.center) / self.spread
        return self._outputs(x, z, max(1, CHUNK // max(1, len(self.alpha))), self._predict)

    def shared_prediction(self, x: Tensor) -> Tensor | None:
        """A new task's prediction: the pooled part's posterior mean (its own part is a draw
        from the task kernel's prior, mean zero), mapped back through the warp over the noise
        and that prior's variance at each row."""
        if not self.fitted:
            return None
        x = x.reshape(x.shape[0], -1)
        z = (x.double() - self.center) / self.spread
        step = max(1, CHUNK // max(1, len(self.alpha)))
        return torch.cat([self._predict_new(chunk) for chunk in z.split(step)]).to(x.dtype)

    def _predict_new(self, z: Tensor) -> Tensor:
        h = self.hyper()
        pooled, _ = _parts(h, z, self.inputs)
        mean = (pooled @ self.alpha)[:, None]
        if self.warp == "none":
            return mean
        e = torch.exp
        own = e(h["task_const"]) + (z * z * e(h["task_lin"])).sum(1) + e(h["task_rbf"])
        return self._mapped_back(h, mean, torch.sqrt(e(h["noise"]) + own)[:, None, None])

    def _mapped_back(self, h: Mapping[str, Tensor], mean: Tensor, sd: Tensor) -> Tensor:
        """The mean of the original-scale target over a warped normal of `mean` and `sd`
        (standardised warped units): Gauss-Hermite nodes through the inverse warp."""
        drawn = (mean * self.target_std + self.target_mean)[..., None]
        drawn = drawn + sd * self.target_std * self.nodes
        return (_unwarp(h, drawn, self.lowest) * self.node_weights).sum(-1)

    def _predict(self, z: Tensor) -> Tensor:
        """Each task's prediction for rows `z` (standardised): the posterior mean, mapped back
        through the warp as the mean over the predictive noise."""
        h = self.hyper()
        pooled, task = _parts(h, z, self.inputs)
        mean = (pooled @ self.alpha)[:, None] + task @ self.own
        if self.warp == "none":
            return mean
        return self._mapped_back(h, mean, torch.exp(0.5 * h["noise"]))


def build_gp(
    features: Sequence[str],
    tasks: Sequence[Task],
    /,
    *,
    warp: Warp = "boxcox",
    steps: Count = 200,
    subset: Count = 2000,
    lr: float = 0.05,
    max_rows: Count = 20000,
) -> MultiTaskGP:
    """`gp`: a multi-task Gaussian process (one-output mse regression tasks): a pooled kernel
    plus a kernel of each task's own (constant, linear and squared-exponential parts, one
    weight and length scale per column), fitted by marginal likelihood (`steps` Adam steps at
    rate `lr` on subsets of `subset` rows) and solved exactly on all the training rows (at most
    `max_rows`), grown in the first step like `forest` (`training.optimizer: lbfgs`, batch at
    least the training rows). `warp: boxcox` (the default) models the targets through a fitted
    shifted Box-Cox transform (skewed targets); `none` models them as they are. For many small
    tasks (schools, patients): the nonparametric `multilevel`."""
    if lr <= 0:
        raise ValueError("lr must be above 0 (the Adam rate of the marginal-likelihood fit)")
    return MultiTaskGP(len(features), tasks, warp, steps, subset, lr, max_rows)
