"""The built-in data set: synthetic customers with churn, lifetime value and plan choice.

Every customer has latent traits (engagement, price sensitivity, satisfaction, ...). Features
are noisy, partly non-linear views of the traits; each task reads its own mix of a shared latent
factor and a task-specific one, so `relatedness` sets how much the tasks have in common:

    u_task = √ρ · s + √(1 − ρ) · e_task          (s shared, e_task private; both N(0, I))

- churn (binary): logistic in u_churn;
- ltv (regression, right-skewed): lognormal, log ltv linear in u_ltv;
- plan (multiclass, 3 plans): softmax of three linear scores of u_plan.

Deterministic by seed. `label_noise` flips binary labels / resamples plans with that
probability and adds noise to log ltv; `missing` hides that fraction of each task's labels.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from polytask.tasks._task import Task

LATENT_DIM = 3
N_USAGE = 48
USAGE_NOISE = 0.8
CHURN_SCALE = 1.5
PLAN_SCALE = 1.5
CUSTOMER_TASKS = ("churn", "ltv", "plan")
PLANS = ("basic", "standard", "premium")


def customer_tasks() -> list[Task]:
    """The three task specs of the customer data set."""
    return [
        Task("churn", "binary"),
        Task("ltv", "regression"),
        Task("plan", "multiclass", num_classes=len(PLANS)),
    ]


CUSTOMER_NUMERIC = [f"usage_{i}" for i in range(N_USAGE)] + [
    "tenure_months",
    "monthly_spend",
    "support_calls",
    "age",
]
CUSTOMER_CATEGORICAL = ["region", "channel"]


def customer_feature_names(**_: object) -> list[str]:
    """Numeric feature columns of `make_customers` (the same whatever its options)."""
    return list(CUSTOMER_NUMERIC)


def make_customers(
    n: int = 5000,
    relatedness: float = 0.8,
    label_noise: float = 0.05,
    missing: Mapping[str, float] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """A DataFrame of `n` customers: an id (`customer_id`, not a feature), features, the three
    task targets and a two-stage offer funnel (`offer_opened` → `offer_accepted`)."""
    if n < 10:
        raise ValueError(f"n must be at least 10, got {n}")
    if not 0 <= relatedness <= 1:
        raise ValueError(f"relatedness must be in [0, 1], got {relatedness}")
    if not 0 <= label_noise <= 1:
        raise ValueError(f"label_noise must be in [0, 1], got {label_noise}")
    missing = dict(missing or {})
    unknown = set(missing) - set(CUSTOMER_TASKS)
    if unknown:
        raise ValueError(f"missing names unknown tasks {sorted(unknown)}; tasks: {CUSTOMER_TASKS}")
    rng = np.random.default_rng(seed)
    # Fixed "world": how traits show in features and drive tasks, the same for every seed.
    world = np.random.default_rng(12345)
    shared = rng.standard_normal((n, LATENT_DIM))
    private = {t: rng.standard_normal((n, LATENT_DIM)) for t in CUSTOMER_TASKS}
    latent = {
        t: np.sqrt(relatedness) * shared + np.sqrt(1 - relatedness) * private[t]
        for t in CUSTOMER_TASKS
    }
    # Usage features are noisy non-linear views of the task traits; a model has to find the
    # few directions that matter among many, which a well-labelled task teaches the others.
    traits = np.concatenate([latent[t] for t in CUSTOMER_TASKS], axis=1)
    mix = world.standard_normal((traits.shape[1], N_USAGE)) / np.sqrt(LATENT_DIM)
    usage = np.tanh(traits @ mix) + USAGE_NOISE * rng.standard_normal((n, N_USAGE))
    df = pd.DataFrame(usage, columns=[f"usage_{i}" for i in range(N_USAGE)])
    tenure = 24 + 12 * latent["churn"][:, 0] + 6 * rng.standard_normal(n)
    df["tenure_months"] = np.clip(tenure, 0, None)
    df["monthly_spend"] = np.exp(3.5 + 0.4 * latent["ltv"][:, 1] + 0.2 * rng.standard_normal(n))
    df["support_calls"] = rng.poisson(np.exp(0.5 - 0.6 * latent["churn"][:, 2]))
    df["age"] = np.clip(40 + 12 * rng.standard_normal(n), 18, 90)
    df["region"] = rng.choice(["north", "south", "east", "west"], size=n)
    online = latent["plan"][:, -1] + 0.5 * rng.standard_normal(n) > 0
    df["channel"] = np.where(online, "online", "store")

    # Each task reads every latent direction, so each one teaches the trunk the whole space.
    signs = {t: world.choice([-1.0, 1.0], LATENT_DIM) for t in CUSTOMER_TASKS}
    strength = {t: world.uniform(0.7, 1.3, LATENT_DIM) * signs[t] for t in CUSTOMER_TASKS}
    churn_logit = -0.5 + CHURN_SCALE * np.tanh(latent["churn"]) @ strength["churn"]
    churn = (rng.random(n) < 1 / (1 + np.exp(-churn_logit))).astype(float)
    flip = rng.random(n) < label_noise
    churn[flip] = 1 - churn[flip]
    log_ltv = 6.0 + 0.5 * np.tanh(latent["ltv"]) @ strength["ltv"]
    log_ltv += (0.1 + label_noise) * rng.standard_normal(n)
    ltv = np.exp(log_ltv)
    scores = latent["plan"] @ world.standard_normal((LATENT_DIM, len(PLANS))) * PLAN_SCALE
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    plan_idx = (probs.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    resample = rng.random(n) < label_noise
    plan_idx[resample] = rng.integers(0, len(PLANS), resample.sum())
    plan = np.array(PLANS, dtype=object)[plan_idx]

    df["churn"] = churn
    df["ltv"] = ltv
    df["plan"] = plan
    for task, frac in missing.items():
        if not 0 <= frac < 1:
            raise ValueError(f"missing fraction for {task!r} must be in [0, 1), got {frac}")
        hide = rng.random(n) < frac
        df.loc[hide, task] = None if task == "plan" else np.nan
    _add_offer_funnel(df, latent, np.random.default_rng([seed, 1]))
    df.insert(0, "customer_id", [f"C{i:06d}" for i in range(1, n + 1)])
    return df


def _add_offer_funnel(
    df: pd.DataFrame, latent: Mapping[str, np.ndarray], rng: np.random.Generator
) -> None:
    """A renewal offer funnel (for ESMM / AITM): `offer_opened`, then `offer_accepted`, which
    is 1 only for customers who opened it. Drawn from its own generator, so the other columns
    do not depend on it."""
    n = len(df)
    engaged = latent["ltv"][:, 0] - 0.5 * latent["churn"][:, 1]
    opened = rng.random(n) < 1 / (1 + np.exp(-(engaged - 0.3)))
    keen = latent["plan"][:, 0] - latent["churn"][:, 0]
    accepted = opened & (rng.random(n) < 1 / (1 + np.exp(-(1.5 * keen - 0.5))))
    df["offer_opened"] = opened.astype(float)
    df["offer_accepted"] = accepted.astype(float)


def make_related_regression(
    n: int = 2000,
    n_features: int = 20,
    latent_dim: int = 2,
    noise: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two regression tasks that are different non-linear functions of the same low-dimensional
    latent z, seen through many noisy features: learning the well-labelled task teaches the
    representation the other needs. Returns (X, y_a, y_b)."""
    rng = np.random.default_rng(seed)
    world = np.random.default_rng(777)
    z = rng.standard_normal((n, latent_dim))
    proj = world.standard_normal((latent_dim, n_features))
    x = np.tanh(z @ proj) + noise * rng.standard_normal((n, n_features))
    a, b = world.standard_normal(latent_dim), world.standard_normal(latent_dim)
    y_a = np.sin(z @ a) + 0.5 * (z @ b) + noise * rng.standard_normal(n)
    y_b = np.cos(z @ b) + 0.5 * (z @ a) ** 2 + noise * rng.standard_normal(n)
    return x, y_a, y_b


def make_correlated_tasks(
    n: int = 2000,
    correlations: tuple[float, ...] = (1.0, 0.9, 0.0),
    n_features: int = 16,
    noise: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Regression tasks of controlled relatedness (the synthetic study of Ma et al., KDD 2018):
    task k reads x through a unit direction w_k with cos(w_1, w_k) = correlations[k],
    y_k = w_kᵀx + Σ_i sin(α_i w_kᵀx + β_i) + noise. Returns X (n, d) and Y (n, K)."""
    if n_features < 2 or not correlations or any(abs(c) > 1 for c in correlations):
        raise ValueError("need n_features >= 2 and correlations in [-1, 1]")
    world = np.random.default_rng(4242)
    u1, u2 = np.linalg.qr(world.standard_normal((n_features, 2)))[0].T
    alphas, betas = world.standard_normal(4), world.standard_normal(4)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_features))
    ys = []
    for c in correlations:
        w = c * u1 + np.sqrt(1 - c**2) * u2
        t = x @ w
        ys.append(t + np.sin(np.outer(t, alphas) + betas).sum(1) + noise * rng.standard_normal(n))
    return x, np.stack(ys, axis=1)


def make_funnel(
    n: int = 2000, n_features: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Impressions that may be clicked, and clicks that may convert: X, click, and conversion
    (clicked and bought; 0 for every impression that was not clicked)."""
    world = np.random.default_rng(99)
    a, b = world.standard_normal(n_features), world.standard_normal(n_features)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_features))
    click = rng.random(n) < 1 / (1 + np.exp(-(x @ a - 1.0)))
    buy = rng.random(n) < 1 / (1 + np.exp(-(x @ b - 0.5)))
    return x, click.astype(np.float64), (click & buy).astype(np.float64)


def make_unequal_tasks(
    sizes: Mapping[str, int], seed: int = 0, noise: float = 0.1
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Regression tasks with their own data sets of very different sizes (name → rows): every
    task reads the same hidden features tanh(x A) through its own readout, so a task with few
    rows gains from the others. Returns name → (X, y)."""
    world = np.random.default_rng(11)
    mix = world.standard_normal((10, 8)) / 3
    out = {}
    for i, (name, n) in enumerate(sizes.items()):
        readout = np.random.default_rng([11, i]).standard_normal(8)
        rng = np.random.default_rng([seed, i])
        x = rng.standard_normal((n, 10))
        out[name] = (x, np.tanh(x @ mix) @ readout + noise * rng.standard_normal(n))
    return out


def make_grouped_regression(
    n: int = 3000,
    group_sizes: Sequence[int] = (2, 2, 2),
    n_features: int = 12,
    variation: float = 0.3,
    noise: float = 0.1,
    frequency: float = 1.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Regression tasks in planted groups. Group g reads x ~ N(0, I) through its own two
    orthonormal directions (orthogonal to every other group's), z_g = x W_g, through the same
    non-linear function f_g(z) = sin(ω z₁ + φ_g) + cos(ω z₂ + ψ_g) (ω: `frequency`; the higher,
    the more hidden units a group needs). Each task of the group is a noisy variant of it,
    y = f_g(z_g) + `variation` · h_k(z_g) + `noise` · ε, with h_k a small task-specific function
    of the same z_g. Tasks of a group teach each other the features they need (positive
    transfer); tasks of different groups need disjoint features and compete for the units of a
    shared trunk of limited width, so one trunk per group serves them better.
    Returns X (n, n_features), Y (n, K) with tasks group by group, and each task's group.
    Deterministic by seed (the groups' functions are fixed; rows and noise come from `seed`)."""
    sizes = [int(s) for s in group_sizes]
    if n < 10:
        raise ValueError(f"n must be at least 10, got {n}")
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"group_sizes must list at least one group of >= 1 task, got {sizes}")
    if n_features < 2 * len(sizes):
        raise ValueError(
            f"n_features must be at least 2 per group ({2 * len(sizes)} for {len(sizes)} "
            f"groups), got {n_features}"
        )
    if variation < 0 or noise < 0 or frequency <= 0:
        raise ValueError(
            f"variation and noise must be >= 0 and frequency > 0, got {variation}, {noise} "
            f"and {frequency}"
        )
    world = np.random.default_rng(2021)
    basis = np.linalg.qr(world.standard_normal((n_features, n_features)))[0]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_features))
    ys, groups = [], []
    for g, size in enumerate(sizes):
        z = x @ basis[:, 2 * g : 2 * g + 2]
        phase = world.uniform(0, 2 * np.pi, 2)
        f = np.sin(frequency * z[:, 0] + phase[0])
        f += np.cos(frequency * z[:, 1] + phase[1])
        for _ in range(size):
            a, b = world.standard_normal(2)
            private = np.tanh(a * z[:, 0] + b * z[:, 1])
            ys.append(f + variation * private + noise * rng.standard_normal(n))
            groups.append(g)
    return x, np.stack(ys, axis=1), groups


def grouped_task_names(group_sizes: Sequence[int]) -> list[str]:
    """Task names of `make_grouped_frame`: g0_a, g0_b, g1_a, ... (group, then a letter)."""
    if any(s > 26 for s in group_sizes):
        raise ValueError(f"at most 26 tasks per group, got {list(group_sizes)}")
    return [f"g{g}_{chr(ord('a') + k)}" for g, s in enumerate(group_sizes) for k in range(s)]


def grouped_feature_names(n_features: int = 12, **_: object) -> list[str]:
    """Feature columns of `make_grouped_frame`: x0, x1, ... (its other options do not matter)."""
    return [f"x{i}" for i in range(n_features)]


def make_grouped_frame(
    n: int = 3000,
    group_sizes: Sequence[int] = (2, 2, 2),
    n_features: int = 12,
    variation: float = 0.3,
    noise: float = 0.1,
    frequency: float = 1.5,
    seed: int = 0,
) -> pd.DataFrame:
    """`make_grouped_regression` as a DataFrame: features x0, x1, ... and one target column per
    task, named by group (g0_a, g0_b, g1_a, ...), for `builtin: groups`."""
    x, y, _ = make_grouped_regression(n, group_sizes, n_features, variation, noise, frequency, seed)
    frame = pd.DataFrame(x, columns=grouped_feature_names(n_features))
    for name, column in zip(grouped_task_names(group_sizes), y.T, strict=True):
        frame[name] = column
    return frame


FAMILY_WORLD = 31337
FAMILY_GAIN = 1.5
"""Each hidden unit is tanh of a N(0, 1.5²) projection: clearly non-linear, rarely saturated."""


@functools.cache
def _family_world(
    n_features: int, latent_dim: int, mean_norm: float, family: int
) -> tuple[np.ndarray, float, np.ndarray, float]:
    """What `family` fixes: A, h's scale, μ and β (read-only, computed once)."""
    world = np.random.default_rng([FAMILY_WORLD, family])
    mix = world.standard_normal((n_features, latent_dim))
    mix *= FAMILY_GAIN / np.linalg.norm(mix, axis=0)  # each unit: tanh of N(0, gain²)
    nodes, weights = np.polynomial.hermite_e.hermegauss(64)  # E tanh(gain z)², exactly
    scale = float(np.sqrt((weights * np.tanh(FAMILY_GAIN * nodes) ** 2).sum() / weights.sum()))
    direction = world.standard_normal(latent_dim)
    mean = mean_norm * direction / np.linalg.norm(direction)
    mix.flags.writeable = mean.flags.writeable = False
    return mix, scale, mean, float(world.standard_normal() * 0.5)


@dataclass(frozen=True)
class TaskFamily:
    """A family of regression tasks that share a hidden feature map and a prior over readouts:

        y_t = a_t · h(x) + b_t + noise,   x ~ N(0, I_n_features),   noise ~ N(0, noise²)
        h(x) = tanh(x A) / s              (A: n_features × latent_dim, fixed; s: h's std, so
                                           each latent unit has unit variance)
        a_t ~ N(μ, spread² I),  b_t ~ N(β, spread²)   (μ: a fixed direction of norm mean_norm)

    Everything but the task vectors and the rows is fixed by `family`: h, μ and β. Training
    tasks (`frame`) and held-out tasks (`held_out`) draw their (a_t, b_t) from the same prior
    but from disjoint streams, so a held-out task is new yet of the same family. With `spread`
    small against `mean_norm` the family has a strong shared prior, which a meta-learner can
    learn (a head initialised near μ) and a freshly initialised head cannot know; with
    `latent_dim` larger than the rows of a few-shot task, those rows alone cannot pin a_t down.
    """

    n_features: int = 16
    latent_dim: int = 8
    mean_norm: float = 1.0
    spread: float = 0.1
    noise: float = 0.1
    family: int = 0

    def __post_init__(self) -> None:
        if self.n_features < 1 or self.latent_dim < 1:
            raise ValueError(
                f"n_features and latent_dim must be >= 1, got {self.n_features} and "
                f"{self.latent_dim}"
            )
        if self.mean_norm < 0 or self.spread < 0 or self.noise < 0:
            raise ValueError(
                f"mean_norm, spread and noise must be >= 0, got {self.mean_norm}, "
                f"{self.spread} and {self.noise}"
            )

    def _world(self) -> tuple[np.ndarray, float, np.ndarray, float]:
        """A (n_features, latent_dim), h's scale s, μ (latent_dim,) and β."""
        return _family_world(self.n_features, self.latent_dim, self.mean_norm, self.family)

    def features(self, x: np.ndarray) -> np.ndarray:
        """h(x): the hidden features (n, latent_dim) every task of the family reads."""
        mix, scale, _, _ = self._world()
        return np.asarray(np.tanh(x @ mix) / scale)

    def task_vector(self, index: int, held_out: bool = False) -> tuple[np.ndarray, float]:
        """(a_t, b_t) of training task `index`, or of held-out task `index`."""
        _, _, mean, bias = self._world()
        rng = np.random.default_rng([FAMILY_WORLD, self.family, 2 if held_out else 1, index])
        a = mean + self.spread * rng.standard_normal(self.latent_dim)
        return a, bias + self.spread * float(rng.standard_normal())

    def sample(
        self, index: int, n: int, seed: int = 0, held_out: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """`n` rows (X (n, n_features), y (n,)) of one task; rows and noise from `seed`."""
        kind = 2 if held_out else 1
        rng = np.random.default_rng([seed, kind, index])
        x = rng.standard_normal((n, self.n_features))
        a, b = self.task_vector(index, held_out)
        return x, self.features(x) @ a + b + self.noise * rng.standard_normal(n)

    def frame(
        self, n_tasks: int = 8, rows_per_task: int = 200, seed: int = 0, held_out: bool = False
    ) -> pd.DataFrame:
        """Features x0, x1, ... and one target column per task (`task_0`, ... or, held out,
        `new_0`, ...): each task's rows are labelled for that task only (NaN for the others),
        as one table of several sources (`Trainer.fit` masks the missing labels)."""
        if n_tasks < 1 or rows_per_task < 1:
            raise ValueError(
                f"n_tasks and rows_per_task must be >= 1, got {n_tasks} and {rows_per_task}"
            )
        names = family_task_names(n_tasks, held_out)
        parts = []
        for i, name in enumerate(names):
            x, y = self.sample(i, rows_per_task, seed, held_out)
            part = pd.DataFrame(x, columns=family_feature_names(self.n_features))
            for other in names:
                part[other] = y if other == name else np.nan
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    def held_out(self, n_tasks: int = 1, rows_per_task: int = 200, seed: int = 0) -> pd.DataFrame:
        """New tasks of the same family (same h, μ, β; new task vectors), as `frame` does."""
        return self.frame(n_tasks, rows_per_task, seed, held_out=True)


def family_task_names(n_tasks: int, held_out: bool = False) -> list[str]:
    """Target columns of `TaskFamily.frame`: task_0, task_1, ... (held out: new_0, ...)."""
    return [f"{'new' if held_out else 'task'}_{i}" for i in range(n_tasks)]


def family_feature_names(n_features: int = 16, **_: object) -> list[str]:
    """Feature columns of `make_task_family`: x0, x1, ... (its other options do not matter)."""
    return [f"x{i}" for i in range(n_features)]


def make_task_family(
    n_tasks: int = 8,
    rows_per_task: int = 200,
    n_features: int = 16,
    latent_dim: int = 8,
    mean_norm: float = 1.0,
    spread: float = 0.1,
    noise: float = 0.1,
    family: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """`n_tasks` regression tasks of one `TaskFamily` (see there for the structure), as a
    DataFrame for `builtin: task_family`: features x0, x1, ... and target columns task_0, ...,
    each row labelled for its own task only. `TaskFamily(...).held_out(...)` draws new tasks
    of the same family."""
    spec = TaskFamily(n_features, latent_dim, mean_norm, spread, noise, family)
    return spec.frame(n_tasks, rows_per_task, seed)


def low_rank_feature_names(n_features: int = 100, **_: object) -> list[str]:
    """Feature columns of `make_low_rank`: x0, x1, ... (its other options do not matter)."""
    return [f"x{i}" for i in range(n_features)]


def make_low_rank(
    n: int = 3000,
    n_features: int = 100,
    factors: int = 3,
    noise: float = 1.5,
    labelled: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Rows with low-dimensional structure, few of them labelled (`builtin: low_rank`): features
    x = z W + noise (z: `factors` standard normal factors, W fixed per seed) and a target `y`
    = sin(2 z₀) + z₁ z₂ + z₁ / 2 (+ 0.1 noise) on a `labelled` fraction of the rows, NaN on the
    rest: where learning the features' structure from every row helps the labelled task."""
    if not 0 < labelled <= 1 or factors < 3 or n_features < factors or noise < 0:
        raise ValueError(
            "make_low_rank needs 0 < labelled <= 1, factors >= 3, n_features >= factors and "
            "noise >= 0"
        )
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((factors, n_features))
    z = rng.standard_normal((n, factors))
    x = z @ weights + noise * rng.standard_normal((n, n_features))
    y = np.sin(2 * z[:, 0]) + z[:, 1] * z[:, 2] + 0.5 * z[:, 1] + 0.1 * rng.standard_normal(n)
    frame = pd.DataFrame(x, columns=low_rank_feature_names(n_features))
    frame["y"] = np.where(rng.random(n) < labelled, y, np.nan)
    return frame


def many_tasks_feature_names(n_features: int = 8, **_: object) -> list[str]:
    """The numeric features of `make_many_tasks`: x0, x1, ..."""
    return [f"x{j}" for j in range(n_features)]


def make_many_tasks(
    n_tasks: int = 40,
    rows_per_task: int = 30,
    n_features: int = 8,
    spread: float = 0.5,
    noise: float = 1.0,
    kind: str = "regression",
    seed: int = 0,
) -> pd.DataFrame:
    """Many small related tasks in long form, the classic multi-task setting (schools,
    patients, regions): a `task` column (t0, t1, ...), features x0, x1, ... and one target
    `y` per row, from its task's linear model w_t = w0 + v_t with a shared mean w0 (unit
    norm) and a deviation v_t of norm `spread`, plus N(0, `noise`²); task sizes vary around
    `rows_per_task` (half to one and a half times). `kind: binary` thresholds y at 0 (a
    logistic-like label). Pooling helps when `spread` is small against the few rows; a
    model per task when it is large: mean-regularised MTL sits between."""
    if n_tasks < 1 or rows_per_task < 2 or n_features < 1:
        raise ValueError("n_tasks, rows_per_task (at least 2) and n_features must be positive")
    if kind not in ("regression", "binary"):
        raise ValueError(f"kind must be regression or binary, got {kind!r}")
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(n_features)
    w0 /= np.linalg.norm(w0)
    frames = []
    for t in range(n_tasks):
        v = rng.standard_normal(n_features)
        w = w0 + spread * v / np.linalg.norm(v)
        n = int(rng.integers(max(2, rows_per_task // 2), rows_per_task + rows_per_task // 2 + 1))
        x = rng.standard_normal((n, n_features))
        y = x @ w + noise * rng.standard_normal(n)
        frame = pd.DataFrame(x, columns=many_tasks_feature_names(n_features))
        frame.insert(0, "task", f"t{t}")
        frame["y"] = (y > 0).astype(int) if kind == "binary" else y
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
