"""Cost-accuracy plots of evaluation results.

Figures are built from ``matplotlib.figure.Figure`` directly, which needs no pyplot state and no
backend switch: importing this module or plotting never changes global matplotlib settings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from mmroute.evaluation.baselines import SinglePoints

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from mmroute.evaluation.report import EvalResult

__all__ = ["plot_cost_accuracy", "save_figure"]

log = logging.getLogger(__name__)

#: Single-model points to draw: a :class:`SinglePoints`, or name -> (mean cost, accuracy).
Singles = SinglePoints | Mapping[str, tuple[float, float]]


def _single_items(singles: Singles | None) -> list[tuple[str, float, float]]:
    if singles is None:
        return []
    if isinstance(singles, SinglePoints):
        return [(singles.name(j), float(singles.cost[j]), float(singles.acc[j]))
                for j in range(singles.acc.size)]
    if isinstance(singles, Mapping):
        return [(str(k), float(v[0]), float(v[1])) for k, v in singles.items()]
    raise TypeError(f"singles must be a SinglePoints or a mapping name -> (cost, acc), "
                    f"got {type(singles).__name__}")


def plot_cost_accuracy(results: Mapping[str, EvalResult], *, singles: Singles | None = None,
                       oracle: EvalResult | tuple[float, float] | None = None,
                       title: str | None = None, show_curve: bool = True, log_cost: bool = False,
                       ) -> Figure:
    """Plot each result's frontier (steps) over its raw curve, plus single models and the oracle.

    Parameters
    ----------
    results : mapping label -> EvalResult
    singles : SinglePoints or mapping name -> (cost, acc), optional
        Drawn as labelled points; defaults to the first result's ``singles``.
    oracle : EvalResult or (cost, acc), optional
        A frontier drawn dashed, or a single starred point.
    title : str, optional
    show_curve : bool
        Also draw every swept point faintly (the frontier is the upper-left hull of these).
    log_cost : bool
        Logarithmic cost axis (useful when model prices span orders of magnitude).
    """
    from matplotlib.figure import Figure

    if singles is None and results:
        singles = next(iter(results.values())).singles
    fig = Figure(figsize=(7.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    for label, res in results.items():
        (line,) = ax.plot(res.frontier_cost, res.frontier_acc, drawstyle="steps-post", marker=".",
                          label=f"{label} (nAUC {res.metrics.get('nAUC', np.nan):.3f})")
        if show_curve and res.curve_cost.size:
            ax.scatter(res.curve_cost, res.curve_acc, s=4, alpha=0.25, color=line.get_color(),
                       linewidths=0)
    if oracle is not None:
        if hasattr(oracle, "frontier_cost"):  # an EvalResult, or anything shaped like one
            front = cast("EvalResult", oracle)
            ax.plot(front.frontier_cost, front.frontier_acc, drawstyle="steps-post", ls="--",
                    color="black", label="oracle")
        else:
            ax.scatter([oracle[0]], [oracle[1]], marker="*", s=140, color="black", label="oracle",
                       zorder=5)
    items = _single_items(singles)
    if items:
        ax.scatter([c for _, c, _ in items], [a for _, _, a in items], marker="o", s=28,
                   facecolors="none", edgecolors="dimgray", label="single models", zorder=4)
        for name, c, a in items:
            ax.annotate(name, (c, a), textcoords="offset points", xytext=(4, 3), fontsize=7,
                        color="dimgray")
    if log_cost:
        ax.set_xscale("log")
    ax.set_xlabel("mean cost per query")
    ax.set_ylabel("accuracy")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, e.g. .png), creating parent folders."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    log.info("wrote %s", out)
    return out
