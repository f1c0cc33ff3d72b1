"""ESMM: funnel probabilities multiply, stay ordered, and train over the entire space."""

import numpy as np
import pytest
import torch

from polytask import Task, TaskData, TrainConfig, Trainer, make_balancer
from polytask.data._synthetic import make_funnel
from polytask.models import ESMM
from polytask.models._esmm import chain_logit

FUNNEL = [Task("click", "binary"), Task("conversion", "binary"), Task("repeat", "binary")]


def test_outputs_are_logits_of_the_stage_products():
    torch.manual_seed(0)
    model = ESMM(5, FUNNEL, hidden=(8,), tower=(4,)).double()
    x = torch.randn(20, 5, dtype=torch.float64)
    out, stages = model(x), model.stage_logits(x)
    product = torch.ones(20, dtype=torch.float64)
    for t in FUNNEL:
        product = product * torch.sigmoid(stages[t.name])
        torch.testing.assert_close(torch.sigmoid(out[t.name]), product)
    assert (torch.sigmoid(out["conversion"]) <= torch.sigmoid(out["click"])).all()


def test_chain_logit_is_stable_at_extremes():
    log_p = torch.tensor([-1e-9, -50.0, -0.5])
    b = torch.tensor([40.0, -40.0, 0.0])
    got = chain_logit(log_p, b)
    assert torch.isfinite(got).all()
    expected = torch.logit(torch.exp(log_p[2]) * torch.sigmoid(b[2]))
    torch.testing.assert_close(got[2], expected)


def test_towers_that_feed_later_stages_are_shared():
    model = ESMM(5, FUNNEL[:2], hidden=(8,), tower=(4,))
    out = model(torch.randn(6, 5))
    own = list(model.task_parameters("conversion"))
    assert not list(model.task_parameters("click"))
    grads = torch.autograd.grad(out["click"].sum(), own, allow_unused=True)
    assert all(g is None for g in grads)
    shared = {id(p) for p in model.shared_parameters()}
    assert shared | {id(p) for p in own} == {id(p) for p in model.parameters()}


def test_only_binary_stages():
    with pytest.raises(ValueError, match="binary tasks"):
        ESMM(5, [Task("click", "binary"), Task("amount", "regression")])


def _data(n: int, seed: int) -> TaskData:
    x, click, conv = make_funnel(n, seed=seed)
    return TaskData(
        torch.tensor(x, dtype=torch.float32),
        {"click": torch.tensor(click, dtype=torch.float32),
         "conversion": torch.tensor(conv, dtype=torch.float32)},
    )  # fmt: skip


@pytest.mark.parametrize("balancer", ["ew", "upgrad"])
def test_esmm_learns_the_funnel(balancer):
    torch.manual_seed(0)
    model = ESMM(8, FUNNEL[:2], hidden=(32,), tower=(16,))
    config = TrainConfig(epochs=15, batch_size=128, lr=3e-3, progress=False)
    trainer = Trainer(model, make_balancer(balancer), config)
    trainer.fit(_data(3000, 0), _data(1000, 1))
    metrics = trainer.evaluate(_data(2000, 2))
    assert metrics["click"]["auc"] > 0.8 and metrics["conversion"]["auc"] > 0.8
    assert np.isfinite(metrics["conversion"]["loss"])


def test_esmm_from_config():
    from polytask.app import ModelConfig
    from polytask.models import build_model

    model = ModelConfig(architecture="esmm", hidden=(8,), tower=(4,)).build(5, FUNNEL)
    assert isinstance(model, ESMM) and len(model.towers) == 3
    model = build_model("esmm", 5, FUNNEL, hidden=(8,), tower=(4,))
    assert isinstance(model, ESMM) and len(model.towers) == 3


@pytest.mark.parametrize("architecture", ["ESMM", "AITM"])
def test_a_funnels_labels_are_checked_before_training(architecture):
    """Stage 2 is 0 wherever stage 1 is: a 1 there is refused; a missing label there is
    warned of (NaN for 'not clicked, so not applicable' left those rows out of the
    conversion loss: the clicked-only bias the model removes)."""
    import polytask.models as models

    tasks = [Task("click", "binary"), Task("buy", "binary")]
    model = getattr(models, architecture)(4, tasks, hidden=(8,), tower=(4,))
    x = torch.randn(6, 4)
    click = torch.tensor([1.0, 1, 0, 0, 1, 0])
    trainer = Trainer(model, config=TrainConfig(epochs=1, progress=False))
    wrong = torch.tensor([1.0, 0, 1, 0, 0, 0])  # row 2 bought without a click
    with pytest.raises(ValueError, match=r"1 row\(s\) have 'buy' = 1 where 'click' = 0"):
        trainer.fit(TaskData(x, {"click": click, "buy": wrong}))
    blank = torch.tensor([1.0, 0, float("nan"), float("nan"), 0, 0])
    with pytest.warns(UserWarning, match=r"2 row\(s\) have no 'buy' label where 'click' = 0"):
        trainer.fit(TaskData(x, {"click": click, "buy": blank}))


def test_a_funnels_check_reads_every_earlier_stage_not_only_the_last():
    """impression 0, click missing, buy 1: a conversion without an impression, refused (the
    check compared neighbouring stages only, and the missing click hid it)."""
    from polytask.models._esmm import check_funnel_targets

    tasks = [Task("imp", "binary"), Task("click", "binary"), Task("buy", "binary")]
    nan = float("nan")
    targets = {
        "imp": torch.tensor([1.0, 0, 1]),
        "click": torch.tensor([1.0, nan, 0]),
        "buy": torch.tensor([1.0, 1, 0]),
    }
    with (
        pytest.warns(UserWarning, match="no 'click' label where 'imp' = 0"),
        pytest.raises(ValueError, match=r"1 row\(s\) have 'buy' = 1 where 'imp' or 'click' = 0"),
    ):
        check_funnel_targets(tasks, targets, "ESMM")
    targets["buy"] = torch.tensor([1.0, nan, 0])
    with pytest.warns(UserWarning) as seen:
        check_funnel_targets(tasks, targets, "ESMM")
    assert any("no 'buy' label where 'imp' or 'click' = 0" in str(w.message) for w in seen)
    assert any("passed 'imp' and 'click' only" in str(w.message) for w in seen)
