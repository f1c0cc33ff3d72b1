"""End to end on synthetic speech: each character is a tone of its own frequency (2 to 4 of
them per utterance, with gaps, jittered durations and amplitudes, noise, a random lead-in),
NaN-padded. A hard sharing model on the `audio` encoder learns the transcript (`ctc`) and the
number of characters (`multiclass` on the pooled frames) together."""

from __future__ import annotations

import math

import pytest
import torch

from polytask import Task, TaskData, TrainConfig, Trainer, make_balancer
from polytask.models import InputShape, build_model
from polytask.tasks import TargetFit
from polytask.train import train_step

RATE = 8000
FREQS = (500.0, 900.0, 1500.0, 2400.0)  # the characters a, b, c, d
ENCODER = {"width": 32, "depth": 1, "heads": 2, "n_mels": 32, "dropout": 0.0}


def _tones(n: int, seed: int, samples: int = 5000) -> TaskData:
    """`n` utterances padded with NaN to `samples`; targets: `text` (unit ids 1..4, 0 after)
    and `count` (characters − 2)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, samples), math.nan)
    text = torch.zeros(n, 4, dtype=torch.long)
    count = torch.zeros(n, dtype=torch.long)
    for i in range(n):
        chars = torch.randint(0, 4, (int(torch.randint(2, 5, (1,), generator=g)),), generator=g)
        parts = [torch.zeros(int(torch.randint(0, 400, (1,), generator=g)))]
        for c in chars.tolist():
            length = int(800 * (0.8 + 0.4 * float(torch.rand(1, generator=g))))
            amplitude = 0.5 + 0.5 * float(torch.rand(1, generator=g))
            tone = torch.sin(2 * math.pi * FREQS[c] * torch.arange(length) / RATE)
            parts += [amplitude * tone, torch.zeros(240)]
        wave = torch.cat(parts)
        x[i, : len(wave)] = wave + 0.05 * torch.randn(len(wave), generator=g)
        text[i, : len(chars)] = chars + 1
        count[i] = len(chars) - 2
    return TaskData(x, {"text": text, "count": count})


def _model(tasks: list[Task]):
    shape = InputShape((5000,), sample_rate=RATE)
    return build_model(
        "hard_sharing", shape, tasks, encoder="audio", encoder_params=ENCODER, seed=0
    )


TASKS = [Task("text", "ctc", num_classes=5), Task("count", "multiclass", num_classes=3)]


def test_a_few_steps_lower_both_losses():
    batch = next(iter(_tones(32, 0).batches(32)))
    model = _model(TASKS)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    balancer = make_balancer("upgrad")  # per-task gradients through the CTC loss
    losses = [train_step(model, balancer, optimizer, batch, TASKS).losses for _ in range(12)]
    assert losses[-1][0] < 0.7 * losses[0][0], losses
    assert losses[-1][1] < losses[0][1], losses


@pytest.mark.slow
def test_hard_sharing_learns_transcripts_and_counts_from_tones():
    model = _model(TASKS)
    config = TrainConfig(epochs=6, batch_size=32, lr=3e-3, progress=False, patience=None, seed=0)
    trainer = Trainer(model, make_balancer("upgrad"), config)
    trainer.fit(_tones(256, 0))
    test = _tones(128, 1)
    metrics = trainer.evaluate(test)
    assert metrics["text"]["cer"] < 0.3, metrics  # chance: about 1
    assert metrics["count"]["accuracy"] > 0.6, metrics  # chance: 1/3
    # the same outputs scored as transcripts, with greedy and beam decoding
    model.eval()
    with torch.no_grad():
        output = model(test.x)["text"]
    fit = TargetFit(classes=["a", "b", "c", "d"])
    for beam in (1, 4):
        task = Task("text", "ctc", num_classes=5, kind_params={"beam": beam})
        accumulator = task.kind_spec.accumulator(task, None, fit)
        accumulator.update(output, test.targets["text"])
        scores = accumulator.compute()
        assert scores["cer"] < 0.3 and scores["wer"] < 0.6, (beam, scores)
