"""Up-front checks of the model-selection settings of `TrainConfig` (kept apart from the
config class so that its own checks stay short)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from polytask.train._config import TrainConfig


def check_selection(config: TrainConfig) -> None:
    """Refuse settings that contradict `selection`, saying what to change."""
    window = config.degradation_window
    if window is not None and window < 1:
        raise ValueError(
            f"degradation_window must be at least 1 (or null to turn the alert off), got {window}"
        )
    if config.selection != "per_task":
        return
    if not config.restore_best:
        raise ValueError(
            "selection 'per_task' serves each task from the weights of its best evaluation, "
            "which restores them: set restore_best: true, or selection: joint to keep the "
            "final weights"
        )
    if config.monitor != "loss":
        raise ValueError(
            f"monitor {config.monitor!r} chooses the one snapshot of selection 'joint'; "
            "selection 'per_task' judges each task by its own primary metric (set a task's "
            "primary_metric to change it): remove monitor, or set selection: joint"
        )
    if config.keep_best:
        raise ValueError(
            "keep_best writes best.pt, one snapshot of the whole model, but selection "
            "'per_task' serves each task from its own best evaluation (the run's model.pt, or "
            "the trained model, holds that): set keep_best: false, or selection: joint"
        )
