import numpy as np
import pytest

from polytask.data import (
    TaskFamily,
    family_task_names,
    grouped_task_names,
    make_customers,
    make_grouped_frame,
    make_grouped_regression,
    make_task_family,
)
from polytask.data._synthetic import make_related_regression


def test_customers_deterministic_by_seed():
    a = make_customers(300, seed=4)
    b = make_customers(300, seed=4)
    c = make_customers(300, seed=5)
    assert a.equals(b)
    assert not a.equals(c)
    assert set(a["plan"].dropna()) <= {"basic", "standard", "premium"}
    assert set(a["churn"].dropna()) <= {0.0, 1.0}
    assert (a["ltv"] > 0).all()
    assert a["ltv"].skew() > 1  # lifetime value is right-skewed


def test_missing_fraction_per_task():
    df = make_customers(4000, missing={"plan": 0.9, "ltv": 0.25}, seed=0)
    assert df["plan"].isna().mean() == pytest.approx(0.9, abs=0.02)
    assert df["ltv"].isna().mean() == pytest.approx(0.25, abs=0.02)
    assert df["churn"].isna().sum() == 0


def test_relatedness_controls_shared_signal():
    # With relatedness 1 the tasks read the same latent traits, so their targets correlate more.
    def corr(rel):
        df = make_customers(6000, relatedness=rel, label_noise=0.0, seed=1)
        return abs(np.corrcoef(np.log(df["ltv"]), df["churn"])[0, 1])

    assert corr(1.0) > corr(0.0) + 0.05


def test_label_noise_flips_labels():
    clean = make_customers(5000, label_noise=0.0, seed=2)
    noisy = make_customers(5000, label_noise=0.3, seed=2)
    assert (clean["churn"] != noisy["churn"]).mean() == pytest.approx(0.3, abs=0.03)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"relatedness": 1.5}, "relatedness"),
        ({"missing": {"foo": 0.1}}, "unknown tasks"),
        ({"missing": {"plan": 1.0}}, "missing fraction"),
        ({"n": 3}, "at least 10"),
    ],
)
def test_customer_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_customers(**kwargs)


def test_related_regression_shapes():
    x, ya, yb = make_related_regression(n=50, n_features=7, seed=0)
    assert x.shape == (50, 7) and ya.shape == yb.shape == (50,)


def test_grouped_regression_plants_its_groups():
    x, y, groups = make_grouped_regression(4000, group_sizes=(3, 2, 2), seed=1)
    assert x.shape == (4000, 12) and y.shape == (4000, 7)
    assert groups == [0, 0, 0, 1, 1, 2, 2]
    corr = np.corrcoef(y.T)
    same = np.equal.outer(groups, groups) & ~np.eye(7, dtype=bool)
    across = ~np.equal.outer(groups, groups)
    assert corr[same].min() > 0.8  # noisy variants of one function
    assert np.abs(corr[across]).max() < 0.1  # disjoint latent directions


def test_grouped_regression_targets_are_nonlinear_in_x():
    # A linear model leaves much of every task unexplained (measured: 53% to 99% of the
    # variance at frequency 1.5), more at a higher frequency.
    def unexplained(frequency):
        x, y, _ = make_grouped_regression(4000, frequency=frequency, seed=0)
        design = np.c_[x, np.ones(len(x))]
        residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
        return residual.var(0) / y.var(0)

    assert unexplained(1.5).min() > 0.45
    assert unexplained(3.0).min() > 0.9


def test_grouped_regression_is_deterministic_by_seed():
    a, b, c = (make_grouped_frame(200, seed=s) for s in (3, 3, 4))
    assert a.equals(b) and not a.equals(c)
    assert list(a.columns) == [f"x{i}" for i in range(12)] + grouped_task_names((2, 2, 2))
    assert grouped_task_names((2, 1)) == ["g0_a", "g0_b", "g1_a"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group_sizes": ()}, "at least one group"),
        ({"group_sizes": (2, 0)}, "at least one group"),
        ({"group_sizes": (1,) * 7}, r"at least 2 per group \(14 for 7 groups\), got 12"),
        ({"noise": -1.0}, "noise must be >= 0"),
    ],
)
def test_grouped_regression_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_grouped_regression(**kwargs)


def test_builtin_groups_from_a_config():
    from polytask.app import DataConfig, RunConfig, load_frame, prepare
    from polytask.tasks import Task

    names = grouped_task_names((2, 1))
    config = RunConfig(
        data=DataConfig(builtin="groups", options={"n": 300, "group_sizes": [2, 1]}),
        tasks=tuple(Task(n, "regression") for n in names),
    )
    data = prepare(config, load_frame(config))
    assert data.train.x.shape[1] == 12 and set(data.train.targets) == set(names)


def test_an_unknown_builtin_names_the_nearest():
    from polytask.app import DataConfig

    with pytest.raises(ValueError, match=r"'grups' \(did you mean 'groups'\?\); built-in: cus"):
        DataConfig(builtin="grups")


def test_task_family_rows_are_labelled_for_their_own_task_only():
    df = make_task_family(n_tasks=3, rows_per_task=40, n_features=5, seed=2)
    assert list(df.columns) == [f"x{i}" for i in range(5)] + family_task_names(3)
    labelled = df[family_task_names(3)].notna().to_numpy()
    assert (labelled.sum(1) == 1).all() and (labelled.sum(0) == 40).all()
    assert df.equals(make_task_family(n_tasks=3, rows_per_task=40, n_features=5, seed=2))
    assert not df.equals(make_task_family(n_tasks=3, rows_per_task=40, n_features=5, seed=3))


def test_task_family_targets_follow_the_documented_structure():
    family = TaskFamily(n_features=6, latent_dim=4, mean_norm=2.0, spread=0.3, noise=0.0)
    x, y = family.sample(1, 500, seed=7)
    a, b = family.task_vector(1)
    np.testing.assert_allclose(y, family.features(x) @ a + b, atol=1e-12)  # noise 0
    # h has unit variance per latent unit; a_t is drawn around μ (norm 2), held-out tasks too
    big = family.features(np.random.default_rng(0).standard_normal((20000, 6)))
    np.testing.assert_allclose(big.std(0), 1.0, atol=0.03)
    train = np.stack([family.task_vector(i)[0] for i in range(400)])
    new = np.stack([family.task_vector(i, held_out=True)[0] for i in range(400)])
    mean = train.mean(0)
    assert np.linalg.norm(mean) == pytest.approx(2.0, abs=0.1)
    np.testing.assert_allclose(new.mean(0), mean, atol=0.1)
    np.testing.assert_allclose(train.std(0), 0.3, atol=0.05)
    assert not np.allclose(new[:5], train[:5])  # new tasks, same prior
    held = family.held_out(2, 10, seed=1)
    assert list(held.columns[-2:]) == ["new_0", "new_1"]


def test_task_family_argument_errors():
    with pytest.raises(ValueError, match="n_tasks and rows_per_task must be >= 1"):
        make_task_family(n_tasks=0)
    with pytest.raises(ValueError, match="spread"):
        TaskFamily(spread=-1.0)
