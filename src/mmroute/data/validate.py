"""Validation of outcome tables: every problem found, named by file, column and rows, raised once.

Two layers are checked. :func:`model_column_problems` looks at raw column names before a table is
built (no ``<M>_correct``/``<M>_cost`` pairs, a ``_correct`` without its ``_cost`` or the reverse).
:func:`validate_table` looks at a built :class:`~mmroute.data.table.OutcomeTable` (empty table,
correctness outside [0, 1], negative or non-finite costs, duplicate ids, image files that do not
exist). Loaders run both and raise a single :class:`TableValidationError` listing everything.

Rows in messages are positions in the source file (``table.extra["row"]``, 0-based data rows, header
excluded) when the table carries them, else positions in the table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from mmroute.data.table import OutcomeTable
from mmroute.vocabulary import IMAGE_POLICIES

__all__ = [
    "IMAGE_POLICIES",
    "TableValidationError",
    "format_rows",
    "model_column_problems",
    "find_problems",
    "no_input_signal",
    "validate_table",
]

log = logging.getLogger(__name__)

_MAX_ROWS_SHOWN = 5


class TableValidationError(ValueError):
    """One or more problems in an outcome table.

    Attributes
    ----------
    source : str
        The file or spec the table came from.
    problems : list of str
        One line per problem, each naming the column and rows concerned.
    """

    def __init__(self, source: str, problems: Sequence[str]):
        self.source = str(source)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{self.source}: {len(self.problems)} validation problem(s):\n{lines}")


def format_rows(rows: Iterable[int], limit: int = _MAX_ROWS_SHOWN) -> str:
    """``"rows 3, 8, 9"`` or ``"rows 3, 8, 9, 10, 12 and 40 more"``."""
    rows = [int(r) for r in rows]
    shown = ", ".join(map(str, rows[:limit]))
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"row{'s' if len(rows) != 1 else ''} {shown}{more}"


def check_image_policy(images: str) -> str:
    if images not in IMAGE_POLICIES:
        raise ValueError(f"images must be one of {list(IMAGE_POLICIES)}, got {images!r}")
    return images


def model_column_problems(columns: Iterable[str], *, correct_suffix: str = "_correct",
                          cost_suffix: str = "_cost") -> tuple[list[str], list[str]]:
    """Find model names from ``<M><correct_suffix>`` / ``<M><cost_suffix>`` column pairs.

    Returns
    -------
    models : list of str
        Models that have both columns, in the order their correctness column appears.
    problems : list of str
        One message per unpaired column, or one saying no pair was found at all.
    """
    columns = [str(c) for c in columns]
    colset = set(columns)
    correct = [c[: -len(correct_suffix)] for c in columns if c.endswith(correct_suffix)]
    cost = [c[: -len(cost_suffix)] for c in columns if c.endswith(cost_suffix)]
    models = [m for m in correct if f"{m}{cost_suffix}" in colset]
    problems = [f"column '{m}{correct_suffix}': model {m!r} has no '{m}{cost_suffix}' column"
                for m in correct if f"{m}{cost_suffix}" not in colset]
    problems += [f"column '{m}{cost_suffix}': model {m!r} has no '{m}{correct_suffix}' column"
                 for m in cost if f"{m}{correct_suffix}" not in colset]
    if not models and not problems:
        shown = ", ".join(repr(c) for c in columns[:12]) + (" ..." if len(columns) > 12 else "")
        problems.append(f"no model columns found: expected pairs '<model>{correct_suffix}' and "
                        f"'<model>{cost_suffix}'; columns are {shown}")
    return models, problems


def _file_rows(table: OutcomeTable, idx: np.ndarray) -> np.ndarray:
    rows = table.extra.get("row")
    return np.asarray(rows)[idx] if rows is not None else idx


def _missing_images(table: OutcomeTable) -> np.ndarray:
    """Indices of instances whose image path is set but names no existing file."""
    if table.image_paths is None:
        return np.zeros(0, dtype=np.int64)
    bad = [i for i, p in enumerate(table.image_paths)
           if isinstance(p, str) and p and not os.path.isfile(p)]
    return np.asarray(bad, dtype=np.int64)


def find_problems(table: OutcomeTable, *, images: str = "error",
                  column_names: Mapping[str, tuple[str, str]] | None = None,
                  id_column: str = "id") -> list[str]:
    """All problems in ``table``, one message each (empty list when the table is valid).

    Parameters
    ----------
    images : {"error", "warn", "ignore"}
        Whether image paths that do not exist are reported ("error") or not ("warn", "ignore";
        :func:`validate_table` handles the warning).
    column_names : mapping model -> (correct column, cost column), optional
        Column names to quote in messages; default ``<M>_correct`` / ``<M>_cost``.
    id_column : str
        The column ids came from, quoted in the duplicate-id message.
    """
    check_image_policy(images)
    problems: list[str] = []
    names = dict(column_names or {})
    if table.n_instances == 0:
        problems.append("table is empty (0 rows)")
    if table.n_models == 0:
        problems.append("no model columns: the table has no models")

    for j, m in enumerate(table.models):
        ccol, kcol = names.get(m, (f"{m}_correct", f"{m}_cost"))
        c, k = table.correct[:, j], table.cost[:, j]
        with np.errstate(invalid="ignore"):
            bad_c = np.flatnonzero(~np.isnan(c) & ~((c >= 0.0) & (c <= 1.0)))
            bad_neg = np.flatnonzero(k < 0)
        if bad_c.size:
            vals = ", ".join(f"{v:g}" for v in c[bad_c[:3]])
            problems.append(f"column '{ccol}': correctness outside [0, 1] (e.g. {vals}) at "
                            f"{format_rows(_file_rows(table, bad_c))}")
        if bad_neg.size:
            vals = ", ".join(f"{v:g}" for v in k[bad_neg[:3]])
            problems.append(f"column '{kcol}': negative cost (e.g. {vals}) at "
                            f"{format_rows(_file_rows(table, bad_neg))}")
        bad_inf = np.flatnonzero(np.isinf(k))
        if bad_inf.size:
            problems.append(f"column '{kcol}': infinite cost at {format_rows(_file_rows(table, bad_inf))}")
        # A missing cost is fine only where the outcome is missing too (nothing was run).
        bad_nan = np.flatnonzero(np.isnan(k) & ~np.isnan(c))
        if bad_nan.size:
            problems.append(f"column '{kcol}': cost missing (NaN) where '{ccol}' has an outcome, at "
                            f"{format_rows(_file_rows(table, bad_nan))}")

    if table.n_instances:
        ids = np.asarray(table.ids, dtype=str)
        uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
        if (counts > 1).any():
            dup_rows = np.flatnonzero(counts[inverse] > 1)
            dup_ids = [str(u) for u in uniq[counts > 1]]
            shown = ", ".join(repr(d) for d in dup_ids[:_MAX_ROWS_SHOWN])
            more = f" and {len(dup_ids) - _MAX_ROWS_SHOWN} more" if len(dup_ids) > _MAX_ROWS_SHOWN else ""
            problems.append(f"column '{id_column}': {len(dup_ids)} duplicate id(s) ({shown}{more}) at "
                            f"{format_rows(_file_rows(table, dup_rows))}")

    if images == "error":
        missing = _missing_images(table)
        if missing.size:
            shown = ", ".join(repr(table.image_paths[i]) for i in missing[:2])
            problems.append(f"column 'img_path': {missing.size} image file(s) do not exist (e.g. {shown}) "
                            f"at {format_rows(_file_rows(table, missing))}")
    return problems


def validate_table(table: OutcomeTable, *, images: str = "error",
                   column_names: Mapping[str, tuple[str, str]] | None = None,
                   id_column: str = "id", extra_problems: Sequence[str] = ()) -> OutcomeTable:
    """Check ``table`` and return it, or raise :class:`TableValidationError` listing every problem.

    With ``images="warn"`` missing image files are logged as a warning and their paths are blanked
    in the returned table (those instances are treated as having no image); with ``"ignore"`` paths
    are not checked and are returned unchanged. ``extra_problems`` (e.g. column-pairing problems
    found before the table was built) are reported together with the table's own.
    """
    problems = list(extra_problems) + find_problems(table, images=images, column_names=column_names,
                                                          id_column=id_column)
    if problems:
        raise TableValidationError(table.source, problems)
    if images == "warn":
        missing = _missing_images(table)
        if missing.size:
            log.warning("%s: %d image file(s) do not exist (%s); treating those instances as text-only",
                        table.source, missing.size, format_rows(_file_rows(table, missing)))
            paths = table.image_paths.copy()
            paths[missing] = ""
            table = replace(table, image_paths=paths)
    if no_input_signal(table):
        # Checked after "warn" blanked missing images: what is left is what encoders will see.
        raise TableValidationError(table.source, [
            f"no input to route on: every question is empty and no row has an image ({table.n_instances} "
            "rows); expected a question text (column 'question' or 'prompt') or an image path per row"])
    return table


def no_input_signal(table: OutcomeTable) -> bool:
    """True when a non-empty table has neither any non-blank text nor any image."""
    return (table.n_instances > 0 and not table.has_images.any()
            and not any(t.strip() for t in table.texts()))
