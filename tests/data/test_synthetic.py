import numpy as np
import pytest

from polytask.data import make_customers
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
