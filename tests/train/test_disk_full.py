"""A full disk while writing a checkpoint: one error naming the file and the space it needs, the
previous checkpoint intact, no partial or temporary file left (issue 20, item 9)."""

import errno
import os
import re
import stat
import threading

import pytest
import torch

from polytask._files import DiskFullError, write_text_atomic
from polytask.train import _checkpoint as checkpoint_module
from polytask.train import load_checkpoint

TORCH_FULL_DISK = (
    "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
    "data/3: file write failed"
)
"""What torch.save raises when the disk fills up under it."""


def _full_disk(kind: str):
    """A torch.save that writes part of the file, then fails as a full disk makes it fail."""
    real_save = torch.save

    def save(obj, path):
        real_save(obj, path)
        with open(path, "r+b") as f:
            f.truncate(100)
        if kind == "torch":
            raise RuntimeError(TORCH_FULL_DISK)
        raise OSError(errno.ENOSPC if kind == "enospc" else errno.EDQUOT, "No space left")

    return save


@pytest.mark.parametrize("kind", ["torch", "enospc", "edquot"])
def test_a_full_disk_keeps_the_previous_checkpoint_and_names_the_path(tmp_path, monkeypatch, kind):
    path = tmp_path / "checkpoints" / "step-00000005.pt"
    checkpoint_module.save_checkpoint(path, {"model": {"w": torch.ones(3)}}, {"step": 5})
    before = path.read_bytes()

    monkeypatch.setattr(checkpoint_module.torch, "save", _full_disk(kind))
    weights = {"model": {"w": torch.zeros(1000)}}
    with pytest.raises(DiskFullError) as caught:
        checkpoint_module.save_checkpoint(path, weights, {"step": 10})
    message = str(caught.value)
    assert str(path) in message and "no space left" in message
    assert re.search(r"it needs about 4\.\d kB; .* free there", message), message
    assert "inline_container" not in message and "Errno" not in message
    assert caught.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert load_checkpoint(path)[1]["step"] == 5
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_other_write_errors_pass_through_unchanged(tmp_path, monkeypatch):
    def broken(obj, path):
        raise RuntimeError("something else")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken)
    with pytest.raises(RuntimeError, match="something else"):
        checkpoint_module.save_checkpoint(tmp_path / "a.pt", {"model": {}}, {})
    assert list(tmp_path.iterdir()) == []


def test_a_text_file_written_atomically_is_whole_or_untouched(tmp_path, monkeypatch):
    path = tmp_path / "compare.json"
    write_text_atomic(path, "old")
    real = type(path).write_bytes

    def half(self, data):
        real(self, data[:2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(path), "write_bytes", half)
    with pytest.raises(DiskFullError, match=r"compare\.json: no space left .* about 8 B"):
        write_text_atomic(path, "new text")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["compare.json"]


def test_a_device_is_written_in_place_never_replaced(tmp_path):
    """A rename would replace e.g. `predict -o /dev/null` (as root: the device itself)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_text_atomic(fifo, "through the pipe")
    reader.join(timeout=60)
    assert got == [b"through the pipe"]
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still the pipe, not a regular file


def test_an_atomic_write_through_a_symlink_replaces_its_target(tmp_path):
    target = tmp_path / "real.csv"
    target.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    write_text_atomic(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
