"""Data: in-memory multi-task tensors, tabular preprocessing, splits, built-in data."""

from polytask.data.split import Split, random_split, split_from_file
from polytask.data.synthetic import customer_tasks, make_customers
from polytask.data.tabular import DataError, TabularPreprocessor
from polytask.data.tensors import Batch, TaskData

__all__ = [
    "Batch",
    "DataError",
    "Split",
    "TabularPreprocessor",
    "TaskData",
    "customer_tasks",
    "make_customers",
    "random_split",
    "split_from_file",
]
