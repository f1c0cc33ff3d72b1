"""Which tasks belong together: partition tasks into groups from a task-affinity matrix.

The affinity `A` is K × K with `A[i, j]` = how much a step on task i helps task j: TAG's
lookahead affinity (Fifty et al., "Efficiently Identifying Task Groupings for Multi-Task
Learning", NeurIPS 2021), Z_{i→j} = 1 − L_j(after a step on i) / L_j(before), positive when it
helps. A symmetric gradient cosine or conflict matrix works too (positive: aligned). Entries
never measured (NaN) count as 0, "no evidence either way"; the diagonal is ignored.

The score of a grouping is TAG's total affinity onto each task: a task j in group G receives
the mean over the other members i of G of A[i, j]; a task alone receives 0; the grouping's
score is the sum over tasks. Every member of G averages over the same |G| − 1 others, so a
group's contribution is (Σ_{i ≠ j in G} A[i, j]) / (|G| − 1). TAG lets a task sit in several
groups (one network per group, each task served by its best); here groups partition the tasks,
one network per group, which is what `polytask compare --groups` trains.

Pure functions on numpy arrays: this module imports nothing from polytask's training side.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

EXACT_LIMIT = 14
"""Up to this many tasks `best_grouping` is exact (dynamic programming over subsets, about
3^K / 2 subset pairs per group count: K = 14 takes under a second)."""

Groups = tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Grouping:
    """A partition of the tasks. `groups`: each group's tasks in the order of `task_names`,
    groups ordered by their first task; `score`: `group_score` of it; `method`: "exact"
    (provably best) or "search" (best found); `considered`: for "exact", the number of
    partitions it is optimal over; for "search", the number of groupings it visited."""

    groups: Groups
    score: float
    method: Literal["exact", "search"]
    considered: int

    def group_of(self, task: str) -> int:
        """The index of the group holding `task`."""
        for g, members in enumerate(self.groups):
            if task in members:
                return g
        raise KeyError(f"task {task!r} is in no group; tasks: {sorted(self.tasks)}")

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for g in self.groups for t in g)

    def spec(self) -> str:
        """The `--groups` spec of this grouping ("a,b/c"), readable by `parse_groups`."""
        return "/".join(",".join(g) for g in self.groups)


def group_score(
    affinity: np.ndarray,
    groups: Sequence[Sequence[int]] | Sequence[Sequence[str]],
    task_names: Sequence[str] | None = None,
) -> float:
    """TAG's total affinity onto each task for `groups` (task indices, or names with
    `task_names`): Σ_j mean_{i in group(j), i ≠ j} A[i, j], a task alone counting 0."""
    a = _clean(affinity)
    k = a.shape[0]
    index = _indices(groups, task_names, k)
    total = 0.0
    for members in index:
        if len(members) > 1:
            block = a[np.ix_(members, members)]
            total += float(block.sum()) / (len(members) - 1)  # diagonal is zero
    return total


def relative_affinity(affinity: np.ndarray) -> np.ndarray:
    """Each column j of a TAG affinity over task j's self-affinity A[j, j]: how much a step on
    task i helps task j as a share of what j's own step does. Z is a relative loss change, yet
    a task whose own step moves its loss little (a binary task beside regression tasks at one
    learning rate: a tenth of their self-affinity) has small affinities both ways, so raw sums
    place it where it disturbs least rather than where it is helped. A column whose
    self-affinity is not positive (or not measured) is divided by the mean positive one."""
    a = np.array(affinity, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"affinity must be a square K × K matrix, got shape {a.shape}")
    own = np.diag(a).copy()
    positive = np.isfinite(own) & (own > 0)
    fallback = float(own[positive].mean()) if positive.any() else 1.0
    return a / np.where(positive, own, fallback)[None, :]


def best_grouping(
    affinity: np.ndarray,
    task_names: Sequence[str],
    max_groups: int,
    *,
    exact_limit: int = EXACT_LIMIT,
    restarts: int = 16,
    seed: int = 0,
) -> Grouping:
    """The partition of the tasks into at most `max_groups` non-empty groups with the highest
    `group_score`.

    Up to `exact_limit` tasks: exact, by dynamic programming over subsets (O(3^K · G)). Above:
    a search: agglomerative merging (always the pair of groups whose merge gains most, while a
    merge gains or there are more than `max_groups` groups), then local moves of single tasks
    to another (or a new) group while one improves the score; plus `restarts` random starting
    partitions drawn from `seed`, each improved by the same moves. The best found is returned;
    the result is deterministic given `seed`.
    """
    a = _clean(affinity)
    k = a.shape[0]
    names = list(task_names)
    if len(names) != k:
        raise ValueError(f"affinity is {k} × {k} but {len(names)} task names were given")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"task names must be unique; repeated: {dupes}")
    if isinstance(max_groups, bool) or not isinstance(max_groups, int) or max_groups < 1:
        raise ValueError(f"max_groups must be a whole number >= 1, got {max_groups!r}")
    if restarts < 0:
        raise ValueError(f"restarts must be >= 0, got {restarts}")
    g = min(max_groups, k)
    sym = a + a.T  # only pairs matter: a group scores Σ_{i<j} (A[i,j] + A[j,i]) / (|G| - 1)
    if k <= exact_limit:
        labels, considered = _exact(sym, g), _partitions_count(k, g)
        method: Literal["exact", "search"] = "exact"
    else:
        labels, considered = _search(sym, g, restarts, seed)
        method = "search"
    groups = _canonical(labels, names)
    return Grouping(groups, group_score(a, groups, names), method, considered)


def parse_groups(spec: str, task_names: Sequence[str]) -> Groups:
    """Groups from a command-line spec: groups separated by "/", tasks by "," ("a,b/c").

    Every task must be in exactly one group: an unknown task (with the nearest name), a task in
    two groups, an empty group and a task left out are refused, since a left-out task would
    silently go untrained (name it as a group of its own: "a,b/c/d")."""
    names = list(task_names)
    if not spec.strip():
        raise ValueError(f"empty groups spec; write groups as 'a,b/c' with tasks {names}")
    seen: dict[str, int] = {}
    groups: list[tuple[str, ...]] = []
    for g, part in enumerate(spec.split("/")):
        members = [t.strip() for t in part.split(",")]
        if not any(members):
            raise ValueError(f"groups {spec!r}: group {g + 1} is empty; remove the extra '/'")
        if not all(members):
            raise ValueError(f"groups {spec!r}: group {g + 1} has an empty name; check the ','")
        for t in members:
            if t not in names:
                close = [n for n in names if n.lower() == t.lower()]
                close = close or difflib.get_close_matches(t, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"groups {spec!r}: unknown task {t!r}{hint}; tasks: {names}")
            if t in seen:
                where = f"twice in group {g + 1}"
                if seen[t] != g:
                    where = f"in groups {seen[t] + 1} and {g + 1}"
                raise ValueError(
                    f"groups {spec!r}: task {t!r} is {where}; "
                    "each task belongs to exactly one group"
                )
            seen[t] = g
        groups.append(tuple(members))
    left = [t for t in names if t not in seen]
    if left:
        raise ValueError(
            f"groups {spec!r} leave out {left}: add each to a group, or as a group of its own "
            f"({spec.strip()}/{'/'.join(left)!s})"
        )
    return _canonical(np.array([seen[t] for t in names]), names)


def grouping_agreement(a: Grouping | Groups, b: Grouping | Groups) -> float:
    """Adjusted Rand index of two groupings of the same tasks: 1 when they are the same
    partition, about 0 for unrelated ones (group order and labels do not matter)."""
    ga = a.groups if isinstance(a, Grouping) else a
    gb = b.groups if isinstance(b, Grouping) else b
    la = {t: i for i, g in enumerate(ga) for t in g}
    lb = {t: i for i, g in enumerate(gb) for t in g}
    if set(la) != set(lb):
        raise ValueError(
            f"the groupings have different tasks: only in the first {sorted(set(la) - set(lb))},"
            f" only in the second {sorted(set(lb) - set(la))}"
        )
    from sklearn.metrics import adjusted_rand_score

    tasks = sorted(la)
    return float(adjusted_rand_score([la[t] for t in tasks], [lb[t] for t in tasks]))


def _clean(affinity: np.ndarray) -> np.ndarray:
    """A float copy with NaN as 0 and a zero diagonal; refuses non-square or infinite input."""
    a = np.array(affinity, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"affinity must be a non-empty square K × K matrix, got shape {a.shape}")
    if np.isinf(a).any():
        i, j = np.argwhere(np.isinf(a))[0]
        raise ValueError(f"affinity[{i}, {j}] is infinite; affinities must be finite (or NaN)")
    a = np.nan_to_num(a, nan=0.0)
    np.fill_diagonal(a, 0.0)
    return a


def _indices(
    groups: Sequence[Sequence[int]] | Sequence[Sequence[str]],
    task_names: Sequence[str] | None,
    k: int,
) -> list[list[int]]:
    """Groups as lists of task indices, checked to be disjoint and within range."""
    position = {n: i for i, n in enumerate(task_names or ())}
    out: list[list[int]] = []
    for members in groups:
        idx = []
        for t in members:
            if isinstance(t, str):
                if t not in position:
                    raise ValueError(f"unknown task {t!r}: pass task_names naming every task")
                idx.append(position[t])
            else:
                if not 0 <= int(t) < k:
                    raise ValueError(f"task index {t} is out of range for {k} tasks")
                idx.append(int(t))
        out.append(idx)
    flat = [i for g in out for i in g]
    if len(flat) != len(set(flat)):
        raise ValueError("a task is in more than one group")
    return out


def _value(pair_sum: np.ndarray | float, size: np.ndarray | int) -> np.ndarray:
    """A group's score from the sum of its pair terms Σ_{i<j} S[i, j] and its size."""
    return np.where(np.asarray(size) > 1, pair_sum / np.maximum(np.asarray(size) - 1, 1), 0.0)


def _exact(sym: np.ndarray, g: int) -> np.ndarray:
    """The best labels by dynamic programming: best[m][S] = the best score of the tasks in
    subset S split into at most m groups = max over T ⊆ S holding S's lowest task of
    value(T) + best[m − 1][S \\ T]."""
    k = sym.shape[0]
    full = 1 << k
    masks = np.arange(full)
    bits = (masks[:, None] >> np.arange(k)) & 1
    size = bits.sum(1)
    pair = np.einsum("si,ij,sj->s", bits, sym, bits) / 2.0  # Σ_{i<j} S[i, j]
    value = _value(pair, size)
    # All (S, T) with T ⊆ S and T holding S's lowest bit, sorted by S.
    s_list, t_list = [], []
    for s in range(1, full):
        low = s & -s
        rest = [1 << b for b in range(k) if (s ^ low) >> b & 1]
        subs = (np.arange(1 << len(rest))[:, None] >> np.arange(len(rest))) & 1
        sub = low + subs @ np.array(rest, dtype=np.int64) if rest else np.array([low])
        s_list.append(np.full(len(sub), s))
        t_list.append(sub)
    s_all, t_all = np.concatenate(s_list), np.concatenate(t_list)
    starts = np.flatnonzero(np.r_[True, s_all[1:] != s_all[:-1]])
    best = [np.where(masks == 0, 0.0, -np.inf)]
    for _ in range(g):
        cand = value[t_all] + best[-1][s_all ^ t_all]
        layer = np.zeros(full)
        layer[1:] = np.maximum.reduceat(cand, starts)
        best.append(layer)
    labels = np.zeros(k, dtype=np.int64)
    s, label = full - 1, 0
    for m in range(g, 0, -1):
        if s == 0:
            break
        lo, hi = np.searchsorted(s_all, [s, s + 1])
        cand = value[t_all[lo:hi]] + best[m - 1][s ^ t_all[lo:hi]]
        t = int(t_all[lo + int(np.argmax(cand))])
        labels[[b for b in range(k) if t >> b & 1]] = label
        s, label = s ^ t, label + 1
    return labels


def _partitions_count(k: int, g: int) -> int:
    """The number of partitions of k tasks into at most g non-empty groups (Σ Stirling 2nd)."""
    stirling = [[0] * (k + 1) for _ in range(k + 1)]
    stirling[0][0] = 1
    for n in range(1, k + 1):
        for m in range(1, n + 1):
            stirling[n][m] = m * stirling[n - 1][m] + stirling[n - 1][m - 1]
    return sum(stirling[k][1 : g + 1])


def _search(sym: np.ndarray, g: int, restarts: int, seed: int) -> tuple[np.ndarray, int]:
    """Agglomerative merging then local moves, and `restarts` seeded random starts."""
    k = sym.shape[0]
    rng = np.random.default_rng(seed)
    starts: list[np.ndarray] = [_agglomerate(sym, g)]
    starts += [np.asarray(rng.integers(0, g, size=k)) for _ in range(restarts)]
    best_labels, best_score, visited = starts[0], -math.inf, 0
    for start in starts:
        labels, steps = _local_moves(sym, start.copy(), g)
        visited += steps + 1
        score = _labels_score(sym, labels)
        if score > best_score + 1e-12:
            best_labels, best_score = labels, score
    return best_labels, visited


def _labels_score(sym: np.ndarray, labels: np.ndarray) -> float:
    total = 0.0
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        total += float(_value(sym[np.ix_(idx, idx)].sum() / 2.0, len(idx)))
    return total


def _agglomerate(sym: np.ndarray, g: int) -> np.ndarray:
    """From singletons, merge the pair of groups whose merge gains most, while a merge gains
    or there are more than `g` groups."""
    k = sym.shape[0]
    groups = [[i] for i in range(k)]
    pair = [0.0] * k  # Σ_{i<j in group} S[i, j]
    while len(groups) > 1:
        best, best_gain = (0, 1), -math.inf
        for x in range(len(groups)):
            for y in range(x + 1, len(groups)):
                cross = float(sym[np.ix_(groups[x], groups[y])].sum())
                merged = _value(pair[x] + pair[y] + cross, len(groups[x]) + len(groups[y]))
                gain = float(merged) - float(_value(pair[x], len(groups[x])))
                gain -= float(_value(pair[y], len(groups[y])))
                if gain > best_gain + 1e-12:
                    best, best_gain = (x, y), gain
        if best_gain <= 1e-12 and len(groups) <= g:
            break
        x, y = best
        cross = float(sym[np.ix_(groups[x], groups[y])].sum())
        groups[x], pair[x] = groups[x] + groups[y], pair[x] + pair[y] + cross
        del groups[y], pair[y]
    labels = np.zeros(k, dtype=np.int64)
    for lab, members in enumerate(groups):
        labels[members] = lab
    return labels


def _local_moves(sym: np.ndarray, labels: np.ndarray, g: int) -> tuple[np.ndarray, int]:
    """Move single tasks to the group (existing, or a new one while fewer than `g`) that gains
    most, in task order, until no move gains; returns the labels and the moves made."""
    k = sym.shape[0]
    labels = np.unique(labels, return_inverse=True)[1].astype(np.int64)  # labels 0..n-1
    moves = 0
    improved = True
    while improved:
        improved = False
        for t in range(k):
            onehot = np.zeros((k, g))
            onehot[np.arange(k), labels] = 1.0
            size = onehot.sum(0)
            pair = np.einsum("ig,ij,jg->g", onehot, sym, onehot) / 2.0
            link = sym[t] @ onehot  # Σ_{i in group} S[t, i]
            own = labels[t]
            base = _value(pair, size)
            loss = base[own] - float(_value(pair[own] - link[own], size[own] - 1))
            gain = _value(pair + link, size + 1) - base - loss  # move t into each group
            gain[own] = 0.0
            if size[own] == 1:
                gain[size == 0] = 0.0  # moving a lone task to an empty group changes nothing
            target = int(np.argmax(gain))
            if gain[target] > 1e-12:
                labels[t] = target
                moves += 1
                improved = True
    return labels, moves


def _canonical(labels: np.ndarray, names: Sequence[str]) -> Groups:
    """Groups of names, each in `names` order, ordered by their first task."""
    groups: dict[int, list[str]] = {}
    for name, lab in zip(names, labels, strict=True):
        groups.setdefault(int(lab), []).append(name)
    return tuple(tuple(members) for members in groups.values())
