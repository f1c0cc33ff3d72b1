"""Evaluation says why a value is missing: no labelled rows, no rows at all, one class only."""

import math

import numpy as np
import pytest
import torch

import polytask as pt
from polytask.tasks import Undefined
from polytask.train._evaluate import evaluate, flatten


def _model_and_tasks():
    torch.manual_seed(0)
    tasks = [pt.Task("a", "binary"), pt.Task("b", "regression")]
    return pt.hard_sharing_mlp(3, tasks, [4]), tasks


def test_a_task_without_labels_has_undefined_loss_and_metrics_not_minus_zero():
    model, tasks = _model_and_tasks()
    data = pt.TaskData(
        torch.randn(6, 3),
        {"a": torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0]), "b": torch.full((6,), math.nan)},
    )
    metrics = evaluate(model, tasks, data, 4, torch.device("cpu"))
    assert all(isinstance(v, Undefined) for v in metrics["b"].values())
    assert {v.reason for v in metrics["b"].values()} == {"no labelled rows"}
    flat = flatten(metrics, "val")
    assert flat["val/loss"] == metrics["a"]["loss"]  # the task without labels adds nothing
    assert type(flat["val/b/loss"]) is float and math.isnan(flat["val/b/loss"])


def test_no_rows_at_all_is_undefined_not_a_key_error():
    model, tasks = _model_and_tasks()
    data = pt.TaskData(torch.zeros(0, 3), {"a": torch.zeros(0), "b": torch.zeros(0)})
    metrics = evaluate(model, tasks, data, 4, torch.device("cpu"))
    assert metrics["a"]["loss"].reason == "no labelled rows"
    assert metrics["b"]["rmse"].reason == "no labelled rows"


def test_one_class_and_constant_targets_give_reasons():
    model, tasks = _model_and_tasks()
    data = pt.TaskData(
        torch.randn(5, 3), {"a": torch.ones(5), "b": torch.full((5,), 2.0)}, {"b": (10.0, 3.0)}
    )
    metrics = evaluate(model, tasks, data, 4, torch.device("cpu"))
    assert metrics["a"]["auc"].reason == "one class only"
    assert np.isfinite(metrics["a"]["f1"])  # every row positive: F1 is defined
    negatives = pt.TaskData(torch.randn(5, 3), {"a": torch.zeros(5), "b": torch.ones(5)})
    assert evaluate(model, tasks, negatives, 4, torch.device("cpu"))["a"]["f1"].reason == (
        "no positive rows"  # neither a hit nor a miss: left out of a task mean, as AUC is
    )
    assert metrics["b"]["r2"].reason == "constant target"
    assert np.isfinite(metrics["b"]["rmse"]) and np.isfinite(metrics["a"]["loss"])


def test_undefined_is_a_nan_float_that_survives_pickling():
    import json
    import pickle

    value = Undefined("one class only")
    assert math.isnan(value) and isinstance(value, float)
    assert pickle.loads(pickle.dumps(value)).reason == "one class only"
    assert json.dumps({"auc": value}) == '{"auc": NaN}'


def test_a_multilabel_tasks_labels_are_scored_after_it_in_batches_as_sklearn_does():
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(1)
    tasks = [pt.Task("m", "multilabel", target=("x", "y")), pt.Task("b", "regression")]
    model = pt.hard_sharing_mlp(3, tasks, [4])
    x = torch.randn(40, 3)
    labels = (torch.rand(40, 2) < 0.5).float()
    labels[::3, 1] = math.nan  # every third row labels x only
    data = pt.TaskData(x, {"m": labels, "b": torch.randn(40)})
    metrics = evaluate(model, tasks, data, 7, torch.device("cpu"), summaries=True)  # 6 batches
    assert list(metrics) == ["m", "m: per label", "b"]
    with torch.no_grad():
        p = torch.sigmoid(model(x)["m"]).numpy()
    y = labels.numpy()
    for j, label in enumerate("xy"):
        keep = ~np.isnan(y[:, j])
        assert metrics["m: per label"][f"auc[{label}]"] == pytest.approx(
            roc_auc_score(y[keep, j], p[keep, j])
        )
    assert metrics["m"]["macro_auc"] == pytest.approx(
        np.mean([metrics["m: per label"][f"auc[{c}]"] for c in "xy"])
    )
    assert "m: per label" not in evaluate(model, tasks, data, 7, torch.device("cpu"))  # val


@pytest.mark.parametrize("world", [3, 40])  # 40 processes: most with an empty share
def test_a_process_reads_only_its_share_of_the_rows_and_all_agree_with_one(world):
    """Under torchrun each process reads its share (not every image or clip first); the
    gathered outputs give the one-process metrics."""
    from polytask.data._source import Batch, DataSource
    from polytask.train._distributed import Processes
    from polytask.train._evaluate import _outputs

    model, tasks = _model_and_tasks()
    g = torch.Generator().manual_seed(1)
    whole = pt.TaskData(torch.randn(30, 3, generator=g),
                        {"a": (torch.rand(30, generator=g) > 0.5).float(),
                         "b": torch.randn(30, generator=g)})  # fmt: skip

    class Counted(DataSource):
        def __init__(self) -> None:
            self.read, self.target_scale = 0, {}

        def __len__(self) -> int:
            return len(whole)

        @property
        def input_shape(self) -> tuple[int, ...]:
            return whole.input_shape

        @property
        def target_like(self):
            return whole.target_like

        def rows(self, index: torch.Tensor) -> Batch:
            self.read += len(index)
            return whole.rows(index)

    parts = torch.arange(30).tensor_split(world)
    others = [list(_outputs(model, whole.subset(p), 4, torch.device("cpu"), None)) for p in parts]

    class Rank(Processes):
        def gather(self, value):  # every process's outputs, as all_gather_object gives them
            return [value, *others[1:]]

    counted = Counted()
    got = evaluate(model, tasks, counted, 4, torch.device("cpu"), Rank(0, world, 0))
    assert counted.read == len(parts[0])  # its share only, not every row first
    want = evaluate(model, tasks, whole, 4, torch.device("cpu"))
    for task, metrics in want.items():
        for name, value in metrics.items():
            assert float(got[task][name]) == pytest.approx(float(value), rel=1e-6)
