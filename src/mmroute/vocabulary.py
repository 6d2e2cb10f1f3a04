"""The words shared across mmroute's layers, defined once.

Every module that validates, documents or offers one of these choices imports it from here (the
served model's ``mmroute_runtime`` keeps its own copy on purpose: it must run without mmroute
installed; a test checks the copies agree).
"""

from __future__ import annotations

__all__ = ["RULES", "FALLBACKS", "DEFAULT_FALLBACK", "MODES", "IMAGE_POLICIES", "SPLITS", "FUSIONS",
           "DEFAULT_METRIC", "VAL_PREFIX", "DEFAULT_DATA", "EXPORTERS",
           "selection_metric"]

#: Decision rules of :mod:`mmroute.evaluation`: pick the best predicted model within a budget, or
#: maximise predicted performance minus a cost trade-off.
RULES: tuple[str, ...] = ("budget", "tradeoff")
#: Budget rule: what an instance picks when no model's predicted cost fits the budget.
FALLBACKS: tuple[str, ...] = ("first", "cheapest")
#: Evaluation's fallback (the MMR-Bench reference picks the first model).
DEFAULT_FALLBACK = "first"
#: MMR-Bench modality modes XY: X the training modality, Y the test one (1 text, 2 image, 3 both).
MODES: tuple[int, ...] = (11, 12, 13, 21, 22, 23, 31, 32, 33)
#: What the table loader does with image paths that name no file.
IMAGE_POLICIES: tuple[str, ...] = ("error", "warn", "ignore")
#: Train/test splits: seeded random rows, by dataset, or by an explicit column.
SPLITS: tuple[str, ...] = ("in", "out", "column")
#: Fusions of text and image features (:mod:`mmroute.features.fusion`).
FUSIONS: tuple[str, ...] = ("mean", "concat", "adaptive")
#: The metric that picks a sweep's best child (by its validation twin) and gates promotion.
DEFAULT_METRIC = "budget/nAUC"
#: Prefix of the metrics scored on validation rows carved out of the training rows.
VAL_PREFIX = "val"
#: The embedded default table.
DEFAULT_DATA = "synthetic:n=1000,seed=0"
#: torch routers' ONNX exporters.
EXPORTERS: tuple[str, ...] = ("auto", "dynamo", "torchscript")


def selection_metric(metric: str) -> str:
    """The validation twin ``val/<metric>`` that chooses between routers (``fit_seconds`` and
    ``val/...`` stay as they are): choices are made on training rows, never on test rows."""
    return metric if metric.startswith(f"{VAL_PREFIX}/") or "/" not in metric else f"{VAL_PREFIX}/{metric}"
