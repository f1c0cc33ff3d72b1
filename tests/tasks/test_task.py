import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from polytask import Metric, Task
from polytask.tasks import IGNORE_INDEX, label_mask


def test_mask_marks_nan_and_ignore_value():
    y = torch.tensor([1.0, float("nan"), 0.0, IGNORE_INDEX])
    assert label_mask("binary", y).tolist() == [True, False, True, False]
    assert label_mask("regression", torch.tensor([1.0, float("nan")])).tolist() == [True, False]
    assert label_mask("multiclass", torch.tensor([2, IGNORE_INDEX, 0])).tolist() == [
        True,
        False,
        True,
    ]
    ml = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    assert label_mask("multilabel", ml).tolist() == [[True, False], [True, True]]


def test_regression_loss_is_mean_over_labelled_rows_only():
    task = Task("y", "regression")
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0])
    target = torch.tensor([0.0, float("nan"), 1.0, 4.0])
    # (1-0)^2, (3-1)^2, (4-4)^2 -> (1 + 4 + 0) / 3
    assert task.compute_loss(pred, target).item() == pytest.approx(5 / 3)


def test_regression_targets_shaped_unlike_the_outputs_are_refused_not_broadcast():
    task = Task("y", "regression")
    out, target = torch.zeros(4), torch.arange(4.0)
    assert float(task.compute_loss(out, target)) == pytest.approx(3.5)  # (0 + 1 + 4 + 9) / 4
    with pytest.raises(ValueError, match=r"targets of shape \(4, 1\) for outputs of shape \(4,\)"):
        task.compute_loss(out, target.reshape(4, 1))  # would broadcast to 4 × 4: mean 3.5 too
    two = Task("yz", "regression")  # a head of 2 outputs (a custom one) against 1 column
    with pytest.raises(ValueError, match=r"shape \(rows, 2\)"):
        two.compute_loss(torch.zeros(4, 2), torch.zeros(4, 1))


def test_multiclass_float_targets_with_ignore_index_and_bad_targets():
    """Float class indices with -100 for missing: the -100 rows were taken as labelled (the
    loss divided by every row, accuracy counting them wrong); targets not one index per row
    got torch's own errors, naming neither the task nor the fix."""
    task = Task("c", "multiclass", num_classes=3)
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 1.0]])
    ints = task.compute_loss(logits, torch.tensor([0, IGNORE_INDEX, 2]))
    floats = torch.tensor([0.0, IGNORE_INDEX, 2.0])
    assert float(task.compute_loss(logits, floats)) == pytest.approx(float(ints))
    assert task.mask(floats).tolist() == [True, False, True]
    for target, message in [
        (torch.tensor([[0], [1], [2]]), r"targets of shape \(3, 1\) .* \(y.reshape\(-1\)\)"),
        (
            torch.eye(3),
            r"one class index per row \(y.argmax\(1\) of one-hot rows; class probabilities need",
        ),
        (torch.tensor([0, 3, 2]), r"task 'c' \(multiclass\): class indices \[3\] outside 0 to 2"),
        (torch.tensor([0, -1, 2]), r"class indices \[-1\] outside .* mark a missing label"),
        (torch.tensor([0.0, 1.5, 2.0]), r"class indices \[1.5\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            task.compute_loss(logits, target)
    soft = torch.tensor([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [0.2, 0.2, 0.6]])

    def soft_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -(target * torch.log_softmax(pred, -1)).sum(-1)

    distilled = Task("c", "multiclass", num_classes=3, loss=soft_loss)  # probabilities: its own
    expected = float(soft_loss(logits, soft).mean())
    assert float(distilled.compute_loss(logits, soft)) == pytest.approx(expected)


def test_binary_targets_must_be_labels_0_to_1_shaped_as_the_outputs():
    """Labels 1 / 2 or -1 / 1 went into binary cross-entropy without a word (a loss of −2.95
    for labels 2 and 3); a (rows, 1) column got torch's own error."""
    task = Task("b", "binary")
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0])
    for target, message in [
        (
            torch.tensor([2.0, 3.0, 2.0, 2.0]),
            r"task 'b' \(binary\): labels \[2, 3\] outside 0 to 1",
        ),
        (torch.tensor([-1.0, 1.0, 1.0, -1.0]), r"labels \[-1\] outside 0 to 1; give 0 and 1"),
        (torch.tensor([[1.0], [0.0], [1.0], [0.0]]), r"targets of shape \(4, 1\) .*y.reshape"),
    ]:
        with pytest.raises(ValueError, match=message):
            task.compute_loss(logits, target)
    target = torch.tensor([1.0, 0.0, float("nan"), IGNORE_INDEX])  # missing: NaN or -100
    expected = F.binary_cross_entropy_with_logits(logits[:2], target[:2])
    assert float(task.compute_loss(logits, target)) == pytest.approx(float(expected))
    soft = torch.tensor([0.9, 0.1, 0.5, 1.0])  # probabilities: allowed
    assert float(task.compute_loss(logits, soft)) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(logits, soft))
    )


def test_multiclass_loss_ignores_ignore_index():
    task = Task("c", "multiclass", num_classes=3)
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 1.0]])
    target = torch.tensor([0, IGNORE_INDEX, 2])
    l0 = -math.log(math.exp(2) / (math.exp(2) + 2))
    l2 = -math.log(math.e / (math.e + 2))
    assert task.compute_loss(logits, target).item() == pytest.approx((l0 + l2) / 2, rel=1e-6)


def test_multilabel_loss_masks_single_elements():
    task = Task("m", "multilabel", target=("a", "b"))
    logits = torch.tensor([[0.0, 3.0], [1.0, -1.0]])
    target = torch.tensor([[1.0, float("nan")], [0.0, 0.0]])
    expected = (math.log(2) + math.log(1 + math.e) + math.log(1 + math.exp(-1))) / 3
    assert task.compute_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_loss_without_labels_is_zero_and_differentiable():
    task = Task("b", "binary")
    pred = torch.randn(4, requires_grad=True)
    loss = task.compute_loss(pred, torch.full((4,), float("nan")))
    loss.backward()
    assert loss.item() == 0.0
    assert pred.grad is not None and torch.all(pred.grad == 0)


def test_metrics_against_hand_computed_values():
    reg = Task("y", "regression")
    y = np.array([1.0, 2.0, 3.0, np.nan])
    p = np.array([1.5, 2.0, 2.0, 100.0])
    m = reg.evaluate(p, y)
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 0 + 1) / 3))
    assert m["mae"] == pytest.approx(1.5 / 3)
    assert m["r2"] == pytest.approx(1 - 1.25 / 2.0)

    binary = Task("b", "binary")
    y = np.array([0.0, 0.0, 1.0, 1.0, np.nan])
    p = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    m = binary.evaluate(p, y)
    # positive/negative pairs: (0.4 vs 0.1) ok, (0.4 vs 0.6) wrong, (0.8 vs both) ok -> 3/4
    assert m["auc"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5)  # tp=1, fp=1, fn=1

    multi = Task("c", "multiclass", num_classes=3)
    y = np.array([0, 1, 2, 2, IGNORE_INDEX])
    probs = np.eye(3)[[0, 2, 2, 2, 1]]
    m = multi.evaluate(probs, y)
    assert m["accuracy"] == pytest.approx(0.75)
    # per-class F1: class0 1.0, class1 0.0, class2 2*(2/3*1)/(2/3+1) = 0.8
    assert m["macro_f1"] == pytest.approx((1.0 + 0.0 + 0.8) / 3)


def test_multilabel_metrics_mask_each_label():
    task = Task("m", "multilabel", target=("a", "b"))
    y = np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 0.0]])
    p = np.array([[0.9, 0.9], [0.2, 0.7], [0.3, 0.1]])
    m = task.evaluate(p, y)
    # label a: preds 1,0,0 vs 1,0,1 -> f1 = 2/3; label b: preds 1,0 vs 1,0 -> f1 = 1
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["accuracy"] == pytest.approx(4 / 5)


def test_multilabel_breakdown_scores_each_label_on_its_own_rows():
    task = Task("m", "multilabel", target=("a", "b", "c"))
    y = np.array([[1, 0, 1], [0, IGNORE_INDEX, 0], [1, 0, 1], [0, 0, 0]], dtype=float)
    p = np.array([[0.9, 0.3, 0.8], [0.2, 0.9, 0.1], [0.4, 0.1, 0.05], [0.6, 0.5, 0.7]])
    parts = task.kind_spec.breakdown(task, p, y)
    # a: positives {0.9, 0.4}, negatives {0.2, 0.6}: 3 of 4 pairs ordered
    assert parts["auc[a]"] == pytest.approx(0.75)
    assert parts["f1[a]"] == pytest.approx(0.5)  # predicted 1, 0, 0, 1 against 1, 0, 1, 0
    assert math.isnan(parts["auc[b]"]) and "one class" in parts["auc[b]"].reason
    assert parts["auc[c]"] == pytest.approx(0.5)  # c: 2 of 4 pairs ordered
    assert list(parts) == ["auc[a]", "auc[b]", "auc[c]", "f1[a]", "f1[b]", "f1[c]"]
    assert task.evaluate(p, y)["macro_auc"] == pytest.approx((0.75 + 0.5) / 2)  # b left out
    by_count = Task("n", "multilabel", num_classes=2)  # no column names: labels 0, 1
    assert set(by_count.kind_spec.breakdown(by_count, p[:, :2], y[:, :2])) == {
        "auc[0]", "auc[1]", "f1[0]", "f1[1]"
    }  # fmt: skip
    single = Task("s", "multilabel", target=("a",))
    assert single.kind_spec.breakdown(single, p[:, :1], y[:, :1]) == {}  # the macro figure


def test_multilabel_values_other_than_0_and_1_are_named_by_column_and_row():
    import pandas as pd

    from polytask.tasks._columns import DataError

    task = Task("m", "multilabel", target=("a", "b"))
    frame = pd.DataFrame({"a": [1.0, 0.0, 2.0, 1.0], "b": [0.0, np.nan, 1.0, 5.0]})
    with pytest.raises(DataError, match=r"columns \['a', 'b'\] hold \[2.0, 5.0\] \(rows 2, 3\)"):
        task.encode_target(frame, task.fit_target(frame.iloc[:2]))


def test_primary_metric_defaults_and_override():
    assert Task("b", "binary").primary.name == "auc"
    assert Task("c", "multiclass", num_classes=2).primary.name == "macro_f1"
    assert Task("m", "multilabel", target=("a", "b")).primary.name == "macro_f1"
    reg = Task("y", "regression", primary_metric="mae")
    assert reg.primary.name == "mae" and not reg.primary.higher_is_better
    custom = Metric("bias", lambda y, p: float(np.mean(p - y)), higher_is_better=False)
    t = Task("y", "regression", metrics=("rmse", custom), primary_metric="bias")
    assert t.evaluate(np.array([1.0, 2.0]), np.array([0.0, 0.0]))["bias"] == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "x", "kind": "ranking"}, "kind\n  Input should be 'binary'"),
        ({"name": "x", "kind": "regression", "loss": "hinge"}, "unknown loss 'hinge'"),
        ({"name": "x", "kind": "regression", "metrics": ("auc",)}, "unknown regression metric"),
        ({"name": "x", "kind": "binary", "primary_metric": "rmse"}, "primary_metric 'rmse'"),
        ({"name": "x y", "kind": "binary"}, "not valid"),
        ({"name": "x", "kind": "multilabel"}, "one target column per label"),
        ({"name": "x", "kind": "multiclass", "num_classes": 1}, "num_classes >= 2"),
    ],
)
def test_task_validation_messages(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Task(**kwargs)


@pytest.mark.parametrize(
    ("columns", "wanted", "hint"),
    [
        (["age", "sex"], ["Age"], "['Age'] not found in the data (did you mean 'age'?)"),
        ([0, 1, "age"], ["1"], "(the data's column is 1 of type int)"),
        (["usage_0", "usage_1"], ["usage_01"], "(did you mean 'usage_1'?)"),
        (["path", "label"], ["image"], "['image'] not found in the data; its columns are: path"),
        ([f"c{i}" for i in range(61)], ["zz"], "c38, c39 ... and 21 more"),  # not cut silently
    ],
)
def test_a_missing_column_names_the_one_meant(columns, wanted, hint):
    import pandas as pd

    from polytask.tasks._columns import DataError, check_columns

    with pytest.raises(DataError) as err:
        check_columns(pd.DataFrame(columns=columns), wanted, "feature columns", None)
    assert hint in str(err.value)


def test_multiclass_num_classes_must_match_named_classes():
    """Classes given by name are read from the training rows: more outputs than classes there
    would name no class (refused); as indices, a class the rows lack keeps its output."""
    import pandas as pd

    from polytask.tasks._columns import DataError

    frame = pd.DataFrame({"plan": ["basic", "pro", "basic", "team"]})
    with pytest.raises(DataError, match=r"num_classes is 5 but the training rows hold 3 classes "
                       r"\('basic', 'pro', 'team'\).*indices 0 to 4"):  # fmt: skip
        Task("plan", "multiclass", num_classes=5).fit_target(frame)
    with pytest.raises(DataError, match="num_classes is 2 but the training rows hold 3 classes"):
        Task("plan", "multiclass", num_classes=2).fit_target(frame)
    indices = pd.DataFrame({"plan": [0, 2, 2, 0]})
    fit = Task("plan", "multiclass", num_classes=4).fit_target(indices)
    assert fit.classes == [0, 1, 2, 3]


@pytest.mark.parametrize("kind", ["regression", "binary", "multiclass"])
def test_a_kind_of_one_target_column_refuses_several(kind):
    """target: [y, cnt] on a regression task trained on y alone and never said so."""
    with pytest.raises(ValueError, match=rf"a {kind} task reads one target column, and target "
                       r"lists 2 \(\['y', 'cnt'\]\): make a task of each column"):  # fmt: skip
        Task("y", kind, target=("y", "cnt"))
    assert Task("tags", "multilabel", target=("y", "cnt")).target_columns == ("y", "cnt")
    assert Task("y", kind, target=("y",)).target_columns == ("y",)
