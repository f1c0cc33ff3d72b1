"""Honest tuning (`polytask tune`, Optuna: `pip install 'polytask[tune]'`): settings searched by
K-fold cross-validation on the training rows of the config's split, never its test rows.

The folds: the split file's `train_cv_fold` when it has one, else the training rows cut into
`folds` parts at random (within each value of `split.within`, e.g. each school). Each trial
trains one model per fold on the other folds' rows (validation carved from them as the config
says) and scores it on the held-out fold. Its objective is Δm (%) against the config as given,
trained and scored on the same folds first (+ = better than the untuned config): tasks of any
kind and scale weigh alike. A trial whose first folds fall below the median of earlier trials
is pruned. The best settings are written as a config next to the given one; training it
(`polytask train`) scores the test rows once.

`single_task=True` tunes the single-task baselines by the same protocol: each trial trains one
model per task (the config's architecture with the task alone) on every fold, Δm against the
single-task models of the config as given; `polytask compare CONFIG --baseline-config BEST`
then trains its single-task baselines with the tuned settings (no tuned MTL model is compared
with untuned baselines).

The search space: dotted paths into the YAML mapping, each `{log: [low, high]}`,
`{range: [low, high]}` (floats), `{int: [low, high]}` or `{choice: [a, b, ...]}`; by default
the learning rate and weight decay, and the architecture's `dropout`, `hidden` and
`coupling` when it takes them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polytask.analysis._baselines import fit_single_task, primary_metrics, single_task_metrics
from polytask.analysis._compare import delta_m
from polytask.app import RunConfig, fit, load_prepared
from polytask.app._data import labelled_groups, load_frame, make_split
from polytask.app._ensemble import build_trainer
from polytask.models import architecture_params
from polytask.models._registry import is_grown
from polytask.train._guards import TrainingDiverged

TUNE_EXTRA = "pip install 'polytask[tune]' (in a checkout: .venv/bin/pip install -e '.[tune]')"

Space = dict[str, dict[str, Any]]
"""Dotted path in the YAML mapping → {log | range | int | choice: ...}."""


def require_optuna() -> Any:
    """The optuna module, or an ImportError that says how to install it."""
    try:
        import optuna
    except ImportError:
        raise ImportError(f"polytask tune needs Optuna: {TUNE_EXTRA}") from None
    return optuna


BLEND_WEIGHT = re.compile(r"model\.blend\.\d+\.weight")
"""A blend member's weight in a search space."""


def default_space(
    config: RunConfig, raw: Mapping[str, Any] | None = None, single_task: bool = False
) -> Space:
    """The learning rate, the weight decay, and the architecture's dropout, hidden sizes,
    coupling and prior covariance (the choice of covariance, or with `covariance: full` its
    shrinkage) when it takes them (under `model.params` when the YAML `raw` gives them there;
    not the coupling for `single_task` models: with one task, nothing to couple; not the hidden
    sizes of a linear model, `hidden: []`), and each `model.blend` member's weight; for a grown
    model (a forest, a gp), its leaf size and share of columns, or its warp, instead of the
    rest. With
    `optimizer: lbfgs`, neither the learning rate (its line search sets the step) nor dropout
    (which it refuses)."""
    model = (raw or {}).get("model")
    prefix = "model.params." if isinstance(model, dict) and "params" in model else "model."
    lbfgs = config.training.optimizer == "lbfgs"
    space: Space = {} if lbfgs else {"training.lr": {"log": [1e-4, 3e-2]}}
    params = architecture_params(config.model.architecture)
    takes = set(params)
    if is_grown(config.model.architecture):  # grown, not trained: its own parameters only
        space = {}
        if "min_leaf" in takes:
            space[prefix + "min_leaf"] = {"choice": [1, 3, 5, 10, 20]}
        if "max_features" in takes:
            space[prefix + "max_features"] = {"range": [0.2, 1.0]}
        if "warp" in takes:
            space[prefix + "warp"] = {"choice": ["boxcox", "none"]}
    else:
        space["training.weight_decay"] = {"log": [1e-6, 1e-1]}
    hidden = config.model.params.get(
        "hidden", params["hidden"].default if "hidden" in params else 1
    )
    linear = not hidden  # given as [], or linear by default (low_rank, multilevel)
    if "dropout" in takes and not lbfgs and not linear:  # a linear trunk has no layer to drop
        space[prefix + "dropout"] = {"range": [0.0, 0.5]}
    if "hidden" in takes and not linear:  # `hidden: []` is a choice of model: the classic one
        space[prefix + "hidden"] = {"choice": [[32], [64], [128], [64, 64], [128, 128]]}
    if "coupling" in takes and not single_task:  # it scales with the sum of K tasks' losses
        space[prefix + "coupling"] = {"log": [1e-4, 100.0]}
    covariance = config.model.params.get(
        "covariance", params["covariance"].default if "covariance" in params else None
    )
    if "shrinkage" in takes and covariance == "full":  # 1: the diagonal, so both are searched
        space[prefix + "shrinkage"] = {"range": [0.0, 1.0]}
    elif "covariance" in takes:
        space[prefix + "covariance"] = {"choice": ["diagonal", "full"]}
    blend = config.model.blend
    for i in range(len(blend) if isinstance(model, dict) and "blend" in model else 0):
        # each member's share of the blend, so that together they leave the model some
        space[f"model.blend.{i}.weight"] = {"range": [0.05, round(0.95 / len(blend), 3)]}
    return space


def check_space(space: Mapping[str, Any]) -> Space:
    """`space` validated: each entry one of log, range, int, choice with sensible bounds."""
    if not space:
        raise ValueError(
            "the search space is empty: give at least one setting, e.g. training.lr: "
            "{log: [1.0e-4, 1.0e-2]} (or leave --space out for the default space)"
        )
    out: Space = {}
    for path, spec in space.items():
        if not isinstance(spec, Mapping) or len(spec) != 1:
            raise ValueError(
                f"search space {path!r}: give one of {{log: [low, high]}}, {{range: [low, "
                f"high]}}, {{int: [low, high]}} or {{choice: [...]}}, got {spec!r}"
            )
        how, values = next(iter(spec.items()))
        if how == "choice":
            if not isinstance(values, list) or not values:
                raise ValueError(f"search space {path!r}: choice needs a non-empty list")
        elif how in ("log", "range", "int"):
            ok = isinstance(values, list) and len(values) == 2
            if ok:  # YAML reads 1e-4 and 1.0e6 as strings (no dot, or no exponent sign)
                values = [_number(v) for v in values]
                ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
            if not ok or not values[0] < values[1] or (how == "log" and values[0] <= 0):
                raise ValueError(
                    f"search space {path!r}: {how} needs [low, high] with low < high"
                    + (" and low > 0" if how == "log" else "")
                    + f", got {values!r}"
                )
        else:
            raise ValueError(f"search space {path!r}: unknown {how!r}; use log, range, int "
                             "or choice")  # fmt: skip
        out[path] = {how: values}
    return out


def _number(value: Any) -> Any:
    """`value`, a string that spells a number read as that number (`"1e-4"` → 0.0001)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """polytask's training alerts and data warnings off (errors still raise)."""
    logger = logging.getLogger("polytask")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _suggest(trial: Any, path: str, spec: Mapping[str, Any]) -> Any:
    how, values = next(iter(spec.items()))
    if how == "log":
        return trial.suggest_float(path, float(values[0]), float(values[1]), log=True)
    if how == "range":
        return trial.suggest_float(path, float(values[0]), float(values[1]))
    if how == "int":
        return trial.suggest_int(path, int(values[0]), int(values[1]))
    index = trial.suggest_categorical(path, list(range(len(values))))  # any JSON value
    return values[index]


def with_settings(raw: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The YAML mapping `raw` with each dotted path of `settings` set (a number steps into a
    list: `model.blend.0.weight`)."""
    out = copy.deepcopy(dict(raw))
    for path, value in settings.items():
        node: Any = out
        *parents, last = path.split(".")
        for key in parents:
            if isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
                continue
            child = node.get(key)
            if not isinstance(child, dict | list):
                child = node[key] = {}
            node = child
        if isinstance(node, list) and last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return out


def check_tunable(config: RunConfig) -> None:
    """Refuse data whose parts tune cannot fold: several sources, a split column, streamed
    text (their rows are not one table of the split's training rows)."""
    data = config.data
    column = next((part.split_column for part in (data.text, data.images, data.audio)
                   if part is not None and part.split_column is not None), None)  # fmt: skip
    if data.sources is not None or column is not None or (data.text and data.text.stream):
        what = ("several data sources" if data.sources is not None
                else f"a split column ({column})" if column else "streamed text")  # fmt: skip
        raise ValueError(
            f"polytask tune folds the training rows of data.split; this config has {what}: "
            "give one table with data.split (a split file or fractions) to tune"
        )


class TrialFailed(RuntimeError):
    """A trial's model leaves a task's metric undefined where the config as given defines it
    (non-finite or constant predictions): the trial fails rather than drop that task."""


def defined_delta_m(
    new: Mapping[str, float], base: Mapping[str, float], directions: Mapping[str, bool]
) -> float:
    """Δm (%) over the tasks whose metric the config as given defines on this fold (a fold may
    hold one class of a small task: its AUC is undefined there for every trial alike, not a
    reason to lose the trial). A task defined there but not for the trial raises `TrialFailed`:
    dropping it would score a trial by the tasks it did not break."""
    kept = [t for t in directions if t in base and not math.isnan(float(base[t]))]
    broken = [t for t in kept if t not in new or math.isnan(float(new[t]))]
    if broken:
        reasons = [f"{t} ({getattr(new.get(t), 'reason', None) or 'NaN'})" for t in broken]
        raise TrialFailed(f"metric undefined for {', '.join(reasons)}")
    if not kept:
        return math.nan
    return delta_m({t: new[t] for t in kept}, {t: base[t] for t in kept}, directions)


def file_folds(config: RunConfig) -> dict[int, int] | None:
    """The config's split file's own CV folds, training row → fold (`train_cv_fold`: one id per
    `train_idx` entry, then one per `val_idx` entry where the file has that part: the folds cut
    every training row); None when there is no such file or column: `cv_folds` then cuts its
    own. A `train_cv_fold` of another length is refused (it was dropped without a word, and
    random folds then mixed the groups it kept apart)."""
    file = config.data.split.file
    if file is None:
        return None
    with np.load(file) as saved:
        if "train_cv_fold" not in saved.files:
            return None
        ids, given = np.asarray(saved["train_cv_fold"]), np.asarray(saved["train_idx"])
        val = np.asarray(saved["val_idx"]) if "val_idx" in saved.files else None
    rows = given if val is None else np.concatenate([given, val])
    if len(ids) != len(rows):
        parts = "train_idx" if val is None else "train_idx then val_idx"
        raise ValueError(
            f"split file {file}: train_cv_fold has {len(ids)} fold ids for the {len(rows)} rows "
            f"of {parts}: give one fold id per row of {parts}, in that order"
        )
    return dict(zip(rows.tolist(), ids.tolist(), strict=True))


def cv_folds(config: RunConfig, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit rows, held-out rows) per fold, from the training rows of the config's split only
    (train and validation parts; the test rows never)."""
    frame = load_frame(config)
    split = make_split(config, len(frame), frame=frame)
    train = np.sort(np.concatenate([split.train, split.val]))
    own = file_folds(config)
    if own is not None:
        labels = np.array([own[int(r)] for r in train])
        by = config.data.split.by
        if by is not None:  # the folds must hold out whole groups, as split.by's test part
            groups = frame[by].to_numpy().astype(str)[train]
            split_up = sorted({g for g in np.unique(groups)
                               if len(np.unique(labels[groups == g])) > 1})  # fmt: skip
            if split_up:
                raise ValueError(
                    f"split file {config.data.split.file}: train_cv_fold puts {len(split_up)} "
                    f"group(s) of {by} in more than one fold ({', '.join(split_up[:5])}): each "
                    f"fold must hold out whole groups, as split.by asks; give folds that keep "
                    "every group in one, or drop split.by"
                )
        return [(train[labels != f], train[labels == f]) for f in np.unique(labels)]
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    seed = config.data.split.seed
    within = config.data.split.within
    if config.data.split.by is not None:  # whole groups to each fold, as the test part
        groups = frame[config.data.split.by].to_numpy().astype(str)[train]
        names = np.random.default_rng(seed).permutation(np.unique(groups))
        fold_of = {g: i % folds for i, g in enumerate(names)}
        labels = np.array([fold_of[g] for g in groups])
    elif within is not None:  # each task's labelled rows spread evenly over the folds
        groups = labelled_groups(config, frame, frame[within].to_numpy())[train]
        labels = np.zeros(len(train), dtype=int)
        rng = np.random.default_rng(seed)
        for g in np.unique(groups.astype(str)):
            rows = rng.permutation(np.flatnonzero(groups.astype(str) == g))
            labels[rows] = np.arange(len(rows)) % folds
    else:
        labels = np.random.default_rng(seed).permutation(len(train)) % folds
    smallest = int(np.bincount(labels, minlength=folds).min())
    if smallest < MIN_FOLD_ROWS:
        most = max(2, len(train) // MIN_FOLD_ROWS)
        if config.data.split.by is not None:  # a fold holds whole groups
            most = min(most, len(np.unique(groups)))
        raise ValueError(
            f"--folds {folds}: the {len(train)} training rows make a fold of {smallest} rows "
            f"(at least {MIN_FOLD_ROWS} needed to score a trial on it): give --folds {most} or "
            "fewer"
        )
    return [(train[labels != f], train[labels == f]) for f in range(folds)]


MIN_FOLD_ROWS = 5
"""The fewest held-out rows a fold of `cv_folds` may have."""


@dataclass
class TuneResult:
    """Every trial's settings, per-fold Δm against the untuned config, and state."""

    space: Space
    folds: int
    baseline: list[dict[str, float]] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> dict[str, Any] | None:
        done = [t for t in self.trials if t["state"] == "complete"]
        return max(done, key=lambda t: t["delta_m"]) if done else None

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "folds": self.folds, "baseline": self.baseline,
                "trials": self.trials, "best": self.best}  # fmt: skip


def check_bounds(
    raw: Mapping[str, Any],
    parse: Callable[[Mapping[str, Any]], RunConfig],
    space: Space,
    build: Callable[[RunConfig], None] = lambda config: None,
) -> None:
    """Refuse `space` unless every bound (and every choice) makes a valid config of `raw` whose
    model and trainer `build` makes (what the architecture refuses only when built, such as
    dropout on a linear trunk), each blend weight checked with the other members' at their
    lowest, as a trial may draw them."""
    shares = {p: s for p, s in space.items() if BLEND_WEIGHT.fullmatch(p) and "range" in s}
    for path, spec in space.items():
        how, values = next(iter(spec.items()))
        others = {p: s["range"][0] for p, s in shares.items() if p != path}
        for value in values if how == "choice" else values[:2]:
            try:
                build(parse(with_settings(raw, {**others, path: value})))
            except ValueError as err:
                said = str(err)
                if said.startswith(f"{path}: unknown field"):  # not the value: the path
                    raise ValueError(f"search space {path!r}: no such setting" + said[len(
                        f"{path}: unknown field"):]) from None  # fmt: skip
                raise ValueError(
                    f"search space {path!r}: the config refuses {value!r}: {err}"
                ) from None


def tune(
    raw: Mapping[str, Any],
    parse: Callable[[Mapping[str, Any]], RunConfig],
    trials: int,
    folds: int = 3,
    space: Space | None = None,
    seed: int = 0,
    report: Callable[[str], None] = lambda line: None,
    single_task: bool = False,
) -> TuneResult:
    """Search `space` (default: `default_space`) for `trials` trials by cross-validation on the
    training rows (module docs). `raw` is the YAML mapping and `parse` makes a config of one
    (relative paths resolved); `report` receives a line per finished trial; `single_task`:
    score one model per task instead of the multi-task model."""
    optuna = require_optuna()
    config = parse(raw)
    chosen_space = space is not None
    space = check_space(space if space is not None else default_space(config, raw, single_task))
    check_tunable(config)

    def bounds(build: Callable[[RunConfig], None] = lambda config: None) -> None:
        try:
            check_bounds(raw, parse, space, build)
        except ValueError as err:
            if chosen_space:
                raise
            raise ValueError(  # the user never wrote this space: say whose it is
                f"tune's default search space (no --space given) does not fit this model: "
                f"{err}. Give --space with the settings to search"
            ) from None

    bounds()
    pieces = cv_folds(config, folds)
    result = TuneResult(space, len(pieces))
    scratch = tempfile.TemporaryDirectory(prefix="polytask-tune-")
    files = []
    for i, (fit_rows, held) in enumerate(pieces):
        fold_file = Path(scratch.name) / f"fold{i}.npz"
        np.savez(fold_file, train_idx=fit_rows, test_idx=held)
        files.append(str(fold_file))

    def fold_config(settings: Mapping[str, Any], i: int) -> RunConfig:
        chosen = parse(with_settings(raw, settings))
        # the fold's rows from its file; with split.by, its validation rows whole groups too
        split = dataclasses.replace(chosen.data.split, file=files[i])
        return dataclasses.replace(
            chosen,
            data=dataclasses.replace(chosen.data, split=split),
            training=dataclasses.replace(chosen.training, progress=False),
        )

    with warnings.catch_warnings():  # the fold files leave the test rows out by design
        warnings.filterwarnings("ignore", message=r"split file .* lists \d+ of the data's")
        first = load_prepared(fold_config({}, 0))  # the config as given on fold 0: its data
    alone = [t for t in first.tasks if not t.auxiliary][:1] if single_task else first.tasks
    # what only a built model refuses (dropout on a linear trunk), before anything trains
    bounds(lambda chosen: build_trainer(chosen, first, alone))

    def score(settings: Mapping[str, Any], i: int) -> dict[str, float]:
        cfg = fold_config(settings, i)
        with _quiet():  # one fit per fold and trial: their alerts would drown the results
            data = first if not settings and i == 0 else load_prepared(cfg)
            if single_task:
                return single_task_metrics(fit_single_task(cfg, data, None, "tune"), data)
            fitted = fit(cfg, data)
            assert fitted.trainer is not None
            return primary_metrics(fitted.trainer.evaluate(data.test), data)

    directions = {t.name: t.primary.higher_is_better for t in config.tasks if not t.auxiliary}
    started = time.perf_counter()
    result.baseline = []
    for i in range(len(pieces)):
        try:
            result.baseline.append(score({}, i))
        except TrainingDiverged as err:  # every trial is measured against it: nothing to do
            raise ValueError(
                f"the config as given diverged on fold {i} ({str(err).splitlines()[0]}); every "
                "trial is scored against it, so the search cannot start: make it train (a "
                "lower training.lr, training.grad_clip), then tune"
            ) from None
    report(f"the config as given: scored on {len(pieces)} folds "
           f"({time.perf_counter() - started:.0f} s)")  # fmt: skip

    def objective(trial: Any) -> float:
        settings = {path: _suggest(trial, path, spec) for path, spec in space.items()}
        trial.set_user_attr("settings", settings)
        values = []
        for i in range(len(pieces)):
            try:
                values.append(defined_delta_m(score(settings, i), result.baseline[i], directions))
            except (TrainingDiverged, TrialFailed) as err:  # these settings fail; search goes on
                what = "diverged" if isinstance(err, TrainingDiverged) else "failed"
                trial.set_user_attr(what, f"fold {i}: {str(err).splitlines()[0]}")
                raise
            trial.set_user_attr("fold_delta_m", list(values))
            trial.report(float(np.mean(values)), i)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(values))

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a diverged trial: our line, no trace
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )

    def record(study: Any, trial: Any) -> None:
        state = next((w for w in ("diverged", "failed") if w in trial.user_attrs),
                     trial.state.name.lower())  # fmt: skip
        why = trial.user_attrs.get(state)
        steps = [trial.intermediate_values[k] for k in sorted(trial.intermediate_values)]
        entry = {
            "number": trial.number,
            "settings": trial.user_attrs.get("settings", {}),
            "state": state,
            "delta_m": float(trial.value) if trial.value is not None else math.nan,
            "fold_delta_m": trial.user_attrs.get("fold_delta_m", []),
            "folds_run": len(steps),
            "seconds": (trial.duration.total_seconds() if trial.duration else math.nan),
        }
        if why:  # a diverged or failed trial: which fold, and why (kept in tune.json)
            entry["error"] = why
        result.trials.append(entry)
        shown = (f"{state} ({why})" if why else "pruned" if state == "pruned"
                 else f"Δm {delta_text(entry['delta_m'])}%")  # fmt: skip
        report(f"trial {trial.number}: {shown} {json.dumps(entry['settings'])}")

    # a diverging trial (a learning rate too high for the data) fails alone, noted as such
    study.optimize(objective, n_trials=trials, callbacks=[record],
                   catch=(TrainingDiverged, TrialFailed))  # fmt: skip
    scratch.cleanup()
    return result


def delta_text(value: float) -> str:
    """A CV Δm for tables and lines: two decimals, or three digits when huge (a trial whose
    error blew up by orders of magnitude: −1.76e+10, not −17647446275.02)."""
    return f"{value:+.2f}" if abs(value) < 1e5 else f"{value:+.3g}"


def settings_table(result: TuneResult, limit: int = 15) -> list[list[str]]:
    """Rows for a table: the best `limit` trials (complete first), then the count pruned."""
    rows = sorted(result.trials, key=lambda t: (t["state"] != "complete", -np.nan_to_num(
        t["delta_m"], nan=-1e9)))  # fmt: skip
    out = []
    for t in rows[:limit]:
        value = delta_text(t["delta_m"]) if t["state"] == "complete" else t["state"]
        settings = ", ".join(f"{_label(k)}={_short(v)}" for k, v in t["settings"].items())
        out.append([str(t["number"]), value, settings, _seconds(t["seconds"])])
    return out


def _seconds(value: float) -> str:
    """A trial's time: one decimal under ten seconds (a quick trial reads 0.4, not 0)."""
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _label(path: str) -> str:
    """A setting's name in the trials table: its last part (`lr`), a blend member's weight
    with its member (`blend.0.weight`)."""
    return path.removeprefix("model.") if BLEND_WEIGHT.fullmatch(path) else path.split(".")[-1]


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def standard_error(trial: Mapping[str, Any]) -> float:
    """The standard error of a trial's mean Δm over its folds (NaN with fewer than two): how
    far its gain could come from which rows fell in which fold."""
    values = np.asarray(trial.get("fold_delta_m", []), dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return math.nan
    return float(values.std(ddof=1) / math.sqrt(len(values)))


def clear_gain(trial: Mapping[str, Any]) -> bool:
    """Whether a trial's mean Δm is positive and above its standard error over the folds (with
    too few folds to tell, positive is enough)."""
    gain, noise = float(trial["delta_m"]), standard_error(trial)
    return gain > 0 and (math.isnan(noise) or gain > noise)


def best_settings(result: TuneResult) -> dict[str, Any]:
    best = result.best
    return dict(best["settings"]) if best else {}
