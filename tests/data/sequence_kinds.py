"""Test stand-ins for the text and audio data tests: a transcript kind (`letters`: a character
id per letter, not aligned with the input, like ctc), and two tiny sequence encoders (`bag`:
token embeddings; `frames`: per-frame statistics of a waveform), registered per test with
monkeypatch, so nothing outside the test sees them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from polytask.models.encoders import ENCODERS, Encoder, Features, join_mask
from polytask.tasks import IGNORE_INDEX, KINDS, Metric, TargetFit, Task, TaskKind, standard_losses
from polytask.tasks._kinds import PAD_ID, TextRow


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    keep = y != IGNORE_INDEX
    return float((y[keep] == p[keep]).mean()) if keep.any() else math.nan


class LettersKind(TaskKind):
    """A transcript: its letters as ids 1..V (0 pads), not aligned with the input; predicts
    one letter per row (the first), enough to test the data pipeline."""

    losses = standard_losses("cross_entropy")
    metrics: ClassVar[Mapping[str, Metric]] = {"accuracy": Metric("accuracy", _accuracy, True)}
    sequential = True
    squeeze = False

    def out_features(self, task: Task) -> int:
        return int(task.num_classes or 2)

    def build_head(self, task: Task, features: Features) -> nn.Module:
        from polytask.models.encoders import MaskedPool

        return nn.Sequential(MaskedPool(), nn.Linear(features.channels, self.out_features(task)))

    def fit_text(self, task: Task, values: Sequence[Any]) -> TargetFit:
        return TargetFit(classes=sorted({c for v in values if v is not None for c in str(v)}))

    def resolve(self, task: Task, fit: TargetFit) -> Task:
        import dataclasses

        return dataclasses.replace(task, num_classes=len(fit.class_list(task)) + 1)

    def text_target(self, task: Task, value: Any, row: TextRow, fit: TargetFit) -> Tensor:
        index = {c: i + 1 for i, c in enumerate(fit.class_list(task))}
        unknown = sorted({c for c in str(value) if c not in index})
        if unknown:
            raise ValueError(f"characters {unknown} are not in the training transcripts")
        return torch.tensor([index[c] for c in str(value)], dtype=torch.long)

    def pad_rows(self, task: Task, rows: Sequence[Tensor]) -> Tensor:
        width = max(1, *(len(r) for r in rows))
        out = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out

    def label_mask(self, target: Tensor) -> Tensor:
        return target[:, 0] != IGNORE_INDEX

    def loss(self, fn: Any, output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        if not bool(mask.any()):
            return output.sum() * 0.0
        return fn(output[mask], target[mask, 0]).mean()

    def predict(self, output: Tensor) -> Tensor:
        return output.argmax(-1)

    def evaluate(self, metrics: Any, predictions: np.ndarray, targets: np.ndarray) -> dict:
        return {m.name: m(targets[:, 0], predictions) for m in metrics}

    def truth(self, target: Tensor, scale: Any) -> np.ndarray:
        return target.numpy()

    def prediction(self, output: Tensor, scale: Any) -> np.ndarray:
        return self.predict(output).numpy()

    def decode_row(self, task: Task, output: Tensor, row: TextRow, fit: TargetFit) -> Any:
        letter = int(output.argmax())
        return fit.class_list(task)[letter - 1] if letter > 0 else ""


class BagEncoder(Encoder):
    """Token embeddings, padding masked: the cheapest text sequence encoder."""

    def __init__(self, input_shape: Any, vocab_size: int, channels: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, channels)
        self._declare(tuple(input_shape), Features(channels, sequence=True))

    def forward(self, x: Tensor) -> Tensor:
        return join_mask(torch.tanh(self.embed(x)), x != PAD_ID)


def build_bag(input_shape: tuple[int, ...], /, *, channels: int = 8) -> BagEncoder:
    vocab = getattr(input_shape, "vocab_size", None)
    if vocab is None:
        raise ValueError("bag takes InputShape((L,), vocab_size=V)")
    return BagEncoder(input_shape, vocab, channels)


class FramesEncoder(Encoder):
    """Frames of `frame` samples → their mean, mean square and a linear map; a frame with no
    sample (NaN: padding) is masked."""

    def __init__(self, input_shape: Any, frame: int, channels: int) -> None:
        super().__init__()
        self.frame = frame
        self.linear = nn.Linear(2, channels)
        self._declare(tuple(input_shape), Features(channels, sequence=True, stride=frame))

    def forward(self, x: Tensor) -> Tensor:
        n, s = x.shape
        width = -(-s // self.frame) * self.frame
        x = torch.nn.functional.pad(x, (0, width - s), value=float("nan"))
        frames = x.view(n, -1, self.frame)
        real = ~torch.isnan(frames)
        values = torch.nan_to_num(frames)
        count = real.sum(-1).clamp(min=1)
        stats = torch.stack([values.sum(-1) / count, (values**2).sum(-1) / count], -1)
        return join_mask(torch.tanh(self.linear(stats)), real.any(-1))


def build_frames(input_shape: tuple[int, ...], /, *, frame: int = 100, channels: int = 8) -> Any:
    return FramesEncoder(input_shape, frame, channels)


@pytest.fixture
def sequence_kinds(monkeypatch):
    """The test kind `letters` and encoders `bag` and `frames`, for one test."""
    monkeypatch.setitem(KINDS, "letters", LettersKind())
    monkeypatch.setitem(ENCODERS, "bag", build_bag)
    monkeypatch.setitem(ENCODERS, "frames", build_frames)
