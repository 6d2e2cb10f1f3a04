"""The decision rules of a served router, and the failover ranking they imply.

This is the serving copy of :mod:`mmroute.evaluation`'s rules (``budget_decisions``,
``tradeoff_decisions``): the model must be self-contained, so it cannot import mmroute.
``tests/export/test_decide_consistency.py`` drives both with the same random predictions (ties,
budgets below every model, trade-off weights, model subsets) and requires identical choices.

Rules, on predictions ``perf``, ``cost`` of shape (n, M):

* ``budget`` C: the best predicted performance among models whose predicted cost is <= C; ties go
  to the lowest model index. A row with no model under C takes the *fallback*:

  - ``"cheapest"`` (the serving default): the choice the row makes at its own cheapest predicted
    cost, i.e. the best predicted performance among its cheapest-predicted models (ties -> lowest
    index). A budget is a spending limit: when nothing fits, the model closest to it is the
    answer that honours the request best, whatever order the pool's columns are in.
  - ``"first"``: model index 0. This is what the MMR-Bench reference does (``argmax`` of an all
    ``-inf`` row) and it is :mod:`mmroute.evaluation`'s default, because the reference figures
    (ANCHORS) are computed that way; as a serving rule it depends on column order, so the served
    model uses it only when asked (``fallback="first"``).
* ``tradeoff`` lambda >= 0: ``argmax perf - lambda * cost``, ties -> lowest index.
* neither: the best predicted performance (``argmax perf``, ties -> lowest index).

The ranking of a row lists the models best first such that ``ranking[k]`` is what the rule picks
once ``ranking[:k]`` are removed: failing over down the list is the same as asking again without
the models that are down.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FALLBACKS", "SERVING_FALLBACK", "RULES", "check_fallback", "budget_choice",
           "tradeoff_choice", "decide", "ranking", "decision_keys"]

FALLBACKS = ("first", "cheapest")
SERVING_FALLBACK = "cheapest"
# Operating-point rules; "best" (no parameter) is the budget rule at an infinite budget.
RULES = ("budget", "tradeoff")


def check_fallback(fallback: str) -> str:
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback={fallback!r} is not one of {list(FALLBACKS)}")
    return fallback


def budget_choice(perf: np.ndarray, cost: np.ndarray, budget: float,
                  fallback: str = SERVING_FALLBACK) -> tuple[np.ndarray, np.ndarray]:
    """Chosen model index (n,) int64 and whether some model fits the budget (n,) bool."""
    check_fallback(fallback)
    fits = cost <= budget
    any_fits = fits.any(axis=1)
    choice = np.argmax(np.where(fits, perf, -np.inf), axis=1)
    none = ~any_fits
    if none.any():
        if fallback == "cheapest":
            at_min = np.where(cost == cost.min(axis=1, keepdims=True), perf, -np.inf)
            choice[none] = np.argmax(at_min[none], axis=1)
        else:
            choice[none] = 0
    return choice.astype(np.int64), any_fits


def tradeoff_choice(perf: np.ndarray, cost: np.ndarray, lam: float) -> np.ndarray:
    """``argmax perf - lam * cost`` per row (ties -> lowest index), (n,) int64."""
    return np.argmax(perf - lam * cost, axis=1).astype(np.int64)


def decide(perf: np.ndarray, cost: np.ndarray, rule: str | None, param: float | None,
           fallback: str = SERVING_FALLBACK) -> tuple[np.ndarray, np.ndarray]:
    """``(choice, within_budget)`` for ``rule`` in {"budget", "tradeoff", None} (None: best perf)."""
    n = perf.shape[0]
    if rule == "budget":
        return budget_choice(perf, cost, float(param), fallback)
    if rule == "tradeoff":
        return tradeoff_choice(perf, cost, float(param)), np.ones(n, dtype=bool)
    if rule is None:
        return np.argmax(perf, axis=1).astype(np.int64), np.ones(n, dtype=bool)
    raise ValueError(f"rule={rule!r} is not one of {list(RULES)} or None")


def decision_keys(perf: np.ndarray, cost: np.ndarray, rule: str | None, param: float | None,
                  fallback: str = SERVING_FALLBACK) -> list[np.ndarray]:
    """Sort keys (most significant first) whose lexicographic order per row is the ranking."""
    m = perf.shape[1]
    index = np.broadcast_to(np.arange(m, dtype=np.float64), perf.shape)
    zeros = np.zeros_like(perf)
    if rule == "budget":
        check_fallback(fallback)
        over = (cost > float(param)).astype(np.float64)  # in-budget models come first
        inside = over == 0
        if fallback == "cheapest":
            return [over, np.where(inside, -perf, cost), np.where(inside, zeros, -perf), index]
        return [over, np.where(inside, -perf, zeros), index]
    if rule == "tradeoff":
        return [-(perf - float(param) * cost), index]
    if rule is None:
        return [-perf, index]
    raise ValueError(f"rule={rule!r} is not one of {list(RULES)} or None")


def ranking(perf: np.ndarray, cost: np.ndarray, rule: str | None, param: float | None,
            fallback: str = SERVING_FALLBACK) -> np.ndarray:
    """Model indices (n, M), best first; column 0 equals :func:`decide`'s choice."""
    keys = decision_keys(perf, cost, rule, param, fallback)
    return np.lexsort(keys[::-1], axis=-1).astype(np.int64)
