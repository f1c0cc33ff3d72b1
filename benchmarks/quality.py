"""Learning quality against the classic models, on the shared data sets' fixed splits.

Suites (`--suite`):
- `school`: 139 schools as tasks from the `school_id` column (`tasks: {from_column: ...}`),
  target exam_score, features x0..x26, the ten split files; pooled explained variance (%), as
  BASELINES.md defines it, and the task mean of the RMSE.
- `parkinsons`: 42 patients as tasks from `subject#`, target total_UPDRS, features age, sex
  and the 16 voice measures (as BASELINES.md: not test_time, along which the scores are
  linearly interpolated), the ten split files; pooled and task-mean MAE.
- `parkinsons-new-patient`: motor_UPDRS and total_UPDRS as two tasks on splits that hold out
  whole patients (`split.by: subject#`, seeds 0..9): the honest "new patient" question.
- `school-pass`: School as 139 binary tasks, a pupil's exam score above the median (19; 48%
  of pupils), School's features and split files: many small classification tasks; the task
  mean of each school's AUC (as classification MTL papers report it) and the pooled AUC.

Every split: polytask models with fixed settings (nothing tuned on test rows: the settings are
the library defaults or those listed here, chosen before any test score was read), and the
classic baselines of `compare` (`polytask.analysis.classic_baselines`: settings by CV on the
training rows) on the same rows. Some models choose a setting or two by CV on each split's
training rows (`GRIDS`), and on the new-patient suite the EW network and the single-task
networks are tuned by `polytask tune` on each split (`TUNED`: MTL and its baselines by the
same protocol). Results: benchmarks/results/quality_<suite>.md, with the
commit, the settings and the splits.

    python benchmarks/quality.py --suite school [--splits 10] [--threads 1] [--data DIR]

`--data`: the folder of the shared data sets, where it is not ../shared/datasets beside the
repository.

Each split's figures are also kept in results/quality_<suite>.splits.csv (model, split,
figures, commit), so a long suite can be run a few splits at a time: `--first 3 --splits 6`
runs splits 3-5, and each row of the table is the mean over every split kept for it, its name
saying which splits when they are fewer than the suite's.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import math
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from polytask import TrainConfig
from polytask.analysis._baselines import fit_single_task
from polytask.analysis._classic import classic_baselines
from polytask.analysis._tune import clear_gain, tune
from polytask.app import BalancerConfig, ModelConfig, PreparedData, RunConfig, fit, prepare
from polytask.app._config import BlendMember, DataConfig, FeaturesConfig, SplitConfig
from polytask.data._tensors import TaskData
from polytask.tasks import Task, TaskColumn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import commit, svg  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "datasets"
VOICE = ["Jitter(%)", "Jitter(Abs)", "Jitter:RAP", "Jitter:PPQ5", "Jitter:DDP", "Shimmer",
         "Shimmer(dB)", "Shimmer:APQ3", "Shimmer:APQ5", "Shimmer:APQ11", "Shimmer:DDA", "NHR",
         "HNR", "RPDE", "DFA", "PPE"]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Suite:
    """A data set, its tasks and features, its splits, and what to report."""

    file: Path
    features: tuple[str, ...]
    tasks: Callable[[], TaskColumn | tuple[Task, ...]]
    split: Callable[[int], SplitConfig]
    metric: str
    """The per-task metric reported (pooled and as a task mean)."""
    classic_rows: tuple[tuple[str, str], ...] = ()
    """BASELINES.md's rows for the suite (name, figure), quoted beside ours."""
    skewed: tuple[str, ...] = ()
    """Positive, right-skewed features a `GRIDS` variant may read as their log (`log: True`)."""
    derive: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    """Adds the suite's target column to the file's rows, where the file has none."""
    models: tuple[str, ...] | None = None
    """The polytask models the suite runs (None: every model that `ONLY` and `GRIDS` allow)."""

    @property
    def headers(self) -> tuple[str, str]:
        """What the table's two figures are: the first ranks the models."""
        return {
            "rmse": ("explained variance % (pooled)", "task mean rmse"),
            "mae": ("MAE (pooled)", "task mean mae"),
            "auc": ("AUC (task mean)", "pooled auc"),
        }[self.metric]

    @property
    def column(self) -> str | None:
        """The column the tasks are made from (its pooled metrics are `"COLUMN: pooled"`)."""
        tasks = self.tasks()
        return tasks.from_column if isinstance(tasks, TaskColumn) else None

    @property
    def higher_first(self) -> bool:
        """Whether the first figure is better high (explained variance, AUC), not low (MAE)."""
        return self.metric != "mae"


def _school(shared: Path = SHARED) -> Suite:
    root = shared / "school"
    return Suite(
        root / "school.csv.gz",
        tuple(f"x{i}" for i in range(27)),
        lambda: TaskColumn("school_id", "exam_score", "regression", name="school{value}"),
        lambda k: SplitConfig(file=str(root / "splits" / f"school_seed{k}.npz")),
        "rmse",
        (("single-task ridge per school", "32.9 ± 0.7"),
         ("one pooled ridge (school ignored)", "33.8 ± 1.0"),
         ("pooled ridge + free school intercepts", "37.1 ± 0.9"),
         ("mean-regularised MTL (Evgeniou & Pontil 2004)", "37.5 ± 0.9"),
         ("gradient boosting, school id as a category", "37.2 ± 0.9")),
    )  # fmt: skip


def _parkinsons(shared: Path = SHARED) -> Suite:
    root = shared / "parkinsons"
    return Suite(
        root / "parkinsons.csv.gz",
        ("age", "sex", *VOICE),  # BASELINES.md: no test_time (the target is interpolated in time)
        lambda: TaskColumn(
            "subject#",
            "total_UPDRS",
            "regression",
            name="patient{value}",
            metrics=("mae", "rmse", "r2"),
        ),
        lambda k: SplitConfig(file=str(root / "splits" / f"parkinsons_seed{k}.npz")),
        "mae",
        (
            ("single-task ridge per patient", "MAE 1.98 ± 0.03"),
            ("mean-regularised MTL", "MAE 1.99 ± 0.03"),
            ("gradient boosting", "MAE 2.05 ± 0.03"),
        ),
        tuple(VOICE),  # every voice measure is a positive ratio or spread (skew up to 7.6)
    )


def _new_patient(shared: Path = SHARED) -> Suite:
    root = shared / "parkinsons"
    return Suite(
        root / "parkinsons.csv.gz",
        ("age", "sex", *VOICE),  # BASELINES.md: no test_time (the target is interpolated in time)
        lambda: (Task("motor", "regression", target="motor_UPDRS", metrics=("mae", "rmse", "r2")),
                 Task("total", "regression", target="total_UPDRS", metrics=("mae", "rmse", "r2"))),
        lambda k: SplitConfig(by="subject#", val_fraction=0.15, test_fraction=0.25, seed=k),
        "mae",
    )  # fmt: skip


def _passed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(passed=(frame["exam_score"] > PASS_MARK).astype(int))


PASS_MARK = 19
"""School's median exam score: `school-pass` asks which pupils score above it."""


def _school_pass(shared: Path = SHARED) -> Suite:
    school = _school(shared)
    return dataclasses.replace(
        school,
        tasks=lambda: TaskColumn("school_id", "passed", "binary", name="school{value}"),
        metric="auc",
        classic_rows=(),
        derive=_passed,
        models=(
            "polytask hard_sharing (64-64), EW",
            "polytask mean_regularised (64-64), EW",
            "polytask mean_regularised, linear",
            "polytask multilevel, linear, L-BFGS (prior by empirical Bayes)",
            "polytask mean_regularised, linear, L-BFGS, coupling by CV",
            *BALANCED,
        ),
    )


SPLITS = 10
"""Split files per suite (seeds 0-9)."""
SUITES = {"school": _school, "parkinsons": _parkinsons, "parkinsons-new-patient": _new_patient,
          "school-pass": _school_pass}  # fmt: skip

GP = "polytask gp: multi-task Gaussian process, Box-Cox warp (all by marginal likelihood)"
"""`gp`: pooled plus per-task kernels and the targets' warp, every hyper-parameter fitted to
the training rows' marginal likelihood (nothing chosen on test rows, no CV needed)."""
BLEND = "polytask multilevel (Σ, log by CV) blended with forest per task (model.blend, w by CV)"
"""polytask's blend: (1 − w) · multilevel + w · `forest` (a random forest per task), w by CV."""

MODELS: dict[str, tuple[ModelConfig, TrainConfig]] = {
    "polytask hard_sharing (64-64), EW": (
        ModelConfig("hard_sharing", {"hidden": (64, 64)}),
        TrainConfig(epochs=30, batch_size=256, lr=1e-3, weight_decay=1e-2, progress=False),
    ),
    "polytask mean_regularised (64-64), EW": (
        ModelConfig("mean_regularised", {"hidden": (64, 64)}),
        TrainConfig(epochs=30, batch_size=256, lr=1e-3, weight_decay=1e-2, progress=False),
    ),
    "polytask mean_regularised (64-64), EW, ensemble of 5": (
        ModelConfig("mean_regularised", {"hidden": (64, 64)}, ensemble=5),
        TrainConfig(epochs=30, batch_size=256, lr=1e-3, weight_decay=1e-2, progress=False),
    ),
    "polytask mean_regularised, linear": (
        ModelConfig("mean_regularised", {"hidden": (), "coupling": 1.0}),
        TrainConfig(epochs=60, batch_size=256, lr=1e-2, weight_decay=0.0, progress=False),
    ),
    "polytask mean_regularised, linear, L-BFGS, coupling by CV": (
        ModelConfig("mean_regularised", {"hidden": ()}),
        TrainConfig(epochs=100, batch_size=1_000_000, lr=1.0, optimizer="lbfgs", progress=False),
    ),
    "polytask multilevel, linear, L-BFGS (prior by empirical Bayes)": (
        ModelConfig("multilevel", {"hidden": ()}),
        TrainConfig(epochs=100, batch_size=1_000_000, lr=1.0, optimizer="lbfgs", progress=False),
    ),
    "polytask multilevel, linear, exact heads (solver exact)": (
        ModelConfig("multilevel", {"hidden": (), "solver": "exact"}),
        TrainConfig(epochs=100, batch_size=1_000_000, lr=1.0, optimizer="lbfgs", progress=False),
    ),
    "polytask multilevel, linear, L-BFGS, Σ and log features by CV": (
        ModelConfig("multilevel", {"hidden": ()}),
        TrainConfig(epochs=100, batch_size=1_000_000, lr=1.0, optimizer="lbfgs", progress=False),
    ),
    "polytask multilevel, linear, log features, full Σ shrunk by CV": (
        ModelConfig("multilevel", {"hidden": (), "covariance": "full"}),
        TrainConfig(epochs=100, batch_size=1_000_000, lr=1.0, optimizer="lbfgs", progress=False),
    ),
    BLEND: (
        ModelConfig("multilevel", {"hidden": ()}),
        TrainConfig(epochs=100, batch_size=1_000_000, lr=1.0, optimizer="lbfgs", progress=False),
    ),
    GP: (  # grown in its one step
        ModelConfig("gp"),
        TrainConfig(epochs=1, batch_size=1_000_000, lr=1.0, optimizer="lbfgs", progress=False),
    ),
}
"""Fixed settings (the School architectures table's, and the linear classic model's), except
the variants of `GRIDS`."""
BALANCED = {
    f"polytask hard_sharing (64-64), {label}": BalancerConfig(name)
    for name, label in (("uncertainty", "UW"), ("dwa", "DWA"), ("mgda", "MGDA"),
                        ("pcgrad", "PCGrad"), ("cagrad", "CAGrad"), ("nash_mtl", "Nash-MTL"),
                        ("famo", "FAMO"), ("upgrad", "UPGrad"), ("db_mtl", "DB-MTL"))
} | {
    "polytask hard_sharing (64-64), FAMO, loss_average 0.9": BalancerConfig(
        "famo", {"loss_average": 0.9}
    ),
}  # fmt: skip
"""The main balancers, each on the EW network's settings (every other model: EW), and FAMO
with its running mean of each task's loss (its guide's setting for batches that hold a row or
two of each task)."""
MODELS.update({name: MODELS["polytask hard_sharing (64-64), EW"] for name in BALANCED})
SINGLE = "polytask single-task networks (64-64), one per task"
"""One network per task with the EW network's settings: the single-task baseline of the same
size and budget, for suites with a few tasks (`ONLY`)."""
MODELS[SINGLE] = MODELS["polytask hard_sharing (64-64), EW"]
ONLY = {
    SINGLE: ("parkinsons-new-patient",),
    "polytask multilevel, linear, exact heads (solver exact)": ("school", "parkinsons"),
    GP: ("school", "parkinsons"),
}
"""Models run on some suites only (every other model: on every suite, unless `GRIDS` says)."""
TRIALS = 30
"""Optuna trials of each tuned model, on each split."""
TUNED = {
    f"polytask hard_sharing, EW, tuned (polytask tune, {TRIALS} trials)": False,
    f"polytask single-task networks, one per task, tuned (polytask tune --single-task, "
    f"{TRIALS} trials)": True,
}
"""Models whose settings `polytask tune` chooses on each split, by 3-fold cross-validation on
its training rows (whole patients to each fold where the split holds them out), starting from
the EW network's settings and keeping them unless a trial's CV gain is clear, as the command
does; True: the single-task networks, tuned by the same protocol (`--single-task`)."""
MODELS.update({name: MODELS["polytask hard_sharing (64-64), EW"] for name in TUNED})
ONLY.update({name: ("parkinsons-new-patient",) for name in TUNED})
Variant = dict[str, object]
"""Model parameters to set, `log: True` to read the suite's `skewed` features as logs, and
`forest: w` to blend the model with a `forest` per task (`model.blend`), weighing it w."""
GRIDS: dict[str, dict[str, tuple[Variant, ...]]] = {
    "polytask mean_regularised, linear, L-BFGS, coupling by CV": {
        "school": tuple({"coupling": c} for c in (1, 3, 10, 30)),
        "school-pass": tuple({"coupling": c} for c in (1, 3, 10, 30)),
        "parkinsons": tuple({"coupling": c} for c in (0.1, 0.3, 1, 3)),
    },
    "polytask multilevel, linear, L-BFGS, Σ and log features by CV": {
        "parkinsons": tuple({"covariance": c, "log": log}
                            for c in ("diagonal", "full") for log in (False, True)),
    },
    "polytask multilevel, linear, log features, full Σ shrunk by CV": {
        "parkinsons": tuple({"log": True, "shrinkage": s} for s in (0.0, 0.1, 0.2, 0.4)),
    },
    BLEND: {
        "parkinsons": tuple({"covariance": c, "log": log, "forest": w}
                            for c in ("diagonal", "full") for log in (False, True)
                            for w in (0.0, 0.25, 0.5, 0.75, 1.0)),
    },
}  # fmt: skip
"""Variants chosen per split by cross-validation on its training rows only (the split file's
`train_cv_fold`): the one with the best mean pooled figure over the folds. The couplings per
suite (Parkinsons': 1 was chosen on every split from 1, 3, 10, 30, so lower ones too)."""
WHOLE_TRAIN = {
    ("parkinsons", "polytask mean_regularised, linear, L-BFGS, coupling by CV"),
    ("school", "polytask multilevel, linear, L-BFGS (prior by empirical Bayes)"),
    ("school-pass", "polytask multilevel, linear, L-BFGS (prior by empirical Bayes)"),
    ("school", "polytask multilevel, linear, exact heads (solver exact)"),
    ("parkinsons", "polytask multilevel, linear, exact heads (solver exact)"),
    ("parkinsons", "polytask multilevel, linear, L-BFGS (prior by empirical Bayes)"),
    ("parkinsons", "polytask multilevel, linear, L-BFGS, Σ and log features by CV"),
    ("parkinsons", BLEND),
    ("parkinsons", "polytask multilevel, linear, log features, full Σ shrunk by CV"),
    ("school", GP),
    ("parkinsons", GP),
}
"""(suite, model) trained on all the training rows, as the classic models are: no validation
part (a convex model trained to its optimum needs no early stopping). Not School's yet: without
early stopping each of its 100 steps runs all 20 L-BFGS iterations, five times as long."""


def _pooled(
    data: PreparedData, per_task: dict[str, float], metric: str, pooled_auc: float = math.nan
) -> tuple[float, float]:
    """(pooled figure, task mean) from per-task test metrics: School's explained variance from
    the RMSEs and row counts, or the row-weighted MAE; for AUC (task mean, `pooled_auc`), the
    mean over the tasks whose test rows hold both classes."""
    if metric == "auc":
        defined = [v for v in per_task.values() if math.isfinite(v)]
        return float(np.mean(defined)), pooled_auc
    test = data.test
    counts, values, ys = [], [], []
    for task in data.tasks:
        if task.name not in per_task:
            continue
        y = test.targets[task.name].numpy()  # type: ignore[union-attr]
        keep = ~np.isnan(y)
        mean, std = test.target_scale[task.name]  # type: ignore[union-attr]
        counts.append(int(keep.sum()))
        values.append(per_task[task.name])
        ys.append(y[keep] * std + mean)
    n, v = np.array(counts), np.array(values)
    if metric == "rmse":
        every = np.concatenate(ys)
        pooled = 100 * (1 - float((v**2 * n).sum()) / float(((every - every.mean()) ** 2).sum()))
    else:
        pooled = float((v * n).sum() / n.sum())
    return pooled, float(v.mean())


Predictions = dict[str, tuple[np.ndarray, np.ndarray]]
"""Per task: (predictions, targets) on its labelled test rows, in original units."""
Cache = dict[str, Predictions]
"""Test predictions by what made them (a fit is reused by the variants that share it)."""


def _score(
    suite: Suite,
    frame: pd.DataFrame,
    model: ModelConfig,
    training: TrainConfig,
    split: SplitConfig,
    variant: Variant | None = None,
    cache: Cache | None = None,
    balancer: BalancerConfig | None = None,
    single: bool = False,
) -> tuple[float, float]:
    """(pooled figure, task mean) of `model` with `variant` (its parameters; `log`: the
    suite's skewed features read as their logarithm; `forest: w`: blended with a `forest` per
    task) and `balancer` (EW by default) trained on `split`'s training rows and scored on its
    test rows; `single`: one such model per task instead of one for all. Under cross-validation
    (`cache` given) a blend's weights share its members' fits: its figure is computed from
    their predictions, as the served blend computes it; otherwise the blend is trained as
    polytask serves it (`model.blend`) and scored through its trainer."""
    model, log, weight = _apply(model, variant or {})
    features = FeaturesConfig(numeric=suite.features, log=suite.skewed if log else ())
    config = RunConfig(
        data=DataConfig(path=str(suite.file), features=features, split=split),
        tasks=suite.tasks(), model=model, training=training,
        balancer=balancer or BalancerConfig(),
    )  # fmt: skip
    blended = "forest" in (variant or {})
    if not blended or cache is None:
        config = _with_forest(config, weight) if blended else config
        data = _prepare(config, frame)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            models = fit_single_task(config, data, None, "STL") if single else [fit(config, data)]
        per_task: dict[str, float] = {}
        pooled = math.nan
        for fitted in models:
            assert fitted.trainer is not None
            metrics = fitted.trainer.evaluate(data.test, summaries=not single)
            per_task |= {n: float(metrics[n][suite.metric]) for n in fitted.model.task_names}
            pooled = float(metrics.get(f"{suite.column}: pooled", {}).get(suite.metric, math.nan))
        return _pooled(data, per_task, suite.metric, pooled)
    # variants that differ only in the weight share their fits: nothing is prepared twice
    cache = {} if cache is None else cache
    network = _cached(cache, repr((config, "model")),
                      lambda: _network(config, _prepare(config, frame)))  # fmt: skip
    alone = _with_forest(config, 1.0)
    forest = _cached(cache, repr((alone.data, training.seed, "forest")),  # its features' logs too
                     lambda: _network(alone, _prepare(alone, frame)))  # fmt: skip
    blend = {
        name: ((1 - weight) * p + weight * forest[name][0], y) for name, (p, y) in network.items()
    }
    return _figures(blend, suite.metric)


def _prepare(config: RunConfig, frame: pd.DataFrame) -> PreparedData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare(config, frame)


def _cached(cache: Cache, key: str, make: Callable[[], Predictions]) -> Predictions:
    if key not in cache:
        cache[key] = make()
    return cache[key]


def _network(config: RunConfig, data: PreparedData) -> Predictions:
    """The polytask model of `config` trained on `data`'s training rows: its test predictions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = fit(config, data)
    assert fitted.trainer is not None
    test = data.test
    assert isinstance(test, TaskData)
    predicted = fitted.trainer.predict(test.x)
    return {t.name: _original(test, t.name, predicted[t.name].numpy()) for t in data.tasks}


def _with_forest(config: RunConfig, weight: float) -> RunConfig:
    """`config`'s model blended with a `forest` per task weighing `weight` (`model.blend`; the
    forest alone at 1, the model alone at 0); the forest grows in its one epoch."""
    if weight == 0:
        return config
    if weight == 1:
        training = dataclasses.replace(config.training, epochs=1)
        return dataclasses.replace(config, model=ModelConfig("forest"), training=training)
    member = BlendMember("forest", weight, training={"epochs": 1})
    return dataclasses.replace(config, model=dataclasses.replace(config.model, blend=(member,)))


def _original(test: TaskData, name: str, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, targets) of task `name` on its labelled test rows, in original units."""
    y = test.targets[name].numpy().reshape(-1)
    keep = ~np.isnan(y)
    mean, std = test.target_scale[name]
    return predicted.reshape(-1)[keep] * std + mean, y[keep] * std + mean


def _figures(predictions: Predictions, metric: str) -> tuple[float, float]:
    """(pooled figure, task mean) of per-task predictions: explained variance (%) and the task
    mean RMSE, or the pooled and task mean MAE."""
    if metric not in ("rmse", "mae"):
        raise ValueError(f"blends are scored on regression suites only, not by {metric}")
    if metric == "rmse":
        errors = np.concatenate([p - y for p, y in predictions.values()])
        every = np.concatenate([y for _, y in predictions.values()])
        pooled = 100 * (1 - float((errors**2).sum()) / float(((every - every.mean()) ** 2).sum()))
        per_task = [float(np.sqrt(((p - y) ** 2).mean())) for p, y in predictions.values()]
        return pooled, float(np.mean(per_task))
    errors = np.concatenate([np.abs(p - y) for p, y in predictions.values()])
    per_task = [float(np.abs(p - y).mean()) for p, y in predictions.values()]
    return float(errors.mean()), float(np.mean(per_task))


def _apply(model: ModelConfig, variant: Variant) -> tuple[ModelConfig, bool, float]:
    """`model` with `variant`'s parameters, whether it reads the skewed features as logs, and
    the weight of the forests blended in."""
    params = {k: v for k, v in variant.items() if k not in ("log", "forest")}
    model = dataclasses.replace(model, params={**model.params, **params})
    return model, bool(variant.get("log")), float(variant.get("forest", 0.0))  # type: ignore[arg-type]


def choose_by_cv(
    suite: Suite,
    frame: pd.DataFrame,
    model: ModelConfig,
    training: TrainConfig,
    split: SplitConfig,
    variants: tuple[Variant, ...],
    scratch: Path,
    balancer: BalancerConfig | None = None,
) -> Variant:
    """The variant with the best mean pooled figure over the split file's `train_cv_fold`
    folds: each fold's rows held out in turn from the training rows (the test rows are never
    read), each trained with `balancer` (EW by default), as the final model is."""
    if split.file is None:
        raise SystemExit("a grid needs a split file with train_cv_fold")
    saved = np.load(split.file)
    train, folds = np.asarray(saved["train_idx"]), np.asarray(saved["train_cv_fold"])
    better = 1.0 if suite.higher_first else -1.0  # high explained variance or AUC, low MAE
    means = []
    cache: Cache = {}
    for variant in variants:
        figures = []
        for fold in np.unique(folds):
            held = scratch / f"fold{fold}.npz"
            if not held.is_file():
                np.savez(held, train_idx=train[folds != fold], test_idx=train[folds == fold])
            fold_split = dataclasses.replace(split, file=str(held))
            scored = _score(suite, frame, model, training, fold_split, variant, cache, balancer)
            figures.append(scored[0])
        means.append(better * float(np.mean(figures)))
    return variants[int(np.argmax(means))]


def tuned_settings(
    suite: Suite, model: ModelConfig, training: TrainConfig, split: SplitConfig, single: bool
) -> Variant:
    """The settings `polytask tune` chooses for `model` and `training` on `split`'s training
    rows (its default search space; the test rows are never read): the best trial's when its
    cross-validated gain over the settings as given is clear, else none (as the command keeps
    the config); `single`: for the single-task networks (`--single-task`)."""
    base = RunConfig(
        data=DataConfig(path=str(suite.file), features=FeaturesConfig(numeric=suite.features),
                        split=split),
        tasks=suite.tasks(), model=model, training=training,
    )  # fmt: skip

    def parse(raw: Mapping[str, Any]) -> RunConfig:  # raw: tune's nested form of the settings
        dotted = {f"{part}.{k}": v for part in ("training", "model")
                  for k, v in raw.get(part, {}).items()}  # fmt: skip
        chosen, taught = with_tuned(model, training, dotted)
        return dataclasses.replace(base, model=chosen, training=taught)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = tune({}, parse, TRIALS, folds=3, seed=training.seed, single_task=single)
    best = result.best
    return dict(best["settings"]) if best is not None and clear_gain(best) else {}


def with_tuned(
    model: ModelConfig, training: TrainConfig, settings: Variant
) -> tuple[ModelConfig, TrainConfig]:
    """`model` and `training` with tuned `settings` (`training.lr`; the model's own parameters
    by name, with or without `model.`)."""
    train: dict[str, Any] = {
        k.split(".", 1)[1]: v for k, v in settings.items() if k.startswith("training.")
    }
    params = {k.removeprefix("model."): tuple(v) if isinstance(v, list) else v
              for k, v in settings.items() if not k.startswith("training.")}  # fmt: skip
    return (dataclasses.replace(model, params={**model.params, **params}),
            dataclasses.replace(training, **train))  # fmt: skip


Scores = tuple[float, float, float]
"""(pooled figure, task mean, fit seconds) of one model on one split."""
FIGURES = ("first figure", "second figure")  # a file's names when no suite gives them


def read_store(path: Path | None) -> dict[str, dict[int, Scores]]:
    """The per-split figures kept in `path` (the latest for each model and split)."""
    if path is None or not path.is_file():
        return {}
    kept: dict[str, dict[int, Scores]] = {}
    table = pd.read_csv(path)  # by position: model, split, the two figures, seconds, commit
    for model, split, *figure in table.iloc[:, :5].itertuples(index=False):
        kept.setdefault(str(model), {})[int(split)] = (*map(float, figure),)  # type: ignore[assignment]
    return kept


def keep(path: Path | None, model: str, split: int, figure: Scores,
         headers: tuple[str, str] = FIGURES) -> None:  # fmt: skip
    """Append one model's figures on one split to `path` (as they come: a stopped run keeps
    the splits it finished); a new file's columns name the figures by the suite's `headers`."""
    if path is None:
        return
    new = not path.is_file()
    with path.open("a", newline="") as out:
        rows = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC)
        if new:
            rows.writerow(["model", "split", *headers, "seconds", "commit"])
        rows.writerow([model, split, *figure, commit()])


def splits_label(splits: Sequence[int]) -> str:
    """A row's name suffix for the splits it covers: none for all the suite's, ` (splits 0-2)`
    for a run of them, ` (splits 0, 2, 5)` otherwise."""
    done = sorted(splits)
    if done == list(range(SPLITS)):
        return ""
    if done == list(range(done[0], done[-1] + 1)):
        return f" (splits {done[0]}-{done[-1]})" if len(done) > 1 else f" (split {done[0]})"
    return " (splits " + ", ".join(map(str, done)) + ")"


def run(
    suite_name: str,
    splits: int,
    threads: int,
    classic: bool,
    quick: bool = False,
    models: list[str] | None = None,
    first: int = 0,
    store: Path | None = None,
    shared: Path = SHARED,
) -> tuple[str, str]:
    """The suite's table (markdown) and its plot (SVG) from splits `first`..`splits` - 1 and,
    for the same models, the other splits kept in `store` (each split's figures are added to
    it); `quick`: 5 epochs per model (a check that it runs; nothing stored or read);
    `models`: only the polytask models whose names contain one of these (none for [])."""
    chosen = {n: m for n, m in MODELS.items() if models is None or any(k in n for k in models)}
    chosen = {n: m for n, m in chosen.items() if n not in GRIDS or suite_name in GRIDS[n]}
    chosen = {n: m for n, m in chosen.items() if suite_name in ONLY.get(n, (suite_name,))}
    suite = SUITES[suite_name](shared)
    chosen = {n: m for n, m in chosen.items() if suite.models is None or n in suite.models}
    if not suite.file.is_file():
        raise SystemExit(
            f"{suite.file} not found: the suite reads the shared data sets "
            f"({shared}); give their folder with --data DIR"
        )
    torch.set_num_threads(threads)
    frame = pd.read_csv(suite.file)
    derived = tempfile.TemporaryDirectory()  # the derived rows, where the config must read them
    if suite.derive:
        frame = suite.derive(frame)
        suite = dataclasses.replace(suite, file=Path(derived.name) / suite.file.name)
        frame.to_csv(suite.file, index=False)
    store = None if quick else store
    scores: dict[str, dict[int, Scores]] = {}
    chosen_values: dict[str, list[Variant]] = {}
    started = time.perf_counter()
    features = FeaturesConfig(numeric=suite.features)
    for k in range(first, splits):
        for name, (model, training) in chosen.items():
            epochs = 5 if quick else training.epochs
            training = dataclasses.replace(training, seed=k, epochs=epochs)
            began = time.perf_counter()
            split = suite.split(k)
            if (suite_name, name) in WHOLE_TRAIN:
                split = dataclasses.replace(split, val_fraction=0.0)
            variant: Variant | None = None
            if name in TUNED:  # the tuned settings go into the model's config itself
                tuned = tuned_settings(suite, model, training, split, TUNED[name])
                chosen_values.setdefault(name, []).append(tuned)
                model, training = with_tuned(model, training, tuned)
            elif name in GRIDS:
                with tempfile.TemporaryDirectory() as scratch:
                    variant = choose_by_cv(suite, frame, model, training, split,
                                           GRIDS[name][suite_name], Path(scratch),
                                           BALANCED.get(name))  # fmt: skip
                chosen_values.setdefault(name, []).append(variant)
            single = name == SINGLE or TUNED.get(name, False)
            figure = (*_score(suite, frame, model, training, split, variant,
                              balancer=BALANCED.get(name), single=single),
                      time.perf_counter() - began)  # fmt: skip
            scores.setdefault(name, {})[k] = figure
            keep(store, name, k, figure, suite.headers)
            print(suite_name, k, name, [round(x, 3) for x in figure], flush=True)
        if classic:
            base = RunConfig(
                data=DataConfig(path=str(suite.file), features=features, split=suite.split(k)),
                tasks=suite.tasks(), training=TrainConfig(seed=k),
            )  # fmt: skip
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = prepare(base, frame)
                result = classic_baselines(data, seed=k)
            for model_name, per_task in result.metrics.items():
                column = result.pooled.get(model_name, {}).get(suite.column or "", {})
                pooled = column.get(suite.metric, math.nan)
                figure = (*_pooled(data, per_task, suite.metric, pooled),
                          result.seconds[model_name])  # fmt: skip
                scores.setdefault(f"classic: {model_name}", {})[k] = figure
                keep(store, f"classic: {model_name}", k, figure, suite.headers)
                print(suite_name, k, model_name, [round(x, 3) for x in figure], flush=True)
    minutes = (time.perf_counter() - started) / 60
    stored = read_store(store)
    for name, ran in scores.items():  # this run's splits, and the others kept for the model
        scores[name] = {**stored.get(name, {}), **ran}
    # a quick run is a smoke check of the code: its rows are not figures of any splits
    part = {name: "" if quick else splits_label(list(ran)) for name, ran in scores.items()}
    what, second = suite.headers
    run_now = f"split {first}" if splits - first == 1 else f"splits {first}-{splits - 1}"
    lines = [
        f"# Quality: {suite_name}"
        + (" (quick smoke run: not the suite's figures)" if quick else ""),
        "",
        *(
            [
                "**A smoke run** (`--quick`): 5 epochs a model, no per-split file read or written; "
                "it checks that the suite runs, and its figures mean nothing more.",
                "",
            ]
            if quick
            else []
        ),
        f"Commit `{commit()}`; {run_now} run now ({suite.split(first)!r} for "
        f"the first), "
        f"{'no other splits' if quick else 'other splits as kept in the per-split file'}; features "
        f"{len(suite.features)}; {threads} thread(s); {minutes:.1f} min. polytask models: fixed "
        "settings (below), seed = split number, validation 15% of the training rows carved "
        "within each task (each ensemble member its own); nothing tuned on test rows. Classic "
        "models: `compare`'s, settings by CV on the training rows. Mean ± std over the splits.",
        "",
        f"| model | {what} | {second} | fit s |",
        "|---|---|---|---|",
    ]
    sign = -1.0 if suite.higher_first else 1.0  # best first
    order = sorted(scores, key=lambda n: sign * np.mean([r[0] for r in scores[n].values()]))
    digits = 4 if suite.metric == "auc" else 2
    for name in order:
        a = np.array(list(scores[name].values()))
        lines.append(
            f"| {name}{part[name]} | {a[:, 0].mean():.{digits}f} ± {a[:, 0].std():.{digits}f} | "
            f"{a[:, 1].mean():.{digits + 1}f} ± {a[:, 1].std():.{digits + 1}f} | "
            f"{a[:, 2].mean():.0f} |"
        )
    if suite.classic_rows:
        lines += ["", "BASELINES.md's rows on the same splits (classic, by CV on train):", ""]
        lines += [f"- {name}: {figure}" for name, figure in suite.classic_rows]
    lines += ["", "Settings of the polytask models:", ""]
    for name, (model, training) in chosen.items():
        ensemble = f" (ensemble of {model.ensemble})" if model.ensemble > 1 else ""
        grid = ""
        if (suite_name, name) in WHOLE_TRAIN:
            grid = "; trained on all the training rows (no validation part)"
        if name in GRIDS and suite_name in GRIDS[name]:
            grid += (f"; by CV on each split's training rows from "
                     f"{_variants(GRIDS[name][suite_name])} (chosen per split: "
                     f"{_variants(chosen_values.get(name, []))})")  # fmt: skip
        if name in TUNED:
            grid += (f"; tuned on each split from these settings by `polytask tune` "
                     f"({TRIALS} trials, 3-fold CV on its training rows, kept unless a trial's "
                     f"CV gain is clear; chosen per split: "
                     f"{_variants(chosen_values.get(name, []))})")  # fmt: skip
        if name in BALANCED:
            given = BALANCED[name]
            ensemble += f"; balancer {given.name}" + (f" {given.params}" if given.params else "")
        lines.append(f"- {name}{part[name]}: {model.architecture} {model.params}{ensemble}; epochs "
                     f"{5 if quick else training.epochs}, batch {training.batch_size}, optimizer "
                     f"{training.optimizer}, lr {training.lr}, weight decay "
                     f"{training.weight_decay}{grid}")  # fmt: skip
    figures = {n + part[n]: (float(np.mean([r[0] for r in v.values()])),
                             float(np.std([r[0] for r in v.values()])))
               for n, v in scores.items()}  # fmt: skip
    derived.cleanup()
    return "\n".join(lines) + "\n", plot(suite_name, suite, figures, what)


def _variants(variants: Sequence[Variant]) -> str:
    """Variants as the table's settings list them: `coupling 3`, `full Σ, log`."""

    def one(variant: Variant) -> str:
        words = [
            f"{v} Σ" if k == "covariance" else f"{k.split('.')[-1]} {_short(v)}"
            for k, v in variant.items()
            if k != "log"
        ]
        words += ["log"] if variant.get("log") else []
        return ", ".join(words) or "defaults"

    return "[" + "; ".join(one(v) for v in variants) + "]"


def _short(value: object) -> str:
    """A setting as the table lists it: floats to three significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def plot(name: str, suite: Suite, figures: dict[str, tuple[float, float]], what: str) -> str:
    """Each model's pooled figure (mean ± std over the splits) as a bar, BASELINES.md's rows as
    dashed lines."""
    order = sorted(figures, key=lambda n: figures[n][0])

    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        means = [figures[n][0] for n in order]
        stds = [figures[n][1] for n in order]
        colours = ["tab:blue" if n.startswith("polytask") else "tab:grey" for n in order]
        axes.barh(range(len(order)), means, xerr=stds, color=colours)
        axes.set_yticks(range(len(order)), [n.replace("polytask ", "") for n in order])
        for label, figure_text in suite.classic_rows:
            value = float(figure_text.split("±")[0].split()[-1])
            axes.axvline(value, color="tab:red", linewidth=0.8, linestyle="--")
            axes.annotate(label, (value, len(order) - 0.5), rotation=90, fontsize=6,
                          va="top", ha="right", color="tab:red")  # fmt: skip
        low = min(m - s for m, s in zip(means, stds, strict=True))
        axes.set_xlim(left=max(0.0, low - 0.05 * max(means)))
        axes.set_xlabel(what + " (blue: polytask; dashed: BASELINES.md)")
        axes.set_title(f"{name}: mean ± std over the splits")

    return svg(draw, (7.0, 0.45 * len(order) + 1.6))


ROW = re.compile(r"^\| (.+?) \| ([-\d.]+) ± [\d.]+ \|.*$", flags=re.M)
SETTING = re.compile(r"^- (polytask .+?): .*$", flags=re.M)


KEPT = re.compile(r" \(kept from `\w+`\)$")
PART = re.compile(r" \(splits? [\d, -]+\)$")


def _model(row: str) -> str:
    """A table row's model: its name without the kept and splits marks."""
    return PART.sub("", KEPT.sub("", row))


def merge(old: str, new: str, higher_first: bool) -> str:
    """`new`'s table and settings with the rows of `old` for models `new` did not run (a
    rerun of some models with --models, or without the classic ones), each marked as kept
    from the commit that measured it."""
    fresh = {_model(m.group(1)) for m in ROW.finditer(new)}
    kept = [m for m in ROW.finditer(old) if _model(m.group(1)) not in fresh]
    if not kept:
        return new
    before = re.search(r"^Commit `(\w+)`", old, flags=re.M)
    mark = f" (kept from `{before.group(1) if before else '?'}`)"
    rows = [(m.group(1), float(m.group(2)), m.group(0)) for m in ROW.finditer(new)]
    rows += [(m.group(1), float(m.group(2)), m.group(0) if KEPT.search(m.group(1)) else
              m.group(0).replace(f"| {m.group(1)} |", f"| {m.group(1)}{mark} |"))
             for m in kept]  # fmt: skip
    rows.sort(key=lambda r: -r[1] if higher_first else r[1])
    lines = new.splitlines()
    first = next(i for i, line in enumerate(lines) if ROW.match(line))
    last = max(i for i, line in enumerate(lines) if ROW.match(line))
    note = ("Rows marked (kept from `commit`) were not rerun: that commit measured them on "
            "the same split files (all ten, unless its name gives fewer).")  # fmt: skip
    body = lines[:first] + [r[2] for r in rows] + lines[last + 1 :]
    # a model's name may hold ": " itself, so its settings line is matched by the whole name
    # (with or without the splits mark of an earlier, partial run of it)
    rerun = re.compile(
        "|".join(rf"- {re.escape(name)}(?: \(splits? [\d, -]+\))?: " for name in fresh) or "(?!)"
    )
    kept_settings = [m.group(0) for m in SETTING.finditer(old) if not rerun.match(m.group(0))]
    return "\n".join([*body, *kept_settings, "", note]) + "\n"


REFERENCE = "classic: linear per task"
"""The single-task model each table's Δ column compares with: a ridge or logistic regression
per task, its penalty by CV (every suite has it; per-task networks are weaker on small tasks)."""
DELTA = f"Δ vs {REFERENCE.removeprefix('classic: ')} %"
DELTA_NOTE = (
    f"{DELTA}: each model's task-mean figure against `{REFERENCE}`'s (the single-task model: "
    "a ridge or logistic regression per task, its penalty by CV), positive when better: the "
    "relative change of the task mean, where Δm proper averages each task's own change."
)


def with_delta(text: str, suite: Suite) -> str:
    """`text`'s table with a last column Δ: each model's task-mean figure against the
    single-task `REFERENCE` row's, in % (positive: better; the relative change of the task
    mean, where Δm proper averages each task's own change); blank without that row. A Δ
    column already there is computed again (rows kept from an earlier table carry one)."""
    lines = text.splitlines()
    at = [i for i, line in enumerate(lines) if ROW.match(line)]
    if not at:
        return text

    def first_four(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")][:4]

    cells = {i: first_four(lines[i]) for i in at}
    column = 1 if suite.metric == "auc" else 2  # the task-mean figure: AUC, or an error
    base = next((float(c[column].split(" ± ")[0]) for c in cells.values()
                 if _model(c[0]) == REFERENCE), None)  # fmt: skip
    for i, row in cells.items():
        value = float(row[column].split(" ± ")[0])
        if base is None or not math.isfinite(value) or base == 0:
            delta = "–"
        else:
            change = 100 * (value - base) / base * (1 if suite.metric == "auc" else -1)
            delta = "0" if _model(row[0]) == REFERENCE else f"{change:+.2f}"
        lines[i] = "| " + " | ".join([*row, delta]) + " |"
    head = at[0] - 2  # the header row, then its rule
    lines[head] = "| " + " | ".join([*first_four(lines[head]), DELTA]) + " |"
    lines[head + 1] = "|---" * 5 + "|"
    if DELTA_NOTE not in text:
        lines[at[-1] + 1 : at[-1] + 1] = ["", DELTA_NOTE]
    return "\n".join(lines) + "\n"


def replot(suite_name: str, text: str) -> str:
    """The plot of a results table's rows (rows kept from an earlier run under their names)."""
    rows = re.findall(r"^\| (.+?)(?: \(kept.*?\))? \| ([-\d.]+) ± ([\d.]+) \|", text, flags=re.M)
    figures = {n: (float(m), float(sd)) for n, m, sd in rows}
    suite = SUITES[suite_name]()
    return plot(suite_name, suite, figures, suite.headers[0])


def main(argv: list[str] | None = None) -> None:
    # the "task is degrading" alerts of 139 small tasks would bury the progress lines
    logging.getLogger("polytask").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=list(SUITES), default="school")
    parser.add_argument("--splits", type=int, default=10, help="run the splits below this")
    parser.add_argument("--first", type=int, default=0, help="the first split to run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=SHARED,
                        help=f"the shared data sets' folder (default {SHARED})")  # fmt: skip
    parser.add_argument("--no-classic", dest="classic", action="store_false")
    parser.add_argument("--quick", action="store_true", help="5 epochs per model (a smoke run)")
    parser.add_argument("--out", help="results file (default results/quality_<suite>.md)")
    parser.add_argument("--models", nargs="+", help="only the polytask models naming one of these")
    parser.add_argument("--only-classic", action="store_true", help="no polytask model")
    parser.add_argument("--replot", action="store_true",
                        help="only draw the table's plot and fill its Δ column again")  # fmt: skip
    args = parser.parse_args(argv)
    stem = f"quality_{args.suite.replace('-', '_')}"
    out = Path(args.out or HERE / "results" / f"{stem}.md")
    if args.replot:  # the plot and the Δ column again from the table's rows
        text = with_delta(out.read_text(), SUITES[args.suite](args.data))
        image = replot(args.suite, text)
        out.write_text(text)
    else:
        if not 0 <= args.first < args.splits <= SPLITS:
            parser.error(f"--first and --splits: 0 <= first < splits <= {SPLITS}")
        text, image = run(args.suite, args.splits, args.threads, args.classic, args.quick,
                          [] if args.only_classic else args.models, args.first,
                          out.with_suffix(".splits.csv"),
                          args.data)  # fmt: skip
        partial = args.models or args.only_classic or not args.classic
        if partial and out.is_file() and not args.quick:
            text = merge(out.read_text(), text, SUITES[args.suite](args.data).higher_first)
            image = replot(args.suite, text)
        text = with_delta(text, SUITES[args.suite](args.data))
        out.write_text(text)
    picture = out.with_suffix(".svg") if args.out else HERE.parent / "docs" / "img" / f"{stem}.svg"
    picture.write_text(image)
    print(text)


if __name__ == "__main__":
    main()
