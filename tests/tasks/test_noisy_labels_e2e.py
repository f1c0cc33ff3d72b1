"""With 40% of one task's training labels flipped, noise-robust losses beat cross entropy on
that task's clean test labels (mean over seeds), in a two-task model."""

import numpy as np
import pytest
import torch

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer


def _data(n: int, seed: int, flip: float = 0.0) -> TaskData:
    world = torch.Generator().manual_seed(7)
    w, classes = torch.randn(10, generator=world), torch.randn(10, 4, generator=world)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    label = (x @ classes).argmax(1)
    hit = torch.rand(n, generator=g) < flip
    other = (label + torch.randint(1, 4, (n,), generator=g)) % 4  # a different class
    return TaskData(x, {"reg": x @ w / 3, "cls": torch.where(hit, other, label)})


def _clean_accuracy(loss: str, seed: int) -> float:
    tasks = [
        Task("reg", "regression"),
        Task("cls", "multiclass", num_classes=4, loss=loss),
    ]
    torch.manual_seed(seed)
    model = hard_sharing_mlp(10, tasks, hidden=(128, 128))
    config = TrainConfig(epochs=20, batch_size=64, lr=6e-3, patience=None, progress=False,
                         seed=seed, restore_best=False)  # fmt: skip
    trainer = Trainer(model, make_balancer("ew"), config)
    trainer.fit(_data(1000, seed, flip=0.4))
    return trainer.evaluate(_data(2000, 100))["cls"]["accuracy"]


@pytest.mark.slow
def test_robust_losses_beat_cross_entropy_under_label_noise():
    acc = {loss: np.mean([_clean_accuracy(loss, s) for s in range(3)])
           for loss in ("cross_entropy", "gce", "sce")}  # fmt: skip
    # measured (20 epochs at lr 6e-3): cross entropy 0.59, gce 0.83, sce 0.79; over seeds 1-3,
    # 2-4, 3-5 the gaps are 0.22-0.24 (gce) and 0.18-0.19 (sce). At 40 epochs, lr 3e-3: 0.58,
    # 0.83, 0.75.
    assert acc["gce"] > acc["cross_entropy"] + 0.1
    assert acc["sce"] > acc["cross_entropy"] + 0.05
