"""Per-task losses by name: golden values, parameters, and clear refusals."""

import math
import re

import numpy as np
import pytest
import torch

from polytask import Task

LN3 = math.log(3.0)


def _loss(task: Task, pred, target) -> torch.Tensor:
    return task.element_loss()(torch.tensor(pred), torch.tensor(target))


def test_gce_golden_values_and_limits():
    mc = Task("m", "multiclass", num_classes=2, loss="gce")
    # p = softmax([0, ln 3]) = [0.25, 0.75]
    got = _loss(mc, [[0.0, LN3], [0.0, LN3]], [1, 0])
    expected = [(1 - 0.75**0.7) / 0.7, (1 - 0.25**0.7) / 0.7]
    torch.testing.assert_close(got, torch.tensor(expected))
    binary = Task("b", "binary", loss="gce", loss_params={"q": 1.0})
    # q = 1: 1 − p_y, with p_1 = σ(logit)
    got = _loss(binary, [0.0, LN3], [0.0, 1.0])
    torch.testing.assert_close(got, torch.tensor([0.5, 0.25]))
    near_ce = Task("c", "multiclass", num_classes=2, loss="gce", loss_params={"q": 1e-4})
    got = _loss(near_ce, [[0.0, LN3]], [0])
    torch.testing.assert_close(got, torch.tensor([math.log(4.0)]), rtol=1e-3, atol=0)


def test_sce_golden_value():
    task = Task("m", "multiclass", num_classes=2, loss="sce")
    # α(−ln p_y) + β(−A)(1 − p_y) with p_y = 0.25, α = 0.1, β = 1, A = −4
    got = _loss(task, [[0.0, LN3]], [0])
    torch.testing.assert_close(got, torch.tensor([0.1 * math.log(4.0) + 4 * 0.75]))
    binary = Task("b", "binary", loss="sce", loss_params={"alpha": 1.0, "beta": 0.0})
    torch.testing.assert_close(_loss(binary, [LN3], [1.0]), torch.tensor([-math.log(0.75)]))


def test_label_smoothing_and_huber():
    smooth = Task("b", "binary", label_smoothing=0.2)  # target 1 → 0.9
    s = 1 / (1 + math.exp(-2.0))
    expected = -(0.9 * math.log(s) + 0.1 * math.log(1 - s))
    torch.testing.assert_close(_loss(smooth, [2.0], [1.0]), torch.tensor([expected]))
    ce = Task("m", "multiclass", num_classes=3, label_smoothing=0.3)
    pred = torch.tensor([[1.0, 2.0, 0.5]])
    log_p = torch.log_softmax(pred, -1)[0]
    expected_ce = -(0.8 * log_p[1] + 0.1 * log_p[0] + 0.1 * log_p[2])
    torch.testing.assert_close(ce.element_loss()(pred, torch.tensor([1])), expected_ce[None])
    huber = Task("r", "regression", loss="huber", loss_params={"delta": 2.0})
    # quadratic 0.5 e² within δ, δ(|e| − δ/2) beyond
    torch.testing.assert_close(_loss(huber, [1.0, 3.0], [0.0, 0.0]), torch.tensor([0.5, 4.0]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "regression", "loss": "gce"}, "loss 'gce' is for binary/multiclass"),
        ({"kind": "binary", "loss": "gce", "loss_params": {"k": 1}}, "has no parameter ['k']"),
        ({"kind": "binary", "loss": "gce", "loss_params": {"q": 0}}, "q must be in (0, 1]"),
        ({"kind": "binary", "loss": "sce", "label_smoothing": 0.1}, "label_smoothing applies"),
        ({"kind": "binary", "label_smoothing": 1.0}, "label_smoothing must be in [0, 1)"),
        ({"kind": "regression", "loss": "huber", "loss_params": {"delta": 0}}, "delta must be"),
        ({"kind": "binary", "loss": "focal"}, "unknown loss 'focal'; allowed: bce"),
        ({"kind": "regression", "loss": "hubber"}, "unknown loss 'hubber' (did you mean 'huber'?)"),
    ],
)
def test_bad_loss_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Task("t", **kwargs)


def test_loss_settings_round_trip():
    task = Task("t", "multiclass", num_classes=3, loss="sce", loss_params={"alpha": 0.5})
    again = Task(**task.to_dict())
    assert again == task and again.loss_params == {"alpha": 0.5}


def test_a_regression_target_of_labels_says_which_kind_takes_labels():
    import pandas as pd

    from polytask.data import DataError

    task = Task("plan", "regression")
    frame = pd.DataFrame({"plan": ["basic", "pro", "basic"]})
    with pytest.raises(DataError, match=r"holds non-numeric values .*use kind multiclass"):
        task.fit_target(frame)


@pytest.mark.parametrize("name", ["mse", "l1", "huber"])
def test_regression_losses_keep_float32_targets_against_half_precision_outputs(name):
    """Under autocast the outputs are bfloat16: the targets are not rounded to them (100.3
    to 100.5), the difference is taken in float32."""
    from polytask.tasks import _losses

    fn = getattr(_losses, name)
    pred = torch.tensor([100.0, 101.0], dtype=torch.bfloat16)
    target = torch.tensor([100.3, 99.2])
    got = fn(pred, target)
    want = fn(pred.float(), target)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want)
    assert float(fn(pred, target)[0]) != float(fn(pred, target.to(torch.bfloat16))[0])


@pytest.mark.parametrize("loss", ["gce", "sce"])
def test_robust_losses_read_a_probability_target_as_a_label_distribution(loss):
    """Found by review: gce and sce truncated a binary target of 0.7 or 0.9 to class 0, so a
    soft target (which bce reads as a distribution) trained towards the wrong class."""
    task = Task("b", "binary", loss=loss)
    pred, soft = [0.0, LN3, -LN3], [0.7, 0.2, 0.9]
    on_one = _loss(task, pred, [1.0] * 3)
    on_zero = _loss(task, pred, [0.0] * 3)
    y = torch.tensor(soft)
    torch.testing.assert_close(_loss(task, pred, soft), y * on_one + (1 - y) * on_zero)
    if loss == "gce":  # q = 0.7 by hand: p₁ = σ(logit) = 0.5, 0.75, 0.25
        p1 = torch.tensor([0.5, 0.75, 0.25])
        by_hand = (y * (1 - p1**0.7) + (1 - y) * (1 - (1 - p1) ** 0.7)) / 0.7
        torch.testing.assert_close(_loss(task, pred, soft), by_hand)


def test_binary_metrics_score_a_probability_target_as_its_rounded_label():
    """Found by review: sklearn refused probability targets (a crash after the first epoch),
    and accuracy and f1 truncated 0.9 to 0."""
    from polytask.tasks._kinds._binary import binary_accuracy, binary_auc, binary_f1

    y = np.array([0.9] * 10 + [0.1] * 10)
    p = np.array([0.99] * 10 + [0.98] * 5 + [0.01] * 5)
    hard = (y >= 0.5).astype(float)
    assert binary_accuracy(y, p) == binary_accuracy(hard, p) == 0.75
    assert binary_f1(y, p) == pytest.approx(2 * 10 / (2 * 10 + 5))
    assert binary_auc(y, p) == binary_auc(hard, p) == 1.0  # every 0.99 above every negative
