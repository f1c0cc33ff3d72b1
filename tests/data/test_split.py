"""Splits that would leave a part without rows are refused, saying how many rows are needed."""

import numpy as np
import pytest

from polytask.data import DataError, random_split, split_from_file


@pytest.mark.parametrize(
    ("n", "val", "test", "message"),
    [
        (2, 0.15, 0.2, "2 rows with val_fraction 0.15 and test_fraction 0.2 leave the validation "
         "and test splits without rows: give at least 4 rows, or change the split fractions"),
        (1, 0.0, 0.2, "leave the test split without rows: give at least 3 rows"),
        (3, 0.15, 0.2, "leave the validation split without rows: give at least 4 rows"),
        (10, 0.5, 0.49, "leave the train split without rows: give at least 13 rows"),
    ],
)  # fmt: skip
def test_random_split_refuses_an_empty_part(n, val, test, message):
    with pytest.raises(DataError) as err:
        random_split(n, val, test, seed=0)
    assert message in str(err.value)


def test_random_split_without_validation_may_have_none():
    s = random_split(5, 0.0, 0.2, seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (4, 0, 1)


def test_split_file_with_no_test_rows_or_no_validation_rows_is_refused(tmp_path):
    path = tmp_path / "split.npz"
    np.savez(path, train_idx=np.arange(8), test_idx=np.array([], dtype=int))
    with pytest.raises(DataError, match="leave the test split without rows"):
        split_from_file(path, 10, 0.25, 0)
    np.savez(path, train_idx=np.arange(1), test_idx=np.arange(1, 3))
    with pytest.raises(DataError, match="leave the train split without rows: list more rows"):
        split_from_file(path, 10, 0.75, 0)


def test_a_split_files_own_validation_rows_are_kept_as_they_are(tmp_path):
    """polytask train's split.npz holds val_idx: reused as a split file, the same three parts."""
    path = tmp_path / "split.npz"
    np.savez(path, train_idx=np.array([5, 0, 1, 2]), val_idx=np.array([4, 3]),
             test_idx=np.array([6, 7]))  # fmt: skip
    for groups in (None, np.array(list("aabbccdd"))):  # no carving, within groups or not
        split = split_from_file(path, 8, 0.5, 0, groups)
        assert split.train.tolist() == [0, 1, 2, 5] and split.val.tolist() == [3, 4]
        assert split.test.tolist() == [6, 7]
    np.savez(path, train_idx=np.arange(4), val_idx=np.array([], dtype=int), test_idx=[6, 7])
    assert not len(split_from_file(path, 8, 0.15, 0).val)  # none given: none, not refused
    np.savez(path, train_idx=np.arange(4), val_idx=np.array([3, 4]), test_idx=[6, 7])
    with pytest.raises(ValueError, match="val_idx and train_idx overlap"):
        split_from_file(path, 8, 0.15, 0)
    np.savez(path, train_idx=np.arange(4), val_idx=np.array([9]), test_idx=[6, 7])
    with pytest.raises(ValueError, match=r"val_idx has rows outside 0..7"):
        split_from_file(path, 8, 0.15, 0)


def test_a_split_file_with_split_by_carves_validation_as_whole_groups(tmp_path):
    import pandas as pd

    from polytask.app._config import SplitConfig
    from polytask.app._data import make_split

    groups = np.repeat(np.arange(20), 5)  # 20 patients of 5 rows
    test = np.flatnonzero(groups >= 16)  # the file holds out patients 16-19
    path = tmp_path / "split.npz"
    np.savez(path, train_idx=np.flatnonzero(groups < 16), test_idx=test)
    frame = pd.DataFrame({"patient": groups})
    config = SplitConfig(file=str(path), by="patient", val_fraction=0.25, seed=3)
    split = make_split(config, len(groups), "x", frame)
    assert split.test.tolist() == test.tolist()  # the file's test rows as they are
    train, val = set(groups[split.train]), set(groups[split.val])
    assert len(val) == 4 and not train & val  # 4 of the 16 patients, whole
    assert len(split.train) + len(split.val) == 80
    rows = split_from_file(path, len(groups), 0.25, 3)  # without groups: rows at random
    assert set(groups[rows.train]) & set(groups[rows.val])


def test_split_by_refuses_blank_groups_and_a_file_that_splits_a_group(tmp_path):
    import pandas as pd

    from polytask.app._config import SplitConfig
    from polytask.app._data import make_split

    frame = pd.DataFrame({"patient": [1.0, 1.0, np.nan, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0]})
    with pytest.raises(DataError, match=r"'patient' is blank on 1 row\(s\) \(rows 2\)"):
        make_split(SplitConfig(by="patient", val_fraction=0.2, test_fraction=0.2), 10, "x", frame)
    groups = np.repeat(np.arange(6), 2)
    path = tmp_path / "rows.npz"  # patient 2's rows on both sides
    np.savez(path, train_idx=np.array([0, 1, 2, 3, 4, 6, 7, 8, 9]), test_idx=np.array([5, 10, 11]))
    with pytest.raises(DataError, match=r"1 group\(s\) have rows in both train_idx and test_idx"):
        split_from_file(path, 12, 0.2, 0, whole=groups)
    with_val = tmp_path / "with_val.npz"  # its own val_idx does not excuse the shared group
    np.savez(
        with_val,
        train_idx=np.array([0, 1, 2, 3, 4]),
        val_idx=np.array([6, 7, 8, 9]),
        test_idx=np.array([5, 10, 11]),
    )
    with pytest.raises(DataError, match=r"1 group\(s\) have rows in both train_idx and test_idx"):
        split_from_file(with_val, 12, 0.2, 0, whole=groups)
    np.savez(
        with_val,
        train_idx=np.array([0, 1, 2]),
        val_idx=np.array([3, 4, 6, 7]),
        test_idx=np.array([8, 9, 10, 11]),
    )  # group 1 (rows 2, 3) in train and val
    with pytest.raises(DataError, match=r"1 group\(s\) have rows in both train_idx and val_idx"):
        split_from_file(with_val, 12, 0.2, 0, whole=groups)
    np.savez(
        with_val,
        train_idx=np.array([0, 1, 2, 3]),
        val_idx=np.array([4, 5, 6, 7]),
        test_idx=np.array([8, 9, 10, 11]),
    )
    kept = split_from_file(with_val, 12, 0.2, 0, whole=groups)
    assert kept.val.tolist() == [4, 5, 6, 7] and kept.test.tolist() == [8, 9, 10, 11]


def test_split_by_names_the_nearest_column_and_warns_on_a_feature_or_one_row_groups(tmp_path):
    import pandas as pd

    from polytask.app import RunConfig, load_prepared
    from polytask.data import DataWarning
    from polytask.tasks import Task

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"patient": np.repeat(np.arange(10), 3), "x": rng.normal(size=30),
                          "y": rng.normal(size=30), "visit": np.arange(30)})  # fmt: skip
    frame.to_csv(tmp_path / "v.csv", index=False)

    def config(by: str, features: list[str]) -> RunConfig:
        return RunConfig(
            data={"path": str(tmp_path / "v.csv"), "features": {"numeric": features},
                  "split": {"by": by, "val_fraction": 0.2, "test_fraction": 0.2}},
            tasks=(Task("y", "regression"),),
        )  # fmt: skip

    with pytest.raises(DataError, match=r"column 'Patient' not found \(did you mean 'patient'\?\)"):
        load_prepared(config("Patient", ["x"]))
    with pytest.warns(DataWarning, match="split.by column 'patient' is also a feature"):
        load_prepared(config("patient", ["x", "patient"]))
    with pytest.warns(DataWarning, match="'visit' differs on every row: each group is one row"):
        load_prepared(config("visit", ["x"]))


def test_a_split_file_listing_a_row_twice_or_not_by_position_is_refused(tmp_path):
    # a row listed twice in train_idx could land in train and validation both (early stopping
    # read a training row); twice in test_idx it was scored twice
    path = tmp_path / "twice.npz"
    np.savez(path, train_idx=np.r_[np.arange(8), 3], test_idx=np.arange(8, 10))
    with pytest.raises(
        ValueError, match=r"train_idx lists 1 row\(s\) more than once \(e\.g\. row 3\)"
    ):
        split_from_file(path, 10, 0.25, 0)
    np.savez(path, train_idx=np.arange(8), test_idx=np.array([8, 9, 9]))
    with pytest.raises(
        ValueError, match=r"test_idx lists 1 row\(s\) more than once \(e\.g\. row 9\)"
    ):
        split_from_file(path, 10, 0.25, 0)
    np.savez(path, train_idx=np.arange(8) + 0.0, test_idx=np.arange(8, 10))
    with pytest.raises(ValueError, match=r"train_idx holds float64 values"):
        split_from_file(path, 10, 0.25, 0)


def test_a_split_file_that_lists_only_some_rows_says_how_many_are_left_out(tmp_path):
    """Found by review: rows in neither train_idx nor test_idx were dropped without a word (a
    file made for a subset, or another order, of the same data passed as one)."""
    from polytask.data import DataWarning

    path = tmp_path / "s.npz"
    np.savez(path, train_idx=np.arange(100), test_idx=np.arange(100, 150))
    with pytest.warns(DataWarning, match=r"lists 150 of the data's 800 rows: the other 650"):
        split = split_from_file(path, 800, 0.2, seed=0)
    assert len(split.train) + len(split.val) + len(split.test) == 150
    np.savez(path, train_idx=np.arange(100), test_idx=np.arange(100, 800))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split_from_file(path, 800, 0.2, seed=0)  # every row listed: nothing said
