"""Which tasks belong together: measure a run's gradient conflict and task affinity, suggest a
grouping, and write the matrices as CSV, JSON and heatmaps (`polytask analyze`)."""

from __future__ import annotations

import dataclasses
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from polytask._files import json_text, write_bytes_atomic, write_text_atomic
from polytask.analysis._grouping import Grouping, best_grouping, relative_affinity
from polytask.app import FittedModel, PreparedData, RunConfig, fit
from polytask.train._derived import logged_auxiliary
from polytask.train._relations import RELATIONS_FILE, TaskRelations

AFFINITY_EVERY = 5
"""Steps between affinity measurements when an analysis asks for them (TAG measured every
step; every 5th keeps the cost near one extra forward-backward per 5 steps for 2–3 tasks)."""

MATRICES = ("cosine", "conflict_share", "magnitude_ratio", "trend", "affinity")
"""The K × K matrices an analysis writes (CSV each; heatmaps for cosine and affinity)."""


@dataclass(frozen=True)
class Analysis:
    """A run's task relations and the grouping they suggest for at most `max_groups` models.

    The grouping maximises TAG's total affinity when affinity was measured (each task's column
    over its self-affinity: `relative_affinity`), otherwise the
    total gradient cosine (a cheaper, cruder signal: `basis` says which)."""

    relations: TaskRelations
    grouping: Grouping
    basis: str
    max_groups: int

    def to_dict(self) -> dict[str, object]:
        return {
            "relations": self.relations.to_dict(),
            "grouping": {
                "groups": [list(g) for g in self.grouping.groups],
                "score": self.grouping.score,
                "method": self.grouping.method,
                "basis": self.basis,
                "max_groups": self.max_groups,
            },
        }

    def write(self, out: str | Path) -> list[Path]:
        """analysis.json, one CSV per matrix and PNG heatmaps; returns the files written."""
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / "analysis.json"]
        write_text_atomic(written[0], json_text(self.to_dict(), indent=1))
        names = list(self.relations.tasks)
        for name in MATRICES:
            matrix = getattr(self.relations, name)
            if matrix is None:  # an earlier analysis's file would no longer match
                for stale in (folder / f"{name}.csv", folder / f"{name}.png"):
                    stale.unlink(missing_ok=True)
                continue
            path = folder / f"{name}.csv"
            write_text_atomic(path, pd.DataFrame(matrix, index=names, columns=names).to_csv())
            written.append(path)
        written += heatmaps(self.relations, folder)
        return written


def display_exponent(matrix: np.ndarray) -> int:
    """The power of ten to divide `matrix` by for display, so that its largest entry has one
    integer digit (0 when the entries are already between 0.01 and 100)."""
    finite = np.abs(matrix[np.isfinite(matrix)])
    if not finite.size or finite.max() == 0 or 0.01 <= finite.max() < 100:
        return 0
    return int(np.floor(np.log10(finite.max())))


WEAK_INTERACTION = 0.1
"""Below this cross-task strength (`interaction_strength`) a grouping rests on small
differences, and the summary says so."""


def interaction_strength(relations: TaskRelations) -> float | None:
    """How strongly the tasks act on one another, from the matrix the grouping reads: the
    largest |affinity| between two tasks as a share of the receiving task's self-affinity
    (`relative_affinity`), or the largest |gradient cosine| between two tasks (a task's with
    itself is 1); None when not measured."""
    k = len(relations.tasks)
    if k < 2:
        return None
    if relations.affinity is not None:
        matrix = relative_affinity(relations.affinity)
    else:
        matrix = relations.cosine
    values = np.abs(matrix[~np.eye(k, dtype=bool)])
    values = values[np.isfinite(values)]  # pairs never measured together say nothing
    return float(values.max()) if values.size else None


def _measured_pairs(matrix: np.ndarray) -> bool:
    """Whether any two different tasks have a measured (finite) value."""
    return bool(np.isfinite(matrix[~np.eye(len(matrix), dtype=bool)]).any())


def suggest_grouping(
    relations: TaskRelations, max_groups: int, leave_out: Sequence[str] = ()
) -> tuple[Grouping, str]:
    """The best grouping into at most `max_groups` models by affinity (or cosine), and which
    of the two it read; refused when no two tasks were measured together (every grouping
    would score 0, and the search's tie-break would read as a finding). `leave_out`: tasks
    grouped with none (auxiliary tasks, which no model is evaluated on)."""
    affinity = relations.affinity
    if affinity is not None and _measured_pairs(affinity):  # each task's column over its own
        matrix, basis = relative_affinity(affinity), "affinity"
    else:
        matrix, basis = relations.cosine.copy(), "gradient cosine"
        np.fill_diagonal(matrix, 0.0)
    if not _measured_pairs(relations.cosine) and not (affinity is not None
                                                      and _measured_pairs(affinity)):  # fmt: skip
        raise ValueError(
            "no two tasks were measured on the same batch (each batch labelled one task: "
            "e.g. one data source per task with a sampling schedule), so there is nothing to "
            "group them by: give the groups (a,b/c), or measure on batches that label several "
            "tasks (training.schedule: joint, or a table labelling them together)"
        )
    kept = [i for i, t in enumerate(relations.tasks) if t not in set(leave_out)]
    names = [relations.tasks[i] for i in kept]
    return best_grouping(matrix[np.ix_(kept, kept)], names, max_groups), basis


def measure_relations(
    config: RunConfig,
    data: PreparedData,
    seed: int = 0,
    affinity_every: int | None = AFFINITY_EVERY,
    run_dir: str | Path | None = None,
    description: str = "analysis",
) -> FittedModel:
    """Train the configured multi-task model once with the conflict monitor and (unless
    `affinity_every` is None) TAG affinity on; early stopping off, as in `compare`. The
    monitors do not change the training, so the model is the ordinary all-in-one model."""
    training = dataclasses.replace(
        config.training,
        seed=seed,
        patience=None,
        keep_last=0,
        keep_best=False,
        conflict_every=config.training.conflict_every or 10,
        affinity_every=affinity_every,
    )
    return fit(
        dataclasses.replace(config, training=training),
        data,
        run_dir=run_dir,
        description=description,
    )


def analyze(
    config: RunConfig,
    data: PreparedData,
    max_groups: int = 2,
    seed: int = 0,
    affinity_every: int | None = AFFINITY_EVERY,
    run_dir: str | Path | None = None,
) -> Analysis:
    """Measure the relations in one multi-task run and suggest a grouping."""
    check_measurable(config, data)
    fitted = measure_relations(config, data, seed, affinity_every, run_dir)
    assert fitted.trainer is not None
    relations = fitted.trainer.task_relations
    if relations is None:
        raise ValueError(not_measured(fitted.trainer.step, config.training.conflict_every,
                                      affinity_every))  # fmt: skip
    warn_unmeasured_affinity(relations, fitted.trainer.step, affinity_every)
    auxiliary = [t.name for t in data.tasks if t.auxiliary]
    grouping, basis = suggest_grouping(relations, max_groups, auxiliary)
    return Analysis(relations, grouping, basis, max_groups)


def warn_unmeasured_affinity(
    relations: TaskRelations, steps: int, affinity_every: int | None
) -> None:
    """Warn that affinity was asked for and never measured (the grouping then reads the
    gradient cosines)."""
    if affinity_every and relations.affinity is None:
        warnings.warn(
            f"affinity was not measured: the run took {steps} training steps, fewer than "
            f"--affinity-every ({affinity_every}); the grouping reads the gradient cosines "
            "instead (measure more often, or train longer)",
            UserWarning,
            stacklevel=3,
        )
    warn_rounded_affinity(relations)


def warn_rounded_affinity(relations: TaskRelations) -> None:
    """Warn that the measured affinity between the tasks is at float32 rounding level."""
    rounded = rounding_level_affinity(relations)
    if rounded is not None:
        warnings.warn(
            f"TAG affinity between the tasks is at float32 rounding level (median |Z| "
            f"{rounded:.1e}: each entry is 1 − a ratio of float32 losses, good to about 1e-7), "
            "so the grouping it suggests may rest on rounding: measure with a larger lookahead "
            f"step (training.lookahead_lr, now {relations.lookahead_lr:g}; e.g. 10× that)",
            UserWarning,
            stacklevel=3,
        )


ROUNDING_AFFINITY = 1e-5
"""Below this median |affinity| between two tasks, TAG's Z (1 − a ratio of float32 losses,
each rounded to about 6e-8) is rounding by a tenth or more: a review measured errors of 36% at
1e-7 and 3.5% at 1e-6."""


def rounding_level_affinity(relations: TaskRelations) -> float | None:
    """The median |affinity| between two tasks when it is below `ROUNDING_AFFINITY`, else
    None (or when affinity was not measured)."""
    if relations.affinity is None:
        return None
    off = np.abs(relations.affinity[~np.eye(len(relations.tasks), dtype=bool)])
    off = off[np.isfinite(off)]
    if not off.size or float(np.median(off)) >= ROUNDING_AFFINITY:
        return None
    return float(np.median(off))


def not_measured(steps: int, conflict_every: int | None, affinity_every: int | None) -> str:
    """Why a run measured no task relation: it took fewer steps than either probe's period."""
    periods = (("training.conflict_every", conflict_every), ("--affinity-every", affinity_every))
    every = [f"{name} ({n})" for name, n in periods if n]
    return (f"nothing was measured: the run took {steps} training step{'s' * (steps != 1)}, "
            f"fewer than {' and '.join(every) or 'any probe period'}: train longer (more "
            "epochs or a smaller batch), or measure more often")  # fmt: skip


def check_task_count(config: RunConfig) -> None:
    """Refuse a config of one task: its relations need at least two (before reading data)."""
    if len(config.tasks) < 2:
        raise ValueError(
            f"the config has {len(config.tasks)} task: relations need at least two tasks"
        )


def check_measurable(config: RunConfig, data: PreparedData) -> None:
    """Refuse, before any training, a run whose task relations cannot be measured."""
    check_task_count(config)
    if "shared" in config.training.freeze:
        raise ValueError(
            "training.freeze lists 'shared': with the shared part frozen there are no shared "
            "gradients to compare; remove it for the analysis"
        )
    model = config.model.build(data.preprocessor.model_input, data.tasks, seed=0)
    if not any(p.requires_grad for p in model.shared_parameters()):
        raise ValueError(
            f"architecture {config.model.architecture!r} shares no parameters between all "
            "tasks (e.g. soft sharing couples separate towers), so no gradients can be "
            "compared: analyse a hard-sharing or expert model instead"
        )


def analyze_run(run_dir: str | Path, max_groups: int = 2) -> Analysis:
    """The analysis of a finished run folder (its relations.json)."""
    path = Path(run_dir) / RELATIONS_FILE
    if not path.is_file() and not (Path(run_dir) / "metrics.csv").is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a run folder (no metrics.csv, no {RELATIONS_FILE}): give a "
            "folder written by `polytask train`, or a YAML config"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} holds no {RELATIONS_FILE}: it was trained with training.conflict_every "
            "null, or by an older polytask; analyse its config instead (polytask analyze "
            "CONFIG.yaml), or train it again"
        )
    relations = TaskRelations.load(path)
    warn_rounded_affinity(relations)
    from polytask.report._run import read_history  # the report reads this module's values

    # auxiliary tasks are grouped with none, as analyze(CONFIG) leaves them out
    auxiliary = sorted(logged_auxiliary(read_history(Path(run_dir))))
    grouping, basis = suggest_grouping(relations, max_groups, auxiliary)
    return Analysis(relations, grouping, basis, max_groups)


def heatmaps(relations: TaskRelations, folder: Path) -> list[Path]:
    """cosine.png and affinity.png (if measured)."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no display

    written = []
    k = len(relations.tasks)
    panels = [("cosine", relations.cosine, "gradient cosine (mean over the run)")]
    if relations.affinity is not None:
        panels.append(("affinity", relations.affinity, "TAG affinity: a step on row → column"))
    for name, matrix, title in panels:
        size = min(2 + 0.45 * k, 14)
        fig = Figure(figsize=(size + 1.5, size))
        ax = fig.subplots()
        exponent = display_exponent(matrix)
        matrix = matrix / 10.0**exponent
        if exponent:
            title += f" (×10^{exponent})"
        off = matrix[~np.eye(k, dtype=bool)]  # the diagonal (self) would set the scale
        off = off[np.isfinite(off)]
        limit = float(np.abs(off).max()) if off.size and np.abs(off).max() > 0 else 1.0
        image = ax.imshow(matrix, cmap="RdBu", vmin=-limit, vmax=limit)
        fig.colorbar(image, ax=ax, shrink=0.8)
        labels = list(relations.tasks) if k <= 40 else []
        ax.set_xticks(range(len(labels)), labels, rotation=90)
        ax.set_yticks(range(len(labels)), labels)
        if k <= 12:
            for (i, j), v in np.ndenumerate(matrix):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=8)
        ax.set_title(title)
        fig.tight_layout()
        path = folder / f"{name}.png"
        image_bytes = io.BytesIO()
        fig.savefig(image_bytes, format="png", dpi=110)
        write_bytes_atomic(path, image_bytes.getvalue())
        written.append(path)
    return written
