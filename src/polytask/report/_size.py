"""A checkpoint's model size, and what K single-task models of its architecture would weigh."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from polytask.models._base import grown_parts, model_size
from polytask.report._run import ModelSize

log = logging.getLogger(__name__)


def checkpoint_size(path: Path) -> tuple[ModelSize | None, dict[str, str]]:
    """The size of the model in `path` and of one single-task model per task, and each task's
    primary metric; (None, {}) for a checkpoint this polytask cannot rebuild (logged)."""
    from polytask.app import FittedModel
    from polytask.train._checkpoint import CheckpointError

    try:
        fitted = FittedModel.load(path)
    except CheckpointError as err:
        log.warning("report: model size left out: %s", err)
        return None, {}
    parameters, size = model_size(fitted.model)
    model = fitted.model_config.describe()
    reported = fitted.choose_tasks(None)  # auxiliary tasks have no metric, no own model
    primary = {t.name: t.primary.name for t in reported}
    stl_parameters: dict[str, int] = {}
    stl_bytes: dict[str, int] = {}
    alone = ModelSize(parameters, size, path.stat().st_size, model=model)
    grown = grown_parts(fitted.model)
    if grown:  # sized by its fit: an unfitted one would count as nothing
        why = f"{', '.join(grown)} is sized by its fit on the rows, so one per task is not built"
        return dataclasses.replace(alone, stl_absent=why), primary
    for task in reported:
        try:  # an architecture that needs several tasks (e.g. ESMM) has no single-task form
            single = fitted.model_config.build(fitted.preprocessor.model_input, [task], seed=0)
        except (ValueError, TypeError, KeyError) as err:
            why = f"this architecture has no single-task form for {task.name!r} ({err})"
            return dataclasses.replace(alone, stl_absent=why), primary
        stl_parameters[task.name], stl_bytes[task.name] = model_size(single)
    return dataclasses.replace(alone, stl_parameters=stl_parameters, stl_bytes=stl_bytes), primary
