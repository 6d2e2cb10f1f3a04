"""Tiny routing data shared by the router tests (imported as a sibling module)."""

from __future__ import annotations

import numpy as np

from mmroute.data.table import OutcomeTable
from mmroute.features.types import Features


def tiny_problem(n: int = 60, d: int = 6, m: int = 3, seed: int = 0, missing: float = 0.0):
    """Features (n, d) whose first coordinates drive the outcomes, correct (n, m) in {0, 1},
    cost (n, m) > 0; a share ``missing`` of the outcomes of model 0 is NaN."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    logits = x[:, :m] * 2.0 + np.linspace(-0.5, 0.5, m)
    correct = (rng.random((n, m)) < 1 / (1 + np.exp(-logits))).astype(np.float64)
    cost = np.abs(rng.normal(loc=np.arange(1, m + 1), scale=0.1, size=(n, m))) + 0.01 * (x[:, [0]] ** 2)
    if missing:
        rows = rng.choice(n, size=int(missing * n), replace=False)
        correct[rows, 0] = np.nan
        cost[rows, 0] = np.nan
    return x, correct, cost


def tiny_table(n: int = 60, m: int = 3, seed: int = 0, missing: float = 0.0, d: int = 6):
    """An OutcomeTable and row-aligned features (n, d) from :func:`tiny_problem`."""
    x, correct, cost = tiny_problem(n=n, d=d, m=m, seed=seed, missing=missing)
    table = OutcomeTable(ids=[f"q{i}" for i in range(n)], datasets=["a" if i % 2 else "b" for i in range(n)],
                         questions=[f"question {i}" for i in range(n)], models=[f"m{j}" for j in range(m)],
                         correct=correct, cost=cost)
    return table, x


def feats(x: np.ndarray, image: np.ndarray | None = None, mask: np.ndarray | None = None) -> Features:
    return Features(fused=x, text=x, image=image, image_mask=mask)


def raw_router(name: str, **overrides):
    """A registered router without its guard: tests of a family's own predictions."""
    from mmroute.routers import create_router

    return create_router(name, **{"guard": "off", **overrides})
