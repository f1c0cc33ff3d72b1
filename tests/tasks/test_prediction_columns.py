"""Prediction columns follow one scheme per task kind, and id columns pass through.

`<task>` the predicted label or value; `<task>_prob` a binary task's probability of its positive
class; `<task>_prob_<class>` each class of a multiclass task; `<task>_<label>` and
`<task>_prob_<label>` each label of a multilabel task.
"""

import numpy as np
import pandas as pd
import pytest

from polytask import Task
from polytask.app import FittedModel, ModelConfig
from polytask.data import DataError, TabularPreprocessor
from polytask.tasks import TargetFit

P = np.array([0.2, 0.7])


@pytest.mark.parametrize(
    ("task", "fit", "prediction", "columns"),
    [
        (Task("ltv", "regression"), TargetFit(scale=(0.0, 1.0)), P, ["ltv"]),
        (Task("benign", "binary"), TargetFit(classes=[0, 1]), P, ["benign", "benign_prob"]),
        (Task("tumour", "binary"), TargetFit(classes=["no", "yes"]), P, ["tumour", "tumour_prob"]),
        (
            Task("plan", "multiclass", num_classes=3),
            TargetFit(classes=["basic", "premium", "standard"]),
            np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]),
            ["plan", "plan_prob_basic", "plan_prob_premium", "plan_prob_standard"],
        ),
        (
            Task("t", "multilabel", target=("big", "small")),
            TargetFit(),
            np.array([[0.2, 0.9], [0.6, 0.1]]),
            ["t_big", "t_small", "t_prob_big", "t_prob_small"],  # was big, big_prob, ...
        ),
        (
            Task("tags", "multilabel", num_classes=3),
            TargetFit(),
            np.array([[0.2, 0.9, 0.5], [0.6, 0.1, 0.4]]),
            ["tags_0", "tags_1", "tags_2", "tags_prob_0", "tags_prob_1", "tags_prob_2"],
        ),
    ],
    ids=["regression", "binary-01", "binary-named", "multiclass", "multilabel", "multilabel-n"],
)
def test_each_kind_names_its_prediction_columns_by_one_scheme(task, fit, prediction, columns):
    out = task.kind_spec.decode(task, prediction, fit)
    assert list(out) == columns


def test_binary_prob_is_the_positive_class_and_the_label_follows_it():
    task = Task("tumour", "binary")
    out = task.kind_spec.decode(task, P, TargetFit(classes=["benign", "malign"]))
    assert out["tumour"] == ["benign", "malign"]
    assert out["tumour_prob"].tolist() == pytest.approx([0.2, 0.7])


TASKS = [Task("churn", "binary"), Task("ltv", "regression"), Task("plan", "multiclass")]


def _fitted() -> tuple[FittedModel, pd.DataFrame]:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "customer_id": [f"c{i:03d}" for i in range(40)],
            "age": rng.normal(40, 10, 40),
            "churn": rng.integers(0, 2, 40),
            "ltv": rng.normal(100, 20, 40),
            "plan": rng.choice(["basic", "premium"], 40),
        }
    )
    pre = TabularPreprocessor.fit(df, ["age"], [], TASKS)
    tasks = pre.resolve_tasks(TASKS)
    spec = ModelConfig(params={"hidden": (4,)})
    return FittedModel(spec.build(pre.feature_names, tasks), pre, spec), df


def test_predict_passes_id_columns_through_first():
    fitted, df = _fitted()
    rows = df.iloc[[5, 1, 30]].drop(columns=["churn", "ltv", "plan"])
    out = fitted.predict(rows, id_columns=["customer_id"])
    assert list(out.columns) == [
        "customer_id", "churn", "churn_prob", "ltv", "plan", "plan_prob_basic", "plan_prob_premium"
    ]  # fmt: skip
    assert out["customer_id"].tolist() == ["c005", "c001", "c030"]
    assert list(out.index) == [5, 1, 30]
    plain = fitted.predict(rows)
    pd.testing.assert_frame_equal(out.drop(columns=["customer_id"]), plain)
    both = fitted.predict(rows, id_columns=["customer_id", "age", "customer_id"])
    assert list(both.columns[:3]) == ["customer_id", "age", "churn"]  # a feature may be an id


def test_id_column_errors_name_the_column():
    fitted, df = _fitted()
    with pytest.raises(DataError, match=r"id column\(s\) \['cust_id'\] not found in the data"):
        fitted.predict(df, id_columns=["cust_id"])
    with pytest.raises(DataError, match=r"\['churn'\] are already taken by an id column"):
        fitted.predict(df, id_columns=["churn"])  # the label column would be overwritten


def test_save_refuses_a_model_its_config_does_not_rebuild(tmp_path):
    """load builds the network from model_config and loads the weights: a Tanh trunk saved
    with a ReLU config reloaded as ReLU, its predictions moved, without a word."""
    import torch

    from polytask.models import MLP, MultiTaskModel

    fitted, df = _fitted()
    fitted.save(tmp_path / "ok.pt")  # built from its config: saved as before
    again = FittedModel.load(tmp_path / "ok.pt").predict(df.head(20))
    assert np.allclose(again["ltv"], fitted.predict(df.head(20))["ltv"])
    tanh = MultiTaskModel(MLP(fitted.preprocessor.in_dim, (4,), activation=torch.nn.Tanh),
                          fitted.tasks)  # fmt: skip
    with pytest.raises(ValueError, match=r"builds another network than this model \(layer 1: "
                       r"Tanh here, ReLU rebuilt\).*Trainer.save"):  # fmt: skip
        FittedModel(tanh, fitted.preprocessor, fitted.model_config).save(tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()
    relu = MultiTaskModel(MLP(fitted.preprocessor.in_dim, (4,)), fitted.tasks)  # the same layers
    FittedModel(relu, fitted.preprocessor, fitted.model_config).save(tmp_path / "relu.pt")
    # an nn.Sequential trunk of the same layers: its weights are named trunk.0.* where the
    # config builds trunk.net.0.*; saved, it loaded nowhere (missing and unexpected keys)
    mine = MultiTaskModel(
        torch.nn.Sequential(torch.nn.Linear(fitted.preprocessor.in_dim, 4), torch.nn.ReLU()),
        fitted.tasks,
        trunk_out_dim=4,
    )
    FittedModel(mine, fitted.preprocessor, fitted.model_config).save(tmp_path / "mine.pt")
    loaded = FittedModel.load(tmp_path / "mine.pt").predict(df.head(20))
    want = FittedModel(mine, fitted.preprocessor, fitted.model_config).predict(df.head(20))
    assert np.allclose(loaded["ltv"], want["ltv"])
