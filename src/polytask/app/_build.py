"""Architectures by name from the model config."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from polytask.app._config import ModelConfig
from polytask.models import (
    AITM,
    ESMM,
    PLE,
    CrossStitch,
    LearningToBranch,
    MeanRegularised,
    MMoE,
    MultiInput,
    MultiTaskNet,
    SoftSharing,
    hard_sharing_mlp,
    mtan_mlp,
)
from polytask.tasks._task import Task


def _given(spec: ModelConfig, **fields: str) -> dict[str, Any]:
    """Constructor arguments from the optional config fields that are set (keyword → field);
    the ones left out take the architecture's own defaults."""
    values = {kw: getattr(spec, field) for kw, field in fields.items()}
    return {kw: v for kw, v in values.items() if v is not None and v != ()}


_Builder = Callable[[ModelConfig, Sequence[str], Sequence[Task]], MultiTaskNet]
"""(model config, the encoded input columns' names, tasks) → the architecture."""
ARCHITECTURES: dict[str, _Builder] = {
    "hard_sharing": lambda s, f, t: hard_sharing_mlp(
        len(f), t, hidden=s.hidden, dropout=s.dropout, tower=s.tower, task_dropout=s.task_dropout
    ),
    "mmoe": lambda s, f, t: MMoE(len(f), t, expert_hidden=s.hidden, tower=s.tower,
                                 dropout=s.dropout, task_dropout=s.task_dropout,
                                 **_given(s, num_experts="experts", gate="gate", top_k="top_k")),
    "cgc": lambda s, f, t: PLE(len(f), t, levels=1, expert_hidden=s.hidden, tower=s.tower,
                               dropout=s.dropout, task_dropout=s.task_dropout,
                               **_given(s, shared_experts="experts", task_experts="task_experts")),
    "ple": lambda s, f, t: PLE(len(f), t, expert_hidden=s.hidden, tower=s.tower, dropout=s.dropout,
                               task_dropout=s.task_dropout,
                               **_given(s, shared_experts="experts", task_experts="task_experts",
                                        levels="levels")),
    "mtan": lambda s, f, t: mtan_mlp(len(f), t, hidden=s.hidden, dropout=s.dropout, tower=s.tower,
                                     task_dropout=s.task_dropout),
    "ltb": lambda s, f, t: LearningToBranch(
        len(f), t, hidden=s.hidden, dropout=s.dropout, tower=s.tower, task_dropout=s.task_dropout,
        **_given(s, branches="branches", temperature="temperature")),
    "esmm": lambda s, f, t: ESMM(len(f), t, hidden=s.hidden, dropout=s.dropout,
                                 task_dropout=s.task_dropout, **_given(s, tower="tower")),
    "aitm": lambda s, f, t: AITM(len(f), t, hidden=s.hidden, dropout=s.dropout,
                                 task_dropout=s.task_dropout,
                                 **_given(s, tower="tower", calibration="calibration")),
    "multi_input": lambda s, f, t: MultiInput(
        len(f), t, inputs=input_columns(s.inputs or {}, f), hidden=s.hidden, tower=s.tower,
        dropout=s.dropout, task_dropout=s.task_dropout, **_given(s, encoder_dim="encoder_dim")),
    "cross_stitch": lambda s, f, t: CrossStitch(len(f), t, hidden=s.hidden, dropout=s.dropout,
                                                task_dropout=s.task_dropout),
    "soft_sharing": lambda s, f, t: SoftSharing(
        len(f), t, hidden=s.hidden, dropout=s.dropout, task_dropout=s.task_dropout,
        **_given(s, coupling="coupling", penalty="penalty")),
    "mean_regularised": lambda s, f, t: MeanRegularised(
        len(f), t, hidden=s.hidden, dropout=s.dropout, task_dropout=s.task_dropout,
        **_given(s, coupling="coupling")),
}  # fmt: skip


def build_model(
    spec: ModelConfig, features: int | Sequence[str], tasks: Sequence[Task]
) -> MultiTaskNet:
    """The architecture `spec` names (see `ARCHITECTURES`), for inputs of `features` encoded
    columns (their names, as `TabularPreprocessor.feature_names` gives them, or their count)."""
    names = [f"x{i}" for i in range(features)] if isinstance(features, int) else list(features)
    return ARCHITECTURES[spec.architecture](spec, names, tasks)


def input_columns(
    inputs: Mapping[str, Sequence[str]], features: Sequence[str]
) -> dict[str, list[int]]:
    """Each task's input columns by position, from raw feature names: a numeric feature is one
    column, a categorical one all of its one-hot columns ("region" → "region=north", ...)."""
    out: dict[str, list[int]] = {}
    for task, names in inputs.items():
        columns: list[int] = []
        for name in names:
            hits = [i for i, f in enumerate(features) if f == name or f.startswith(f"{name}=")]
            if not hits:
                raise ValueError(
                    f"model.inputs[{task!r}]: feature {name!r} is not an input column; "
                    f"the features are {sorted({f.split('=')[0] for f in features})}"
                )
            columns += hits
        out[task] = columns
    return out
