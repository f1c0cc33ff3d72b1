"""Auxiliary tasks in training: derived rows in the batch, unlabelled rows that now count,
nothing reported for them, exact resume, contrastive views of images through a conv trunk,
and the gain the issue asks for (reconstruction on low-rank data with 5% of rows labelled)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import polytask as pt
from polytask import MultiTaskModel, Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp
from polytask.data import Batch, make_low_rank
from polytask.train import derive_batch, step_generator
from polytask.train._step import train_step

NAN = float("nan")


def _data(n: int = 96, labelled: int = 8, seed: int = 0) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = x[:, 0] - x[:, 1]
    y[labelled:] = NAN  # most rows label no task at all
    return TaskData(x, {"y": y})


TASKS = [Task("y", "regression"), Task("rec", "reconstruction", kind_params={"features": 6})]


def _config(**fields) -> TrainConfig:
    base = {"epochs": 3, "batch_size": 32, "progress": False, "patience": None, "lr": 1e-2}
    return TrainConfig(**(base | fields))


def test_derived_rows_follow_the_clean_rows_and_each_task_reads_its_own():
    x = torch.randn(5, 6)
    batch = Batch(x, {"y": torch.ones(5), "rec": torch.zeros(5)})
    derived = derive_batch(batch, TASKS, step_generator(0, 3))
    assert derived.x.shape == (10, 6) and torch.equal(derived.x[:5], x)
    assert derived.rows == {"y": slice(0, 5), "rec": slice(5, 10)}
    assert derived.targets["rec"].shape == (5, 6)  # the original values where masked
    again = derive_batch(batch, TASKS, step_generator(0, 3))
    assert torch.equal(again.x, derived.x)  # (seed, step) draws the same corruption
    assert not torch.equal(derive_batch(batch, TASKS, step_generator(0, 4)).x, derived.x)
    assert derive_batch(derived, TASKS) is derived  # derived once
    plain = Batch(x, {"y": torch.ones(5)})
    assert derive_batch(plain, TASKS[:1]) is plain


def test_rows_no_task_labels_train_the_shared_trunk_through_the_auxiliary_task():
    x = torch.randn(16, 6)
    unlabelled = Batch(x, {"y": torch.full((16,), NAN), "rec": torch.zeros(16)})
    for tasks, moves in ((TASKS[:1], False), (TASKS, True)):
        model = hard_sharing_mlp(6, tasks, hidden=(8,), seed=0)
        before = [p.detach().clone() for p in model.shared_parameters()]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        targets = {t.name: unlabelled.targets[t.name] for t in tasks}
        balancer = pt.make_balancer("ew")
        balancer.setup([t.name for t in tasks])
        train_step(model, balancer, optimizer, Batch(x, targets), tasks)
        after = list(model.shared_parameters())
        changed = any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
        assert changed is moves


def test_an_auxiliary_task_trains_but_is_never_evaluated_predicted_or_logged_as_a_task():
    trainer = Trainer(hard_sharing_mlp(6, TASKS, hidden=(8,), seed=0), config=_config())
    history = trainer.fit(_data(), _data(seed=1, labelled=40))
    last = history[-1]
    assert "auxiliary/rec/loss" in last and "auxiliary/rec/weight" in last
    assert not [k for k in last if k.startswith(("train/rec", "val/rec", "weight/rec"))]
    assert last["train/loss"] == pytest.approx(last["train/y/loss"])  # the reported tasks'
    assert history[0]["auxiliary/rec/loss"] > last["auxiliary/rec/loss"]  # it learns
    assert set(trainer.evaluate(_data(labelled=96))) == {"y"}
    assert set(trainer.predict(torch.randn(3, 6))) == {"y"}
    with pytest.raises(ValueError, match="names an auxiliary task"):
        Trainer(trainer.model, config=_config(monitor="rec/rmse")).fit(_data(), _data(seed=1))


def test_a_resumed_run_corrupts_alike_and_ends_bit_identical(tmp_path):
    def trainer() -> Trainer:
        config = _config(epochs=4, restore_best=False, auxiliary_gradients="projected")
        return Trainer(
            hard_sharing_mlp(6, TASKS, hidden=(8,), seed=0), pt.make_balancer("upgrad"), config
        )

    whole = trainer()
    whole.fit(_data())
    first = trainer()
    first.config = dataclasses.replace(first.config, epochs=2)
    first.fit(_data())
    first.save(tmp_path / "mid.pt")
    resumed = trainer()
    resumed.load(tmp_path / "mid.pt")
    resumed.fit(_data())
    assert resumed.step == whole.step == 12
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_contrastive_views_of_images_train_a_conv_trunk():
    """Image-shaped TaskData (N, C, H, W) through the Python API: a small conv trunk under
    MultiTaskModel, a class label on a few rows and the contrastive task on all of them."""
    g = torch.Generator().manual_seed(0)
    n = 64
    label = torch.arange(n) % 2
    bars = torch.zeros(n, 1, 8, 8)
    bars[label == 0, :, 2:6, 3:5] = 1.0  # vertical bar
    bars[label == 1, :, 3:5, 2:6] = 1.0  # horizontal bar
    images = bars + 0.1 * torch.randn(n, 1, 8, 8, generator=g)
    y = torch.where(torch.arange(n) < 8, label, torch.tensor(-100))
    tasks = [
        Task("shape", "binary"),
        Task(
            "views", "contrastive", kind_params={"projection": 8}, loss_params={"temperature": 0.2}
        ),
    ]
    with pt.seeded(0):
        trunk = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()
        )
        model = MultiTaskModel(trunk, tasks, trunk_out_dim=32)
    trainer = Trainer(model, pt.make_balancer("upgrad"), _config(epochs=15, lr=3e-3))
    history = trainer.fit(TaskData(images, {"shape": y.float()}))
    assert history[-1]["auxiliary/views/loss"] < history[0]["auxiliary/views/loss"]
    result = trainer.evaluate(TaskData(images, {"shape": label.float()}))
    assert set(result) == {"shape"} and np.isfinite(result["shape"]["loss"])


def _main_r2(seed: int, auxiliary: str | None) -> float:
    """y's test r2 on `make_low_rank` data (x = z W + noise, 40 features from 3 factors), with
    5% of the training rows labelled, by a bottleneck MLP with or without an auxiliary task."""
    df = make_low_rank(n=4000, n_features=40, noise=1.0, labelled=1.0, seed=seed)
    split = pt.random_split(len(df), val_fraction=0.0, test_fraction=0.25, seed=seed)
    train = df.iloc[split.train].copy()
    train.loc[np.random.default_rng(seed).random(len(train)) >= 0.05, "y"] = np.nan
    tasks = [Task("y", "regression")] + ([Task("aux", auxiliary)] if auxiliary else [])
    pre = pt.TabularPreprocessor.fit(train, [c for c in df if c != "y"], [], tasks)
    tasks = pre.resolve_tasks(tasks)
    model = hard_sharing_mlp(pre.in_dim, tasks, hidden=(64, 8), seed=seed)
    config = TrainConfig(epochs=20, lr=3e-3, progress=False, seed=seed, conflict_every=None)
    trainer = Trainer(model, pt.make_balancer("ew"), config)
    trainer.fit(pre.transform(train, tasks))
    return trainer.evaluate(pre.transform(df.iloc[split.test], tasks))["y"]["r2"]


@pytest.mark.slow
def test_reconstruction_on_the_unlabelled_rows_improves_the_main_task():
    """The issue's test: 150 of 3000 training rows labelled. Measured (docs/guide/auxiliary.md):
    r2 0.505 without, 0.584 with reconstruction (seeds 0-2; better in each)."""
    without = [_main_r2(seed, None) for seed in range(3)]
    with_aux = [_main_r2(seed, "reconstruction") for seed in range(3)]
    assert np.mean(with_aux) > np.mean(without) + 0.04
    assert sum(a > b for a, b in zip(with_aux, without, strict=True)) >= 2


def test_gating_against_gradients_no_self_supervised_row_shares_is_refused():
    """On the representation's rows a self-supervised task's gradient lives on its derived
    rows only: every cosine with the main tasks was 0, so `gated` switched it off and
    `projected` never projected, without a word (outside review)."""
    model = hard_sharing_mlp(6, TASKS, hidden=(8,), seed=0)
    for rule in ("gated", "projected"):
        config = _config(gradient_mode="representation", auxiliary_gradients=rule)
        with pytest.raises(ValueError, match=r"every cosine would be 0; set training\.gradient"):
            Trainer(model, pt.make_balancer("upgrad"), config)
    Trainer(model, pt.make_balancer("upgrad"), _config(gradient_mode="jacobian",
                                                       auxiliary_gradients="gated"))  # fmt: skip


def test_a_balancer_that_steps_on_the_validation_gradient_alone_is_not_gated():
    """FORUM's task weights are 0 whenever ν is: the main direction built from them was 0,
    so every auxiliary gradient joined whole, one pointing against the validation loss too."""
    from polytask.gradients._auxiliary import auxiliary_aware

    for rule in ("gated", "projected"):
        with pytest.raises(ValueError, match="from the validation gradient alone"):
            auxiliary_aware(pt.make_balancer("forum"), ["rec"], rule)
    assert auxiliary_aware(pt.make_balancer("auto_lambda"), ["rec"], "gated") is not None


def test_the_relations_probe_reads_derived_rows_when_micro_batches_derive_their_own():
    """accumulate: 2 with a self-supervised task: the probe read the batch's placeholder
    targets (a size mismatch at the first probed step; a contrastive task's every row a
    positive of every other, measured without a word)."""
    model = hard_sharing_mlp(6, TASKS, hidden=(8,), seed=0)
    config = _config(accumulate=2, conflict_every=1, epochs=1)
    history = Trainer(model, pt.make_balancer("ew"), config).fit(_data())
    assert np.isfinite(history[-1]["conflict/rec/cos"])
