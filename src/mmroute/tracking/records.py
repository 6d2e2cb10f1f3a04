"""What every mmroute run records: params, tags, final metrics, curves, split ids, dataset inputs.

Naming scheme (stable: dashboards and the sweep comparison rely on it)

- params are dotted: ``router.name``, ``router.<field>``, ``data.spec``, ``data.hash``,
  ``features.spec``, ``features.fusion``, ``split.kind``, ``split.train_frac``, ``split.seed``,
  ``mode`` ...; values longer than MLflow's limit are truncated with a trailing ``...``;
- final metrics are ``<rule>/<metric>`` with rule ``budget`` (budget sweep) or ``tradeoff``
  (cost-quality weight sweep), e.g. ``budget/nAUC``, ``tradeoff/Ps``; per-dataset breakdowns are
  prefixed by the dataset, ``<dataset>/<rule>/<metric>``; split-level references are
  ``oracle/<metric>`` and ``best_single/accuracy|cost``;
- accuracy and cost at a budget are read off the rule's curve at fractions of the best single
  model's mean cost: ``<rule>/at_0.5x_best_cost/accuracy`` and ``.../cost``;
- QNC is infinite when the frontier never reaches the best single model's accuracy; MLflow cannot
  store infinity faithfully, so ``<rule>/QNC`` is logged only when finite and
  ``<rule>/qnc_reached`` (1 or 0) is always logged.
"""

from __future__ import annotations

import logging
import math
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmroute.tracking import record

__all__ = [
    "BUDGET_FRACTIONS",
    "flatten_params",
    "log_params",
    "run_tags",
    "git_commit",
    "metric_key",
    "finite_metrics",
    "curve_readout",
    "eval_metrics",
    "log_metrics",
    "log_curves",
    "log_split_ids",
    "table_frame",
    "log_table_input",
]

log = logging.getLogger(__name__)

BUDGET_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
_PARAM_MAX = 6000  # MLflow >= 2.x param value limit
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")


# ------------------------------------------------------------------ params / tags
def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b.c": "value"}``; lists become comma-joined strings."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, prefix=f"{name}."))
        else:
            if isinstance(value, (list, tuple)):
                value = ",".join(map(str, value))
            text = "" if value is None else str(value)
            out[name] = text if len(text) <= _PARAM_MAX else text[: _PARAM_MAX - 3] + "..."
    return out


def log_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten and log ``params`` into the active run (batches of 100); returns what was logged."""
    import mlflow

    flat = flatten_params(params, prefix)
    items = sorted(flat.items())
    for start in range(0, len(items), 100):
        mlflow.log_params(dict(items[start:start + 100]))
    return flat


def git_commit(path: str | Path | None = None) -> str | None:
    """HEAD commit of the git checkout holding ``path`` (default: the mmroute sources), or None."""
    if path is None:
        import mmroute

        path = Path(mmroute.__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def run_tags(*, step: str, dataset: str | None = None, mode: Any = None,
             extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Standard tags: ``mmroute.step``, ``mmroute.version``, ``mmroute.git_commit`` (when in a git
    checkout), ``mmroute.dataset``, ``mmroute.mode``, plus ``extra``."""
    from mmroute import __version__

    tags = {record.TAG_STEP: step, record.TAG_VERSION: __version__}
    commit = git_commit()
    if commit:
        tags[record.TAG_GIT_COMMIT] = commit
    if dataset:
        tags[record.TAG_DATASET] = str(dataset)
    if mode is not None:
        tags[record.TAG_MODE] = str(mode)
    for key, value in (extra or {}).items():
        if value is not None:
            tags[key] = str(value)
    return tags


# ------------------------------------------------------------------ metrics
def metric_key(*parts: Any) -> str:
    """Join parts with ``/`` and replace characters MLflow refuses in metric names by ``_``."""
    return "/".join(_BAD_KEY_CHARS.sub("_", str(p)) for p in parts if p not in (None, ""))


def finite_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric entries of ``metrics`` as floats under ``prefix``; QNC handled as documented above.

    Non-numeric and NaN values are dropped (NaN says "undefined", which an absent metric says too).
    """
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, (bool, np.bool_)):
            value = float(value)
        if not isinstance(value, (int, float, np.integer, np.floating)):
            continue
        value = float(value)
        if name == "QNC":
            out[metric_key(prefix, "qnc_reached")] = float(math.isfinite(value))
        if math.isnan(value) or math.isinf(value):
            continue
        out[metric_key(prefix, name)] = value
    return out


def curve_readout(curve_cost: np.ndarray, curve_acc: np.ndarray, budget: float) -> tuple[float, float]:
    """The best accuracy reachable on a curve spending at most ``budget`` on average, and the cost
    of that point; ``(nan, nan)`` when every point costs more."""
    cost = np.asarray(curve_cost, dtype=np.float64)
    acc = np.asarray(curve_acc, dtype=np.float64)
    ok = cost <= budget * (1 + 1e-12)
    if not ok.any():
        return float("nan"), float("nan")
    idx = np.flatnonzero(ok)
    best = idx[np.lexsort((cost[idx], -acc[idx]))[0]]  # highest accuracy, then cheapest
    return float(acc[best]), float(cost[best])


def eval_metrics(result: Any, rule: str, *, best_single_cost: float | None = None,
                 fractions: Sequence[float] = BUDGET_FRACTIONS) -> dict[str, float]:
    """Metrics of one :class:`~mmroute.evaluation.EvalResult` under ``rule``, named per the scheme."""
    out = finite_metrics(result.metrics, rule)
    if best_single_cost is not None and best_single_cost > 0:
        for frac in fractions:
            acc, cost = curve_readout(result.curve_cost, result.curve_acc, frac * best_single_cost)
            tag = f"at_{frac:g}x_best_cost"
            out.update(finite_metrics({"accuracy": acc, "cost": cost}, metric_key(rule, tag)))
    for dataset, metrics in (getattr(result, "per_dataset", None) or {}).items():
        out.update(finite_metrics(metrics, metric_key(dataset, rule)))
    return out


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log a flat metric dict into the active run in batches (MLflow caps a batch at 1000)."""
    import mlflow

    items = list(metrics.items())
    for start in range(0, len(items), 500):
        mlflow.log_metrics(dict(items[start:start + 500]), step=step)


# ------------------------------------------------------------------ artifacts
def log_curves(results: Mapping[str, Any], artifact_dir: str = record.CURVES_DIR) -> None:
    """One CSV per rule, ``<artifact_dir>/<rule>_curve.csv``: every curve point with a flag marking
    the Pareto frontier (an EvalResult's own ``curve_frame()``: threshold, cost, acc, on_frontier).

    ``results`` maps rule -> EvalResult, or any object with 1-D ``curve_cost``, ``curve_acc``,
    ``frontier_cost``, ``frontier_acc`` (then columns cost, accuracy, on_frontier).
    """
    import mlflow
    import pandas as pd

    for rule, result in results.items():
        if hasattr(result, "curve_frame"):  # EvalResult: thresholds too, frontier from evaluation
            mlflow.log_text(result.curve_frame().to_csv(index=False), f"{artifact_dir}/{rule}_curve.csv")
            continue
        cost = np.asarray(result.curve_cost, dtype=np.float64)
        acc = np.asarray(result.curve_acc, dtype=np.float64)
        frontier = set(zip(np.round(np.asarray(result.frontier_cost, dtype=np.float64), 12),
                           np.round(np.asarray(result.frontier_acc, dtype=np.float64), 12)))
        on = [(round(c, 12), round(a, 12)) in frontier for c, a in zip(cost, acc)]
        frame = pd.DataFrame({"cost": cost, "accuracy": acc, "on_frontier": on})
        mlflow.log_text(frame.to_csv(index=False), f"{artifact_dir}/{rule}_curve.csv")


def log_split_ids(train_ids: Iterable[Any], test_ids: Iterable[Any]) -> None:
    """The split's instance ids, one per line, as ``split/train_ids.txt`` and ``split/test_ids.txt``
    (:data:`~mmroute.tracking.record.TRAIN_IDS`, :data:`~mmroute.tracking.record.TEST_IDS`)."""
    import mlflow

    mlflow.log_text("\n".join(map(str, train_ids)) + "\n", record.TRAIN_IDS)
    mlflow.log_text("\n".join(map(str, test_ids)) + "\n", record.TEST_IDS)


# ------------------------------------------------------------------ inputs
def table_frame(table: Any) -> Any:
    """An outcome table as a flat DataFrame: ``id``, ``dataset``, ``has_image``, ``<m>_correct``,
    ``<m>_cost`` (what the router learns from; texts and pixels are referenced by the source)."""
    import pandas as pd

    cols: dict[str, Any] = {"id": table.ids.astype(str), "dataset": table.datasets.astype(str),
                            "has_image": table.has_images}
    for j, model in enumerate(table.models):
        cols[f"{model}_correct"] = table.correct[:, j]
        cols[f"{model}_cost"] = table.cost[:, j]
    return pd.DataFrame(cols)


def log_table_input(table: Any, *, context: str, name: str, source: str | None = None) -> Any:
    """Log ``table`` as an MLflow dataset input of the active run under ``context``
    (``"training"``/``"evaluation"``...); returns the :class:`mlflow.data.Dataset`."""
    import mlflow

    frame = table_frame(table)
    dataset = mlflow.data.from_pandas(frame, source=_dataset_source(source or str(table.source)), name=name)
    mlflow.log_input(dataset, context=context)
    return dataset


def _dataset_source(spec: str) -> Any:
    """A file-system source for tables read from disk, a code source (tagged with the spec) for
    generated ones such as ``synthetic:n=500``, which MLflow's resolvers do not recognise."""
    import warnings

    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    path = Path(spec)
    if "://" not in spec and ":" not in spec.split("/")[0] and path.exists():
        with warnings.catch_warnings():
            # Two local-artifact resolvers claim plain paths; MLflow warns and picks either.
            warnings.simplefilter("ignore", UserWarning)
            return resolve_dataset_source(str(path.resolve()))
    return CodeDatasetSource(tags={"mmroute.source": spec})
