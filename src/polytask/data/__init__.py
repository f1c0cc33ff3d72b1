"""Data: in-memory multi-task tensors, tabular preprocessing, splits, built-in data."""

from polytask.data._schedules import SCHEDULES, Schedule, make_schedule
from polytask.data._split import Split, random_split, split_from_file
from polytask.data._synthetic import customer_tasks, make_customers
from polytask.data._tabular import DataError, TabularPreprocessor
from polytask.data._tensors import Batch, TaskData
from polytask.tasks._columns import DataWarning

__all__ = [
    "SCHEDULES",
    "Batch",
    "DataError",
    "DataWarning",
    "Schedule",
    "Split",
    "TabularPreprocessor",
    "TaskData",
    "customer_tasks",
    "make_customers",
    "make_schedule",
    "random_split",
    "split_from_file",
]
