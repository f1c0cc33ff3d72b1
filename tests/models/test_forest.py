"""`forest` (a random forest per task, grown by scikit-learn, predicted with tensor ops) and
`model.blend` (a weighted average of unlike models trained apart): the tensor walk gives
scikit-learn's predictions, chunked or not (its leaf size by out-of-bag score: test_classic);
a grown forest saves and loads into a fresh one;
a blend's output is its weighted sum, it beats both its members on data made for it, and it
round-trips through a checkpoint; the refusals say what to do."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from polytask import Task, TrainConfig
from polytask.app import FittedModel, ModelConfig, RunConfig, fit, load_prepared
from polytask.cli._main import main
from polytask.cli._render import format_value
from polytask.models import Ensemble, Forest, build_model
from polytask.models import _forest as forest_module
from polytask.models._forest import grow_forest
from polytask.tasks import TaskColumn

TASKS = [Task("a", "regression"), Task("b", "regression")]


def _rows(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor], list]:
    """Rows of two tasks (alternating), each target a step in x0 plus a task's slope in x1."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    owner = np.arange(n) % 2
    y = np.sign(x[:, 0]) + np.where(owner == 0, 1.0, -1.0) * x[:, 1]
    y = (y + 0.1 * rng.standard_normal(n)).astype(np.float32)
    targets = {
        t.name: torch.from_numpy(np.where(owner == k, y, np.nan)) for k, t in enumerate(TASKS)
    }
    masks = [torch.from_numpy(owner == k) for k in range(len(TASKS))]
    return torch.from_numpy(x), targets, masks


def _grown(seed: int = 0, **params: object) -> Forest:
    model = build_model("forest", 4, TASKS, seed=seed, trees=20, **params)
    assert isinstance(model, Forest)
    x, targets, masks = _rows()
    assert model.refit(x, targets, masks, torch.ones(2))
    assert not model.refit(x, targets, masks, torch.ones(2))  # grown once
    return model


def test_the_tensor_walk_gives_scikit_learns_predictions_chunked_or_not(monkeypatch):
    model = _grown(min_leaf=3)
    x, targets, masks = _rows()
    new = torch.randn(50, 4)
    out = model(new)
    for k, task in enumerate(TASKS):
        m = masks[k].numpy()
        reference = grow_forest(
            x.numpy()[m].astype(np.float64), targets[task.name].numpy()[m].astype(np.float64),
            trees=20, seed=int(model.seed) + k, min_leaf=3,
        )  # fmt: skip
        expected = reference.predict(new.numpy())
        np.testing.assert_allclose(out[task.name].detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(forest_module, "CHUNK", 3 * model.roots.numel())  # 3 rows a chunk
    chunked = model(new)
    for name, value in out.items():
        torch.testing.assert_close(chunked[name], value)


def test_a_grown_forest_loads_into_a_fresh_one_and_an_unfitted_one_predicts_zero():
    model = _grown()
    fresh = build_model("forest", 4, TASKS, seed=1, trees=20)
    new = torch.randn(9, 4)
    assert all(bool((v == 0).all()) for v in fresh(new).values())
    fresh.load_state_dict(model.state_dict())
    for name, value in model(new).items():
        torch.testing.assert_close(fresh(new)[name], value)
    # the outputs read the optimizer's one parameter with a zero gradient
    sum(v.sum() for v in fresh(new).values()).backward()  # type: ignore[union-attr]
    assert float(fresh.anchor.grad) == 0.0  # type: ignore[arg-type]


def test_forest_refusals_say_what_to_do():
    with pytest.raises(ValueError, match="one-output regression"):
        build_model("forest", 3, [Task("c", "binary")])
    model = build_model("forest", 4, TASKS, trees=5)
    x, targets, masks = _rows()
    with pytest.raises(ValueError, match="no labelled training rows"):
        model.refit(x, targets, [masks[0], torch.zeros_like(masks[1])], torch.ones(2))


def _csv(path) -> str:  # type: ignore[no-untyped-def]
    """Eight tasks: a shared step in x0 (a forest's strength) plus each task's own line in x1
    (a multilevel model's)."""
    rng = np.random.default_rng(0)
    frames = []
    for k in range(8):
        x = rng.standard_normal((80, 3))
        slope, shift = 1 + 0.5 * rng.standard_normal(), rng.standard_normal()
        y = slope * x[:, 1] + shift + 1.5 * np.sign(x[:, 0]) + 0.5 * rng.standard_normal(80)
        frame = pd.DataFrame(x, columns=["x0", "x1", "x2"])
        frame["task"], frame["y"] = f"t{k}", y
        frames.append(frame)
    pd.concat(frames).to_csv(path, index=False)
    return str(path)


def _binary_csv(tmp_path: Path) -> str:
    """The rows of `_csv` with a binary target, `high`: y above its median."""
    frame = pd.read_csv(_csv(tmp_path / "y.csv"))
    frame["high"] = (frame["y"] > frame["y"].median()).astype(int)
    frame.to_csv(tmp_path / "high.csv", index=False)
    return str(tmp_path / "high.csv")


def _config(path: str, blend: list[dict[str, object]]) -> RunConfig:
    return RunConfig(
        data={"path": path, "features": {"numeric": ["x0", "x1", "x2"]},
              "split": {"val_fraction": 0.0, "test_fraction": 0.3, "seed": 0}},
        tasks=TaskColumn("task", "y", "regression"),
        model=ModelConfig("multilevel", blend=blend),  # type: ignore[arg-type]
        training=TrainConfig(optimizer="lbfgs", lr=1.0, batch_size=10**6, epochs=30,
                             progress=False, seed=0),
    )  # fmt: skip


def test_a_blend_is_its_members_weighted_sum_and_beats_each_of_them(tmp_path):
    member = {"architecture": "forest", "trees": 50, "weight": 0.5, "training": {"epochs": 1}}
    config = _config(_csv(tmp_path / "d.csv"), [member])
    data = load_prepared(config)
    fitted = fit(config, data, run_dir=tmp_path / "run")
    model = fitted.model.eval()
    assert isinstance(model, Ensemble) and model.weights == (0.5, 0.5)
    assert [type(m).__name__ for m in model.members] == ["Multilevel", "Forest"]
    assert (tmp_path / "run" / "blend1" / "metrics.csv").is_file()
    assert config.model.describe() == "0.5 · multilevel + 0.5 · forest {trees: 50}"
    x = data.test.x
    with torch.no_grad():
        blend, parts = model(x), [m(x) for m in model.members]

    def mse(out: dict[str, torch.Tensor]) -> float:
        errors = []
        for task in data.tasks:
            y = data.test.targets[task.name].reshape(-1)
            keep = ~torch.isnan(y)
            errors.append(float(((out[task.name] - y)[keep] ** 2).mean()))
        return float(np.mean(errors))

    for name, value in blend.items():
        torch.testing.assert_close(value, 0.5 * parts[0][name] + 0.5 * parts[1][name])
    assert mse(blend) < 0.95 * min(mse(parts[0]), mse(parts[1]))
    fitted.save(tmp_path / "model.pt")
    loaded = FittedModel.load(tmp_path / "model.pt")
    assert loaded.model_config.blend == config.model.blend
    with torch.no_grad():
        again = loaded.model.eval()(x)
    for name, value in blend.items():
        torch.testing.assert_close(again[name], value)


def test_blend_refusals_say_what_to_do(tmp_path):
    two = [{"architecture": "forest", "weight": 0.6}, {"architecture": "mmoe", "weight": 0.5}]
    with pytest.raises(ValueError, match=r"add up to 1\.1"):
        ModelConfig("multilevel", blend=two)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown settings"):
        ModelConfig("multilevel", blend=[{"architecture": "forest", "weight": 0.5,  # type: ignore[list-item]
                                          "training": {"epoch": 1}}])  # fmt: skip
    with pytest.raises(ValueError, match="trees"):
        ModelConfig("multilevel", blend=[{"architecture": "forest", "weight": 0.5, "trees": 0}])  # type: ignore[list-item]
    bad = {"architecture": "forest", "weight": 0.5, "training": {"epochs": 0}}
    with pytest.raises(ValueError, match="blend member 'forest'"):
        _config(_csv(tmp_path / "d.csv"), [bad])
    config = _config(_csv(tmp_path / "d.csv"), [{"architecture": "forest", "weight": 0.3}])
    with pytest.raises(ValueError, match=r"resume is not supported for model\.blend .*--overwrite"):
        fit(config, load_prepared(config), resume=True, run_dir="unused")


def test_a_forest_stops_after_the_step_that_grew_it_and_refuses_other_losses(tmp_path):
    config = _config(_csv(tmp_path / "d.csv"), [])
    config = dataclasses.replace(
        config,
        model=ModelConfig("forest", trees=10),
        training=dataclasses.replace(config.training, epochs=5, lr=1e-3),
    )
    fitted = fit(config, load_prepared(config))
    assert fitted.trainer is not None and fitted.trainer.step == 1  # not 5: nothing to train
    with pytest.raises(ValueError, match="loss huber"):
        build_model("forest", 3, [Task("c", "regression", loss="huber")])


def test_a_blend_members_mistakes_stop_the_run_before_anything_trains(tmp_path):
    network = _config(_csv(tmp_path / "d.csv"), [])
    network = dataclasses.replace(
        network,
        model=ModelConfig(
            "hard_sharing", hidden=(8,), blend=[{"architecture": "forest", "weight": 0.5}]
        ),
        training=TrainConfig(epochs=2, batch_size=32, progress=False),
    )
    run = tmp_path / "run"
    with pytest.raises(
        ValueError, match=r"model\.blend\[0\] \(forest\): .*optimizer: lbfgs"
    ) as err:
        fit(network, load_prepared(network), run_dir=run)
    assert "its `training:`" in str(err.value)  # a trainer's refusal: where its settings go
    assert not run.exists()  # the network did not train first
    binary = dataclasses.replace(
        network, tasks=TaskColumn("task", "high", "binary"),
        data=dataclasses.replace(network.data, path=_binary_csv(tmp_path)),
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"model\.blend\[0\] \(forest\): .*mse") as err:
        fit(binary, load_prepared(binary), run_dir=run)
    assert "training:" not in str(err.value)  # the model's refusal: no training settings fix it
    with pytest.raises(ValueError, match="weight 1 must be between 0 and 1"):
        ModelConfig("multilevel", blend=[{"architecture": "forest", "weight": 1.0}])  # type: ignore[list-item]
    bad = {"architecture": "forest", "weight": 0.5, "training": {"optimizer": "sgdd"}}
    with pytest.raises(ValueError, match="optimizer: Input should be") as err:
        _config(_csv(tmp_path / "d.csv"), [bad])
    assert "literal_error" not in str(err.value)  # the member's reason in plain words


@pytest.mark.report
def test_train_keeps_each_blend_members_scores_and_the_report_shows_them(tmp_path, capsys):
    member = {"architecture": "forest", "trees": 30, "weight": 0.4, "training": {"epochs": 1}}
    config = {
        "data": {"path": _csv(tmp_path / "d.csv"), "features": {"numeric": ["x0", "x1", "x2"]},
                 "split": {"val_fraction": 0.0, "test_fraction": 0.3, "seed": 0}},
        "tasks": {"from_column": "task", "target": "y", "kind": "regression"},
        "model": {"architecture": "multilevel", "blend": [member]},
        "training": {"optimizer": "lbfgs", "lr": 1.0, "batch_size": 10**6, "epochs": 20,
                     "progress": False, "seed": 0},
    }  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["-q", "train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "blend members alone" in x)
    members = json.loads((tmp_path / "run" / "blend_members.json").read_text())
    blend = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert [(m["architecture"], m["weight"]) for m in members] == [("multilevel", 0.6),
                                                                     ("forest", 0.4)]  # fmt: skip
    rmse = [m["metrics"]["task: pooled"]["rmse"] for m in members]
    assert f"{rmse[1]:#.4g} (task: pooled rmse)" in line
    assert blend["task: pooled"]["rmse"] < min(rmse)  # the blend beats each member alone
    page = (tmp_path / "run" / "report.html").read_text()
    assert "forest alone (weight 0.4)" in page and format_value(rmse[1]) in page
    assert "No single-task sizes: Forest is sized by its fit on the rows" in page


def test_resuming_a_finished_grown_model_trains_nothing_more(tmp_path):
    """Grown in its first step, the run stops; its --resume took a second step (a second
    metrics row, the optimizer's and early stopping's counts moved)."""
    from polytask import TaskData, Trainer

    x, targets, _ = _rows()
    data = TaskData(x, targets)
    config = TrainConfig(optimizer="lbfgs", lr=1.0, batch_size=10**6, epochs=5, progress=False)

    def trainer() -> Trainer:
        return Trainer(build_model("forest", 4, TASKS, seed=0, trees=10), config=config,
                       run_dir=tmp_path)  # fmt: skip

    first = trainer()
    first.fit(data, data)
    assert first.step == 1 and len(first.history) == 1
    again = trainer()
    assert again.resume(tmp_path) is not None
    again.fit(data, data)
    assert again.step == 1 and len(again.history) == 1
