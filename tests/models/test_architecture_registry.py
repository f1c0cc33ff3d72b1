"""The architecture registry: a new architecture is a builder function plus one registry entry
(here added from this file alone), its config parameters are validated from the builder's
signature, and configs and checkpoints written before the registry still load."""

import dataclasses
import inspect
from collections.abc import Sequence
from typing import Annotated, Literal

import pytest
import torch
from pydantic import Field
from torch import nn

import polytask.models
from polytask import Task, TaskData, TrainConfig, Trainer, make_balancer
from polytask.app import DataConfig, FittedModel, ModelConfig, RunConfig, load_frame, prepare
from polytask.cli._config_io import parse_config
from polytask.models import (
    ARCHITECTURES,
    ESMM,
    MultiTaskModel,
    MultiTaskNet,
    architecture_params,
    build_model,
)
from polytask.train._checkpoint import save_checkpoint

TASKS = [Task("a", "regression"), Task("b", "regression")]


def build_toy(
    features: Sequence[str],
    tasks: Sequence[Task],
    /,
    *,
    width: Annotated[int, Field(ge=1)] = 8,
    activation: Literal["tanh", "relu"] = "tanh",
) -> MultiTaskModel:
    """A one-layer trunk of `width` units shared by linear heads."""
    act = nn.Tanh() if activation == "tanh" else nn.ReLU()
    trunk = nn.Sequential(nn.Linear(len(features), width), act)
    return MultiTaskModel(trunk, tasks, trunk_out_dim=width)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(ARCHITECTURES, "toy", build_toy)


def _trunk_data(n: int, seed: int) -> TaskData:
    """Two targets that are non-linear in one direction s of 16 inputs: a trunk that finds s
    fits both; heads on a random trunk cannot."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    s = x @ torch.linspace(-1, 1, 16) / 2.0
    return TaskData(x, {"a": torch.tanh(2 * s), "b": torch.tanh(-2 * s) + 0.5 * s})


def _fit(model: MultiTaskNet, balancer: str, freeze: tuple[str, ...] = ()) -> float:
    config = TrainConfig(
        epochs=4, batch_size=32, lr=3e-2, progress=False, patience=None, freeze=freeze
    )
    history = Trainer(model, make_balancer(balancer), config).fit(
        _trunk_data(512, 0), _trunk_data(256, 1)
    )
    return float(history[-1]["val/loss"])


def test_a_toy_architecture_added_from_a_test_file_validates_builds_and_trains(toy):
    assert set(architecture_params("toy")) == {"width", "activation"}
    with pytest.raises(ValueError, match=r"architecture 'toy': width: .*greater than or equal"):
        ModelConfig(architecture="toy", params={"width": 0})
    with pytest.raises(ValueError, match=r"hidden applies to architecture hard_sharing .*'toy'"):
        ModelConfig(architecture="toy", params={"hidden": (8,)})
    with pytest.raises(ValueError, match=r"activation: Input should be 'tanh' or 'relu'"):
        build_model("toy", 16, TASKS, activation="gelu")
    config = parse_config(
        {
            "data": {"builtin": "customers"},
            "tasks": [{"name": "a", "kind": "regression"}, {"name": "b", "kind": "regression"}],
            "model": {"architecture": "toy", "width": 24},  # the flat YAML form
        }
    )
    assert config.model == ModelConfig(architecture="toy", params={"width": 24})

    torch.manual_seed(0)
    model = config.model.build(16, TASKS)
    assert isinstance(model, MultiTaskModel) and model.representation_dim == 24
    torch.manual_seed(0)
    frozen = build_model("toy", 16, TASKS, width=24)
    before = [p.detach().clone() for p in model.shared_parameters()]
    trained_loss = _fit(model, "upgrad")
    frozen_loss = _fit(frozen, "ew", freeze=("shared",))
    moved = [
        (p - b).abs().max().item() for p, b in zip(model.shared_parameters(), before, strict=True)
    ]
    assert min(moved) > 1e-2  # the balancer's update reached the trunk
    assert trained_loss < 0.3 * frozen_loss  # and the trunk, not the heads alone, fits the data


def test_unknown_architecture_names_the_closest_and_all():
    with pytest.raises(ValueError, match=r"unknown architecture 'mmeo' \(did you mean 'mmoe'\?\)"):
        ModelConfig(architecture="mmeo")
    with pytest.raises(
        ValueError, match=r"allowed: aitm, cgc, cross_stitch, esmm, forest, gp, hard_sharing"
    ):
        build_model("nope", 4, TASKS)


def test_unknown_parameter_lists_the_allowed_ones():
    allowed = "its parameters: hidden, dropout, tower, task_dropout, experts, gate, top_k"
    with pytest.raises(ValueError, match=r"expert: .*did you mean 'experts'.*" + allowed):
        ModelConfig(architecture="mmoe", expert=3)
    with pytest.raises(ValueError, match="coupling applies to architecture soft_sharing / mean_"):
        ModelConfig(architecture="mmoe", coupling=0.1)
    with pytest.raises(ValueError, match=r"ple': levels: Input should be greater than or equal"):
        ModelConfig(architecture="ple", levels=0)
    with pytest.raises(ValueError, match=r"dropout: Input should be less than 1"):
        ModelConfig(dropout=1.0)
    with pytest.raises(ValueError, match=r"hidden: must list positive layer sizes, got \[4, 0\]"):
        build_model("hard_sharing", 4, TASKS, hidden=(4, 0))
    with pytest.raises(ValueError, match=r"gate: Input should be 'softmax' or 'dselect'"):
        ModelConfig(architecture="mmoe", gate="top2")


def test_task_names_in_model_parameters_are_checked_against_the_tasks():
    data = DataConfig(builtin="customers")
    with pytest.raises(ValueError, match=r"model.task_dropout names unknown tasks \['c'\]"):
        RunConfig(data=data, tasks=tuple(TASKS), model=ModelConfig(task_dropout={"c": 0.1}))
    spec = ModelConfig(architecture="multi_input", inputs={"z": ("x0",)})
    with pytest.raises(ValueError, match=r"model.inputs names unknown tasks \['z'\]"):
        RunConfig(data=data, tasks=tuple(TASKS), model=spec)


def test_flat_and_nested_forms_are_one_config():
    flat = ModelConfig(architecture="mmoe", hidden=[64], experts=4)
    assert flat == ModelConfig(architecture="mmoe", params={"hidden": (64,), "experts": 4})
    assert flat.params == {"hidden": (64,), "experts": 4}  # validated values, given ones only
    assert dataclasses.replace(flat, architecture="cgc").params == flat.params
    with pytest.raises(ValueError, match=r"\['experts'\] are given twice"):
        ModelConfig(architecture="mmoe", params={"experts": 2}, experts=4)


def _funnel_tasks() -> list[Task]:
    return [Task("click", "binary"), Task("buy", "binary")]


GROWN = {"forest", "gp"}
"""Architectures grown by a fit of their own (`refit`), not networks."""


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_architecture_builds_from_its_defaults(architecture):
    params = architecture_params(architecture)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    assert all(p.default is not inspect.Parameter.empty for p in params.values())
    tasks = _funnel_tasks() if architecture in ("esmm", "aitm") else TASKS
    if architecture in GROWN:  # not a network: no layers to size or drop out
        assert not {"hidden", "dropout", "task_dropout"} & set(params)
        model = build_model(architecture, ["u", "v", "w"], tasks)
    else:
        assert {"hidden", "dropout", "task_dropout"} <= set(params)
        model = build_model(architecture, ["u", "v", "w"], tasks, hidden=(8, 8))
    out = model(torch.randn(5, 3))
    assert set(out) == {t.name for t in tasks}
    assert type(model).__name__ in polytask.models.__all__


OLD_FLAT = {  # dataclasses.asdict(ModelConfig) before the registry, as JSON gave it back
    "architecture": "esmm",
    "hidden": [8],
    "dropout": 0.0,
    "tower": [],  # () meant "esmm's own default", (32,)
    "experts": None,
    "task_experts": None,
    "levels": None,
    "coupling": None,
    "penalty": None,
    "gate": None,
    "top_k": None,
    "calibration": None,
    "branches": None,
    "temperature": None,
    "inputs": None,
    "encoder_dim": None,
    "task_dropout": {},
}


def test_checkpoints_written_before_the_registry_still_load(tmp_path):
    assert ModelConfig.from_dict(OLD_FLAT) == ModelConfig(
        architecture="esmm", params={"hidden": (8,), "dropout": 0.0}
    )
    config = RunConfig(
        data=DataConfig(builtin="customers", options={"n": 120, "seed": 0}),
        tasks=(Task("offer_opened", "binary"), Task("offer_accepted", "binary")),
    )
    frame = load_frame(config)
    data = prepare(config, frame)
    torch.manual_seed(0)
    old_model = ESMM(data.preprocessor.in_dim, data.tasks, hidden=(8,))  # what the old code built
    fitted = FittedModel(old_model, data.preprocessor, ModelConfig.from_dict(OLD_FLAT))
    meta = {**fitted.metadata(), "model_config": OLD_FLAT}
    save_checkpoint(tmp_path / "old.pt", {"model": old_model.state_dict()}, meta)
    loaded = FittedModel.load(tmp_path / "old.pt")
    assert loaded.model_config.params == {"hidden": (8,), "dropout": 0.0}
    old_states = old_model.state_dict().values()
    for a, b in zip(loaded.model.state_dict().values(), old_states, strict=True):
        assert torch.equal(a, b)
    # and the new form round-trips
    fitted.save(tmp_path / "new.pt")
    assert FittedModel.load(tmp_path / "new.pt").model_config == fitted.model_config
