"""Resuming from a checkpoint of another run, model or version is refused or flagged, saying
what differs, instead of failing deep in torch or silently continuing a different run."""

import logging

import pytest
import torch
import yaml

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer
from polytask.cli._main import main
from polytask.train import CheckpointError
from polytask.train import _checkpoint as checkpoint_module
from polytask.train._checkpoint import run_differences

TASKS = [Task("a", "regression"), Task("b", "regression")]


def _trainer(run_dir, hidden=(8,), balancer="dwa", **config):
    torch.manual_seed(0)
    base = {"epochs": None, "steps": 20, "eval_every": 10, "batch_size": 16, "progress": False}
    model = hard_sharing_mlp(4, TASKS, hidden=hidden)
    return Trainer(model, make_balancer(balancer), TrainConfig(**{**base, **config}),
                   run_dir=run_dir)  # fmt: skip


@pytest.fixture
def run_dir(tmp_path):
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    _trainer(tmp_path).fit(TaskData(x, {"a": x[:, 0], "b": x[:, 1]}))
    return tmp_path


def test_changed_training_settings_are_named(run_dir):
    with pytest.raises(CheckpointError, match=r"training\.lr: 0\.001 → 0\.002") as err:
        _trainer(run_dir, lr=2e-3).resume(run_dir)
    assert "new run folder" in str(err.value)


def test_a_different_balancer_is_named(run_dir):
    with pytest.raises(CheckpointError, match="balancer: 'DynamicWeightAverage' → 'UPGrad'"):
        _trainer(run_dir, balancer="upgrad").resume(run_dir)


def test_length_device_workers_and_display_may_change(run_dir):
    trainer = _trainer(run_dir, steps=40, num_workers=1, keep_last=3, device="cpu")
    assert trainer.resume(run_dir) is not None and trainer.step == 20


def test_non_strict_loads_with_a_warning(run_dir, caplog):
    trainer = _trainer(run_dir, lr=2e-3)
    with caplog.at_level(logging.WARNING, logger="polytask"):
        assert trainer.resume(run_dir, strict=False) is not None
    assert "training.lr" in caplog.text and "strict=False" in caplog.text


def test_a_different_architecture_is_explained_not_a_torch_traceback(run_dir):
    trainer = _trainer(run_dir, hidden=(12,))
    trainer.run_meta = {}  # the Python API records no model sizes: the weights disagree
    with pytest.raises(CheckpointError, match=r"does not fit this model.*size mismatch"):
        trainer.resume(run_dir)


def test_other_versions_load_with_a_warning(run_dir, caplog):
    path = sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1]
    payload = torch.load(path, weights_only=True)
    del payload["digest"]
    payload["polytask_version"] = "0.0.1"
    torch.save({**payload, "digest": checkpoint_module._digest(payload)}, path)
    with caplog.at_level(logging.WARNING, logger="polytask"):
        _trainer(run_dir).resume(run_dir)
    assert "written with polytask 0.0.1" in caplog.text and "bit-identical" in caplog.text


def test_run_differences_ignore_allowed_fields_and_name_added_ones():
    saved = {"training": {"lr": 1.0, "steps": 5, "progress": True}, "output_dir": "a"}
    current = {"training": {"lr": 1.0, "steps": 9, "progress": False, "seed": 3}, "output_dir": "b"}
    assert run_differences(saved, current) == ["training.seed: '(unset)' → 3"]


def test_a_setting_added_later_at_its_default_is_no_difference():
    """A checkpoint written before `selection` existed trained as 'joint' does."""
    saved = {"training": {"lr": 1.0}}
    assert run_differences(saved, {"training": {"lr": 1.0, "selection": "joint"}}) == []
    assert run_differences(saved, {"training": {"lr": 1.0, "selection": "per_task"}}) == [
        "training.selection: '(unset)' → 'per_task'"
    ]


def test_cli_resume_with_an_edited_config_exits_2(tmp_path, capsys):
    config = {
        "data": {"builtin": "customers", "options": {"n": 300}},
        "tasks": [{"name": "churn", "kind": "binary"}],
        "model": {"hidden": [8]},
        "training": {"epochs": 2, "progress": False},
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    config["model"]["dropout"] = 0.3  # same weights' shapes, a different run
    path.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert main(["-q", "train", str(path), "--resume"]) == 2  # -q: no status lines first
    err = capsys.readouterr().err
    # the model's parameters are nested under config.model.params since the registry redesign
    assert err.startswith("error: ") and "config.model" in err and "0.3" in err
