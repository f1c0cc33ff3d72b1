"""Multilevel heads: `mean_regularised` with its prior fitted to the data (a linear mixed model).

Task k's head is a shared head plus its own deviation v_k (weights and intercept), and the
deviations are taken as draws from N(0, D): random effects per task on the trunk's features, the
classic model for grouped data such as pupils in schools or visits of patients. Instead of one
`coupling` chosen by cross-validation, D (diagonal: one spread per feature; full: with their
correlations) and the noise variance σ² are fitted by empirical Bayes, with EM: each L-BFGS step
finds the deviations' posterior means (the penalty is each task's negative log prior, scaled to
its mean squared error), and before the next one `refit` sets D to the tasks' average
v v' + posterior covariance and σ² to the expected residual variance, from the whole training
batch. Features the data tell apart per task get loose priors, the others tight ones.
A full Σ fitted from few tasks can be shrunk towards its diagonal (`shrinkage`): its
correlations are the noisiest part of it.

Binary tasks (log loss) make it the logistic mixed model, fitted by Laplace EM: the L-BFGS
step finds the posterior mode of the deviations, and `refit` takes each task's posterior
covariance from the log loss's curvature there, (Z_kᵀ W_k Z_k + D⁻¹)⁻¹ with W_k = p (1 − p),
for the next D (no noise variance: the labels carry their own). Many small classification
tasks (customers per region, patients per site) are where per-task logistic regression has
too few rows and one pooled model ignores how the tasks differ.

With a linear trunk (`hidden: []`, the default) and `solver: exact`, `refit` then also solves
the heads exactly for the new prior: the objective is quadratic in them, and its minimum follows
from the mixed-model equations (each task's q × q system, then the shared head's), so every EM
step is the textbook one and the L-BFGS step after it only confirms it: on School the same fit
in a quarter of the time. The default, `solver: lbfgs`, leaves the heads to L-BFGS, whose steps
stop a little short of each minimum; where the prior is weakly determined by the data (a full
Σ over 19 collinear voice measures and 42 patients) that damped EM predicts better.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

import torch
from torch import Tensor

from polytask._validation import checked
from polytask.models._base import listed, loss_named
from polytask.models._hints import Fraction, Rate, TaskRates, TowerSizes
from polytask.models._mean_regularised import Inputs, MeanRegularised
from polytask.tasks._task import Task

FLOOR = 1e-6
"""Prior variances below FLOOR × the largest are raised to it, so that the prior precision
stays finite where the data give a feature no spread between tasks."""
START = 0.1
"""The first prior: D = START · σ² · I (EM moves it from there)."""
RCOND = 1e-10
"""Directions of the shared head's equations below RCOND × the largest are left at zero: inputs
that add up to another (one-hot groups beside the intercept) leave the shared head's split
between them free, and the minimum-norm one predicts as any other does."""


def _logistic(tasks: Sequence[Task]) -> bool:
    """Whether `tasks` are binary tasks with the log loss (a logistic mixed model) rather than
    mse regression tasks (a linear one); a ValueError, with the fix, for any other task, a
    mix of the two (whose deviations would share a prior on two scales), or another loss."""
    one = [t for t in tasks if t.out_features == 1]
    binary = {t.name: t for t in one if t.kind_spec.classic == "class"}
    regression = {t.name: t for t in one if t.kind_spec.classic == "value"}
    neither = {t.name: f"kind {t.kind}" for t in tasks if t.name not in binary | regression}
    if neither:
        raise ValueError(
            f"multilevel fits a linear mixed model of regression tasks or a logistic one of "
            f"binary tasks; {len(neither)} of {len(tasks)} are neither ({listed(neither)}): "
            "make them kind regression or kind binary (a two-class multiclass task is a binary "
            "one), or use architecture mean_regularised"
        )
    if binary and regression:
        raise ValueError(
            f"multilevel fits regression tasks or binary tasks, not both in one model (their "
            f"deviations would share one prior on two scales); {len(binary)} are binary "
            f"({listed({n: 'binary' for n in binary})}) and {len(regression)} regression "
            f"({listed({n: 'regression' for n in regression})}): train them in two models, or "
            "use architecture mean_regularised"
        )
    logistic = bool(binary)
    own = "bce" if logistic else "mse"
    bad = {t.name: loss_named(t) for t in tasks if (t.loss or own) != own}
    bad |= {t.name: f"label_smoothing {t.label_smoothing}" for t in tasks if t.label_smoothing}
    if bad:
        model = "logistic model's log loss" if logistic else "Gaussian model's squared error"
        raise ValueError(
            f"multilevel's EM fits the {model} ({own}, the default loss of these tasks), and "
            f"{len(bad)} of {len(tasks)} tasks are trained otherwise ({listed(bad)}): leave "
            "loss (and label_smoothing) out, or use architecture mean_regularised"
        )
    return logistic


class Multilevel(MeanRegularised):
    """A `mean_regularised` model whose deviations' prior covariance (and noise variance) are
    fitted by EM between full-batch steps (`optimizer: lbfgs`), for one-output regression tasks
    with a squared-error loss or binary tasks with the log loss."""

    refit_reason: ClassVar[str | None] = (
        "architecture multilevel fits its prior from the whole training set"
    )
    prior_covariance: Tensor
    prior_precision: Tensor
    noise_variance: Tensor
    penalty_scale: Tensor
    fitted: Tensor

    @checked
    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[Task],
        hidden: Sequence[int] = (),
        covariance: Literal["diagonal", "full"] = "diagonal",
        dropout: float = 0.0,
        task_dropout: Mapping[str, float] | None = None,
        solver: Literal["lbfgs", "exact"] = "lbfgs",
        shrinkage: float = 0.0,
    ) -> None:
        logistic = _logistic(tasks)
        if logistic and solver == "exact":
            raise ValueError(
                "solver exact solves the mixed-model equations of regression tasks in closed "
                "form, and a binary task's heads have none: use solver lbfgs (the default)"
            )
        if solver == "exact" and hidden:
            raise ValueError(
                f"solver exact solves the heads in closed form on the inputs themselves, and "
                f"hidden {list(hidden)} puts a trained trunk before them: set hidden: [] for "
                "the exact solve, or use solver lbfgs (the default) with hidden layers"
            )
        if shrinkage and covariance != "full":
            raise ValueError(
                f"shrinkage {shrinkage} pulls a full covariance's correlations towards zero, and "
                "covariance diagonal has none: set covariance: full, or drop shrinkage"
            )
        if not 0 <= shrinkage <= 1:
            raise ValueError(f"shrinkage must be in [0, 1] (1: diagonal), got {shrinkage}")
        # dropout is accepted as every architecture's is, and refused by lbfgs, which needs
        # the same objective at each evaluation
        super().__init__(in_dim, tasks, hidden, dropout, 0.0, task_dropout)
        q = self.shared_head.in_features + 1
        self.logistic = logistic
        self.covariance = covariance
        self.solver = solver
        self.shrinkage = shrinkage
        self.register_buffer("prior_covariance", torch.eye(q))
        self.register_buffer("prior_precision", torch.zeros(q, q))
        self.register_buffer("noise_variance", torch.ones(()))
        self.register_buffer("penalty_scale", torch.zeros(len(tasks)))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def deviations_matrix(self) -> Tensor:
        """Each task's deviation as one row: its weights, then its intercept."""
        return torch.cat([torch.stack(self._weights)[:, 0], torch.stack(self._biases)], 1)

    def penalty(self) -> Tensor | None:
        if not bool(self.fitted):
            return None
        v = self.deviations_matrix()
        quad = ((v @ self.prior_precision) * v).sum(1)
        return (self.penalty_scale * quad).sum()

    @torch.no_grad()
    def refit(
        self,
        x: Tensor,
        targets: Mapping[str, Tensor],
        masks: Sequence[Tensor],
        weights: Tensor,
    ) -> bool:
        """One EM update of the prior from the whole training batch; `weights`: the weight the
        training objective gives each task's mean loss, so that each task's penalty is its
        negative log prior on that scale."""
        features = self.trunk(x)  # once: the predictions below are read from it
        shared = self.shared_head(features).double().reshape(-1)
        z = features.double()
        z = torch.cat([z, torch.ones_like(z[:, :1])], 1)
        v = self.deviations_matrix().double()
        q = z.shape[1]
        noise = self.noise_variance.double()
        precision = self.prior_precision.double()
        moments = torch.zeros(q, q, dtype=torch.float64, device=z.device)
        expected_sse = torch.zeros((), dtype=torch.float64, device=z.device)
        rows, used = 0, 0
        counts = []
        exact = self.solver == "exact" and isinstance(self.trunk, Inputs)
        systems: list[tuple[int, Tensor, Tensor]] = []  # (task, Z_kᵀ Z_k, Z_kᵀ y_k): exact only
        for k, task in enumerate(self.tasks):
            m = masks[k].reshape(-1)
            n = int(m.sum())
            counts.append(n)
            if n == 0:
                continue
            zk = z[m]
            yk = targets[task.name].reshape(-1)[m].double()
            rows, used = rows + n, used + 1
            if self.logistic:
                if bool(self.fitted):
                    # Laplace: the log loss's curvature p (1 − p) at the current logits
                    p = torch.sigmoid(shared[m] + zk @ v[k])
                    gram = (zk * (p * (1 - p)).unsqueeze(1)).T @ zk
                    posterior = torch.linalg.inv(gram + precision)
                    moments += torch.outer(v[k], v[k]) + posterior
                continue
            resid = yk - shared[m] - zk @ v[k]
            if exact:
                systems.append((k, zk.T @ zk, zk.T @ yk))
            if not bool(self.fitted):
                expected_sse += (resid**2).sum()
                continue
            gram = systems[-1][1] if exact else zk.T @ zk
            posterior = torch.linalg.inv(gram / noise + precision)
            moments += torch.outer(v[k], v[k]) + posterior
            expected_sse += (resid**2).sum() + (gram * posterior).sum()
        if used == 0:
            return False
        # the logistic model's labels carry their own noise: the logit scale has unit "variance"
        noise = expected_sse.new_ones(()) if self.logistic else expected_sse / rows
        if bool(self.fitted):
            cov = moments / used
            # towards the diagonal (all the way for covariance diagonal): the correlations
            # fitted from few tasks are noisy
            share = 1.0 if self.covariance == "diagonal" else self.shrinkage
            if share:
                cov = (1 - share) * cov + share * torch.diag(torch.diagonal(cov))
        else:
            cov = START * noise * torch.eye(q, dtype=torch.float64, device=z.device)
        values, vectors = torch.linalg.eigh((cov + cov.T) / 2)
        values = values.clamp_min(FLOOR * float(values.max().clamp_min(1e-30)))
        self.prior_covariance.copy_(cov)
        self.prior_precision.copy_((vectors / values) @ vectors.T)
        self.noise_variance.copy_(noise)
        n_rows = torch.tensor(counts, dtype=torch.float64, device=z.device)
        # each task's objective is its weight times its mean loss: its negative log likelihood
        # over its rows, times 2σ² (mse) or 1 (log loss); the prior's ½ v'Pv on that scale
        half = 0.5 if self.logistic else 1.0
        scale = weights.double() * half * noise / n_rows.clamp_min(1)
        self.penalty_scale.copy_(torch.where(n_rows > 0, scale, torch.zeros_like(scale)))
        self.fitted.fill_(True)
        if exact:
            self._solve(systems, n_rows, weights)
        return True

    @torch.no_grad()
    def _solve(
        self, systems: Sequence[tuple[int, Tensor, Tensor]], n_rows: Tensor, weights: Tensor
    ) -> None:
        """Set the shared head and the deviations to the training objective's minimum under the
        current prior, from each task's G_k = Z_kᵀ Z_k and b_k = Z_kᵀ y_k (`systems`; Z: the
        features and a column of ones). Task k's part of the objective is
        c_k (‖y_k − Z_k (β + v_k)‖² + σ² v_kᵀ P v_k), c_k its weight over its rows; so
        v_k = A_k⁻¹ (b_k − G_k β) with A_k = G_k + σ² P, and β solves
        Σ_k c_k (G_k − G_k A_k⁻¹ G_k) β = Σ_k c_k (b_k − G_k A_k⁻¹ b_k). Tasks without rows
        here keep their deviations (nothing in the objective sets them)."""
        precision = self.prior_precision.double()
        prior = self.noise_variance.double() * precision  # σ² P, the same for every task
        q = precision.shape[0]
        lhs = torch.zeros(q, q, dtype=torch.float64, device=precision.device)
        rhs = torch.zeros(q, dtype=torch.float64, device=precision.device)
        parts: list[tuple[int, Tensor, Tensor, Tensor]] = []
        for k, gram, b in systems:
            inverse = torch.linalg.inv(gram + prior)
            c = weights[k].double() / n_rows[k]
            lhs += c * (gram - gram @ inverse @ gram)
            rhs += c * (b - gram @ inverse @ b)
            parts.append((k, gram, b, inverse))
        beta = torch.linalg.pinv(lhs, rtol=RCOND, hermitian=True) @ rhs
        self.shared_head.weight.copy_(beta[:-1].reshape(self.shared_head.weight.shape))
        self.shared_head.bias.copy_(beta[-1:])
        for k, gram, b, inverse in parts:
            v = inverse @ (b - gram @ beta)
            self._weights[k].copy_(v[:-1].reshape(self._weights[k].shape))
            self._biases[k].copy_(v[-1:])

    def shared_prediction(self, x: Tensor) -> Tensor | None:
        """A new task's raw output: the centre of the tasks' heads; for binary tasks the logit
        whose probability is the mean of σ over the new task's deviation v ~ N(0, D), not σ
        at v = 0 (which is too sure of itself where tasks differ much), by MacKay's probit
        approximation E σ(a) ≈ σ(μ / √(1 + π s² / 8)), s² = zᵀDz for the row's features z."""
        centre = super().shared_prediction(x)
        if centre is None or not self.logistic or not bool(self.fitted):
            return centre
        z = self.trunk(x)
        z = torch.cat([z, torch.ones_like(z[:, :1])], 1)  # as deviations_matrix: weights, bias
        spread = ((z @ self.prior_covariance.to(z.dtype)) * z).sum(1, keepdim=True)
        return centre / torch.sqrt(1 + torch.pi * spread.clamp_min(0) / 8)

    def diagnostics(self) -> dict[str, float]:
        if not bool(self.fitted):
            return {}
        spread = torch.diagonal(self.prior_covariance).clamp_min(0).sqrt()
        sd = float(self.noise_variance.clamp_min(0).sqrt())
        noise = {} if self.logistic else {"noise_sd": sd}  # a logistic model has no noise term
        return noise | {
            "intercept_sd": float(spread[-1]),
            "weight_sd_mean": float(spread[:-1].mean()) if len(spread) > 1 else 0.0,
        }


def build_multilevel(
    features: Sequence[str],
    tasks: Sequence[Task],
    /,
    *,
    hidden: TowerSizes = (),
    covariance: Literal["diagonal", "full"] = "diagonal",
    dropout: Rate = 0.0,
    task_dropout: TaskRates | None = None,
    solver: Literal["lbfgs", "exact"] = "lbfgs",
    shrinkage: Fraction = 0.0,
) -> Multilevel:
    """`multilevel`: `mean_regularised` (shared head plus a deviation per task, on a `hidden`
    trunk; none by default: the linear mixed model) whose deviations' prior, a `covariance`
    (diagonal or full) fitted by empirical Bayes, replaces the `coupling` to choose; needs
    `training.optimizer: lbfgs` and one-output mse regression tasks (a linear mixed model) or
    binary tasks with the bce loss (a logistic one): for many small related tasks.
    `solver: exact` (with `hidden: []`, regression) solves the heads in closed form at each EM
    step (faster, the textbook EM); `lbfgs`, the default, leaves them to L-BFGS.
    `shrinkage` s (covariance full): each update takes (1 − s) · Σ + s · diag(Σ), for a full Σ
    fitted from few tasks."""
    return Multilevel(
        len(features), tasks, hidden, covariance, dropout, task_dropout, solver, shrinkage
    )
