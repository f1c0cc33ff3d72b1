"""New tasks on a trained model: add a head and fit it from few labels (`adapt`, with the
strategies in `STRATEGIES`), measure it as k grows (`kshot_curve`), and remove or rename tasks.
"""

from polytask.adapt._adapt import AdaptConfig, AdaptResult, adapt, fit_task
from polytask.adapt._edit import EditError, add_task, remove_tasks, rename_tasks
from polytask.adapt.strategies import STRATEGIES, AdaptStrategy, make_strategy

__all__ = [
    "STRATEGIES",
    "AdaptConfig",
    "AdaptResult",
    "AdaptStrategy",
    "EditError",
    "adapt",
    "add_task",
    "fit_task",
    "make_strategy",
    "remove_tasks",
    "rename_tasks",
]
