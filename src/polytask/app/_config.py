"""The experiment configuration: frozen dataclasses shared by the Python API and YAML files.

The CLI validates a YAML mapping into `RunConfig` with pydantic (unknown fields are refused);
relative paths in it are resolved against the YAML file's folder.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

from polytask.balancers._registry import make_balancer
from polytask.tasks._task import Task
from polytask.train._config import TrainConfig

_FORBID = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class FeaturesConfig:
    """Input columns: numeric ones are standardised, categorical ones one-hot encoded."""

    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()

    __pydantic_config__ = _FORBID


@dataclass(frozen=True)
class SplitConfig:
    """Either a split file (.npz with train_idx / test_idx, validation carved from train) or
    random fractions; `seed` draws the rows."""

    file: str | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    seed: int = 0

    __pydantic_config__ = _FORBID

    def __post_init__(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.file is None and not 0 < self.test_fraction < 1 - self.val_fraction:
            raise ValueError(
                f"test_fraction must be in (0, 1 - val_fraction), got {self.test_fraction}"
            )


@dataclass(frozen=True)
class SourceConfig:
    """One of several data sets (CSV files), each with its own rows and split. `tasks`: the
    tasks it labels (default: every task whose target columns it has)."""

    path: str
    tasks: tuple[str, ...] | None = None
    split: SplitConfig = field(default_factory=SplitConfig)

    __pydantic_config__ = _FORBID


@dataclass(frozen=True)
class DataConfig:
    """Where the rows come from: a CSV file (`path`, .csv or .csv.gz), the built-in generator
    (`builtin: customers`, with `options` passed to `make_customers`), or several CSV files
    (`sources`, e.g. one per task with its own size and split; drawn from per step by
    `training.schedule`). Features are the same columns in every file."""

    path: str | None = None
    builtin: Literal["customers"] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    features: FeaturesConfig | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    sources: tuple[SourceConfig, ...] | None = None

    __pydantic_config__ = _FORBID

    def __post_init__(self) -> None:
        given = [n for n in ("path", "builtin", "sources") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of path (a CSV file), builtin (customers) and sources "
                f"(several CSV files); got {given or 'none'}"
            )
        if self.sources is not None:
            if not self.sources:
                raise ValueError("sources must list at least one CSV file")
            if self.features is None:
                raise ValueError("sources need features: {numeric: [...], categorical: [...]}")
            return
        if self.path is not None and self.features is None:
            raise ValueError("a CSV data set needs features: {numeric: [...], categorical: [...]}")
        if self.path is not None and self.options:
            raise ValueError("options are for the builtin generator only")


Architecture = Literal[
    "hard_sharing",
    "mmoe",
    "cgc",
    "ple",
    "mtan",
    "ltb",
    "cross_stitch",
    "soft_sharing",
    "mean_regularised",
    "esmm",
    "aitm",
    "multi_input",
]
_ARCH_FIELDS = {  # the optional fields each architecture reads (None: its default)
    "mmoe": ("experts", "gate", "top_k"),
    "cgc": ("experts", "task_experts"),
    "ple": ("experts", "task_experts", "levels"),
    "soft_sharing": ("coupling", "penalty"),
    "mean_regularised": ("coupling",),
    "aitm": ("calibration",),
    "ltb": ("branches", "temperature"),
    "multi_input": ("inputs", "encoder_dim"),
}
_LOWEST = {"experts": 1, "task_experts": 1, "levels": 1, "top_k": 1, "coupling": 0,
           "calibration": 0, "branches": 1, "encoder_dim": 1}  # fmt: skip


@dataclass(frozen=True)
class ModelConfig:
    """The architecture. `hidden`: the shared trunk's layer sizes (hard_sharing) or each
    expert's (mmoe, cgc, ple); `tower`: hidden sizes of each task's own tower before its output
    layer. Mixtures of experts: `experts` shared experts (mmoe: 4, cgc/ple: 2 by default),
    `task_experts` per task (cgc/ple, default 1) and `levels` of extraction (ple, default 2).
    cross_stitch and soft_sharing: one tower of `hidden` sizes per task, mixed by cross-stitch
    units, or tied by `coupling` × an "l2" or "trace" `penalty` (soft_sharing; 1e-3, "l2").
    esmm: binary tasks listed in funnel order (click, then conversion, ...) on a shared trunk
    of `hidden` sizes, one `tower` per stage. mmoe's `gate`: "softmax" (default) or "dselect"
    (DSelect-k, at most `top_k` experts per task, default 2). aitm: binary tasks in funnel
    order, like esmm, with attention that carries each stage into the next and a calibrator
    of strength `calibration` (default 0.6) against later stages out-predicting earlier ones.
    mtan: per task an attention mask over every layer of the shared `hidden` trunk. ltb
    (learning to branch): a root layer, then `branches` nodes per later layer (default 2),
    each choosing its parent, and each task its node, by Gumbel-softmax at `temperature` (1).
    mean_regularised: a shared `hidden` trunk; task k's head is a shared head plus its own
    deviation, penalised by `coupling` × ‖deviation‖² (default 1e-3; Evgeniou & Pontil 2004),
    for many small related tasks with the same output size.
    multi_input: each task listed in `inputs` ({task: [feature, ...]}) reads only those
    features through its own encoder of `encoder_dim` units (default 32), in front of one
    shared trunk of `hidden` sizes; unlisted tasks read every feature.
    `task_dropout`: a task's own dropout rate (e.g. {ltv: 0.3}) on the features its tower reads
    and in its tower, instead of `dropout` (cross_stitch, soft_sharing: in its tower's layers)."""

    architecture: Architecture = "hard_sharing"
    hidden: tuple[int, ...] = (128, 128)
    dropout: float = 0.0
    tower: tuple[int, ...] = ()
    experts: int | None = None
    task_experts: int | None = None
    levels: int | None = None
    coupling: float | None = None
    penalty: Literal["l2", "trace"] | None = None
    gate: Literal["softmax", "dselect"] | None = None
    top_k: int | None = None
    calibration: float | None = None
    branches: int | None = None
    temperature: float | None = None
    inputs: dict[str, tuple[str, ...]] | None = None
    encoder_dim: int | None = None
    task_dropout: dict[str, float] = field(default_factory=dict)

    __pydantic_config__ = _FORBID

    def __post_init__(self) -> None:
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must list positive layer sizes, got {list(self.hidden)}")
        if self.tower and min(self.tower) < 1:
            raise ValueError(f"tower must list positive layer sizes, got {list(self.tower)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        bad = {n: r for n, r in self.task_dropout.items() if not 0 <= r < 1}
        if bad:
            raise ValueError(f"task_dropout rates must be in [0, 1), got {bad}")
        if self.tower and self.architecture in ("cross_stitch", "soft_sharing"):
            raise ValueError(
                f"{self.architecture} builds one tower per task from `hidden`; remove `tower`"
            )
        if self.tower and self.architecture == "mean_regularised":
            raise ValueError("mean_regularised heads are linear (shared + own); remove `tower`")
        allowed = _ARCH_FIELDS.get(self.architecture, ())
        for name in dict.fromkeys(f for fields in _ARCH_FIELDS.values() for f in fields):
            value = getattr(self, name)
            if value is None:
                continue
            if name not in allowed:
                users = [a for a, fields in _ARCH_FIELDS.items() if name in fields]
                raise ValueError(
                    f"{name} applies to architecture {' / '.join(users)}, not "
                    f"{self.architecture!r}: remove it or change the architecture"
                )
            if name in _LOWEST and value < _LOWEST[name]:
                raise ValueError(f"{name} must be >= {_LOWEST[name]}, got {value}")
            if name == "temperature" and value <= 0:
                raise ValueError(f"temperature must be > 0, got {value}")


@dataclass(frozen=True)
class BalancerConfig:
    """A balancer by registry name with its parameters.

    Example: {name: dwa, params: {temperature: 2}}.
    """

    name: str = "ew"
    params: dict[str, Any] = field(default_factory=dict)

    __pydantic_config__ = _FORBID

    def __post_init__(self) -> None:
        make_balancer(self.name, **self.params)  # raises with the allowed names / parameters


@dataclass(frozen=True)
class RunConfig:
    """Everything one experiment needs."""

    data: DataConfig
    tasks: tuple[Task, ...]
    model: ModelConfig = field(default_factory=ModelConfig)
    balancer: BalancerConfig = field(default_factory=BalancerConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/polytask"

    __pydantic_config__ = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("give at least one task")
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique; repeated: {dupes}")
        for field_name in ("task_dropout", "inputs"):
            unknown = sorted(set(getattr(self.model, field_name) or {}) - set(names))
            if unknown:
                raise ValueError(
                    f"model.{field_name} names unknown tasks {unknown}; tasks: {names}"
                )
        for i, source in enumerate(self.data.sources or ()):
            unknown = sorted(set(source.tasks or ()) - set(names))
            if unknown:
                raise ValueError(
                    f"data.sources[{i}].tasks: unknown tasks {unknown}; tasks: {names}"
                )

    def with_paths_from(self, base: Path) -> RunConfig:
        """Resolve relative data, split and output paths against `base` (the YAML's folder)."""

        def fix(p: str | None) -> str | None:
            return p if p is None or Path(p).is_absolute() else os.path.normpath(base / p)

        def fix_split(split: SplitConfig) -> SplitConfig:
            return dataclasses.replace(split, file=fix(split.file))

        sources = self.data.sources and tuple(
            dataclasses.replace(s, path=fix(s.path) or "", split=fix_split(s.split))
            for s in self.data.sources
        )
        data = dataclasses.replace(
            self.data, path=fix(self.data.path), split=fix_split(self.data.split), sources=sources
        )
        return dataclasses.replace(self, data=data, output_dir=fix(self.output_dir) or "")
