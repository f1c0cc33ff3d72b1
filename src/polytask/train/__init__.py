"""Training: configuration, step, loop, callbacks, checkpoints."""

from polytask.train.allocator import retain_freed_memory
from polytask.train.callbacks import Callback, EarlyStopping, MetricsWriter, ProgressDisplay
from polytask.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from polytask.train.config import TrainConfig
from polytask.train.device import resolve_device
from polytask.train.loop import Trainer
from polytask.train.step import StepResult, task_losses, train_step

__all__ = [
    "Callback",
    "CheckpointError",
    "EarlyStopping",
    "MetricsWriter",
    "ProgressDisplay",
    "StepResult",
    "TrainConfig",
    "Trainer",
    "load_checkpoint",
    "resolve_device",
    "retain_freed_memory",
    "save_checkpoint",
    "task_losses",
    "train_step",
]
