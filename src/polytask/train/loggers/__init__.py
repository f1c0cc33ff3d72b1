"""Loggers: where a run's metrics go, through one callback interface (`Logger`).

Every run with a run folder writes `metrics.csv` and `metrics.json`; `TrainConfig.loggers`
adds more by name (`LOGGERS`: `tensorboard`, `mlflow`, each needing its pip extra), and any
`Logger` can be passed in `Trainer(callbacks=[...])`."""

from polytask.train.loggers._base import Logger
from polytask.train.loggers._csv import CSVLogger
from polytask.train.loggers._json import JSONLogger
from polytask.train.loggers._mlflow import MLflowLogger
from polytask.train.loggers._registry import ALWAYS_ON, LOGGERS, make_logger, run_loggers
from polytask.train.loggers._tensorboard import TensorBoardLogger

__all__ = [
    "ALWAYS_ON",
    "LOGGERS",
    "CSVLogger",
    "JSONLogger",
    "Logger",
    "MLflowLogger",
    "TensorBoardLogger",
    "make_logger",
    "run_loggers",
]
