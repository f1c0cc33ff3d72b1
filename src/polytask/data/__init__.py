"""Data: in-memory and streamed multi-task data, tabular preprocessing, images, text and
audio, splits, built-in data, and the builders of the image examples' data folders."""

from polytask.data._audio import AudioEncoding, read_wav, resample
from polytask.data._augment import Augment
from polytask.data._builtin import BUILTINS, BuiltinData
from polytask.data._files import CsvSource, ParquetSource
from polytask.data._images import ImageEncoding, ImageSource, arrays_source, image_folder_frame
from polytask.data._iterable import IterableSource
from polytask.data._multi_fashion import FASHION_CLASSES, fashion_mnist, make_multi_fashion
from polytask.data._multi_mnist import MULTI_MNIST_COLUMNS, make_multi_mnist
from polytask.data._readers import read_conll, read_jsonl
from polytask.data._scenes import (
    SCENE_CLASSES,
    SCENE_COLUMNS,
    SCENE_FLIP_PAIRS,
    SCENE_KEYPOINTS,
    SceneCamera,
    make_scenes,
    scene_camera,
    scene_classes,
)
from polytask.data._schedules import SCHEDULES, Schedule, make_schedule
from polytask.data._sequences import SequenceSource
from polytask.data._source import DataSource
from polytask.data._speech import SPEECH_COLUMNS, SPEECH_STYLES, SPEECH_VOICES, make_speech
from polytask.data._split import Split, random_split, split_from_file
from polytask.data._synthetic import (
    TaskFamily,
    customer_tasks,
    family_task_names,
    grouped_task_names,
    make_customers,
    make_grouped_frame,
    make_grouped_regression,
    make_low_rank,
    make_many_tasks,
    make_task_family,
)
from polytask.data._tabular import DataError, TabularPreprocessor
from polytask.data._tensors import Batch, TaskData
from polytask.data._text import TextEncoding, train_tokenizer
from polytask.data._text_corpus import TEXT_FIELDS, make_text_corpus
from polytask.data._xray import XRAY_COLUMNS, XRAY_FINDINGS, make_xrays
from polytask.tasks._columns import DataWarning

__all__ = [
    "BUILTINS",
    "FASHION_CLASSES",
    "MULTI_MNIST_COLUMNS",
    "SCENE_CLASSES",
    "SCENE_COLUMNS",
    "SCENE_FLIP_PAIRS",
    "SCENE_KEYPOINTS",
    "SCHEDULES",
    "SPEECH_COLUMNS",
    "SPEECH_STYLES",
    "SPEECH_VOICES",
    "TEXT_FIELDS",
    "XRAY_COLUMNS",
    "XRAY_FINDINGS",
    "AudioEncoding",
    "Augment",
    "Batch",
    "BuiltinData",
    "CsvSource",
    "DataError",
    "DataSource",
    "DataWarning",
    "ImageEncoding",
    "ImageSource",
    "IterableSource",
    "ParquetSource",
    "SceneCamera",
    "Schedule",
    "SequenceSource",
    "Split",
    "TabularPreprocessor",
    "TaskData",
    "TaskFamily",
    "TextEncoding",
    "arrays_source",
    "customer_tasks",
    "family_task_names",
    "fashion_mnist",
    "grouped_task_names",
    "image_folder_frame",
    "make_customers",
    "make_grouped_frame",
    "make_grouped_regression",
    "make_low_rank",
    "make_many_tasks",
    "make_multi_fashion",
    "make_multi_mnist",
    "make_scenes",
    "make_schedule",
    "make_speech",
    "make_task_family",
    "make_text_corpus",
    "make_xrays",
    "random_split",
    "read_conll",
    "read_jsonl",
    "read_wav",
    "resample",
    "scene_camera",
    "scene_classes",
    "split_from_file",
    "train_tokenizer",
]
