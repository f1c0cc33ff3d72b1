"""Classic baselines beside the neural ones (scikit-learn, on the same split): a linear model
per task (ridge or logistic regression), one pooled linear model over tasks made from one
column, gradient boosting (per task, or pooled with the task as a feature), and a random forest
per task for tasks made from one column (many small tasks, where forests are a strong
single-task model). A multi-task network is worth its complexity only if it beats these, so
`compare` reports Δm against them.

Each model trains on the training and validation rows (the neural models use the validation
rows to pick their checkpoint; here cross-validation on those rows picks the settings: the
penalty of the linear models, the learning rate and tree size of boosting; the out-of-bag
score picks the forests' leaf size) and is scored once on the test rows, with the tasks' own
metrics in original units. Where the split holds out whole groups (`split.by`: new patients,
new schools), the cross-validation folds keep each group whole too, so the settings are chosen
for new groups as the test asks, not for rows whose twins are in training. Tables of rows
only (`TaskData`), and tasks whose kind names a classic stand-in (`TaskKind.classic`: a value
or a class); others are skipped, saying so.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from polytask.app import PreparedData
from polytask.data._tensors import TaskData
from polytask.models._forest import grow_forest
from polytask.tasks._task import Task, reported_tasks
from polytask.train._evaluate import pooled_metrics, task_families

ALPHAS = np.logspace(-3, 4, 15)
"""Ridge penalties tried (leave-one-out cross-validation on the training rows; k-fold by
group where the split holds out whole groups)."""

CS = np.logspace(-3, 3, 7)
"""Inverse logistic penalties tried (k-fold cross-validation on the training rows)."""

BOOSTING_GRID = ({"learning_rate": 0.05, "max_leaf_nodes": 15},
                 {"learning_rate": 0.1, "max_leaf_nodes": 31})  # fmt: skip
"""Gradient boosting settings tried (k-fold cross-validation on the training rows): these two,
small trees learning slowly or larger ones faster (until this version every combination of
their values, four, was tried: twice the fits for the same choice in most data)."""

FOREST_TREES = 100
"""Trees of each random forest."""


MAX_CATEGORIES = 255
"""The most categories a feature of scikit-learn's histogram gradient boosting may have."""


@dataclass
class ClassicResult:
    """Each classic model's primary test metric per task (`metrics[model][task]`), its fitting
    time, and the tasks left out with the reason."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """Models left out, with the reason."""
    pooled: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """`pooled[model][column]`: every metric of the test rows of the tasks made from `column`
    scored together (each row predicted for its own task), for the models fitted to them."""

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "seconds": self.seconds, "skipped": self.skipped,
                "notes": self.notes, "pooled": self.pooled}  # fmt: skip


def _part(data: TaskData, task: Task) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, encoded targets, which rows label the task) of one part."""
    target = data.targets[task.name]
    labelled = task.mask(target).cpu().numpy().reshape(len(target), -1)
    mask: np.ndarray = np.asarray(labelled.all(axis=1))
    return data.x.cpu().numpy().reshape(len(data), -1), target.cpu().numpy(), mask


def takes_rows(data: PreparedData) -> bool:
    """Whether the classic models fit these data: every part is table rows in memory."""
    parts = [p for p in (data.train, data.val) if p is not None]
    return all(isinstance(p, TaskData) and p.x.dim() == 2 for p in [*parts, data.test])


def classic_baselines(
    data: PreparedData,
    folds: int = 3,
    seed: int = 0,
    boosting: bool = True,
    forest: bool = True,
) -> ClassicResult:
    """The classic models of the module docs on `data`'s split (`folds`: the k of the
    cross-validation that picks their settings; `boosting`: include gradient boosting;
    `forest`: include the random forests per task)."""
    result = ClassicResult()
    if not takes_rows(data):
        result.skipped = {t.name: "classic baselines take table rows" for t in data.tasks}
        return result
    train, test = _fitting_rows(data)
    groups = data.groups
    if groups is not None and len(groups) != len(train):
        raise ValueError(
            f"data.groups holds {len(groups)} rows, the training and validation parts "
            f"{len(train)}: give the group of each of their rows, in order"
        )
    tasks = [t for t in reported_tasks(data.tasks) if t.name in test.targets]
    for t in tasks:
        if t.kind_spec.classic is None or len(t.target_columns) != 1:
            result.skipped[t.name] = f"a {t.kind} task: no classic model stands in for it"
    chosen = [t for t in tasks if t.name not in result.skipped]
    families = task_families(chosen)
    in_family = {t.name for members in families.values() for t in members}
    alone = [t for t in chosen if t.name not in in_family]
    # each model per task, and the tasks it is fitted to
    Maker = Callable[[Task, np.ndarray, np.ndarray, np.ndarray | None], Any]
    makers: dict[str, tuple[Maker, list[Task]]] = {
        "linear per task": (lambda t, x, y, g: _linear(t, x, y, folds, seed, g), chosen),
    }
    if boosting and alone:
        makers["boosting per task"] = (
            lambda t, x, y, g: _boosting(t, x, y, folds, seed, None, g), alone
        )  # fmt: skip
    if forest and in_family:
        makers["forest per task"] = (
            lambda t, x, y, g: fit_forest(t, x, y, seed),
            [t for t in chosen if t.name in in_family],
        )  # fmt: skip
    if boosting and in_family:
        result.notes.append(
            "boosting per task left out for tasks made from a column (a few rows each: slow "
            "and weak); boosting with the task as a feature "
            + ("and a random forest per task stand in" if forest else "stands in")
        )
    for name, (make, fitted_to) in makers.items():
        started = time.perf_counter()
        scored = {}
        for task in fitted_to:
            x, y, mask = _part(train, task)
            model = make(task, x[mask], y[mask], None if groups is None else groups[mask])
            scored[task.name] = _scored(task, model, test, data)
        if scored:
            _record(result, name, fitted_to, scored, families)
            result.seconds[name] = time.perf_counter() - started
    for column, members in families.items():
        _pooled(result, column, members, train, test, data, folds, seed, boosting, groups)
    return result


def _fitting_rows(data: PreparedData) -> tuple[TaskData, TaskData]:
    """The training and validation rows together (what the classic models fit), and the test
    rows."""
    parts = [p for p in (data.train, data.val) if p is not None]
    train = TaskData(
        torch.cat([p.x for p in parts]),  # type: ignore[union-attr]
        {n: torch.cat([p.targets[n] for p in parts]) for n in parts[0].targets},  # type: ignore[union-attr]
        dict(parts[0].target_scale),  # type: ignore[union-attr]
    )
    test = data.test
    assert isinstance(test, TaskData)
    return train, test


def constant_scores(data: PreparedData) -> dict[str, float]:
    """Each task's primary test metric of one constant prediction for every row: the training
    and validation rows' mean (a value) or class frequencies (a class). A model that does not
    beat it has learnt nothing from the features. Tasks with a classic stand-in, table rows."""
    from sklearn.dummy import DummyClassifier, DummyRegressor

    if not takes_rows(data):
        return {}
    train, test = _fitting_rows(data)
    scores = {}
    for task in reported_tasks(data.tasks):
        if task.name not in test.targets or task.kind_spec.classic is None \
                or len(task.target_columns) != 1:  # fmt: skip
            continue
        x, y, mask = _part(train, task)
        if not mask.any():
            continue
        y = y[mask].reshape(-1)
        model: Any = DummyRegressor() if task.kind_spec.classic == "value" else \
            DummyClassifier(strategy="prior")  # fmt: skip
        model.fit(x[mask], y if task.kind_spec.classic == "value" else y.astype(int))
        value = _scored(task, model, test, data).compute()[task.primary.name]
        if isinstance(value, float) and np.isfinite(value):
            scores[task.name] = float(value)
    return scores


def _pooled(
    result: ClassicResult,
    column: str,
    members: Sequence[Task],
    train: TaskData,
    test: TaskData,
    data: PreparedData,
    folds: int,
    seed: int,
    boosting: bool,
    groups: np.ndarray | None = None,
) -> None:
    """One linear model over the rows of all `members` (the task ignored), and boosting with
    the task as a categorical feature; targets pooled in original units (`groups`: each
    training row's group, kept whole in the cross-validation)."""
    xs, ys, ids, gs = [], [], [], []
    for i, task in enumerate(members):
        x, y, mask = _part(train, task)
        xs.append(x[mask])
        ys.append(_original(task, y[mask], train))
        ids.append(np.full(int(mask.sum()), i))
        gs.append(groups[mask] if groups is not None else np.empty(0))
    x, y, task_id = np.concatenate(xs), np.concatenate(ys), np.concatenate(ids)
    g = np.concatenate(gs) if groups is not None else None
    like = members[0]
    kinds = [(f"pooled linear ({column} ignored)", lambda: _linear(like, x, y, folds, seed, g))]
    if boosting and len(members) > MAX_CATEGORIES:
        result.notes.append(
            f"boosting with {column} as a feature left out: {len(members)} tasks, more than the "
            f"{MAX_CATEGORIES} categories scikit-learn's histogram boosting takes"
        )
    elif boosting:
        with_id = np.column_stack([x, task_id])
        kinds.append((
            f"boosting, {column} as a feature",
            lambda: _boosting(like, with_id, y, folds, seed, with_id.shape[1] - 1, g),
        ))  # fmt: skip
    for name, make in kinds:
        started = time.perf_counter()
        model = make()
        scored = {}
        for i, task in enumerate(members):
            uses_id = name.startswith("boosting")
            scored[task.name] = _scored(task, model, test, data, task_id=i if uses_id else None,
                                        pooled=True)  # fmt: skip
        _record(result, name, members, scored, {column: list(members)})
        result.seconds[name] = time.perf_counter() - started


def _record(
    result: ClassicResult,
    name: str,
    tasks: Sequence[Task],
    scored: dict[str, Any],
    families: dict[str, list[Task]],
) -> None:
    """Model `name`'s primary metric per task from its accumulators (`scored`), and the pooled
    metrics of each family whose every task it was fitted to."""
    result.metrics[name] = {t.name: float(scored[t.name].compute()[t.primary.name])
                            for t in tasks}  # fmt: skip
    for column, members in families.items():
        if all(t.name in scored for t in members):
            pooled = pooled_metrics(members, [scored[t.name] for t in members])
            if pooled is not None:
                result.pooled.setdefault(name, {})[column] = pooled


def _original(task: Task, y: np.ndarray, part: TaskData) -> np.ndarray:
    """Encoded targets in original units (regression: the standardisation undone)."""
    scale = part.target_scale.get(task.name)
    if task.kind_spec.classic == "value" and scale is not None:
        return y.reshape(-1) * scale[1] + scale[0]
    return y.reshape(-1)


def _group_folds(
    y: np.ndarray, groups: np.ndarray, k: int, seed: int, stratify: bool
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """`k` cross-validation folds (fewer where there are fewer groups) that keep each group's
    rows together, as a split by group does (`stratify`: classes balanced across folds);
    None with fewer than two groups."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    k = int(min(k, len(np.unique(groups))))
    if k < 2:
        return None
    splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed) if stratify else \
        GroupKFold(k)  # fmt: skip
    return list(splitter.split(np.zeros(len(y)), y, groups))


def _linear(
    task: Task, x: np.ndarray, y: np.ndarray, folds: int, seed: int,
    groups: np.ndarray | None = None,
) -> Any:  # fmt: skip
    """Ridge (penalty by leave-one-out) or logistic regression (penalty by shuffled,
    stratified k-fold); with
    `groups` (the split holds out whole groups), by k-fold that keeps each group in one fold,
    lest rows of a group on both sides favour a penalty that only memorises groups."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, RidgeCV
    from sklearn.model_selection import StratifiedKFold

    y = y.reshape(-1)
    if task.kind_spec.classic == "value":
        cv = None if groups is None else _group_folds(y, groups, folds, seed, stratify=False)
        with np.errstate(divide="ignore", invalid="ignore"):  # one row: leave-one-out of 0/0
            return RidgeCV(alphas=ALPHAS, cv=cv).fit(x, y)
    y = y.astype(int)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        return _Constant(classes)
    k = int(min(folds, counts.min()))
    split: Any = None
    if k >= 2 and groups is not None:
        split = _group_folds(y, groups, k, seed, stratify=True)
    elif k >= 2:  # shuffled: rows stacked task by task would otherwise fold by whole tasks
        split = StratifiedKFold(k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and fold-size notes of small tasks
        if split is None:
            return LogisticRegression(max_iter=2000).fit(x, y)
        # scored by log loss, the rule a probability is judged by (scikit-learn's default,
        # accuracy, cannot tell apart penalties that move probabilities but not which side
        # of ½ they fall; its default changes to log loss in 1.11 anyway)
        return LogisticRegressionCV(
            Cs=CS, cv=split, max_iter=2000, random_state=seed, scoring="neg_log_loss"
        ).fit(x, y)


def _boosting(
    task: Task, x: np.ndarray, y: np.ndarray, folds: int, seed: int, categorical: int | None,
    groups: np.ndarray | None = None,
) -> Any:  # fmt: skip
    """Histogram gradient boosting, its settings by k-fold cross-validation (`categorical`: the
    column that holds the task's index; `groups`: folds keep each group whole)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold

    y = y.reshape(-1)
    regression = task.kind_spec.classic == "value"
    if not regression:
        y = y.astype(int)
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            return _Constant(classes)
        k = int(min(folds, counts.min()))
    else:
        k = int(min(folds, len(y)))
    cls = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
    model = cls(
        max_iter=300, early_stopping=False, random_state=seed,
        categorical_features=[categorical] if categorical is not None else None,
    )  # fmt: skip
    if k < 2:
        return model.fit(x, y)
    split: Any = KFold(k, shuffle=True, random_state=seed) if regression else \
        StratifiedKFold(k, shuffle=True, random_state=seed)  # fmt: skip
    if groups is not None:
        split = _group_folds(y, groups, k, seed, stratify=not regression)
        if split is None:
            return model.fit(x, y)
    grid = [{key: [value] for key, value in g.items()} for g in BOOSTING_GRID]  # these, no more
    search = GridSearchCV(model, grid, cv=split, n_jobs=1)
    return search.fit(x, y).best_estimator_


def fit_forest(task: Task, x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """A random forest of `FOREST_TREES` trees on one task's rows, its smallest leaf size by
    the out-of-bag score (R² or accuracy: no rows held out): the `forest` architecture's
    `grow_forest`, for classification tasks too."""
    y = y.reshape(-1)
    regression = task.kind_spec.classic == "value"
    if not regression:
        y = y.astype(int)
        classes = np.unique(y)
        if len(classes) < 2:
            return _Constant(classes)
    return grow_forest(x, y, trees=FOREST_TREES, seed=seed, classify=not regression)


class _Constant:
    """A classifier of a task whose training rows hold one class (`classes`, the training
    labels' distinct values: one, or none): always that class (0 for none)."""

    def __init__(self, classes: np.ndarray) -> None:
        self.label = int(classes[0]) if len(classes) else 0

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.full((len(x), 1), 1.0)

    @property
    def classes_(self) -> np.ndarray:
        return np.array([self.label])


def _scored(
    task: Task,
    model: Any,
    test: TaskData,
    data: PreparedData,
    task_id: int | None = None,
    pooled: bool = False,
) -> Any:
    """`task`'s accumulator of `model`'s test predictions (the task's own, so its metrics are
    computed as the networks' are: original units, its masks); `pooled`: the model predicts
    original units."""
    x, _, _ = _part(test, task)
    if task_id is not None:
        x = np.column_stack([x, np.full(len(x), task_id)])
    scale = test.target_scale.get(task.name)
    kind = task.kind_spec
    if kind.classic == "value":
        values = np.asarray(model.predict(x), dtype=float).reshape(len(x), -1)
        if pooled and scale is not None:
            values = (values - scale[0]) / scale[1]
    else:
        proba = np.asarray(model.predict_proba(x), dtype=float)
        width = max(2, task.out_features)
        values = np.zeros((len(x), width))
        values[:, np.asarray(model.classes_, dtype=int)] = proba
    output = kind.classic_output(task, values)
    accumulator = task.kind_spec.accumulator(task, scale, data.preprocessor.target_fit(task))
    accumulator.update(output, test.targets[task.name])
    return accumulator
