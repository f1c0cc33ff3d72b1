"""Per-task regularisation: learning-rate multipliers, weight decay, freezing and clipping."""

import pytest
import torch

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer
from polytask.data._tensors import Batch
from polytask.train._step import train_step

TASKS = [Task("a", "regression"), Task("b", "regression")]


def _batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 6, generator=g)
    return Batch(x, {"a": torch.randn(32, generator=g), "b": torch.randn(32, generator=g)})


def _trainer(**kw) -> Trainer:
    torch.manual_seed(0)
    config = TrainConfig(optimizer="sgd", lr=0.1, progress=False, **kw)
    return Trainer(hard_sharing_mlp(6, TASKS, hidden=(8,)), make_balancer("ew"), config)


def _step(trainer: Trainer) -> dict[str, torch.Tensor]:
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    train_step(trainer.model, trainer.balancer, trainer.optimizer, _batch(), TASKS,
               trainer.plan, grad_clip=trainer.config.grad_clip)  # fmt: skip
    return {n: p.detach() - before[n] for n, p in trainer.model.named_parameters()}


def test_task_lr_scales_only_that_tasks_update():
    plain = _step(_trainer())
    scaled = _step(_trainer(task_lr={"b": 0.25}))
    torch.testing.assert_close(scaled["heads.b.weight"], 0.25 * plain["heads.b.weight"])
    torch.testing.assert_close(scaled["heads.a.weight"], plain["heads.a.weight"])
    torch.testing.assert_close(scaled["trunk.net.0.weight"], plain["trunk.net.0.weight"])


def test_task_weight_decay_applies_to_that_task_only():
    trainer = _trainer(task_weight_decay={"a": 0.5})
    decays = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    assert decays[id(trainer.model.heads["a"].weight)] == 0.5
    assert decays[id(trainer.model.heads["b"].weight)] == 0.0
    assert decays[id(trainer.model.trunk.net[0].weight)] == 0.0


@pytest.mark.parametrize("balancer", ["ew", "upgrad"])
def test_freezing_the_shared_trunk_trains_heads_only(balancer):
    torch.manual_seed(0)
    config = TrainConfig(optimizer="sgd", lr=0.1, progress=False, freeze=("shared",))
    model = hard_sharing_mlp(6, TASKS, hidden=(8,))
    if balancer == "upgrad":  # nothing shared left to balance: refused up front
        with pytest.raises(ValueError, match="no parameters shared"):
            Trainer(model, make_balancer(balancer), config)
        return
    trainer = Trainer(model, make_balancer(balancer), config)
    delta = _step(trainer)
    assert delta["trunk.net.0.weight"].abs().max() == 0
    assert delta["heads.a.weight"].abs().max() > 0


def test_grad_clip_caps_the_whole_update():
    delta = _step(_trainer(grad_clip=1e-3))
    norm = torch.cat([d.reshape(-1) for d in delta.values()]).norm()
    assert float(norm) == pytest.approx(0.1 * 1e-3, rel=1e-4)  # SGD: lr × clipped norm


def test_unknown_tasks_and_bad_values_are_clear_errors():
    with pytest.raises(ValueError, match=r"task_lr names unknown tasks \['c'\]"):
        _trainer(task_lr={"c": 2.0})
    with pytest.raises(ValueError, match="freeze names unknown tasks"):
        _trainer(freeze=("trunk",))
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        TrainConfig(task_lr={"a": 0.0})
    with pytest.raises(ValueError, match="grad_clip must be > 0"):
        TrainConfig(grad_clip=0.0)


def test_training_with_per_task_settings_from_fit():
    x = torch.randn(128, 6)
    data = TaskData(x, {"a": x[:, 0], "b": x[:, 1] - x[:, 2]})
    trainer = _trainer(task_lr={"a": 2.0}, grad_clip=5.0, epochs=5)
    history = trainer.fit(data, data)
    assert history[-1]["val/loss"] < history[0]["val/loss"]


@pytest.mark.parametrize("setting", ["task_lr", "task_weight_decay", "freeze"])
def test_a_per_task_setting_on_a_task_with_no_parameters_of_its_own_is_refused(setting):
    # ESMM's earlier stages own nothing (their towers feed the later stages): the setting did
    # nothing, without a word
    from polytask.models._esmm import build_esmm

    tasks = [Task("click", "binary"), Task("buy", "binary")]
    model = build_esmm([f"x{i}" for i in range(4)], tasks, hidden=(8,))
    assert next(iter(model.task_parameters("click")), None) is None
    value = ("click",) if setting == "freeze" else {"click": 0.5}
    config = TrainConfig(epochs=1, progress=False, **{setting: value})
    with pytest.raises(ValueError, match=rf"{setting} names \['click'\], which own no parameters"):
        Trainer(model, make_balancer("ew"), config)
    Trainer(model, make_balancer("ew"), TrainConfig(epochs=1, progress=False, **{
        setting: ("buy",) if setting == "freeze" else {"buy": 0.5}}))  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"weight_decay": float("nan")}, "weight_decay must be a finite number >= 0, got nan"),
        ({"lr": float("inf")}, "lr must be a finite number > 0, got inf"),
        ({"task_lr": {"a": float("inf")}}, r"task_lr\['a'\] must be a finite number > 0"),
        ({"task_weight_decay": {"a": float("nan")}}, r"task_weight_decay\['a'\] must be a fin"),
    ],
)
def test_a_nan_or_infinite_rate_is_refused_with_the_config(settings, message):
    """NaN passed `< 0` checks and inf passed `> 0`: the run then diverged at step 2 with a
    message blaming the learning rate or the labels."""
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


def test_freezing_shared_parameters_a_model_has_none_of_is_refused():
    """soft_sharing has a tower per task and nothing shared: freeze: [shared] changed nothing,
    without a word (a task that owns no parameters was already refused)."""
    from polytask.models._registry import build_model

    model = build_model("soft_sharing", 4, TASKS, seed=0)
    assert next(iter(model.shared_parameters()), None) is None
    with pytest.raises(ValueError, match="has no parameters shared between tasks"):
        Trainer(model, None, TrainConfig(epochs=1, freeze=("shared",), progress=False))


@pytest.mark.parametrize(("field", "value"), [("lr", True), ("epochs", True), ("patience", False)])
def test_a_number_given_as_a_yaml_boolean_is_refused(field, value):
    """`lr: yes` trained at 1.0 and `epochs: true` for one epoch: pydantic takes booleans
    as 1 and 0 (outside review)."""
    with pytest.raises(ValueError, match=f"{field} takes a number, not {str(value).lower()}"):
        TrainConfig(**{field: value})
