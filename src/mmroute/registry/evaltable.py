"""The evaluation table of the promotion gate: features and actual outcomes of the same rows.

Stored as one ``.npz`` (``fused`` and optional ``text``, ``image``, ``image_mask`` features;
``correct``, ``cost``, ``models``, ``ids``, ``datasets``), so that candidate and production are
scored on exactly the same inputs without re-running an encoder. A registered router rebuilds
its own input from these fields with the layout recorded at export
(:func:`mmroute.export.build_input`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmroute.features.types import Features

__all__ = ["EvalTable", "save_eval_table", "load_eval_table", "score_model"]

log = logging.getLogger(__name__)

_CHUNK = 4096


@dataclass(frozen=True)
class EvalTable:
    """Features of n rows and their actual outcomes for M models.

    ``correct``, ``cost`` : arrays of shape (n, M), NaN = missing; ``models`` : M names;
    ``datasets`` : optional (n,) dataset names.
    """

    features: Features
    correct: np.ndarray
    cost: np.ndarray
    models: tuple[str, ...]
    ids: np.ndarray | None = None
    datasets: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.features)
        shape = (n, len(self.models))
        for name in ("correct", "cost"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.shape != shape:
                raise ValueError(f"eval table {name} must have shape {shape} (rows x models), "
                                 f"got {arr.shape}")
            object.__setattr__(self, name, arr)

    def select(self, models: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(correct, cost)`` restricted to ``models``, in that order; raises naming missing ones."""
        missing = [m for m in models if m not in self.models]
        if missing:
            raise KeyError(f"the evaluation table has no outcomes for model(s) {missing}; "
                           f"it has {list(self.models)}")
        cols = [self.models.index(m) for m in models]
        return self.correct[:, cols], self.cost[:, cols]


def save_eval_table(path: str | Path, features: Features, table: Any) -> Path:
    """Write the features of ``table``'s rows and its outcomes (an OutcomeTable) to ``path`` (.npz)."""
    if len(features) != table.n_instances:
        raise ValueError(f"{len(features)} feature rows for a table of {table.n_instances} instances")
    arrays = {"fused": features.fused, "correct": table.correct, "cost": table.cost,
              "models": np.asarray(table.models, dtype=str), "ids": np.asarray(table.ids, dtype=str),
              "datasets": np.asarray(table.datasets, dtype=str)}
    for name in ("text", "image", "image_mask"):
        if getattr(features, name) is not None:
            arrays[name] = getattr(features, name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # a file handle keeps numpy from appending ".npz"
        np.savez_compressed(fh, **arrays)
    return path


def load_eval_table(source: str | Path) -> EvalTable:
    """Read an evaluation table from a local ``.npz`` path or an MLflow artifact URI
    (``runs:/<run_id>/eval/eval_table.npz``, ``models:/...``)."""
    source = str(source)
    if "://" in source or source.startswith(("runs:/", "models:/")):
        import mlflow

        source = mlflow.artifacts.download_artifacts(artifact_uri=source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation table {path} does not exist (expected an .npz written by "
                                "mmroute.registry.save_eval_table)")
    with np.load(path, allow_pickle=False) as data:
        needed = {"fused", "correct", "cost", "models"}
        missing = sorted(needed - set(data.files))
        if missing:
            raise ValueError(f"{path} is not an evaluation table: missing arrays {missing}")
        features = Features(fused=data["fused"], text=data["text"] if "text" in data.files else None,
                            image=data["image"] if "image" in data.files else None,
                            image_mask=data["image_mask"] if "image_mask" in data.files else None)
        return EvalTable(features=features, correct=data["correct"], cost=data["cost"],
                         models=tuple(str(m) for m in data["models"]),
                         ids=data["ids"] if "ids" in data.files else None,
                         datasets=data["datasets"] if "datasets" in data.files else None)


def score_model(model_uri: str, table: EvalTable, metric: str) -> float:
    """Load a router model (pyfunc), predict on the table's rows and return ``metric``.

    ``metric`` is ``<rule>/<name>`` as logged by the pipeline (e.g. ``budget/nAUC``,
    ``tradeoff/Ps``); a bare name means the budget rule.
    """
    import mlflow

    from mmroute.evaluation import RULES, evaluate_predictions
    from mmroute.export.core import build_input

    rule, _, name = metric.rpartition("/")
    rule = rule or "budget"
    if rule not in RULES:
        raise ValueError(f"metric {metric!r}: rule {rule!r} is not one of {list(RULES)}")
    model = mlflow.pyfunc.load_model(model_uri)
    inner = model.unwrap_python_model()
    if not (hasattr(inner, "predict_arrays") and hasattr(inner, "meta")):
        raise TypeError(f"{model_uri} is not an mmroute router model (got {type(inner).__name__})")
    layout = [tuple(part) for part in inner.meta["input_layout"]]
    x = build_input(table.features, layout)
    perf, pcost = zip(*(inner.predict_arrays(x[i:i + _CHUNK]) for i in range(0, len(x), _CHUNK)))
    correct, cost = table.select(inner.models)
    result = evaluate_predictions(np.concatenate(perf), np.concatenate(pcost), correct, cost, rule=rule,
                                  models=inner.models)
    if name not in result.metrics:
        raise KeyError(f"metric {name!r} is not computed; available: {sorted(result.metrics)}")
    value = float(result.metrics[name])
    log.info("%s scores %s = %.4f on %d rows", model_uri, metric, value, len(x))
    return value
