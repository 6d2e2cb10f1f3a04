"""The in-memory outcome table every other stage consumes.

An outcome table holds, for ``n`` instances and ``M`` models, whether each model answered each
instance correctly (``correct``, 0/1 or a score in [0, 1], NaN where the outcome is missing) and
what it cost (``cost``, any consistent unit, NaN where missing). Text, optional images and optional
extra context describe each instance. Loaders live in :mod:`mmroute.data.loaders`; validation in
:mod:`mmroute.data.validate`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TypedDict

import numpy as np

from mmroute.arrays import ArrayLike, BoolArray, FloatArray, GenericArray, ObjectArray

__all__ = ["OutcomeTable", "TableSummary"]


class TableSummary(TypedDict):
    """What :meth:`OutcomeTable.summary` returns."""

    source: str
    n_instances: int
    n_models: int
    n_with_image: int
    datasets: dict[str, int]
    missing_outcomes: int
    model_accuracy: dict[str, float | None]
    model_mean_cost: dict[str, float | None]
    models_without_outcomes: list[str]


def _as_str_array(values: ArrayLike | Sequence[object], n: int, what: str) -> ObjectArray:
    arr = np.asarray(values, dtype=object)
    if arr.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},), got {arr.shape}")
    return arr


@dataclass(frozen=True, eq=False)
class OutcomeTable:
    """Per-instance, per-model outcomes.

    Attributes
    ----------
    ids : ndarray of str, shape (n_instances,)
        Unique instance identifiers.
    datasets : ndarray of str, shape (n_instances,)
        Name of the dataset each instance comes from (used by "out" splits and breakdowns).
    questions : ndarray of str, shape (n_instances,)
        Question text.
    models : tuple of str, length n_models
        Model names, in column order of ``correct`` and ``cost``.
    correct : ndarray of float64, shape (n_instances, n_models)
        Outcome in [0, 1]; NaN where missing.
    cost : ndarray of float64, shape (n_instances, n_models)
        Non-negative cost; NaN where missing.
    image_paths : ndarray of object, shape (n_instances,), or None
        Absolute image path per instance, or None/"" where an instance has no image.
    contexts : ndarray of object, shape (n_instances,), or None
        Extra text context (answer options, a passage) appended to the question for text encoders.
    source : str
        Where the table came from (a path or a generator spec); used in error messages.
    extra : dict
        Free-form metadata carried along (split column values, answers, categories...).
    """

    ids: ObjectArray
    datasets: ObjectArray
    questions: ObjectArray
    models: tuple[str, ...]
    correct: FloatArray
    cost: FloatArray
    image_paths: ObjectArray | None = None
    contexts: ObjectArray | None = None
    source: str = "<memory>"
    extra: dict[str, GenericArray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        correct = np.asarray(self.correct, dtype=np.float64)
        cost = np.asarray(self.cost, dtype=np.float64)
        if correct.ndim != 2:
            raise ValueError(f"correct must be 2-D (n_instances, n_models), got shape {correct.shape}")
        n, m = correct.shape
        if cost.shape != (n, m):
            raise ValueError(f"cost must have the shape of correct {(n, m)}, got {cost.shape}")
        models = tuple(str(x) for x in self.models)
        if len(models) != m:
            raise ValueError(f"{len(models)} model names for {m} outcome columns")
        object.__setattr__(self, "correct", correct)
        object.__setattr__(self, "cost", cost)
        object.__setattr__(self, "models", models)
        object.__setattr__(self, "ids", _as_str_array(self.ids, n, "ids").astype(str).astype(object))
        object.__setattr__(self, "datasets", _as_str_array(self.datasets, n, "datasets"))
        object.__setattr__(self, "questions", _as_str_array(self.questions, n, "questions"))
        if self.image_paths is not None:
            object.__setattr__(self, "image_paths", _as_str_array(self.image_paths, n, "image_paths"))
        if self.contexts is not None:
            object.__setattr__(self, "contexts", _as_str_array(self.contexts, n, "contexts"))
        for key, col in self.extra.items():
            if len(col) != n:
                raise ValueError(f"extra column {key!r} has {len(col)} rows, expected {n}")

    # ------------------------------------------------------------------ shape
    @property
    def n_instances(self) -> int:
        return int(self.correct.shape[0])

    @property
    def n_models(self) -> int:
        return int(self.correct.shape[1])

    def __len__(self) -> int:
        return self.n_instances

    @property
    def has_images(self) -> BoolArray:
        """Boolean mask of shape (n_instances,): which instances have an image."""
        if self.image_paths is None:
            return np.zeros(self.n_instances, dtype=bool)
        return np.array([bool(p) and isinstance(p, str) for p in self.image_paths], dtype=bool)

    @property
    def dataset_names(self) -> list[str]:
        """Distinct dataset names in first-seen order."""
        seen: dict[str, None] = {}
        for d in self.datasets:
            seen.setdefault(str(d), None)
        return list(seen)

    def texts(self, with_context: bool = True) -> list[str]:
        """Question text, with the extra context appended on a new line when present."""
        if not with_context or self.contexts is None:
            return [str(q) for q in self.questions]
        return [f"{q}\n{c}" if c not in (None, "") and c == c else str(q)
                for q, c in zip(self.questions, self.contexts)]

    # ------------------------------------------------------------- outcomes
    @property
    def missing(self) -> BoolArray:
        """Boolean mask (n_instances, n_models): outcome or cost missing."""
        return np.isnan(self.correct) | np.isnan(self.cost)

    def filled(self) -> tuple[FloatArray, FloatArray]:
        """``(correct, cost)`` with missing entries replaced by each model's column mean.

        This is what the MMR-Bench reference does before evaluating; training uses masks instead.
        A column that is entirely missing is filled with 0.
        """
        from mmroute.evaluation.baselines import fill_missing

        return fill_missing(self.correct, self.cost)

    # -------------------------------------------------------------- slicing
    def subset(self, rows: ArrayLike) -> OutcomeTable:
        """A new table restricted to ``rows`` (integer indices or a boolean mask)."""
        idx = np.asarray(rows)
        if idx.dtype == bool:
            if idx.shape != (self.n_instances,):
                raise ValueError(f"boolean row mask must have shape ({self.n_instances},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        return replace(
            self,
            ids=self.ids[idx],
            datasets=self.datasets[idx],
            questions=self.questions[idx],
            correct=self.correct[idx],
            cost=self.cost[idx],
            image_paths=None if self.image_paths is None else self.image_paths[idx],
            contexts=None if self.contexts is None else self.contexts[idx],
            extra={k: np.asarray(v)[idx] for k, v in self.extra.items()},
        )

    def select_models(self, names: Sequence[str]) -> OutcomeTable:
        """A new table with only the named models, in the given order."""
        unknown = [n for n in names if n not in self.models]
        if unknown:
            raise KeyError(f"unknown model(s) {unknown}; the table has {list(self.models)}")
        cols = [self.models.index(n) for n in names]
        return replace(self, models=tuple(names), correct=self.correct[:, cols], cost=self.cost[:, cols])

    def without_images(self) -> OutcomeTable:
        return replace(self, image_paths=None)

    # ------------------------------------------------------------- identity
    def content_hash(self) -> str:
        """A stable SHA-256 digest (hex, 16 chars) of ids, texts, image paths, models and outcomes."""
        h = hashlib.sha256()
        for part in (self.ids, self.questions, self.datasets):
            h.update("\x1f".join(map(str, part)).encode())
        if self.contexts is not None:
            h.update("\x1f".join(map(str, self.contexts)).encode())
        if self.image_paths is not None:
            h.update("\x1f".join(map(str, self.image_paths)).encode())
        h.update("\x1f".join(self.models).encode())
        h.update(np.ascontiguousarray(self.correct).tobytes())
        h.update(np.ascontiguousarray(self.cost).tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> TableSummary:
        """Counts and per-model means over observed outcomes, for reports and logging.

        A model with no outcome at all has accuracy and mean cost None (not a made-up 0), and is
        listed under ``models_without_outcomes``.
        """
        observed = ~self.missing

        def mean(values: FloatArray, j: int) -> float | None:
            rows = observed[:, j]
            return float(values[rows, j].mean()) if rows.any() else None

        return {
            "source": self.source,
            "n_instances": self.n_instances,
            "n_models": self.n_models,
            "n_with_image": int(self.has_images.sum()),
            "datasets": {d: int((self.datasets == d).sum()) for d in self.dataset_names},
            "missing_outcomes": int(self.missing.sum()),
            "model_accuracy": {m: mean(self.correct, j) for j, m in enumerate(self.models)},
            "model_mean_cost": {m: mean(self.cost, j) for j, m in enumerate(self.models)},
            "models_without_outcomes": [m for j, m in enumerate(self.models) if not observed[:, j].any()],
        }

