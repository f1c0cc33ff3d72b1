"""Task kinds are registered objects: a new kind, defined in this file alone and registered with
one line, trains, evaluates and predicts through the whole library."""

import dataclasses
import re
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from sklearn.metrics import mean_poisson_deviance

import polytask
from polytask import Metric, Task, TrainConfig, Trainer, hard_sharing_mlp
from polytask.app import FittedModel, ModelConfig
from polytask.data import DataError, TabularPreprocessor
from polytask.tasks import (
    KINDS,
    METRICS,
    TASK_KINDS,
    BinaryKind,
    ContrastiveKind,
    DenoisingKind,
    DenseRegressionKind,
    KeypointsKind,
    LossSpec,
    MulticlassKind,
    MultilabelKind,
    NormalsKind,
    ReconstructionKind,
    RegressionKind,
    SegmentationKind,
    TargetFit,
    TaskKind,
    label_mask,
)

# --- the toy kind: everything a "count" task needs, in one class -------------------------------


def poisson_nll(log_rate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.poisson_nll_loss(log_rate, target.to(log_rate.dtype), reduction="none")


def mae(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(y - p)))


class CountKind(TaskKind):
    """Counts 0, 1, 2, ...: the head predicts log λ, trained with the Poisson likelihood; the
    prediction is the expected count λ, written with its rounded count."""

    losses: ClassVar[dict[str, LossSpec]] = {"poisson": LossSpec(poisson_nll)}
    metrics: ClassVar[dict[str, Metric]] = {
        "deviance": Metric("deviance", mean_poisson_deviance, False),
        "mae": Metric("mae", mae, False),
    }

    def validate(self, task: Task) -> None:
        if task.num_classes is not None:
            raise ValueError(f"task {task.name!r}: a count task has no num_classes")

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return torch.exp(output)

    def encode_target(self, task: Task, df: pd.DataFrame, fit: TargetFit) -> torch.Tensor:
        y = super().encode_target(task, df, fit)
        if bool((y < 0).any()):
            raise DataError(f"task {task.name!r}: counts must be >= 0")
        return y

    def decode(self, task: Task, prediction: np.ndarray, fit: TargetFit) -> dict[str, Any]:
        return {task.name: prediction, f"{task.name}_count": np.rint(prediction).astype(int)}


@pytest.fixture
def count_kind(monkeypatch):
    monkeypatch.setitem(KINDS, "count", CountKind())  # the one registry line


def _table(n: int, seed: int) -> pd.DataFrame:
    """Visits ~ Poisson(exp(0.5 + x·w)) and a related regression target; 10% of visits unknown."""
    world = np.random.default_rng(0)
    w, v = world.normal(0, 0.35, 8), world.normal(0, 1, 8)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8))
    visits = rng.poisson(np.exp(0.5 + x @ w)).astype(float)
    visits[rng.random(n) < 0.1] = np.nan
    df = pd.DataFrame(x, columns=[f"x{i}" for i in range(8)])
    df["visits"] = visits
    df["spend"] = x @ v + rng.normal(0, 0.3, n)
    return df


FEATURES = [f"x{i}" for i in range(8)]


def test_a_kind_from_one_file_trains_evaluates_and_predicts(count_kind):
    tasks = [Task("visits", "count"), Task("spend", "regression")]
    train, val, test = _table(3000, 1), _table(1000, 2), _table(2000, 3)
    pre = TabularPreprocessor.fit(train, FEATURES, [], tasks)
    assert "visits" not in pre.classes and "visits" not in pre.target_scale
    data, val_data = pre.transform(train, tasks), pre.transform(val, tasks)
    assert torch.isnan(data.targets["visits"]).any()  # missing labels stay missing

    torch.manual_seed(0)
    model = hard_sharing_mlp(pre.in_dim, tasks, hidden=(32,))
    config = TrainConfig(epochs=None, steps=400, eval_every=100, batch_size=64, lr=3e-3,
                         progress=False)  # fmt: skip
    trainer = Trainer(model, config=config)
    before = trainer.evaluate(val_data)["visits"]
    trainer.fit(data, val_data)
    after = trainer.evaluate(val_data)["visits"]
    assert after["loss"] < before["loss"] - 0.2

    fitted = FittedModel(model, pre, ModelConfig())
    metrics = fitted.evaluate(test)["visits"]
    assert list(metrics) == ["loss", "deviance", "mae"]
    y = test["visits"].dropna().to_numpy()
    mean = np.full_like(y, train["visits"].mean())  # trivial baseline: the training mean
    assert metrics["deviance"] < 0.7 * mean_poisson_deviance(y, mean)
    assert metrics["mae"] < 0.85 * mae(y, mean)
    assert trainer.tasks[0].primary.name == "deviance"

    out = fitted.predict(test)
    assert list(out.columns) == ["visits", "visits_count", "spend"]
    assert (out["visits"] > 0).all()
    assert (out["visits_count"] == np.rint(out["visits"])).all()
    raw = trainer.predict(torch.zeros(5, pre.in_dim))["visits"]
    assert raw.shape == (5,) and bool((raw > 0).all())  # single output, squeezed, exp'ed


def test_the_new_kind_validates_masks_and_round_trips(count_kind):
    task = Task("visits", "count")
    assert task.kind_spec is KINDS["count"] and task.out_features == 1
    assert Task(**task.to_dict()) == task
    assert "count" in METRICS and list(METRICS["count"]) == ["deviance", "mae"]
    assert label_mask("count", torch.tensor([1.0, float("nan")])).tolist() == [True, False]
    torch.testing.assert_close(
        task.compute_loss(torch.tensor([0.0, 5.0]), torch.tensor([1.0, float("nan")])),
        torch.tensor(1.0),  # exp(0) − 1·0, the unlabelled row left out
    )
    with pytest.raises(ValueError, match="a count task has no num_classes"):
        Task("visits", "count", num_classes=3)
    users = "/".join(k for k, spec in KINDS.items() if "mse" in spec.losses)
    wrong_loss = f"loss 'mse' is for {users} tasks, not count; use one of ['poisson']"
    assert users.startswith("regression/reconstruction/denoising/")
    with pytest.raises(ValueError, match=re.escape(wrong_loss)):
        Task("visits", "count", loss="mse")
    with pytest.raises(ValueError, match="unknown count metric 'auc'"):
        Task("visits", "count", metrics=("auc",))
    bad = pd.DataFrame({"x0": [0.0, 1.0], "visits": [1.0, -2.0]})
    pre = TabularPreprocessor.fit(bad, ["x0"], [], [task])
    with pytest.raises(DataError, match="counts must be >= 0"):
        pre.transform(bad, [task])


VISION_MORE = ("detection",)

# --- the registry and its messages ---------------------------------------------------------------


def test_built_in_kinds_are_registered_objects():
    assert (
        "binary", "multiclass", "multilabel", "regression",
        "reconstruction", "denoising", "contrastive",
        "segmentation", "dense_regression", "normals", "keypoints", *VISION_MORE,
    ) == TASK_KINDS[:12]  # fmt: skip
    assert [type(k) for k in KINDS.values()][:11] == [
        BinaryKind, MulticlassKind, MultilabelKind, RegressionKind,
        ReconstructionKind, DenoisingKind, ContrastiveKind,
        SegmentationKind, DenseRegressionKind, NormalsKind, KeypointsKind,
    ]  # fmt: skip
    assert Task("b", "binary").kind_spec is KINDS["binary"]
    assert [KINDS[k].default_loss for k in TASK_KINDS][:11] == [
        "bce", "cross_entropy", "bce", "mse", "mse", "mse", "nt_xent",
        "cross_entropy", "l1", "cosine", "centernet",
    ]  # fmt: skip
    assert list(METRICS) == list(TASK_KINDS) and next(iter(METRICS["binary"])) == "auc"


def test_unknown_kind_lists_the_registered_ones_and_suggests_the_closest(count_kind):
    with pytest.raises(ValidationError) as err:
        Task(name="x", kind="cuont")
    message = str(err.value)
    listed = ", ".join(repr(k) for k in TASK_KINDS)
    assert f"Input should be {listed} or 'count'" in message
    assert listed.startswith("'binary', 'multiclass', 'multilabel', 'regression'")
    assert "(did you mean 'count'?)" in message and "polytask.tasks.KINDS" in message
    with pytest.raises(ValidationError, match="did you mean 'multilabel'"):
        Task(name="x", kind="multi_label")
    with pytest.raises(ValidationError) as err:
        Task(name="x", kind="ranking")
    assert "did you mean" not in str(err.value)
    with pytest.raises(ValueError, match=r"unknown task kind 'nope': Input should be 'binary'"):
        label_mask("nope", torch.zeros(2))


def test_a_kind_without_losses_or_metrics_is_refused_when_defined():
    with pytest.raises(TypeError, match="must set losses and metrics"):

        class Incomplete(TaskKind):
            def predict(self, output: torch.Tensor) -> torch.Tensor:
                return output


def test_only_kind_files_name_the_built_in_kinds():
    """Per-kind behaviour lives in the kind's file: no `if task.kind == ...` elsewhere."""
    root = Path(polytask.__file__).parent
    allowed = {"tasks/_registry.py", "data/_synthetic.py", "cli/_demo.py"}
    named = re.compile(r"\"(binary|multiclass|multilabel|regression)\"")
    hits = [
        f"{rel}:{i}"
        for path in sorted(root.rglob("*.py"))
        if not (rel := path.relative_to(root).as_posix()).startswith("tasks/_kinds/")
        and rel not in allowed
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if named.search(line)
    ]
    assert hits == []


@pytest.mark.parametrize(
    ("values", "hint"),
    [
        ([0.5, 1.25, 3.0], "use kind: regression (its values are numbers on a scale)"),
        (list(range(30)), "use kind: regression (its values are numbers on a scale)"),
        ([1, 2, 3], "use kind: multiclass"),
        (["a", "b", "c"], "use kind: multiclass"),
        ([0.7, 0.7], "training rows hold one class only ([0.7]): both classes must occur"),
    ],
)
def test_a_binary_task_with_other_values_is_told_which_kind_fits(values, hint):
    frame = pd.DataFrame({"y": values, "x": 0.0})
    with pytest.raises(DataError) as err:
        TabularPreprocessor.fit(frame, ["x"], [], [Task("y", "binary")])
    assert hint in str(err.value)
    assert ("regression" in str(err.value)) == ("regression" in hint)  # categories: not told it


def test_rows_of_a_class_no_training_row_has_are_counted_in_a_warning():
    from polytask.app import RunConfig, prepare
    from polytask.app._data import make_split
    from polytask.data import DataWarning, make_customers

    frame = make_customers(400, seed=0)
    config = RunConfig(
        data={"path": "customers.csv", "features": {"numeric": ["age"]}},
        tasks=(Task("plan", "multiclass"), Task("churn", "binary")),
    )
    test = make_split(config, len(frame), frame=frame).test
    frame.loc[frame.index[test[:3]], "plan"] = "platinum"  # a class only test rows have
    with pytest.warns(DataWarning) as caught:
        data = prepare(config, frame)
    said = [str(w.message) for w in caught if "no training row has" in str(w.message)]
    assert said == [
        "task 'plan', test rows of customers.csv: 3 rows hold classes no training row has "
        "(['platinum']): the model cannot predict them, so they count as unlabelled (left out "
        "of the loss and the metrics); put some of them in the training rows, or merge them "
        "into a known class"
    ]  # once, for the part that holds them; churn's 0/1 are all known
    assert int((data.test.targets["plan"] == -100).sum()) >= 3  # left out, as said


def test_labels_that_differ_only_in_case_and_numbers_as_classes_are_warned_about():
    from polytask.data import DataWarning

    frame = pd.DataFrame({"x": 0.0, "s": ["positive", "Positive ", "negative", "negative"]})
    with pytest.warns(DataWarning, match=r"classes \['Positive ', 'positive'\] differ only"):
        TabularPreprocessor.fit(frame, ["x"], [], [Task("s", "multiclass")])
    scores = pd.DataFrame({"x": 0.0, "r": np.linspace(1, 5, 40)})
    with pytest.warns(DataWarning, match="40 classes from a column of numbers.*kind: regression"):
        TabularPreprocessor.fit(scores, ["x"], [], [Task("r", "multiclass")])
    ints = pd.DataFrame({"x": 0.0, "r": [1, 2, 3, 1, 2, 3]})  # a few whole numbers: categories
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TabularPreprocessor.fit(ints, ["x"], [], [Task("r", "multiclass")])


def test_integer_classes_read_with_blank_cells_keep_their_integer_names():
    frame = pd.DataFrame({"x": np.arange(6.0), "mood": [0, 1, 2, None, 1, 0]})  # floats
    assert frame["mood"].dtype == float
    task = Task("mood", "multiclass")
    fit = task.kind_spec.fit_target(task, frame)
    assert fit.classes == [0, 1, 2] and all(type(c) is int for c in fit.classes)  # was 0.0, ...
    assert task.kind_spec.encode_target(task, frame, fit).tolist() == [0, 1, 2, -100, 1, 0]
    old = dataclasses.replace(fit, classes=[0.0, 1.0, 2.0])  # a model saved before: same rows
    assert task.kind_spec.encode_target(task, frame, old).tolist() == [0, 1, 2, -100, 1, 0]
    fractions = Task("f", "multiclass", target="f")
    with pytest.warns(polytask.data.DataWarning):
        kept = fractions.kind_spec.fit_target(fractions, pd.DataFrame({"f": [0.5, 1.0, 2.0]}))
    assert kept.classes == [0.5, 1.0, 2.0]  # fractions: floats, as written
