import dataclasses
import warnings

import numpy as np
import pytest

from polytask.analysis._architectures import architecture_spec, compare_architectures
from polytask.app import ModelConfig, load_frame, prepare
from polytask.cli._config_io import parse_config
from polytask.cli._demo import demo_config
from polytask.data import make_customers
from polytask.tasks import Task


def test_spec_keeps_shared_fields_and_drops_foreign_ones():
    base = ModelConfig(architecture="mmoe", hidden=(8, 4), tower=(3,), dropout=0.1, experts=5)
    assert architecture_spec(base, "mmoe") == base
    # one network a row: the config's own architecture loses its ensemble (it had 4x the budget)
    several = dataclasses.replace(base, ensemble=4)
    assert architecture_spec(several, "mmoe") == base
    assert architecture_spec(several, "ple").ensemble == 1
    ple = architecture_spec(base, "ple")  # experts: mmoe's own (4 there, 2 for ple by default)
    assert ple == ModelConfig(architecture="ple", hidden=(8, 4), tower=(3,), dropout=0.1)
    stitch = architecture_spec(base, "cross_stitch")  # takes no tower: one per task from hidden
    assert stitch.params == {"hidden": (8, 4), "dropout": 0.1}
    regularised = architecture_spec(base, "mean_regularised")  # linear heads: no tower either
    assert "tower" not in regularised.params and regularised.params["hidden"] == (8, 4)
    with pytest.raises(ValueError, match="unknown architecture 'mlp'"):
        architecture_spec(base, "mlp")


def test_compare_architectures_pairs_seeds_and_counts_parameters(tmp_path):
    config = demo_config(n=300, epochs=2, output_dir="unused")
    config = dataclasses.replace(config, model=ModelConfig(hidden=(8,)))
    data = prepare(config, load_frame(config))
    seen = []

    def summary(predict):
        frame = predict(data_frame.iloc[:5])
        seen.append(sorted(c for c in frame.columns if c in names))
        return {"rows": float(len(frame))}

    data_frame = load_frame(config)
    names = {t.name for t in data.tasks}
    result = compare_architectures(config, data, ["hard_sharing", "mmoe"], [0, 1], summary=summary,
                                   run_dir=tmp_path)  # fmt: skip
    # its single-task models in their own folder: seedS/stl_TASK are plain compare's
    assert sorted(p.name for p in (tmp_path / "seed0").iterdir()) == [
        "baselines", "hard_sharing", "mmoe",
    ]  # fmt: skip
    assert {p.name for p in (tmp_path / "seed0" / "baselines").iterdir()} == {
        f"stl_{t.name}" for t in data.tasks
    }
    hard, mmoe = result.runs
    in_dim, k = data.preprocessor.in_dim, len(data.tasks)
    heads = sum(8 * t.out_features + t.out_features for t in data.tasks)
    assert hard.parameters == in_dim * 8 + 8 + heads
    # one trunk per task, each with its own head
    assert result.single_task.parameters == k * (in_dim * 8 + 8) + heads
    assert mmoe.parameters > hard.parameters
    assert len(hard.metrics) == len(result.single_task.metrics) == 2
    # single-task summaries see every task's column, joined from the K models
    assert all(s == sorted(names) for s in seen)
    rows = result.rows()
    assert rows[0]["summary"]["rows"] == (5.0, 0.0)
    dm = result.delta_m(hard)
    assert rows[1]["delta_m"] == (pytest.approx(np.mean(dm)), pytest.approx(np.std(dm, ddof=1)))


def test_pairs_that_cannot_work_are_refused_before_training():
    config = demo_config(n=200, epochs=1, output_dir="unused")
    config = dataclasses.replace(
        config, balancer=dataclasses.replace(config.balancer, name="upgrad")
    )
    data = prepare(config, load_frame(config))
    with pytest.raises(ValueError, match="architecture 'soft_sharing': SoftSharing has no"):
        compare_architectures(config, data, ["hard_sharing", "soft_sharing"], [0])
    with pytest.raises(ValueError, match="architecture 'esmm': ESMM stages must be binary"):
        compare_architectures(config, data, ["hard_sharing", "esmm"], [0])


def test_a_grown_model_on_adamw_is_refused_before_any_training(monkeypatch, tmp_path):
    make_customers(200, seed=0).to_csv(tmp_path / "d.csv", index=False)
    config = parse_config({
        "data": {"path": str(tmp_path / "d.csv"), "features": {"numeric": ["usage_0", "age"]}},
        "tasks": [{"name": "ltv", "kind": "regression"}, {"name": "usage_1", "kind": "regression"}],
        "training": {"epochs": 1},
    })  # fmt: skip
    data = prepare(config, load_frame(config))
    trained = []
    monkeypatch.setattr("polytask.analysis._architectures.fit", lambda *a, **k: trained.append(a))
    with pytest.raises(ValueError, match=r"^architecture forest grows .*set training.optimizer"):
        compare_architectures(config, data, ["hard_sharing", "forest"], [0])
    assert not trained  # hard_sharing was not trained first


def test_each_seeds_delta_m_is_over_the_tasks_defined_in_every_seed():
    from polytask.analysis._architectures import ArchitectureComparison, ArchitectureRun

    tasks = [Task("a", "regression"), Task("b", "regression")]  # rmse: lower is better
    single = ArchitectureRun("single-task", metrics=[{"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 2.0}])
    run = ArchitectureRun("hard_sharing", metrics=[{"a": 0.5, "b": float("nan")},
                                                   {"a": 1.5, "b": 1.0}])  # fmt: skip
    comparison = ArchitectureComparison(tasks, [0, 1], single, [run])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a task left out on one seed only would warn there
        # b undefined on seed 0: both seeds over a alone (+50, −50), not seed 1 over a and b
        assert comparison.delta_m(run) == pytest.approx([50.0, -50.0])
