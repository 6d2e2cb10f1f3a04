"""The parent run of a sweep: a comparison table of its child runs and the best child."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from mmroute.tracking import record
from mmroute.vocabulary import DEFAULT_METRIC

__all__ = ["DEFAULT_SELECT_METRIC", "lower_is_better", "comparison_frame", "pick_best",
           "comparison_figure", "log_comparison"]

log = logging.getLogger(__name__)

DEFAULT_SELECT_METRIC = DEFAULT_METRIC
_LOWER_IS_BETTER = ("QNC", "cost", "fit_seconds", "predict_seconds")
_SHOWN = ("budget/nAUC", "budget/Ps", "tradeoff/nAUC", "tradeoff/Ps")


def lower_is_better(metric: str) -> bool:
    """Costs and QNC are minimised; accuracies and areas maximised."""
    return metric.rsplit("/", 1)[-1] in _LOWER_IS_BETTER


def comparison_frame(rows: Sequence[Mapping[str, Any]]) -> Any:
    """One row per child run (``router``, ``run_id`` and metric columns), in the given order."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    front = [c for c in ("router", "run_id") if c in frame.columns]
    rest = sorted(c for c in frame.columns if c not in front)
    return frame[front + rest]


def pick_best(frame: Any, metric: str = DEFAULT_SELECT_METRIC) -> Any:
    """The row with the best ``metric`` (a missing QNC counts as infinitely costly).

    Raises
    ------
    KeyError
        If no row has the metric.
    """
    if metric not in frame.columns or frame[metric].isna().all():
        available = sorted(c for c in frame.columns if c not in ("router", "run_id"))
        raise KeyError(f"selection metric {metric!r} was not logged by any child run; "
                       f"available: {available}")
    lower = lower_is_better(metric)
    values = frame[metric].astype(float).fillna(math.inf if lower else -math.inf)
    return frame.loc[values.idxmin() if lower else values.idxmax()]


def comparison_figure(frame: Any, metrics: Sequence[str] = _SHOWN, title: str = "Router comparison") -> Any:
    """Grouped horizontal bars, one group per router, one bar per metric present in ``frame``."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no global figure registry, no backend choice

    shown = [m for m in metrics if m in frame.columns]
    routers = list(frame["router"])
    fig = Figure(figsize=(8, 0.45 * max(4, len(routers) * max(1, len(shown)) / 2) + 1))
    ax = fig.subplots()
    height = 0.8 / max(1, len(shown))
    y = np.arange(len(routers))
    for k, metric in enumerate(shown):
        ax.barh(y + k * height, frame[metric].astype(float).fillna(0.0), height=height, label=metric)
    ax.set_yticks(y + height * (len(shown) - 1) / 2, routers)
    ax.invert_yaxis()
    ax.set_xlabel("score")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    if shown:
        ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def log_comparison(frame: Any, *, metric: str = DEFAULT_SELECT_METRIC, exclude: Sequence[str] = (),
                   artifact_dir: str = record.COMPARISON_DIR) -> Any:
    """Log the table (CSV), its bar chart (PNG) and the best child into the active (parent) run.

    Routers in ``exclude`` (references such as the oracle, which reads the true outcomes) are
    shown but cannot be the best. Sets tags ``best_child_run_id``, ``best_router``,
    ``best_metric`` and logs the metric ``best/<metric>``. Returns the best row.
    """
    import mlflow

    from mmroute.tracking.records import metric_key

    mlflow.log_text(frame.to_csv(index=False), f"{artifact_dir}/routers.csv")
    mlflow.log_figure(comparison_figure(frame), f"{artifact_dir}/routers.png")
    eligible = frame[~frame["router"].isin(list(exclude))]
    if eligible.empty:
        raise ValueError(f"no router eligible for best: all of {list(frame['router'])} are excluded")
    best = pick_best(eligible, metric)
    mlflow.set_tags({record.TAG_BEST_CHILD: str(best["run_id"]), record.TAG_BEST_ROUTER: str(best["router"]),
                     "best_metric": metric})
    value = float(best[metric])
    if math.isfinite(value):
        mlflow.log_metric(metric_key("best", metric), value)
    log.info("best router by %s: %s (%.4f, run %s)", metric, best["router"], value, best["run_id"])
    return best
