"""A float16 run resumed from a checkpoint continues exactly, loss scale included."""

import torch

from polytask import TrainConfig, Trainer, hard_sharing_mlp, make_balancer
from tests.train.test_spread import TASKS, _data


def _trainer(run_dir, steps: int) -> Trainer:
    torch.manual_seed(0)
    config = TrainConfig(epochs=None, steps=steps, eval_every=2, batch_size=64, lr=1e-2,
                         precision=16, keep_last=3, progress=False)  # fmt: skip
    return Trainer(hard_sharing_mlp(6, TASKS, hidden=(8,)), make_balancer("upgrad"), config,
                   run_dir=run_dir)  # fmt: skip


def test_float16_resume_restores_the_loss_scale_and_continues_exactly(tmp_path):
    whole = _trainer(tmp_path / "whole", 4)
    whole.fit(_data(), _data(64, seed=1))
    assert whole.loss_scale is not None and whole.loss_scale.overflows >= 1  # 2^16 overflows
    first = _trainer(tmp_path / "part", 2)
    first.fit(_data(), _data(64, seed=1))
    resumed = _trainer(tmp_path / "part", 4)
    assert resumed.resume(tmp_path / "part") is not None
    assert resumed.loss_scale is not None and first.loss_scale is not None
    resumed.fit(_data(), _data(64, seed=1))
    assert resumed.loss_scale.state_dict() == whole.loss_scale.state_dict()
    for a, b in zip(resumed.model.parameters(), whole.model.parameters(), strict=True):
        assert torch.equal(a, b)
