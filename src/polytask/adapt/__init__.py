"""New tasks on a trained model: add a head and fit it from few labels (`adapt`, with the
strategies in `STRATEGIES`), measure it as k grows (`kshot_curve`), and remove or rename tasks.
"""

from polytask.adapt._adapt import AdaptConfig, AdaptResult, adapt, fit_task
from polytask.adapt._curve import DEFAULT_KS, KShotCurve, kshot_curve
from polytask.adapt._edit import EditError, add_task, remove_tasks, rename_tasks
from polytask.adapt.strategies import STRATEGIES, AdaptStrategy, make_strategy

__all__ = [
    "DEFAULT_KS",
    "STRATEGIES",
    "AdaptConfig",
    "AdaptResult",
    "AdaptStrategy",
    "EditError",
    "KShotCurve",
    "adapt",
    "add_task",
    "fit_task",
    "kshot_curve",
    "make_strategy",
    "remove_tasks",
    "rename_tasks",
]
