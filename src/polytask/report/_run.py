"""What a run folder holds, read once: the metrics history, test metrics, task relations and
comparison results of `polytask train` and `polytask compare` (each None when absent)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polytask.train._derived import logged_auxiliary

History = tuple[Mapping[str, float], ...]
"""One row per evaluation: `step`, `epoch`, `train/...`, `val/...`, `weight/...`, ..."""

BASELINES = "baselines"
"""The folder in each seed's folder holding an --architectures comparison's single-task models
(plain compare's are seedS/stl_TASK)."""

COMPARE_FILES = ("compare.json", "groups.json", "architectures.json", "label_fraction.json")
"""What `polytask compare` writes into its folder (one per kind of comparison)."""
BLEND_FILE = "blend_members.json"
"""What `polytask train` writes for a blend: each member alone on the test rows."""


@dataclass(frozen=True)
class ModelSize:
    """The trained multi-task model's size, and of one single-task model per task with the
    same architecture (built, not trained; None where it cannot be built)."""

    parameters: int
    bytes: int
    file_bytes: int
    stl_parameters: Mapping[str, int] | None = None
    stl_bytes: Mapping[str, int] | None = None
    model: str | None = None
    """What the model is (`ModelConfig.describe`: architecture, parameters, ensemble, blend)."""
    stl_absent: str | None = None
    """Why the single-task sizes are left out (None where they are counted)."""


@dataclass(frozen=True)
class RunData:
    """The files of one run folder; `history_source` says which folder the curves come from
    (a `compare` folder's first multi-task seed when the folder itself trained nothing)."""

    folder: Path
    history: History = ()
    history_source: Path | None = None
    stl_histories: Mapping[str, History] = field(default_factory=dict)
    test_metrics: Mapping[str, Mapping[str, float]] | None = None
    relations: Mapping[str, Any] | None = None
    compare: Mapping[str, Any] | None = None
    groups: Mapping[str, Any] | None = None
    architectures: Mapping[str, Any] | None = None
    label_fraction: Mapping[str, Any] | None = None
    blend_members: Sequence[Mapping[str, Any]] | None = None
    """A blend's members alone on the test rows: architecture, weight, metrics per task."""
    size: ModelSize | None = None
    primary: Mapping[str, str] = field(default_factory=dict)
    """Each task's primary metric, where known (from compare.json or the checkpoint)."""
    loss_units: Mapping[str, str] = field(default_factory=dict)
    """A task's loss units where not the target's (regression: standardised), from the
    folder's recorded config (compare_config.json)."""
    weights_step: int | None = None
    """The step of the evaluation whose weights model.pt holds (a restored best one's), where
    the checkpoint records it."""

    @property
    def weights_epoch(self) -> int | None:
        """The epoch of `weights_step`'s evaluation, from the history."""
        for row in self.history:
            if self.weights_step is not None and int(row.get("step", -1)) == self.weights_step:
                return int(row.get("epoch", 0))
        return None

    @property
    def tasks(self) -> list[str]:
        """Task names in the order the run logged them."""
        names: dict[str, None] = {}
        for row in self.history:
            for key in row:
                parts = key.split("/")
                if len(parts) == 3 and parts[0] in ("train", "val") and parts[2] == "loss":
                    names[parts[1]] = None
        if not names and self.test_metrics:
            names = dict.fromkeys(self.test_metrics)
        if not names and self.compare:
            names = dict.fromkeys(str(t["task"]) for t in self.compare["tasks"])
        return list(names)

    @property
    def auxiliary(self) -> set[str]:
        """The auxiliary tasks (trained, never reported), from their `auxiliary/TASK/...` logs."""
        return logged_auxiliary(self.history)

    def columns(self, prefix: str) -> list[str]:
        """History columns starting with `prefix`, in logged order."""
        seen = dict.fromkeys(k for row in self.history for k in row if k.startswith(prefix))
        return list(seen)


def _json(path: Path) -> Any:
    """A JSON file's content (NaN allowed, as polytask writes it), or None when absent."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): was it cut short?") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_history(folder: Path) -> History:
    """metrics.json (or metrics.csv) of a training folder; () when neither exists."""
    rows = _json(folder / "metrics.json")
    if isinstance(rows, list):
        return tuple(
            {k: float(v) if v is not None else math.nan for k, v in row.items()} for row in rows
        )
    path = folder / "metrics.csv"
    if not path.is_file():
        return ()
    with path.open(newline="") as f:
        return tuple(
            {k: _number(v) for k, v in row.items() if v not in (None, "")}
            for row in csv.DictReader(f)
        )


def seed_folders(folder: Path) -> list[Path]:
    """The seedN/ folders a `compare` wrote into `folder`, by seed."""
    seeds = [p for p in folder.glob("seed*") if p.is_dir() and p.name[4:].isdigit()]
    return sorted(seeds, key=lambda p: int(p.name[4:]))


def _first_seed(folder: Path) -> Path | None:
    """The lowest-numbered seed folder a `compare` wrote, if any."""
    return next(iter(seed_folders(folder)), None)


def read_run(folder: str | Path, measure_size: bool = True) -> RunData:
    """Everything `polytask report` shows from `folder`; refuses a folder with nothing of a run.

    With `measure_size`, the checkpoint (model.pt) is loaded to count parameters (needs torch)."""
    root = Path(folder)
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise FileNotFoundError(
            f"{root} {what}: give a run folder written by `polytask train` or `polytask compare`"
        )
    history, source = read_history(root), root
    extras = {name.removesuffix(".json"): _json(root / name) for name in COMPARE_FILES}
    stl: dict[str, History] = {}
    seed = _first_seed(root)
    if seed is not None:
        # the curves of a comparison's first multi-task model: the plain one's, a --groups
        # comparison's all-tasks model, else the first architecture's of --architectures
        compared = extras["architectures"] or {}
        names = ["mtl", "all", *(r["architecture"] for r in compared.get("rows", [])[1:])]
        for name in names:
            if not history and (seed / name).is_dir():
                history, source = read_history(seed / name), seed / name
        # plain compare's single-task models, else an --architectures comparison's
        singles = sorted(seed.glob("stl_*")) or sorted(seed.glob(f"{BASELINES}/stl_*"))
        for sub in singles:
            if found := read_history(sub):
                stl[sub.name[4:]] = found
    test = _json(root / "test_metrics.json")
    if isinstance(test, dict):  # an undefined metric is written as null (strict JSON)
        test = {task: {k: math.nan if v is None else v for k, v in values.items()}
                for task, values in test.items() if isinstance(values, dict)}  # fmt: skip
    members = _json(root / BLEND_FILE)
    relations = _json(root / "relations.json")
    if relations is None and source != root:
        relations = _json(source / "relations.json")
    model = root / "model.pt"
    if not (history or test or relations or model.is_file() or any(extras.values())):
        raise FileNotFoundError(
            f"{root} is not a run folder (no metrics.csv, test_metrics.json, model.pt or "
            f"compare results): give a folder written by `polytask train` or `polytask compare`"
        )
    size: ModelSize | None = None
    primary: dict[str, str] = {}
    weights_step = None
    if model.is_file() and measure_size:
        from polytask.report._size import checkpoint_size
        from polytask.train._checkpoint import CheckpointError, load_checkpoint

        size, primary = checkpoint_size(model)
        try:
            step = load_checkpoint(model)[1].get("weights_step")
        except CheckpointError:
            step = None
        weights_step = step if isinstance(step, int) else None
    if extras["compare"]:
        primary.update({str(t["task"]): str(t["metric"]) for t in extras["compare"]["tasks"]})
    return RunData(
        folder=root,
        history=history,
        history_source=source if history else None,
        stl_histories=stl,
        test_metrics=test,
        relations=relations,
        compare=extras["compare"],
        groups=extras["groups"],
        architectures=extras["architectures"],
        label_fraction=extras["label_fraction"],
        blend_members=members if isinstance(members, list) else None,
        size=size,
        primary=primary,
        loss_units=_loss_units(root),
        weights_step=weights_step,
    )


def _loss_units(root: Path) -> dict[str, str]:
    """Each task's `loss_units` by its kind in the folder's recorded config (none without one,
    or for kinds not registered here)."""
    from polytask.tasks import KINDS

    config = _json(root / "compare_config.json")
    tasks = config.get("tasks") if isinstance(config, dict) else None
    units = {}
    for task in tasks if isinstance(tasks, list) else []:
        kind = KINDS.get(str(task.get("kind"))) if isinstance(task, dict) else None
        if kind is not None and kind.loss_units:
            units[str(task["name"])] = kind.loss_units
    return units


def primary_metric(run: RunData, task: str) -> str | None:
    """The task's primary metric, else the first metric it logged besides its loss."""
    if task in run.primary:
        return run.primary[task]
    for key in run.columns(f"val/{task}/"):
        if key.count("/") == 2 and not key.endswith("/loss"):
            return key.rsplit("/", 1)[1]
    return None


def finite(values: Sequence[float]) -> bool:
    """Whether any of `values` is a finite number (something to plot)."""
    return any(isinstance(v, float | int) and math.isfinite(v) for v in values)
