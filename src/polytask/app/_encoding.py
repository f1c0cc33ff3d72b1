"""What a fitted model keeps of its data's encoding, whatever the inputs are: the tabular
`TabularPreprocessor`, the image `ImageEncoding`, the text `TextEncoding`, the audio
`AudioEncoding` and the `MoleculeEncoding` all provide it, so that training, `FittedModel`
(predict, save, load) and the CLI branch on the kind of data as little as they can."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from polytask.data._audio import AudioEncoding
from polytask.data._images import ImageEncoding
from polytask.data._molecules import MoleculeEncoding
from polytask.data._source import DataSource
from polytask.data._tabular import TabularPreprocessor
from polytask.data._text import TextEncoding
from polytask.models.encoders import InputShape
from polytask.tasks._kinds import TargetFit
from polytask.tasks._task import Task


class Encoding(Protocol):
    """A fitted encoding of inputs and targets, saved with a model."""

    @property
    def model_input(self) -> Sequence[str] | InputShape:
        """What the architecture builder takes: the encoded feature names of table rows, or
        the shape of one input (`InputShape`)."""

    def target_fit(self, task: Task) -> TargetFit:
        """What fitting learned about `task`'s targets (classes, scale)."""

    def resolve_tasks(self, tasks: Sequence[Task]) -> list[Task]:
        """The tasks with what the training data settle filled in."""

    def source(
        self,
        frame: pd.DataFrame,
        base: str | Path | None,
        tasks: Sequence[Task] = (),
        *,
        where: str | None = None,
    ) -> DataSource:
        """The rows of `frame` encoded with `tasks`' targets (none: inputs only); `base` is the
        folder file paths in it are relative to, `where` names it in error messages. (Text and
        audio encodings also take `batch_size`, `bucket`, `bucket_size`: the training order of
        their `SequenceSource`, and `split`, named in their warnings.)"""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, for a checkpoint (`encoding_from_dict` reads it back)."""


def encoding_from_dict(saved: Mapping[str, Any]) -> Encoding:
    """The encoding a checkpoint stored: images, text or audio (by its `kind`), else tabular."""
    kind = saved.get("kind")
    if kind == "images":
        return ImageEncoding.from_dict(saved)
    if kind == "text":
        return TextEncoding.from_dict(saved)
    if kind == "audio":
        return AudioEncoding.from_dict(saved)
    if kind == "molecules":
        return MoleculeEncoding.from_dict(saved)
    return TabularPreprocessor.from_dict(dict(saved))


def input_kind(encoding: Encoding) -> str:
    """What a model of `encoding` reads, in a word: table rows, images, text or audio."""
    if isinstance(encoding, ImageEncoding):
        return "images"
    if isinstance(encoding, TextEncoding):
        return "text"
    if isinstance(encoding, AudioEncoding):
        return "audio"
    if isinstance(encoding, MoleculeEncoding):
        return "molecules"
    return "table rows"


def tabular_encoding(encoding: Encoding, what: str = "this") -> TabularPreprocessor:
    """`encoding` when it encodes table rows; for another (images) a ValueError saying that
    `what` (e.g. "export") works on models of table rows only."""
    if isinstance(encoding, TabularPreprocessor):
        return encoding
    instead = {
        "adapt": "add the task to the config and train again (polytask train)",
        "edit": "change the config's tasks and train again (polytask train)",
    }.get(what, "predict with `polytask predict` (FittedModel.predict) instead")
    raise ValueError(
        f"{what} works on models of table rows; this model reads {input_kind(encoding)}: {instead}"
    )
