"""Naive reference implementations the fast sweeps are checked against, and input strategies.

The budget loop is the MMR-Bench reference's ``evaluate_under_cost`` (one full re-scan of the
table per distinct predicted cost); the trade-off loop enumerates every pairwise crossing.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


def naive_budget_curve(perf, cpred, correct, cost, fallback="first"):
    n, m = perf.shape
    rows = np.arange(n)
    thresholds, costs, accs = [], [], []
    for c_max in np.sort(np.unique(cpred)):
        mask = cpred <= c_max
        best = np.argmax(np.where(mask, perf, -np.inf), axis=1)
        if fallback == "cheapest":
            for i in np.flatnonzero(~mask.any(axis=1)):
                cheapest = [j for j in range(m) if cpred[i, j] == cpred[i].min()]
                best[i] = max(cheapest, key=lambda j: (perf[i, j], -j))
        thresholds.append(c_max)
        costs.append(np.mean(cost[rows, best]))
        accs.append(np.mean(correct[rows, best]))
    return np.array(thresholds), np.array(costs), np.array(accs)


def naive_tradeoff_curve(perf, cpred, correct, cost):
    n, m = perf.shape
    rows = np.arange(n)
    lams = {0.0}
    for i in range(n):
        for j in range(m):
            for k in range(m):
                if cpred[i, j] > cpred[i, k]:
                    lam = (perf[i, j] - perf[i, k]) / (cpred[i, j] - cpred[i, k])
                    if lam >= 0:
                        lams.add(float(lam))
    grid = sorted(lams)
    # Evaluate at 0 exactly, then strictly inside each interval between candidate breakpoints.
    probes = [(0.0, 0.0)]
    for a, b in zip(grid, grid[1:] + [None]):
        probes.append((a, (a + b) / 2 if b is not None else 2 * a + 1))
    thresholds, costs, accs, prev = [], [], [], None
    for lam, at in probes:
        best = np.argmax(perf - at * cpred, axis=1)
        if prev is not None and np.array_equal(best, prev):
            continue
        prev = best
        thresholds.append(lam)
        costs.append(np.mean(cost[rows, best]))
        accs.append(np.mean(correct[rows, best]))
    return np.array(thresholds), np.array(costs), np.array(accs)


# Dyadic values: sums are exact, equal crossing ratios give equal floats, and ties are frequent.
PERF_LEVELS = [0.0, 0.25, 0.5, 0.75, 1.0]
COST_LEVELS = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0]


@st.composite
def tables(draw, max_n: int = 12, max_m: int = 5):
    """(perf_pred, cost_pred, correct, cost), each (n, M), drawn from small value sets."""
    n = draw(st.integers(1, max_n))
    m = draw(st.integers(1, max_m))

    def grid(levels):
        vals = draw(st.lists(st.sampled_from(levels), min_size=n * m, max_size=n * m))
        return np.array(vals, dtype=np.float64).reshape(n, m)

    return grid(PERF_LEVELS), grid(COST_LEVELS), grid([0.0, 0.5, 1.0]), grid(COST_LEVELS)
