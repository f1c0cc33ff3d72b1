"""`TrainConfig.compile`: the model's parts compiled in place, compiled and eager runs agreeing,
and gradient modes that cannot use compiled modules refused before training."""

import pytest
import torch

from polytask import Task, TaskData, TrainConfig, Trainer, hard_sharing_mlp, make_balancer
from polytask.data._synthetic import make_related_regression
from polytask.train._compile import is_compiled

TASKS = [Task("a", "regression"), Task("b", "regression")]


def _data() -> TaskData:
    x, ya, yb = make_related_regression(n=96, n_features=8, seed=0)
    targets = {
        "a": torch.tensor(ya, dtype=torch.float32),
        "b": torch.tensor(yb, dtype=torch.float32),
    }
    return TaskData(torch.tensor(x, dtype=torch.float32), targets)


def _cfg(**kw: object) -> TrainConfig:
    base = {"epochs": None, "steps": 6, "eval_every": 3, "batch_size": 32, "lr": 1e-2,
            "progress": False, "patience": None, "conflict_every": 3}  # fmt: skip
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_compile_is_a_plain_switch():
    assert TrainConfig().compile is False and TrainConfig(compile=True).compile is True
    with pytest.raises(ValueError, match="compile"):
        TrainConfig(compile="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mode", "dropout", "message"),
    [  # a trunk with dropout is not walked by hand: the exact path would vmap through it
        ("auto", 0.1, r"compile: gradient mode 'jacobian' takes .* vmapped batched backward .*"
                      r"walking a trunk .* set training.gradient_mode to 'gramian' or "
                      r"'representation' or 'sketch', or train without compile"),
        ("subsample", 0.0, r"compile: gradient mode 'subsample' .* or train without compile"),
        ("last_layer", 0.0, r"compile: gradient mode 'last_layer' "),
    ],
)  # fmt: skip
def test_a_mode_that_cannot_use_compiled_modules_is_refused_before_training(mode, dropout, message):
    model = hard_sharing_mlp(8, TASKS, hidden=(16,), dropout=dropout, seed=0)
    cfg = _cfg(compile=True, gradient_mode=mode)
    with pytest.raises(ValueError, match=message):
        Trainer(model, make_balancer("upgrad"), cfg)
    assert not is_compiled(model.trunk)  # nothing was compiled


def _train(balancer: str, compiled: bool, **kw: object) -> torch.nn.Module:
    model = hard_sharing_mlp(8, TASKS, hidden=(16, 16), seed=0)
    trainer = Trainer(model, make_balancer(balancer), _cfg(compile=compiled, **kw))
    trainer.fit(_data())
    assert is_compiled(model.trunk) == is_compiled(model.heads["a"]) == compiled
    return model


@pytest.mark.slow
def test_compiled_and_eager_runs_agree():
    """EW (one backward; gradient-conflict probes every 3 steps run eagerly), UPGrad on the
    exact path (the trunk walked by hand, the heads compiled) and in the representation mode
    (the compiled trunk's ordinary backward)."""
    for balancer, mode in (("ew", "auto"), ("upgrad", "auto"), ("upgrad", "representation")):
        eager = _train(balancer, False, gradient_mode=mode)
        compiled = _train(balancer, True, gradient_mode=mode)
        for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=f"{balancer} {mode} {name}")
