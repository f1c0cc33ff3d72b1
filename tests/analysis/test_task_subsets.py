"""Models of some of the config's tasks (single-task baselines, groups, label-fraction curves):
each trains on its own loss alone, a group keeps the balancer with its per-task parameters cut to
the group, and a balancer that cannot weight a group is refused before any training."""

import dataclasses

import pytest

from polytask.analysis import compare_with_single_task
from polytask.analysis._groups import compare_groups
from polytask.analysis._scarcity import label_fraction_curve
from polytask.app import BalancerConfig, DataConfig, ModelConfig, RunConfig, load_prepared
from polytask.tasks import Task
from polytask.train import TrainConfig


def _config(balancer: BalancerConfig, sizes=(2, 1)) -> RunConfig:
    names = [f"g{g}_{'abcd'[i]}" for g, size in enumerate(sizes) for i in range(size)]
    return RunConfig(
        data=DataConfig(builtin="groups", options={"n": 400, "group_sizes": list(sizes)}),
        tasks=tuple(Task(name, "regression") for name in names),
        model=ModelConfig(params={"hidden": (8,)}),
        balancer=balancer,
        training=TrainConfig(epochs=2, lr=3e-3, batch_size=64, progress=False),
    )


def test_a_subset_keeps_its_tasks_per_task_parameters_and_one_task_trains_on_its_own_loss():
    fixed = BalancerConfig("fixed", {"weights": {"a": 1.0, "b": 2.0, "c": 3.0}})
    assert fixed.for_tasks(["c", "a"]) == BalancerConfig("fixed", {"weights": {"a": 1.0, "c": 3.0}})
    assert fixed.for_tasks(["b"]) == BalancerConfig()  # ew
    dwa = BalancerConfig("dwa", {"temperature": 3.0})
    assert dwa.for_tasks(["a", "b"]) == dwa


def test_single_task_baselines_do_not_depend_on_the_multi_task_balancer():
    """DB-MTL rescales even a lone task's gradient by its history (and the fixed weights name
    tasks a single-task model lacks, which was refused after the multi-task model had trained):
    the single-task side is the same plain model whatever the config's balancer."""
    plain = compare_with_single_task(_config(BalancerConfig()), load_prepared(_config(
        BalancerConfig())), [0])  # fmt: skip
    for balancer in (
        BalancerConfig("db_mtl"),
        BalancerConfig("fixed", {"weights": {"g0_a": 1.0, "g0_b": 3.0, "g1_a": 0.5}}),
    ):
        config = _config(balancer)
        result = compare_with_single_task(config, load_prepared(config), [0])
        assert result.stl == plain.stl
        assert result.mtl != plain.mtl  # the balancer did change the multi-task model


def test_a_balancer_for_more_tasks_than_a_baseline_or_group_has_is_not_a_crash_after_training():
    trimmed = _config(BalancerConfig("trimmed_mean"), sizes=(2, 1))  # needs 3 tasks or more
    data = load_prepared(trimmed)
    result = compare_with_single_task(trimmed, data, [0])  # was: error after the MTL model
    assert set(result.stl[0]) == {"g0_a", "g0_b", "g1_a"}
    with pytest.raises(ValueError, match=r"group g0_a,g0_b cannot be trained with balancer "):
        compare_groups(trimmed, data, "g0_a,g0_b/g1_a", [0])
    with pytest.raises(ValueError, match="a suggested group cannot be trained with balancer"):
        compare_groups(trimmed, data, None, [0])
    curve = label_fraction_curve(trimmed, data, "g0_b", [0.5], [0])
    assert len(curve.points[0].stl) == 1


def test_a_balancer_that_cannot_weight_the_configs_tasks_is_refused_with_the_config():
    with pytest.raises(ValueError, match="needs at least 4 tasks"):
        _config(BalancerConfig("krum"), sizes=(2, 1))
    with pytest.raises(ValueError, match=r"fixed weights name unknown tasks \['nope'\]"):
        dataclasses.replace(
            _config(BalancerConfig()), balancer=BalancerConfig("fixed", {"weights": {"nope": 1}})
        )


def test_per_task_settings_and_a_monitor_of_other_tasks_are_left_out_of_a_subsets_model():
    """task_lr, task_weight_decay, freeze, task_dropout and a per-task monitor named tasks a
    single-task or group model lacks: refused after the multi-task model had trained."""
    config = _config(BalancerConfig())
    config = dataclasses.replace(
        config,
        model=ModelConfig(params={"hidden": (8,), "tower": (4,), "task_dropout": {"g1_a": 0.2}}),
        training=dataclasses.replace(
            config.training, task_lr={"g0_a": 2.0, "g1_a": 0.5}, task_weight_decay={"g1_a": 0.1},
            freeze=("g0_b",), monitor="g1_a/rmse",
        ),
    )  # fmt: skip
    one = config.for_tasks(["g0_a"])
    assert one.training.task_lr == {"g0_a": 2.0} and one.training.task_weight_decay == {}
    assert one.training.freeze == () and one.training.monitor == "loss"
    assert one.model.params["task_dropout"] == {} and one.model.params["tower"] == (4,)
    kept = config.for_tasks(["g1_a", "g0_b"])
    assert kept.training.freeze == ("g0_b",) and kept.training.monitor == "g1_a/rmse"
    data = load_prepared(config)
    result = compare_with_single_task(config, data, [0])
    assert set(result.stl[0]) == {"g0_a", "g0_b", "g1_a"}
    groups = compare_groups(config, data, "g0_a/g0_b,g1_a", [0])
    assert set(groups.grouped.metrics[0]) == {"g0_a", "g0_b", "g1_a"}
    curve = label_fraction_curve(config, data, "g0_a", [0.5], [0])  # monitor: the loss
    assert len(curve.points[0].mtl) == len(curve.points[0].stl) == 1


def test_torchs_one_time_start_up_happens_before_any_model_is_timed(monkeypatch):
    """The first optimizer built imports torch's compiler (4 s here): inside the first
    model's timed span it made the single-task / multi-task time ratio 0.26× for 1.9×."""
    import polytask.analysis._baselines as baselines

    calls: list[str] = []
    real_fit = baselines.fit
    monkeypatch.setattr(baselines, "untimed_start_up", lambda: calls.append("start-up"))
    monkeypatch.setattr(baselines, "fit", lambda *a, **k: calls.append("fit") or real_fit(*a, **k))
    config = _config(BalancerConfig())
    compare_with_single_task(config, load_prepared(config), [0])
    assert calls[0] == "start-up" and calls.count("start-up") == 1 and "fit" in calls


def test_a_wrapped_balancers_weights_are_checked_against_the_main_tasks_only():
    """Under auxiliary_gradients gated / projected the balancer weighs the main tasks only:
    fixed weights naming them alone are right (the config check first asked for the
    auxiliary task's weight too)."""
    tasks = (Task("a", "regression"), Task("aux", "regression", auxiliary=True))
    data = DataConfig(builtin="groups", options={"n": 200, "group_sizes": [2]})
    fixed = BalancerConfig("fixed", {"weights": {"a": 2.0}})
    RunConfig(data=data, tasks=tasks, balancer=fixed,
              training=TrainConfig(auxiliary_gradients="gated"))  # fmt: skip
    with pytest.raises(ValueError, match=r"fixed weights are missing for tasks \['aux'\]"):
        RunConfig(data=data, tasks=tasks, balancer=fixed)  # plain: every task is weighed
