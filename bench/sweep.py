"""Speed of the exact budget sweep against the reference's per-threshold loop.

Usage: ``python bench/sweep.py [--n 10000] [--m 10] [--seed 0]``. Prints one JSON object:
``n``, ``M``, ``T`` (distinct predicted costs), ``naive_s``, ``fast_s``, ``speedup``,
``max_abs_diff`` (over costs and accuracies), ``naive_extrapolated`` (true when the naive loop
was projected to take more than ``--naive-limit-s`` and was timed on an evenly spaced subset of
thresholds, then scaled to all of them) and ``tradeoff_fast_s`` for the lambda sweep.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from mmroute.evaluation import budget_sweep, tradeoff_sweep


def naive_point(perf, cpred, correct, cost, c_max):
    """The reference's body for one budget: mask, argmax (ties -> lowest index, none -> 0), mean."""
    rows = np.arange(perf.shape[0])
    best = np.argmax(np.where(cpred <= c_max, perf, -np.inf), axis=1)
    return np.mean(cost[rows, best]), np.mean(correct[rows, best])


def make_inputs(n: int, m: int, seed: int):
    """Predictions with many ties: perf on a 0.01 grid, costs on a 1e-5 grid (log-normal)."""
    rng = np.random.default_rng(seed)
    price = np.geomspace(0.05, 5.0, m)
    perf = np.round(rng.random((n, m)), 2)
    cost_pred = np.round(price * rng.lognormal(0.0, 0.5, (n, m)), 5)
    correct = (rng.random((n, m)) < 0.3 + 0.5 * rng.random(m)).astype(float)
    cost = price * rng.lognormal(0.0, 0.5, (n, m))
    return perf, cost_pred, correct, cost


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--m", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--naive-limit-s", type=float, default=300.0)
    args = ap.parse_args(argv)
    perf, cpred, correct, cost = make_inputs(args.n, args.m, args.seed)

    t0 = time.perf_counter()
    curve = budget_sweep(perf, cpred, correct, cost)
    fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tradeoff_sweep(perf, cpred, correct, cost)
    tradeoff_s = time.perf_counter() - t0

    thresholds = np.sort(np.unique(cpred))
    T = thresholds.size
    # Time a small evenly spaced probe first, to decide whether the full loop fits the limit.
    probe = np.linspace(0, T - 1, min(T, 200)).astype(int)
    t0 = time.perf_counter()
    for k in probe:
        naive_point(perf, cpred, correct, cost, thresholds[k])
    projected = (time.perf_counter() - t0) / probe.size * T
    extrapolated = projected > args.naive_limit_s
    idx = probe if extrapolated else np.arange(T)

    t0 = time.perf_counter()
    pts = np.array([naive_point(perf, cpred, correct, cost, thresholds[k]) for k in idx])
    naive_s = (time.perf_counter() - t0) * (T / idx.size)
    diff = max(np.abs(pts[:, 0] - curve.costs[idx]).max(), np.abs(pts[:, 1] - curve.accs[idx]).max())
    print(json.dumps({
        "n": args.n, "M": args.m, "T": int(T), "naive_s": round(naive_s, 3),
        "fast_s": round(fast_s, 4), "speedup": round(naive_s / fast_s, 1),
        "max_abs_diff": float(diff), "naive_extrapolated": bool(extrapolated),
        "naive_thresholds_run": int(idx.size), "tradeoff_fast_s": round(tradeoff_s, 4),
    }))
    return 0 if diff <= 1e-9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
