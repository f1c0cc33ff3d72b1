"""A run folder belongs to one run: no fresh run over another's checkpoints, and one training
process at a time (issue 20, items 1 and 2)."""

import pytest
import torch

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp
from polytask.train import RunFolderError, RunLock
from tests.train.helpers import locked_by_another_process

TASKS = [Task("a", "regression"), Task("b", "regression")]


def _data(n: int = 64) -> TaskData:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return TaskData(x, {"a": x[:, 0], "b": x[:, 1] - x[:, 2]})


def _trainer(run_dir, steps: int) -> Trainer:
    torch.manual_seed(0)
    config = TrainConfig(epochs=None, steps=steps, eval_every=5, batch_size=16, progress=False)
    return Trainer(hard_sharing_mlp(4, TASKS, hidden=(8,)), config=config, run_dir=run_dir)


def test_a_fresh_run_over_another_runs_checkpoints_is_refused(tmp_path):
    _trainer(tmp_path, steps=20).fit(_data())
    assert (tmp_path / "checkpoints" / "step-00000020.pt").exists()
    shorter = _trainer(tmp_path, steps=5)
    with pytest.raises(RunFolderError, match=r"step-00000020.pt.*Trainer\.resume\(run_dir\)"):
        shorter.fit(_data())
    # the earlier run's checkpoint is untouched, and nothing of the refused run was written
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*.pt")) == [
        "step-00000020.pt"
    ]


def test_a_resumed_run_continues_in_its_own_folder(tmp_path):
    _trainer(tmp_path, steps=10).fit(_data())
    longer = _trainer(tmp_path, steps=15)
    assert longer.resume(tmp_path) is not None and longer.step == 10
    longer.fit(_data())
    assert longer.step == 15


def test_resuming_a_finished_run_says_there_is_nothing_to_train(tmp_path, caplog):
    """Found by trying `train --resume` on a finished run: it printed 'resuming' and the same
    test metrics again, with no word that nothing had been trained."""
    _trainer(tmp_path, steps=10).fit(_data())
    again = _trainer(tmp_path, steps=10)
    assert again.resume(tmp_path) is not None
    with caplog.at_level("WARNING", logger="polytask"):
        again.fit(_data())
    assert again.step == 10
    assert "had already taken all its 10 steps: nothing to train" in caplog.text
    caplog.clear()
    longer = _trainer(tmp_path, steps=15)  # a longer run continues, without the warning
    assert longer.resume(tmp_path) is not None
    with caplog.at_level("WARNING", logger="polytask"):
        longer.fit(_data())
    assert longer.step == 15 and "nothing to train" not in caplog.text


def test_a_second_process_cannot_train_into_a_locked_folder(tmp_path):
    with locked_by_another_process(tmp_path) as pid:
        with pytest.raises(
            RunFolderError, match=rf"in use by another training process \(pid {pid}\)"
        ):
            _trainer(tmp_path, steps=5).fit(_data())
        assert not (tmp_path / "checkpoints").exists()
    _trainer(tmp_path, steps=5).fit(_data())  # released when the holder exits


def test_the_lock_is_reentrant_within_one_process(tmp_path):
    with RunLock(tmp_path):
        _trainer(tmp_path, steps=5).fit(_data())  # the Trainer takes it again inside
    with RunLock(tmp_path):  # and it was released on the way out
        pass


def test_resuming_a_run_that_stopped_early_trains_no_further(tmp_path, caplog):
    """Found by trying the README: `train --resume` on a finished run that had stopped early
    trained another window (a new metrics row and checkpoint) before stopping again."""
    data, val = _data(), _data(32)

    def trainer() -> Trainer:
        torch.manual_seed(0)
        config = TrainConfig(epochs=None, steps=400, eval_every=5, batch_size=16, lr=0.5,
                             patience=1, progress=False)  # fmt: skip
        return Trainer(hard_sharing_mlp(4, TASKS, hidden=(8,)), config=config, run_dir=tmp_path)

    first = trainer()
    first.fit(data, val)
    assert first.should_stop and first.step < 400  # it did stop early
    weights = {k: v.clone() for k, v in first.model.state_dict().items()}
    again = trainer()
    assert again.resume(tmp_path) is not None
    with caplog.at_level("WARNING", logger="polytask"):
        again.fit(data, val)
    assert f"had stopped early at step {first.step}" in caplog.text
    assert again.step == first.step and again.should_stop
    assert len(again.history) == len(first.history)
    steps = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*.pt"))
    assert steps[-1] == f"step-{first.step:08d}.pt"
    state = again.model.state_dict()
    assert all(torch.equal(state[k], weights[k]) for k in weights)  # the best, restored again


def test_a_run_that_wrote_nothing_leaves_no_trace(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        assert (run / ".polytask.lock").exists()
    assert not run.exists()  # refused before its first file: no folder left behind
    run.mkdir()
    with RunLock(run):
        pass
    assert run.is_dir() and list(run.iterdir()) == []  # a folder it did not make stays
    with RunLock(run):
        (run / "metrics.csv").write_text("step\n")
    assert sorted(p.name for p in run.iterdir()) == [".polytask.lock", "metrics.csv"]
