import re

import numpy as np
import pandas as pd
import pytest
import torch

from polytask import Task
from polytask.data import DataError, TabularPreprocessor, random_split, split_from_file


def _frame():
    return pd.DataFrame(
        {
            "x": [1.0, 2.0, 3.0, np.nan, 100.0],
            "color": ["red", "blue", "red", None, "green"],
            "yes": ["no", "yes", "yes", None, "no"],
            "grade": ["a", "b", "c", "a", "d"],
            "amount": [10.0, 20.0, np.nan, 40.0, 50.0],
            "t1": [1, 0, np.nan, 1, 0],
            "t2": [0, 0, 1, np.nan, 1],
        }
    )


TASKS = [
    Task("yes", "binary"),
    Task("grade", "multiclass"),
    Task("amount", "regression"),
    Task("tags", "multilabel", target=("t1", "t2")),
]


def test_fit_on_training_rows_only_and_encode():
    df = _frame()
    pre = TabularPreprocessor.fit(df.iloc[:4], ["x"], ["color"], TASKS)
    assert pre.means == (2.0,)
    assert pre.categories == (("blue", "red"),)
    assert pre.classes["grade"] == ["a", "b", "c"]
    tasks = pre.resolve_tasks(TASKS)
    assert tasks[1].num_classes == 3
    data = pre.transform(df, tasks)
    x = data.x.numpy()
    std = np.std([1.0, 2.0, 3.0])
    assert x[0, 0] == pytest.approx((1 - 2) / std)
    assert x[3, 0] == 0.0  # missing numeric -> training mean
    assert x[4].tolist()[1:] == [0.0, 0.0]  # unseen category "green" -> all zeros
    assert x[0].tolist()[1:] == [0.0, 1.0]
    assert data.targets["yes"].tolist()[:3] == [0.0, 1.0, 1.0]
    assert torch.isnan(data.targets["yes"][3])
    assert data.targets["grade"].tolist() == [0, 1, 2, 0, -100]  # unseen class "d" -> ignored
    mean, _ = pre.target_scale["amount"]
    assert mean == pytest.approx(70 / 3)
    assert data.unscale("amount", data.targets["amount"][:2]).tolist() == pytest.approx([10, 20])
    assert data.targets["tags"].shape == (5, 2)


def test_round_trip_through_dict():
    import json

    pre = TabularPreprocessor.fit(_frame(), ["x"], ["color"], TASKS)
    again = TabularPreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again == pre


@pytest.mark.parametrize(
    ("numeric", "categorical", "tasks", "message"),
    [
        (["nope"], [], TASKS, r"numeric feature columns \['nope'\] not found"),
        (["x"], [], [Task("zz", "regression")], r"target columns \['zz'\] not found"),
        (["x"], [], [Task("grade", "binary")], "binary but its target has 4 classes"),
        (["color"], [], TASKS, "holds non-numeric values"),
        (["amount"], [], [Task("amount", "regression")], "both a feature and a task target"),
        ([], [], TASKS, "no feature columns"),
    ],
)
def test_fit_errors_name_the_problem(numeric, categorical, tasks, message):
    with pytest.raises(DataError, match=message):
        TabularPreprocessor.fit(_frame(), numeric, categorical, tasks)


def test_binary_numeric_labels_accept_int_float_and_string_spellings():
    df = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "y": [0, 1.0, "1", np.nan]})
    pre = TabularPreprocessor.fit(df, ["x"], [], [Task("y", "binary")])
    assert pre.transform_target(Task("y", "binary"), df)[:3].tolist() == [0.0, 1.0, 1.0]


def test_random_split_is_disjoint_and_complete():
    s = random_split(100, 0.1, 0.2, seed=3)
    all_rows = np.concatenate([s.train, s.val, s.test])
    assert sorted(all_rows.tolist()) == list(range(100))
    assert (len(s.val), len(s.test)) == (10, 20)
    assert np.array_equal(random_split(100, 0.1, 0.2, seed=3).test, s.test)


def test_split_from_file(tmp_path):
    path = tmp_path / "s.npz"
    np.savez(path, train_idx=np.arange(0, 80), test_idx=np.arange(80, 100))
    s = split_from_file(path, 100, val_fraction=0.25, seed=0)
    assert len(s.val) == 20 and len(s.train) == 60 and s.test.tolist() == list(range(80, 100))
    np.savez(path, train_idx=np.arange(0, 80), test_idx=np.arange(70, 100))
    with pytest.raises(ValueError, match="overlap"):
        split_from_file(path, 100, 0.1, 0)


@pytest.mark.parametrize(
    ("numeric", "categorical", "message"),
    [
        (["x"], ["x", "color"], "columns ['x'] are listed as both numeric and categorical"),
        (["x", "x"], ["color"], "numeric features list ['x'] more than once"),
        (["x"], ["color", "color"], "categorical features list ['color'] more than once"),
        (["x", "amount"], ["color"], "columns ['amount'] are both a feature and a task target"),
    ],
)
def test_feature_lists_that_overlap_are_refused(numeric, categorical, message):
    with pytest.raises(DataError, match=re.escape(message)):
        TabularPreprocessor.fit(_frame(), numeric, categorical, TASKS)


@pytest.mark.parametrize("value", [3.4028235677973366e38, -1e300])
def test_regression_target_beyond_float32_is_refused_naming_the_row(value):
    df = _frame()
    df.loc[4, "amount"] = value
    with pytest.raises(DataError, match=r"target 'amount' holds values beyond .* in row 4:"):
        TabularPreprocessor.fit(df, ["x"], ["color"], TASKS)
    pre = TabularPreprocessor.fit(_frame(), ["x"], ["color"], TASKS)
    with pytest.raises(DataError, match=r"target 'amount' holds values beyond .* in row 4:"):
        pre.transform(df, TASKS)


@pytest.mark.parametrize(
    ("task", "column", "values", "problem"),
    [
        (Task("yes", "binary"), "yes", ["yes", "yes", None, "yes", "yes"],
         "every labelled row is class 'yes', so its AUC is undefined"),
        (Task("grade", "multiclass"), "grade", ["b", "b", "b", "b", "b"],
         "every labelled row is class 'b' (one of 4)"),
        (Task("amount", "regression"), "amount", [7.0, 7.0, np.nan, 7.0, 7.0],
         "every labelled value is 7, so its r2 is undefined"),
        (Task("amount", "regression"), "amount", [np.nan, 7.5, np.nan, np.nan, np.nan],
         "one labelled row (value 7.5), so its r2 is undefined"),
        (Task("tags", "multilabel", target=("t1", "t2")), "t1", [1, 1, np.nan, 1, 1],
         "labels ['t1'] have one class only, so macro_auc leaves them out"),
        (Task("tags", "multilabel", target=("t1", "t2")), "t1", [0, 0, np.nan, 0, 0],
         "labels ['t1'] have one class only, so macro_auc leaves them out, and macro_f1 those "
         "with no positive row (['t1'])"),
        (Task("amount", "regression"), "amount", [np.nan] * 5,
         "no labelled rows, so its loss and metrics are not computed"),
    ],
)  # fmt: skip
def test_degenerate_targets_are_described(task, column, values, problem):
    pre = TabularPreprocessor.fit(_frame(), ["x"], ["color"], TASKS)
    df = _frame().assign(**{column: values})
    target = pre.transform_target(task, df)
    assert task.kind_spec.degenerate(task, target, pre.target_fit(task)) == problem
    healthy = pre.transform_target(task, _frame())
    assert task.kind_spec.degenerate(task, healthy, pre.target_fit(task)) is None


def test_log_features_are_standardised_as_their_logarithm():
    e = np.e
    train = pd.DataFrame({"x": [1.0, e, e**2, np.nan], "c": ["a", "b", "a", "b"], "y": [0.0] * 4})
    pre = TabularPreprocessor.fit(train, ["x"], ["c"], [Task("y", "regression")], log=["x"])
    std = np.std([0.0, 1.0, 2.0])
    assert pre.means == pytest.approx((1.0,)) and pre.stds == pytest.approx((std,))
    rows = pd.DataFrame({"x": [e, e**3, np.nan, 1.0], "c": ["a"] * 4})
    x = pre.transform_features(rows).numpy()[:, 0]
    np.testing.assert_allclose(x, [0.0, 2 / std, 0.0, -1 / std], rtol=1e-6, atol=1e-6)
    raw = pre.raw_features(rows)
    assert raw[1, 0] == pytest.approx(e**3)  # the graph takes the value as given
    torch.testing.assert_close(
        pre.encode_raw(torch.from_numpy(raw)).float(), pre.transform_features(rows)
    )
    # typical values are in the table's units: e at the mean, the mean ± std of the log
    np.testing.assert_allclose(pre.typical_numeric(np.array([0.0])), [e])
    np.testing.assert_allclose(pre.typical_numeric(np.array([1.0])), [np.exp(1 + std)])


def test_log_features_round_trip_and_older_dicts_read_as_none_logged():
    import json

    pre = TabularPreprocessor.fit(_frame(), ["x"], ["color"], TASKS, log=["x"])
    saved = json.loads(json.dumps(pre.to_dict()))
    assert TabularPreprocessor.from_dict(saved) == pre
    saved.pop("log")
    assert TabularPreprocessor.from_dict(saved).log == ()


def test_log_feature_values_of_zero_or_below_are_refused_naming_the_rows():
    df = _frame()
    df.loc[2, "x"] = 0.0
    with pytest.raises(DataError, match=r"features.log\) hold values of zero or below: 'x' "
                       r"\(row 2; smallest 0\)"):  # fmt: skip
        TabularPreprocessor.fit(df, ["x"], [], TASKS, log=["x"])
    # log listed in another order than numeric: each column still named with its own rows
    pre = TabularPreprocessor.fit(_frame(), ["x", "amount"], [], TASKS[:2], log=["amount", "x"])
    new = pd.DataFrame({"x": [1.0, -3.0, 2.0], "amount": [0.0, 1.0, np.nan]}, index=[10, 11, 12])
    with pytest.raises(DataError) as refused:  # every bad column at once, missing ones pass
        pre.transform_features(new)
    assert "'x' (row 11; smallest -3), 'amount' (row 10; smallest 0)" in str(refused.value)
    assert "correct them or leave them empty" in str(refused.value)
    with pytest.raises(DataError, match=r"features.log lists \['color'\], which are categorical"):
        TabularPreprocessor.fit(_frame(), ["x"], ["color"], TASKS, log=["color"])
    with pytest.raises(DataError, match=r"features.log lists \['y'\], which are not numeric"):
        TabularPreprocessor.fit(_frame(), ["x"], ["color"], TASKS, log=["y"])
    with pytest.raises(DataError, match=r"log takes a list of column names, e.g. \['x'\]"):
        TabularPreprocessor.fit(_frame(), ["x"], [], TASKS, log="x")


def test_log_of_a_feature_whose_effect_is_logarithmic_fits_better():
    from polytask.app import RunConfig, fit, prepare
    from polytask.app._config import DataConfig, FeaturesConfig, ModelConfig
    from polytask.train import TrainConfig

    rng = np.random.default_rng(0)
    dose = np.exp(rng.normal(0, 1.5, 600))  # spans about three orders of magnitude
    frame = pd.DataFrame({"dose": dose, "y": 2 * np.log(dose) + rng.normal(0, 0.3, 600)})
    errors = {}
    for log in ((), ("dose",)):
        config = RunConfig(
            data=DataConfig(path="unused.csv", features=FeaturesConfig(("dose",), log=log)),
            tasks=(Task("y", "regression", metrics=("rmse",)),),
            model=ModelConfig("mean_regularised", {"hidden": ()}),
            training=TrainConfig(epochs=30, batch_size=10_000, lr=1.0, optimizer="lbfgs",
                                 progress=False),
        )  # fmt: skip
        data = prepare(config, frame)
        fitted = fit(config, data)
        assert fitted.trainer is not None
        errors[log] = float(fitted.trainer.evaluate(data.test)["y"]["rmse"])
    assert errors[("dose",)] < 0.4 < 0.8 * errors[()]


def test_numeric_class_labels_are_ordered_as_numbers():
    """Found by an outside review: labels 2 and 10 sorted as text ("10" < "2"), so a binary
    task's positive class, its `_prob` column, F1 and AUC were of class 2."""
    df = _frame().assign(sev=[2, 10, 10, None, 2], level=[30, 2, 10, 2, 30])
    tasks = [Task("sev", "binary"), Task("level", "multiclass")]
    pre = TabularPreprocessor.fit(df, ["x"], ["color"], tasks)
    sev, level = pre.resolve_tasks(tasks)
    assert pre.target_fit(sev).class_list(sev) == [2, 10]
    assert pre.target_fit(level).class_list(level) == [2, 10, 30]
    assert pre.transform_target(sev, df)[:3].tolist() == [0.0, 1.0, 1.0]  # 10 is positive
    mixed = df.assign(grade=["a", 10, 2, "b", "a"])  # numbers among text: as text
    grade = Task("grade", "multiclass")
    fitted = TabularPreprocessor.fit(mixed, ["x"], ["color"], [grade])
    assert fitted.target_fit(grade).class_list(grade) == [10, 2, "a", "b"]


def test_category_codes_encode_alike_whatever_the_columns_dtype(caplog):
    # a column of codes reads as floats where one cell is blank: 2 and 2.0 are one category,
    # so a row's encoding does not depend on the other rows of its file or batch
    task = [Task("y", "regression")]
    with_blank = pd.DataFrame({"level": [1.0, 2.0, np.nan, 3.0], "y": [1.0, 2.0, 3.0, 4.0]})
    no_blank = pd.DataFrame({"level": [1, 2, 2, 3], "y": [1.0, 2.0, 3.0, 4.0]})
    for train in (with_blank, no_blank):
        pre = TabularPreprocessor.fit(train, [], ["level"], task)
        want = pre.transform_features(pd.DataFrame({"level": [2.0, 3.0, 1.0]}))
        assert want.sum(1).tolist() == [1.0, 1.0, 1.0]  # every one a known category
        for rows in ([2, 3, 1], [2.0, 3.0, 1.0], ["2", "3", "1"], [2, 3, 1.0]):
            got = pre.transform_features(pd.DataFrame({"level": pd.Series(rows, dtype=object)}))
            assert torch.equal(got, want), rows
        mixed = pd.DataFrame({"level": [2, np.nan, 3]})  # a blank makes the others floats
        assert torch.equal(pre.transform_features(mixed)[[0, 2]], want[:2])
    assert "not seen in training" not in caplog.text
    # one category per spelling of a code in training; booleans keep theirs
    mixed = TabularPreprocessor.fit(
        pd.DataFrame({"c": pd.Series([1, "1", 2.0, "a"], dtype=object), "y": [1.0] * 4}),
        [], ["c"], task,
    )  # fmt: skip
    assert mixed.categories == ((1, 2.0, "a"),)
    flags = TabularPreprocessor.fit(
        pd.DataFrame({"f": [True, False, True], "y": [1.0] * 3}), [], ["f"], task
    )
    got = flags.transform_features(pd.DataFrame({"f": [False, True]}))
    assert got.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_typical_values_of_a_large_mean_do_not_overflow():
    import warnings

    df = pd.DataFrame({"big": [1e6, 1e6 + 1, 1e6 + 2], "small": [1.0, 2.0, 4.0], "y": [1.0] * 3})
    pre = TabularPreprocessor.fit(df, ["big", "small"], [], [Task("y", "regression")],
                                  log=["small"])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # np.exp ran on every column: overflow warnings
        typical = pre.typical_numeric()
    assert typical[0] == pytest.approx(1e6 + 1) and typical[1] == pytest.approx(2.0)
    rows = pre.typical_numeric(np.zeros((5, 2)))  # rows of values, as an export's check draws
    assert rows.shape == (5, 2) and rows[:, 1] == pytest.approx([2.0] * 5)


def test_text_cells_pandas_reads_as_missing_are_warned_of(tmp_path):
    # "NA" (North America) in a text column became a missing category, silently
    import warnings

    from polytask.data import DataWarning
    from polytask.data._tabular import read_csv

    path = tmp_path / "rows.csv"
    path.write_text("region,income,plan\nNA,1.5,None\nEU,NA,basic\nNA,2.5,\n,3.0,pro\n")
    with pytest.warns(DataWarning) as caught:
        df = read_csv(path)
    said = [str(w.message) for w in caught]
    assert len(said) == 2, said  # region and plan; a number column's NA is a missing number
    assert "column 'region' holds 2 cell(s) of 'NA', read as missing" in said[0]
    assert "column 'plan' holds 1 cell(s) of 'None'" in said[1]
    assert df["region"].isna().sum() == 3 and df["income"].dtype == float  # read as before
    path.write_text("region,income\nEU,1.5\n,NA\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # blank cells, NA in numbers: nothing said
        read_csv(path)


def test_a_missing_columns_message_names_the_columns_holding_its_name():
    # a table of 60 columns listed 40: the meant offer_accepted was among those left out
    from polytask.tasks._columns import check_columns

    names = [f"usage_{i}" for i in range(58)] + ["offer_accepted", "offer_opened"]
    with pytest.raises(DataError, match=r"'offer'\] not found in the data \(columns with 'offer' "
                       r"in their name: offer_accepted, offer_opened\)"):  # fmt: skip
        check_columns(names, ["offer"], "target columns", None)
    with pytest.raises(DataError, match=r"not found in the data; its columns"):  # no such part
        check_columns(names, ["price"], "target columns", None)


def test_read_csv_refuses_a_repeated_header_and_names_a_wrong_separator_or_encoding(tmp_path):
    """age,age,y: pandas renamed the second 'age.1' and a config naming age trained on the
    first, silently; a ';' file read as one column and a Parquet file as a codec error."""
    from polytask.data._tabular import read_csv

    (tmp_path / "dup.csv").write_text("age,age,y\n1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match=r"names 1 column\(s\) twice or more \(\['age'\]\)"):
        read_csv(tmp_path / "dup.csv")
    (tmp_path / "semi.csv").write_text("a;b;y\n1;2;3\n")
    with pytest.raises(DataError, match="separated by semicolons, and polytask reads comma"):
        read_csv(tmp_path / "semi.csv")
    (tmp_path / "latin.csv").write_bytes("name,y\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(DataError, match="polytask reads comma-separated text in UTF-8"):
        read_csv(tmp_path / "latin.csv")
    (tmp_path / "ok.csv").write_text("age,age_1,y\n1,2,3\n")
    assert list(read_csv(tmp_path / "ok.csv").columns) == ["age", "age_1", "y"]
