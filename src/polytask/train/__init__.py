"""Training: configuration, step, loop, callbacks, loggers, checkpoints."""

from polytask.train._allocator import retain_freed_memory
from polytask.train._callbacks import Callback, EarlyStopping, ProgressDisplay
from polytask.train._checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from polytask.train._config import TrainConfig
from polytask.train._derived import derive_batch, step_generator
from polytask.train._device import resolve_device
from polytask.train._loop import Trainer
from polytask.train._relations import TaskRelations
from polytask.train._run_folder import RunFolderError, RunLock
from polytask.train._step import StepResult, task_losses, train_step
from polytask.train.loggers import LOGGERS, Logger

__all__ = [
    "LOGGERS",
    "Callback",
    "CheckpointError",
    "EarlyStopping",
    "Logger",
    "ProgressDisplay",
    "RunFolderError",
    "RunLock",
    "StepResult",
    "TaskRelations",
    "TrainConfig",
    "Trainer",
    "derive_batch",
    "load_checkpoint",
    "resolve_device",
    "retain_freed_memory",
    "save_checkpoint",
    "step_generator",
    "task_losses",
    "train_step",
]
