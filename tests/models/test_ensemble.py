"""Seed ensembles (`model.ensemble: N`): the output is the members' mean; members differ by
seed and validation rows (carved again per group of rows labelling the same tasks); the
ensemble's squared error is at most the members' mean (Jensen), it saves and loads, and the
refusals name the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polytask import TrainConfig
from polytask.app import FittedModel, ModelConfig, RunConfig, fit, load_prepared
from polytask.app._ensemble import recarve
from polytask.data import TaskData
from polytask.models import Ensemble, MultiTaskNet, TeacherForced, build_model
from polytask.tasks import Task, TaskColumn


def _tasks() -> list[Task]:
    return [Task("a", "regression"), Task("b", "regression")]


def test_forward_is_the_mean_of_the_members_and_members_differ_by_seed():
    model = ModelConfig("hard_sharing", {"hidden": (8,)}, ensemble=3).build(4, _tasks(), seed=5)
    assert isinstance(model, Ensemble) and len(model.members) == 3
    x = torch.randn(6, 4)
    outs = [m(x) for m in model.members]
    for name in ("a", "b"):
        torch.testing.assert_close(model(x)[name], sum(o[name] for o in outs) / 3)
    assert not torch.allclose(outs[0]["a"], outs[1]["a"])
    first = build_model("hard_sharing", 4, _tasks(), seed=5, hidden=(8,))
    torch.testing.assert_close(first(x)["a"], outs[0]["a"])  # member i: seed + i
    shared = {id(p) for p in model.shared_parameters()}
    assert shared == {id(p) for m in model.members for p in m.shared_parameters()}


def test_recarve_keeps_each_groups_share_and_every_row():
    g = torch.Generator().manual_seed(0)
    n = 200
    a = torch.randn(n, generator=g)
    b = torch.randn(n, generator=g)
    a[:120] = float("nan")  # rows 0..119 label b only; 120..159 both; 160..199 a only
    b[160:] = float("nan")
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    train = TaskData(x[::4].clone(), {"a": a[::4], "b": b[::4]}, {"a": (1.0, 2.0)})
    rest = torch.tensor([i for i in range(n) if i % 4])
    val = TaskData(x[rest], {"a": a[rest], "b": b[rest]}, {"a": (1.0, 2.0)})
    fraction = len(val) / n
    new_train, new_val = recarve(train, val, _tasks(), seed=1)
    rows = sorted(torch.cat([new_train.x, new_val.x]).squeeze(1).tolist())
    assert rows == list(range(n)) and new_val.target_scale == {"a": (1.0, 2.0)}
    ids = new_val.x.squeeze(1).long()
    for lo, hi in ((0, 120), (120, 160), (160, 200)):
        assert int(((ids >= lo) & (ids < hi)).sum()) == round(fraction * (hi - lo))
    torch.testing.assert_close(new_val.targets["a"], a[ids], equal_nan=True)
    other, _ = recarve(train, val, _tasks(), seed=2)
    assert not torch.equal(other.x, new_train.x)
    # found by review: a task of one training and one validation row, validation being 4/5 of
    # the rows, lost its training row to a share of the whole (round(0.8 · 2) = 2)
    tiny_b = torch.cat([b, torch.tensor([float("nan")] * 2)])
    tiny_a = torch.cat([torch.full((n,), float("nan")), torch.tensor([1.0, 2.0])])
    x2 = torch.arange(n + 2, dtype=torch.float32).unsqueeze(1)
    keep = [i for i in range(n) if i % 5 == 0] + [n]
    held = [i for i in range(n) if i % 5] + [n + 1]
    part = lambda rows: TaskData(x2[rows], {"a": tiny_a[rows], "b": tiny_b[rows]})  # noqa: E731
    kept, _ = recarve(part(keep), part(held), _tasks(), seed=0)
    assert int(Task("a", "regression").mask(kept.targets["a"]).sum()) == 1


def test_recarve_reads_a_multilabel_tasks_rows():
    """A multilabel task's mask has a column per label: beside a one-column task's it crashed
    the re-draw ("all input arrays must have the same shape"), so such ensembles did not train;
    a row with any label is that task's."""
    g = torch.Generator().manual_seed(0)
    n = 40
    tags = (torch.rand(n, 3, generator=g) > 0.5).float()
    tags[:10] = float("nan")  # rows 0..9 unlabelled for tags
    tags[10:20, 1:] = float("nan")  # rows 10..19: one label of three
    y = torch.randn(n, generator=g)
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    tasks = [Task("tags", "multilabel", num_classes=3), Task("y", "regression")]
    part = lambda rows: TaskData(x[rows], {"tags": tags[rows], "y": y[rows]})  # noqa: E731
    train, val = recarve(part(list(range(0, n, 2))), part(list(range(1, n, 2))), tasks, seed=0)
    ids = val.x.squeeze(1).long()
    assert len(val) == 20 and sorted(torch.cat([train.x, val.x]).squeeze(1).tolist()) == list(
        map(float, range(n))
    )
    for lo, hi in ((0, 10), (10, 40)):  # each kind of row keeps its share (one label: tags')
        assert int(((ids >= lo) & (ids < hi)).sum()) == (hi - lo) // 2


def _config(ensemble: int, **split: object) -> RunConfig:
    return RunConfig(
        data={"builtin": "many_tasks",
              "options": {"n_tasks": 6, "rows_per_task": 40, "n_features": 5, "seed": 3},
              "split": {"val_fraction": 0.2, "test_fraction": 0.3, **split}},
        tasks=TaskColumn("task", "y", "regression"),
        model=ModelConfig("hard_sharing", {"hidden": (16,)}, ensemble=ensemble),
        training=TrainConfig(epochs=15, batch_size=32, lr=1e-2, progress=False, seed=0),
    )  # fmt: skip


def test_fitted_ensemble_beats_its_members_squared_error_and_round_trips(tmp_path):
    config = _config(3)
    data = load_prepared(config)
    fitted = fit(config, data)
    assert isinstance(fitted.model, Ensemble)
    assert fitted.trainer is not None
    ensemble = fitted.trainer.evaluate(data.test)
    for task in data.tasks:
        members = []
        for member in fitted.model.members:
            fitted.trainer.model = member
            members.append(fitted.trainer.evaluate(data.test)[task.name]["rmse"] ** 2)
        assert ensemble[task.name]["rmse"] ** 2 <= np.mean(members) + 1e-9
    fitted.trainer.model = fitted.model
    one = fit(_config(1), data)  # member 0 is the single model of the same seed and rows
    x = data.test.x
    for name, value in one.model.eval()(x).items():
        torch.testing.assert_close(fitted.model.members[0].eval()(x)[name], value)
    run = fit(config, data, run_dir=tmp_path / "run")  # member 0 writes the run folder
    assert (tmp_path / "run" / "metrics.csv").is_file()
    assert (tmp_path / "run" / "member2" / "metrics.csv").is_file()
    assert not (tmp_path / "run" / "member0").exists() and run.trainer is not None
    fitted.save(tmp_path / "model")
    loaded = FittedModel.load(tmp_path / "model")
    assert isinstance(loaded.model, Ensemble) and loaded.model_config.ensemble == 3
    frame = x[:7]
    before = fitted.model.eval()(frame)
    after = loaded.model.eval()(frame)
    for name in before:
        torch.testing.assert_close(after[name], before[name])


def test_refusals_say_what_to_do():
    for bad in (0, 101):
        with pytest.raises(ValueError, match="ensemble must be a whole number from 1"):
            ModelConfig("hard_sharing", ensemble=bad)
    with pytest.raises(ValueError, match="valid integer"):
        ModelConfig("hard_sharing", ensemble=True)
    with pytest.raises(ValueError, match="resume is not supported"):
        config = _config(2)
        fit(config, load_prepared(config), resume=True, run_dir="unused")

    class Taught(MultiTaskNet):
        def __init__(self) -> None:
            super().__init__()
            self._init_tasks(_tasks())
            self.head = TeacherForced("a")

    with pytest.raises(ValueError, match="read their targets"):
        Ensemble([Taught(), Taught()])
    with pytest.raises(ValueError, match="at least 2"):
        Ensemble([Taught()])


def test_an_interrupted_member_says_the_run_cannot_be_resumed(tmp_path, monkeypatch):
    """Ctrl-C in a member said `--resume` continued from its checkpoint exactly; --resume then
    refused the ensemble."""
    from polytask.train import Trainer

    config = _config(2)
    data = load_prepared(config)
    real = Trainer._fit
    said: list[str] = []

    def stop_in_member_2(self, *args, **kwargs):
        if "member 2/2" in self.description:
            said.append(self._interrupted(KeyboardInterrupt()))
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_fit", stop_in_member_2)
    with pytest.raises(KeyboardInterrupt):
        fit(config, data, run_dir=tmp_path / "run")
    assert said and "resume is not supported for model.ensemble > 1" in said[0]
    assert "continues from it exactly" not in said[0]
    plain = Trainer(fit(_config(1), data).model, config=config.training)
    assert plain.unresumable is None
