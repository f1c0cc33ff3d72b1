"""Negative transfer: is a task consistently worse trained with the others than alone?

For each seed s the signed relative change d_s = ±(M_mtl,s − M_stl,s) / |M_stl,s| (+ = MTL
better, as in Δm). The runs of one seed are paired (same split, same batches, same budget), so
the test is a one-sided paired t-test over seeds of H0: mean d = 0 against H1: mean d < 0
(`scipy.stats.ttest_1samp(d, 0, alternative="less")`, n − 1 degrees of freedom). A task is
flagged when p < alpha and the mean drop is at least `NEGLIGIBLE_PCT` (a smaller drop, however
consistent, is named in the task's note instead). No test is made (p-value None, never
flagged, the reason given) with fewer than two seeds, when every seed's change is the same (no
spread to test against), or when a metric is undefined or the baseline is 0 in some seed.

The test reads seeds only: it says whether the drop is more than seed-to-seed noise of this
split, not whether it would hold on other data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

DEFAULT_ALPHA = 0.05

NEGLIGIBLE_PCT = 0.5
"""A mean change smaller than this (%, relative) is not flagged as negative transfer even
when the seeds agree on it (AUC 0.9964 against 0.9959): said in the task's note instead."""

CONFLICT_BALANCERS = ("upgrad", "cagrad", "nash_mtl")
"""Balancers for conflicting gradients, the first suggested first."""


def suggestions(balancer: str | None = None, offer_tower: bool = True) -> tuple[str, ...]:
    """What to try for a task that sharing harms, in the order shown, for a model trained with
    `balancer` (a conflict balancer already in use is not suggested again); `offer_tower`:
    suggest a tower per task (not where the architecture has no `tower` or has towers)."""
    others = [b for b in CONFLICT_BALANCERS if b != balancer]
    which = "another balancer" if balancer in CONFLICT_BALANCERS else "a balancer"
    first = (f"{which} for conflicting gradients: balancer: {{name: {others[0]}}} "
             f"(or {', '.join(others[1:])})")  # fmt: skip
    return (
        first,
        "train it apart from the tasks that hurt it: `polytask analyze CONFIG` shows which, "
        "`polytask compare CONFIG --groups auto` trains the best groups",
        *(() if not offer_tower else (
            "give each task a tower of its own: model: {tower: [32]} (hard_sharing and others)",
        )),
        "serve this task from its own single-task model (`polytask compare CONFIG "
        "--keep-models` saves each: seedS/stl_TASK/model.pt)",
    )  # fmt: skip


SUGGESTIONS = suggestions()
"""What to try for a task that sharing harms, for a model with EW and no towers."""


@dataclass(frozen=True)
class TransferTest:
    """One task's negative-transfer test. `mean_change_pct`: mean signed relative change over
    seeds in percent (+ = MTL better); `p_value`: one-sided paired t-test that MTL is worse
    (None when not tested, see `reason`); `flagged`: MTL worse with p < `alpha` by at least
    the negligible change; `reason`: why it was not tested, or not flagged though significant;
    `suggestions`: what to try when flagged (empty otherwise)."""

    task: str
    seeds: int
    mean_change_pct: float
    p_value: float | None
    flagged: bool
    alpha: float
    reason: str | None = None
    suggestions: tuple[str, ...] = ()


def transfer_test(
    task: str,
    mtl: Sequence[float],
    stl: Sequence[float],
    higher_is_better: bool,
    alpha: float = DEFAULT_ALPHA,
    advice: tuple[str, ...] = SUGGESTIONS,
    negligible_pct: float = NEGLIGIBLE_PCT,
) -> TransferTest:
    """Test whether `task`'s multi-task metric is worse than its single-task one, paired by
    seed (`mtl[s]` and `stl[s]` from the same seed); `advice`: the suggestions of a flagged
    task (`suggestions` for the model's setup). A significant change smaller than
    `negligible_pct` (%) is not flagged: the reason says so."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if len(mtl) != len(stl):
        raise ValueError(f"task {task!r}: {len(mtl)} multi-task but {len(stl)} single-task runs")
    m, s = np.asarray(mtl, dtype=np.float64), np.asarray(stl, dtype=np.float64)
    n = len(m)

    def untested(reason: str, change: float = math.nan) -> TransferTest:
        return TransferTest(task, n, change, None, False, alpha, reason)

    if np.isnan(m).any() or np.isnan(s).any():
        return untested("not tested: the metric is undefined in some seed")
    if (s == 0).any():
        return untested("not tested: the single-task metric is 0 in some seed")
    sign = 1.0 if higher_is_better else -1.0
    change = sign * (m - s) / np.abs(s)
    mean = 100.0 * float(change.mean())
    if n < 2:
        return untested("not tested: needs at least 2 seeds (e.g. --seeds 3)", mean)
    if np.ptp(change) <= 1e-12 * max(1.0, float(np.abs(change).max())):
        return untested("not tested: every seed changed by the same amount", mean)
    p = float(stats.ttest_1samp(change, 0.0, alternative="less").pvalue)
    flagged = p < alpha and mean < 0
    if flagged and -mean < negligible_pct:
        said = f"{-mean:.2g}" if -mean >= 0.01 else "less than 0.01"
        why = (f"worse by {said}% (p={p:.2g} < {alpha:g}), under {negligible_pct:g}%: too "
               "small to call negative transfer")  # fmt: skip
        return TransferTest(task, n, mean, p, False, alpha, why)
    return TransferTest(task, n, mean, p, flagged, alpha, None, advice if flagged else ())
