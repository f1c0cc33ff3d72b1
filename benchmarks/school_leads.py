"""Leads for School's 38.5% goal: variations of `gp` on one split, and how much error its own
posterior leaves to remove.

Each variant is `gp` (polytask's best School model) with one change, fitted on the split's
training rows and scored on its test rows (pooled explained variance, as BASELINES.md defines
it). **The test rows are read to compare the variants, so these are leads, not settings**: a
variant worth keeping would then be run over the ten splits by the quality suite.

- `gp`: as polytask ships it;
- `school-year level`: each school-year's own intercept and slopes beside the school's (the
  year from the one-hot columns x0..x2);
- `heteroscedastic noise`: the noise variance log-linear in the columns;
- `cell effect`: an intercept shared by the pupils of one school identical in all 27 columns
  (85% of split 0's test pupils have such cell-mates among the training rows, 6 at the median);
- `tanh warp`: three of Snelson's tanh terms after the Box-Cox warp (on its standardised
  scale);
- `400 steps`: twice the marginal-likelihood steps.

Then, for `gp`: the posterior variance of its function at the test pupils carried through the
warp (the error left in its estimates, were the fitted process the truth), its predictive
noise, and the within-cell variance of pupils identical in school and all 27 columns (the
noise no model of these columns removes). Results: benchmarks/results/school_leads.md.

    python benchmarks/school_leads.py [--split 0] [--variants gp tanh ...] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from polytask import Task
from polytask.models import _gp as gp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import commit  # noqa: E402

SCHOOL = HERE.parent.parent / "shared" / "datasets" / "school"
COLUMNS = [f"x{i}" for i in range(27)]
TANH = 3
"""Tanh terms of the `tanh warp` variant."""


class _Extra(gp.MultiTaskGP):
    """`gp` with extra hyper-parameters (buffers fitted with the rest)."""

    EXTRA: ClassVar[Mapping[str, Callable[[int], Tensor]]] = {}

    def __init__(self, in_dim: int, tasks: Sequence[Task], **params: object) -> None:
        super().__init__(in_dim, tasks, **params)  # type: ignore[arg-type]
        for name, make in self.EXTRA.items():
            self.register_buffer(name, make(in_dim))

    def hyper(self) -> dict[str, Tensor]:
        return {**super().hyper(), **{name: getattr(self, name) for name in self.EXTRA}}


def _scalar(value: float) -> Callable[[int], Tensor]:
    return lambda columns: torch.tensor(value, dtype=torch.float64)


def _vector(value: float) -> Callable[[int], Tensor]:
    return lambda columns: torch.full((columns,), value, dtype=torch.float64)


class _Level(_Extra):
    """A kernel term within each school (`_level`, rows a × rows b) beside gp's own."""

    def _level(self, h: Mapping[str, Tensor], a: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError

    def _covariance(self, h: Mapping[str, Tensor], z: Tensor, owner: Tensor) -> Tensor:
        same = (owner[:, None] == owner[None, :]).to(z.dtype)
        return super()._covariance(h, z, owner) + same * self._level(h, z, z)

    def _predict(self, z: Tensor) -> Tensor:
        h = self.hyper()
        pooled, task = gp._parts(h, z, self.inputs)
        mean = (pooled @ self.alpha)[:, None] + (task + self._level(h, z, self.inputs)) @ self.own
        return self._mapped_back(h, mean, torch.exp(0.5 * h["noise"]))


class SchoolYear(_Level):
    """A third level: rows of the same school and year share an intercept and slopes."""

    EXTRA: ClassVar[Mapping[str, Callable[[int], Tensor]]] = {
        "sy_const": _scalar(math.log(0.02)),
        "sy_lin": _vector(math.log(0.001)),
    }

    def _year(self, z: Tensor) -> Tensor:
        return (z[:, :3] * self.spread[:3] + self.center[:3]).argmax(1)

    def _level(self, h: Mapping[str, Tensor], a: Tensor, b: Tensor) -> Tensor:
        same = (self._year(a)[:, None] == self._year(b)[None, :]).to(a.dtype)
        return same * (torch.exp(h["sy_const"]) + (a * torch.exp(h["sy_lin"])) @ b.T)


class CellEffect(_Level):
    """An effect per cell: rows of the same school identical in every column share an
    intercept (the interactions no smooth kernel of the columns reaches)."""

    EXTRA: ClassVar[Mapping[str, Callable[[int], Tensor]]] = {"cell": _scalar(math.log(0.02))}

    def _level(self, h: Mapping[str, Tensor], a: Tensor, b: Tensor) -> Tensor:
        return (gp._squared(a, b) < 1e-9).to(a.dtype) * torch.exp(h["cell"])


class Heteroscedastic(_Extra):
    """The noise variance exp(noise + wᵀz): log-linear in the standardised columns."""

    EXTRA: ClassVar[Mapping[str, Callable[[int], Tensor]]] = {"noise_lin": _vector(0.0)}

    def _noise(self, h: Mapping[str, Tensor], z: Tensor) -> Tensor:
        return torch.exp(h["noise"] + z @ h["noise_lin"])

    def _covariance(self, h: Mapping[str, Tensor], z: Tensor, owner: Tensor) -> Tensor:
        pooled, task = gp._parts(h, z, z)
        same = (owner[:, None] == owner[None, :]).to(z.dtype)
        return pooled + same * task + torch.diag(self._noise(h, z) + 1e-6)

    def _predict(self, z: Tensor) -> Tensor:
        h = self.hyper()
        pooled, task = gp._parts(h, z, self.inputs)
        mean = (pooled @ self.alpha)[:, None] + task @ self.own
        return self._mapped_back(h, mean, self._noise(h, z).sqrt()[:, None, None])


class TanhWarp(_Extra):
    """After the Box-Cox warp and its standardisation s: z = s + Σ a_i tanh(b_i (s + c_i))."""

    EXTRA: ClassVar[Mapping[str, Callable[[int], Tensor]]] = {
        **{f"ta{i}": _scalar(math.log(0.05)) for i in range(TANH)},
        **{f"tb{i}": _scalar(0.0) for i in range(TANH)},
        **{f"tc{i}": _scalar(float(i - 1)) for i in range(TANH)},
    }

    @staticmethod
    def _terms(h: Mapping[str, Tensor], s: Tensor) -> tuple[Tensor, Tensor]:
        out, slope = s.clone(), torch.ones_like(s)
        for i in range(TANH):
            a, b = torch.exp(h[f"ta{i}"]), torch.exp(h[f"tb{i}"])
            t = torch.tanh(b * (s + h[f"tc{i}"]))
            out, slope = out + a * t, slope + a * b * (1 - t * t)
        return out, slope

    def _targets(self, h: Mapping[str, Tensor], y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        u, log_slope = gp._warp(h, y, self.lowest)
        mean, spread = u.mean(), u.std().clamp_min(1e-12)
        z, slope = self._terms(h, (u - mean) / spread)
        return z, log_slope - torch.log(spread) + torch.log(slope), mean, spread

    def _mapped_back(self, h: Mapping[str, Tensor], mean: Tensor, sd: Tensor) -> Tensor:
        z = mean[..., None] + sd * self.nodes
        reach = sum(torch.exp(h[f"ta{i}"]) for i in range(TANH))
        low, high = z - reach - 1e-9, z + reach + 1e-9  # the terms move s by at most `reach`
        for _ in range(60):  # bisection: the map is increasing
            middle = (low + high) / 2
            above = self._terms(h, middle)[0] > z
            low, high = torch.where(above, low, middle), torch.where(above, middle, high)
        u = (low + high) / 2 * self.target_std + self.target_mean
        return (gp._unwarp(h, u, self.lowest) * self.node_weights).sum(-1)


VARIANTS: dict[str, tuple[type[gp.MultiTaskGP], dict[str, int]]] = {
    "gp": (gp.MultiTaskGP, {}),
    "school-year level": (SchoolYear, {}),
    "heteroscedastic noise": (Heteroscedastic, {}),
    "cell effect": (CellEffect, {}),
    "tanh warp": (TanhWarp, {}),
    "400 steps": (gp.MultiTaskGP, {"steps": 400}),
}


class Rows:
    """One part of the split: columns, task of each row, targets."""

    def __init__(self, frame: pd.DataFrame, rows: np.ndarray, schools: list[int]) -> None:
        part = frame.iloc[rows]
        self.x = torch.tensor(part[COLUMNS].to_numpy(), dtype=torch.float64)
        index = {s: k for k, s in enumerate(schools)}
        self.owner = part["school_id"].map(index).to_numpy()
        self.y = part["exam_score"].to_numpy(float)

    def batch(self, tasks: Sequence[Task]) -> tuple[dict[str, Tensor], list[Tensor]]:
        masks = [torch.from_numpy(self.owner == k) for k in range(len(tasks))]
        targets = {t.name: torch.from_numpy(np.where(m.numpy(), self.y, np.nan))
                   for t, m in zip(tasks, masks, strict=True)}  # fmt: skip
        return targets, masks


def explained(y: np.ndarray, predicted: np.ndarray) -> float:
    """Pooled explained variance (%), as BASELINES.md defines it."""
    return 100 * (1 - float(((y - predicted) ** 2).sum()) / float(((y - y.mean()) ** 2).sum()))


def fitted(kind: type[gp.MultiTaskGP], params: dict[str, int], train: Rows,
           tasks: Sequence[Task]) -> gp.MultiTaskGP:  # fmt: skip
    model = kind(len(COLUMNS), tasks, **params)  # type: ignore[arg-type]
    targets, masks = train.batch(tasks)
    model.refit(train.x, targets, masks, torch.ones(len(tasks)))
    return model


def predicted(model: gp.MultiTaskGP, test: Rows, tasks: Sequence[Task]) -> np.ndarray:
    with torch.no_grad():
        out = model(test.x)
    each = np.stack([out[t.name].reshape(-1).numpy() for t in tasks], axis=1)
    return each[np.arange(len(test.y)), test.owner]


def error_left(model: gp.MultiTaskGP, test: Rows) -> tuple[float, float]:
    """(mean posterior variance of the function at the test rows, mean predictive noise), in
    the score's units: the first through the warp's slope at the posterior mean, the second
    as the variance of the back-warped predictive noise."""
    h = model.hyper()
    z = (test.x - model.center) / model.spread
    owner = torch.from_numpy(test.owner.copy())
    noise = torch.exp(h["noise"]) + 1e-6
    train_k = model._covariance(h, model.inputs, model.owner)
    pooled, task = gp._parts(h, z, model.inputs)
    cross = pooled + task * (owner[:, None] == model.owner[None, :]).to(z.dtype)
    chol = torch.linalg.cholesky(train_k)
    solved = torch.cholesky_solve(cross.T.contiguous(), chol)
    e = torch.exp  # the prior variance at each row: both kernels' diagonals
    prior = sum(e(h[k]) for k in ("const", "rbf", "task_const", "task_rbf"))
    prior = prior + (z * z * (e(h["lin"]) + e(h["task_lin"]))).sum(1)
    posterior = prior - (cross * solved.T).sum(1)
    mean = cross @ model.alpha
    sd = torch.exp(0.5 * h["noise"])
    step = 1e-4
    slope = (model._mapped_back(h, (mean + step)[:, None], sd)
             - model._mapped_back(h, (mean - step)[:, None], sd))[:, 0] / (2 * step)  # fmt: skip
    drawn = (mean[:, None] * model.target_std + model.target_mean
             + noise.sqrt() * model.target_std * model.nodes)  # fmt: skip
    values = gp._unwarp(h, drawn, model.lowest)
    centre = (values * model.node_weights).sum(1, keepdim=True)
    spread = (((values - centre) ** 2) * model.node_weights).sum(1)
    return float((slope**2 * posterior).mean()), float(spread.mean())


def within_cells(frame: pd.DataFrame) -> float:
    """The pooled variance of scores among pupils identical in school and every column."""
    cells = frame.groupby(["school_id", *COLUMNS])["exam_score"]
    count, var = cells.count(), cells.var()
    many = count > 1
    return float(((count[many] - 1) * var[many]).sum() / (count[many] - 1).sum())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", default=str(SCHOOL))
    parser.add_argument("--split", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--schools", type=int, default=None,
                        help="the first SCHOOLS schools only (a smoke test)")  # fmt: skip
    parser.add_argument("--out", default=str(HERE / "results" / "school_leads.md"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = Path(args.data)
    if not (path / "school.csv.gz").is_file():
        raise SystemExit(f"School data not found in {path}: pass --data")
    frame = pd.read_csv(path / "school.csv.gz")
    split = np.load(path / "splits" / f"school_seed{args.split}.npz")
    schools = sorted(frame["school_id"].unique())[: args.schools]
    tasks = [Task(f"s{k}", "regression") for k in schools]
    kept = frame["school_id"].isin(schools).to_numpy()
    train_rows = split["train_idx"][kept[split["train_idx"]]]
    test_rows = split["test_idx"][kept[split["test_idx"]]]
    train, test = Rows(frame, train_rows, schools), Rows(frame, test_rows, schools)
    lines = [
        f"# School: leads for gp (split {args.split})",
        "",
        f"Commit `{commit()}`; `python benchmarks/school_leads.py --split {args.split}"
        + (
            f" --schools {args.schools}` (a smoke run: not the split's figures)"
            if args.schools
            else "`"
        )
        + f"; {len(train.y)} training and {len(test.y)} test pupils. **Test rows read to "
        "compare the variants: leads, not settings.**",
        "",
        "| variant | explained variance % | test MSE | fit s |",
        "|---|---|---|---|",
    ]
    base: gp.MultiTaskGP | None = None
    for name in args.variants:
        kind, params = VARIANTS[name]
        began = time.perf_counter()
        model = fitted(kind, params, train, tasks)
        guess = predicted(model, test, tasks)
        seconds = time.perf_counter() - began
        mse = float(((test.y - guess) ** 2).mean())
        lines.append(f"| {name} | {explained(test.y, guess):.2f} | {mse:.2f} | {seconds:.0f} |")
        print(lines[-1], flush=True)
        if name == "gp":
            base = model
    variance = float(((test.y - test.y.mean()) ** 2).mean())
    cell = within_cells(frame[kept])
    ceiling = 100 * (1 - cell / float(frame["exam_score"][kept].var()))
    lines += ["", f"Test scores' variance {variance:.1f}; 38.5% asks a test MSE of "
              f"{(1 - 0.385) * variance:.2f}. Pupils identical in school and all 27 columns: "
              f"variance {cell:.1f} within their cells (all their rows), so no model of these "
              f"columns explains more than about {ceiling:.1f}% "
              "of the scores."]  # fmt: skip
    if base is not None:
        left, noise = error_left(base, test)
        lines += ["", f"gp's posterior: variance of its function at the test pupils {left:.2f} a "
                  f"pupil through the warp ({100 * left / variance:.1f} points of explained "
                  f"variance), predictive noise {noise:.1f} a pupil."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
