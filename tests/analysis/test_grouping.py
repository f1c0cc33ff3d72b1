import math

import numpy as np
import pytest

from polytask.analysis import (
    Grouping,
    best_grouping,
    group_score,
    grouping_agreement,
    parse_groups,
)


def _partitions(items):
    """Every set partition of `items` (brute force, for checking)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest):
        yield [[first], *part]
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1 :]]


def _brute_force(a, max_groups):
    k = a.shape[0]
    return max(group_score(a, p) for p in _partitions(list(range(k))) if len(p) <= max_groups)


def _as_sets(groups):
    return {frozenset(g) for g in groups}


A3 = np.array(
    [
        [0.0, 0.4, -0.2],  # A[i, j]: a step on task i helps task j
        [0.2, 0.0, 0.1],
        [0.6, -0.3, 0.0],
    ]
)


def test_group_score_hand_computed():
    # {0,1}: task 1 gets A[0,1] = 0.4, task 0 gets A[1,0] = 0.2; {2} alone: 0.
    assert group_score(A3, [[0, 1], [2]]) == pytest.approx(0.6)
    # {0,2}: task 2 gets A[0,2] = -0.2, task 0 gets A[2,0] = 0.6 -> 0.4.
    assert group_score(A3, [[0, 2], [1]]) == pytest.approx(0.4)
    # All three: task 0 gets mean(0.2, 0.6) = 0.4, task 1 mean(0.4, -0.3) = 0.05,
    # task 2 mean(-0.2, 0.1) = -0.05 -> 0.4.
    assert group_score(A3, [[0, 1, 2]]) == pytest.approx(0.4)
    assert group_score(A3, [[0], [1], [2]]) == 0.0
    assert group_score(A3, [["a", "b"], ["c"]], ["a", "b", "c"]) == pytest.approx(0.6)


def test_group_score_ignores_the_diagonal_and_counts_nan_as_zero():
    a = A3.copy()
    np.fill_diagonal(a, 5.0)
    a[0, 1] = np.nan
    assert group_score(a, [[0, 1], [2]]) == pytest.approx(0.2)


def test_best_grouping_hand_computed():
    best = best_grouping(A3, ["a", "b", "c"], max_groups=3)
    assert best == Grouping((("a", "b"), ("c",)), pytest.approx(0.6), "exact", 5)
    assert best.spec() == "a,b/c" and best.group_of("c") == 1
    # One group only: everything together.
    one = best_grouping(A3, ["a", "b", "c"], max_groups=1)
    assert one.groups == (("a", "b", "c"),) and one.score == pytest.approx(0.4)


def test_all_negative_affinity_keeps_tasks_apart_unless_forced():
    a = -np.ones((4, 4))
    assert best_grouping(a, list("abcd"), 4).groups == (("a",), ("b",), ("c",), ("d",))
    # Two pairs: every task gets -1, total -4; three and one: three tasks get -1, total -3.
    forced = best_grouping(a, list("abcd"), 2)
    assert sorted(map(len, forced.groups)) == [1, 3] and forced.score == pytest.approx(-3.0)


@pytest.mark.parametrize("k", [2, 4, 5, 6, 7])
@pytest.mark.parametrize("max_groups", [1, 2, 3, 7])
def test_exact_equals_brute_force(k, max_groups):
    rng = np.random.default_rng(100 * k + max_groups)
    for _ in range(3):
        a = rng.standard_normal((k, k))
        names = [f"t{i}" for i in range(k)]
        best = best_grouping(a, names, max_groups)
        assert best.method == "exact"
        assert best.score == pytest.approx(_brute_force(a, max_groups))
        assert best.score == pytest.approx(group_score(a, best.groups, names))
        assert len(best.groups) <= max_groups
        assert sorted(best.tasks) == sorted(names)


def test_exact_counts_the_partitions_it_is_optimal_over():
    names = [f"t{i}" for i in range(6)]
    a = np.zeros((6, 6))
    assert best_grouping(a, names, 6).considered == 203  # Bell number B6
    assert best_grouping(a, names, 2).considered == 1 + 31  # S(6,1) + S(6,2)


def test_search_finds_the_exact_optimum_on_most_random_problems():
    hits, total = 0, 0
    for k in (10, 11, 12):
        for trial in range(5):
            rng = np.random.default_rng([k, trial])
            a = rng.standard_normal((k, k))
            names = [f"t{i}" for i in range(k)]
            for g in (2, 4):
                exact = best_grouping(a, names, g)
                found = best_grouping(a, names, g, exact_limit=0, seed=trial)
                assert found.method == "search" and len(found.groups) <= g
                assert found.score <= exact.score + 1e-9
                hits += found.score >= exact.score - 1e-9
                total += 1
    assert hits / total >= 0.8, f"{hits}/{total}"


def _planted(sizes, rng, signal=1.0, noise=0.5):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    same = labels[:, None] == labels[None, :]
    a = np.where(same, signal, -signal) + noise * rng.standard_normal(same.shape)
    return a, labels


@pytest.mark.parametrize("sizes", [(5, 7, 4, 6), (3, 9, 3, 5, 4, 6)])
def test_search_recovers_planted_blocks(sizes):
    rng = np.random.default_rng(len(sizes))
    a, labels = _planted(sizes, rng)
    perm = rng.permutation(len(labels))  # blocks not in task order
    a, labels = a[np.ix_(perm, perm)], labels[perm]
    names = [f"t{i}" for i in range(len(labels))]
    found = best_grouping(a, names, max_groups=len(sizes))
    assert found.method == "search"
    truth = tuple(
        tuple(n for n, lab in zip(names, labels, strict=True) if lab == g) for g in set(labels)
    )
    assert grouping_agreement(found, truth) == pytest.approx(1.0)


def test_search_is_deterministic_given_the_seed():
    a = np.random.default_rng(3).standard_normal((18, 18))
    names = [f"t{i}" for i in range(18)]
    assert best_grouping(a, names, 4, seed=1) == best_grouping(a, names, 4, seed=1)


@pytest.mark.parametrize("exact_limit", [14, 0])
def test_permuting_tasks_permutes_the_groups(exact_limit):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((9, 9))
    names = [f"t{i}" for i in range(9)]
    base = best_grouping(a, names, 3, exact_limit=exact_limit)
    perm = rng.permutation(9)
    moved = best_grouping(a[np.ix_(perm, perm)], [names[i] for i in perm], 3, exact_limit=0)
    assert moved.score == pytest.approx(base.score)
    assert _as_sets(moved.groups) == _as_sets(base.groups)
    # Canonical order: each group in task_names order, groups by their first task.
    order = {n: i for i, n in enumerate(names[i] for i in perm)}
    firsts = [order[g[0]] for g in moved.groups]
    assert firsts == sorted(firsts)
    assert all([order[t] for t in g] == sorted(order[t] for t in g) for g in moved.groups)


def test_a_symmetric_cosine_matrix_is_accepted():
    cos = np.array([[1.0, 0.9, -0.5], [0.9, 1.0, -0.4], [-0.5, -0.4, 1.0]])
    assert best_grouping(cos, ["a", "b", "c"], 2).groups == (("a", "b"), ("c",))


@pytest.mark.parametrize(
    ("affinity", "names", "max_groups", "message"),
    [
        (np.zeros((2, 3)), ["a", "b"], 2, "square"),
        (np.zeros((2, 2)), ["a"], 2, "2 × 2 but 1 task names"),
        (np.zeros((2, 2)), ["a", "a"], 2, "repeated"),
        (np.zeros((2, 2)), ["a", "b"], 0, "max_groups must be a whole number >= 1"),
        (np.array([[0, math.inf], [0, 0]]), ["a", "b"], 1, r"affinity\[0, 1\] is infinite"),
    ],
)
def test_best_grouping_refuses_bad_input(affinity, names, max_groups, message):
    with pytest.raises(ValueError, match=message):
        best_grouping(affinity, names, max_groups)


def test_parse_groups():
    names = ["churn", "ltv", "plan", "age"]
    assert parse_groups("ltv, churn / plan/age", names) == (("churn", "ltv"), ("plan",), ("age",))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("churn,ltvv/plan,age", r"unknown task 'ltvv' \(did you mean 'ltv'\?\)"),
        ("churn,LTV/plan,age", r"unknown task 'LTV' \(did you mean 'ltv'\?\)"),
        ("churn,ltv/plan,churn/age", "task 'churn' is in groups 1 and 2"),
        ("churn,churn/ltv,plan,age", "task 'churn' is twice in group 1"),
        ("churn,ltv//plan,age", "group 2 is empty"),
        ("churn,,ltv/plan,age", "group 1 has an empty name"),
        ("churn,ltv/plan", r"leave out \['age'\].*\(churn,ltv/plan/age\)"),
        ("  ", "empty groups spec"),
    ],
)
def test_parse_groups_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_groups(spec, ["churn", "ltv", "plan", "age"])


def test_grouping_agreement():
    a = (("a", "b"), ("c", "d"))
    assert grouping_agreement(a, (("d", "c"), ("b", "a"))) == pytest.approx(1.0)
    assert grouping_agreement(a, (("a", "c"), ("b", "d"))) < 0.01
    with pytest.raises(ValueError, match="different tasks"):
        grouping_agreement(a, (("a", "b"), ("c",)))
