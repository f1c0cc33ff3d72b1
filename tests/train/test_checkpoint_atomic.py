"""A checkpoint write that dies half-way leaves the previous checkpoint whole and loadable;
the next run clears the half-written temporary file; a damaged file is refused as damaged."""

import random

import pytest
import torch

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp
from polytask.train import CheckpointError, load_checkpoint
from polytask.train import _checkpoint as checkpoint_module

TASKS = [Task("a", "regression")]


def _fit(run_dir, steps, keep_last=1):
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(epochs=None, steps=steps, eval_every=5, batch_size=16, progress=False,
                         keep_last=keep_last)  # fmt: skip
    trainer = Trainer(hard_sharing_mlp(3, TASKS, hidden=(4,)), config=config, run_dir=run_dir)
    trainer.resume(run_dir)
    trainer.fit(TaskData(x, {"a": x[:, 0]}))
    return trainer


def test_a_write_killed_half_way_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    _fit(tmp_path, 5)
    previous = tmp_path / "checkpoints" / "step-00000005.pt"
    before = previous.read_bytes()

    real_save = torch.save

    def dies_half_way(obj, path):
        real_save(obj, path)
        with open(path, "r+b") as f:  # a torn write: the file is cut short, then the kill
            f.truncate(len(before) // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_module.save_checkpoint(previous, {"model": {}}, {"step": 99})
    assert previous.read_bytes() == before
    assert load_checkpoint(previous)[1]["step"] == 5
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))


def test_a_stale_temporary_file_from_a_killed_run_is_cleared(tmp_path):
    _fit(tmp_path, 5)
    stale = tmp_path / "checkpoints" / ".step-00000010.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    trainer = _fit(tmp_path, 10)
    assert trainer.step == 10
    assert not stale.exists()
    assert load_checkpoint(tmp_path / "checkpoints" / "step-00000010.pt")[1]["step"] == 10


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_damaged_checkpoints_are_refused_as_damaged(tmp_path):
    """Truncation (a full disk, an interrupted copy) and flipped bits anywhere in the file,
    tensor data included, are caught: the checksum covers every tensor and value. A flip in
    bytes the loader never reads (zip padding, timestamps) leaves the contents intact."""
    original = tmp_path / "checkpoints" / "step-00000005.pt"
    _fit(tmp_path, 5)
    good, states = original.read_bytes(), load_checkpoint(original)
    rng = random.Random(0)
    path = tmp_path / "damaged.pt"
    refused = 0
    for trial in range(60):
        damaged = bytearray(good)
        if trial % 2:
            damaged = damaged[: rng.randrange(len(damaged))]
        else:
            at = rng.randrange(len(damaged))
            damaged[at] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(damaged))
        try:
            loaded = load_checkpoint(path)
        except CheckpointError as err:
            assert "damaged" in str(err) or "not a polytask checkpoint" in str(err)
            refused += 1
            continue
        assert _same(loaded, states), f"trial {trial}: damage went unnoticed"
    assert refused >= 40


def test_a_damaged_checksum_key_is_caught_and_old_checkpoints_without_one_load(tmp_path):
    """A flip in the key "digest" itself must not pass for a checkpoint without a checksum;
    format 1 files, written before checksums, still load."""
    _fit(tmp_path, 5)
    path = tmp_path / "checkpoints" / "step-00000005.pt"
    good = bytearray(path.read_bytes())
    at = good.find(b"digest")
    assert at > 0
    good[at] ^= 0x02  # "digest" -> "figest"
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(good))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(damaged)

    payload = torch.load(path, weights_only=True)
    del payload["digest"]
    payload["format_version"] = 1
    torch.save(payload, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")[1]["step"] == 5


def test_a_damaged_newest_checkpoint_names_the_earlier_one_to_resume_from(tmp_path):
    """Found by review: a truncated newest checkpoint was refused as damaged without a word of
    the intact earlier one beside it (keep_last 2)."""
    _fit(tmp_path, 10, keep_last=2)
    newest = tmp_path / "checkpoints" / "step-00000010.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"damaged.*An earlier checkpoint is there, .*"
                       r"step-00000005\.pt: move the damaged one out"):  # fmt: skip
        _fit(tmp_path, 15, keep_last=2)
    newest.unlink()
    assert _fit(tmp_path, 15, keep_last=2).step == 15  # from step 5
