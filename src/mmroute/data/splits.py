"""Train/test splits and the MMR-Bench modality modes.

Splits return ``(train_idx, test_idx)``, two int64 arrays of row indices into the table
(use ``table.subset(idx)``):

- :func:`split_in`: the MMR-Bench "in" split, *exactly* ``sklearn.model_selection.train_test_split(
  np.arange(n), train_size=train_frac, shuffle=True, random_state=seed)``, so results line up with the
  reference row for row (the reference default trains on 20 %);
- :func:`split_out`: the "out" split, by dataset names;
- :func:`split_column`: an explicit split column carried in ``table.extra``.

Modality modes ``XY`` (X = train side, Y = test side; 1 = text only, 2 = text + image, 3 = image only)
are parsed by :class:`Mode` and applied by :func:`apply_mode`, which *blanks* the unused modality:

- text only (1): ``image_paths`` becomes None, so no instance has an image (``has_images`` is all
  False; featurisers give zero image vectors and an all-False ``image_mask``);
- text + image (2): the table is returned unchanged;
- image only (3): every question becomes ``""`` and ``contexts`` becomes None; image paths are kept.
  Instances that had no image are kept too and then carry no input at all (as in the reference,
  which embeds every row's image in this mode); their count is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from mmroute.data.loaders import canon, parse_dataset_filter
from mmroute.data.table import OutcomeTable
from mmroute.vocabulary import MODES

__all__ = ["Mode", "MODES", "split_in", "split_out", "split_column", "apply_mode"]

log = logging.getLogger(__name__)

_MODALITY = {1: "text", 2: "text+image", 3: "image"}
SIDES = ("train", "test")


def split_in(table: OutcomeTable | int, train_frac: float, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split: ``train_test_split(np.arange(n), train_size=train_frac, shuffle=True, random_state=seed)``.

    Parameters
    ----------
    table : OutcomeTable or int
        The table (or its number of rows).
    train_frac : float in (0, 1), or int
        Share (or count) of rows to train on.
    seed : int
        ``random_state`` of the split.

    Returns
    -------
    train_idx, test_idx : ndarray of int64
        In ``train_test_split``'s order (shuffled), not sorted.
    """
    from sklearn.model_selection import train_test_split

    n = table if isinstance(table, (int, np.integer)) else table.n_instances
    if isinstance(train_frac, (float, np.floating)):
        if not 0.0 < float(train_frac) < 1.0:
            raise ValueError(f"train_frac must be in (0, 1) as a fraction, got {train_frac}")
    elif isinstance(train_frac, (int, np.integer)) and not isinstance(train_frac, bool):
        if not 0 < int(train_frac) < n:
            raise ValueError(f"train_frac as a row count must be in [1, {n - 1}], got {train_frac}")
    else:
        raise ValueError(f"train_frac must be a float in (0, 1) or an int count, got {train_frac!r}")
    if n < 2:
        raise ValueError(f"cannot split a table of {n} row(s); need at least 2")
    train, test = train_test_split(np.arange(n), train_size=train_frac, shuffle=True, random_state=seed)
    return np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)


def _match_datasets(table: OutcomeTable, names: Sequence[str], what: str) -> set[str]:
    available = table.dataset_names
    by_canon = {canon(d): d for d in available}
    unknown = [n for n in names if n not in available and canon(n) not in by_canon]
    if unknown:
        raise ValueError(f"unknown {what} dataset(s) {unknown}; the table has {available}")
    return {n if n in available else by_canon[canon(n)] for n in names}


def split_out(table: OutcomeTable, train_datasets: str | Sequence[str],
              test_datasets: str | Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-domain split: train on some datasets, test on others.

    Names may be a ``+``-joined string or a list; matching ignores case and punctuation.
    ``test_datasets=None`` means every dataset not used for training. Rows of datasets named on
    neither side are left out. Indices are ascending.
    """
    train = _match_datasets(table, parse_dataset_filter(train_datasets), "train")
    if test_datasets is None:
        test = set(table.dataset_names) - train
    else:
        test = _match_datasets(table, parse_dataset_filter(test_datasets), "test")
    overlap = sorted(train & test)
    if overlap:
        raise ValueError(f"dataset(s) {overlap} are on both the train and the test side")
    if not test:
        raise ValueError(f"no test datasets left: the table has only {table.dataset_names}, all used for training")
    ds = np.asarray(table.datasets, dtype=object)
    train_idx = np.flatnonzero([d in train for d in ds]).astype(np.int64)
    test_idx = np.flatnonzero([d in test for d in ds]).astype(np.int64)
    return train_idx, test_idx


def split_column(table: OutcomeTable, column: str = "split", train_value: str = "train",
                 test_value: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Split by an explicit column of ``table.extra`` (values compared as strings, stripped).

    Rows with any other value (e.g. ``"val"``) are left out; their count is logged.
    """
    if column not in table.extra:
        raise KeyError(f"split column {column!r} not in the table; its extra columns are {sorted(table.extra)}")
    values = np.array([str(v).strip() for v in table.extra[column]], dtype=object)
    train_idx = np.flatnonzero(values == str(train_value)).astype(np.int64)
    test_idx = np.flatnonzero(values == str(test_value)).astype(np.int64)
    if train_idx.size == 0 or test_idx.size == 0:
        seen = sorted(set(values.tolist()))[:10]
        raise ValueError(f"split column {column!r} has {train_idx.size} {train_value!r} and {test_idx.size} "
                         f"{test_value!r} rows; both must be non-empty (values seen: {seen})")
    other = len(values) - train_idx.size - test_idx.size
    if other:
        log.info("split column %r: %d rows are neither %r nor %r and are left out", column, other,
                 train_value, test_value)
    return train_idx, test_idx


@dataclass(frozen=True)
class Mode:
    """A modality mode ``XY``: ``train`` and ``test`` are each 1 (text), 2 (text+image) or 3 (image)."""

    train: int
    test: int

    def __post_init__(self) -> None:
        for side in SIDES:
            if getattr(self, side) not in _MODALITY:
                raise ValueError(f"mode {side} modality must be 1 (text), 2 (text+image) or 3 (image), "
                                 f"got {getattr(self, side)!r}")

    @classmethod
    def parse(cls, value: Mode | int | str) -> Mode:
        """From ``22``, ``"12"`` or a Mode; anything else raises ValueError listing the valid modes."""
        if isinstance(value, Mode):
            return value
        text = str(value).strip()
        if isinstance(value, bool) or len(text) != 2 or not text.isdigit() or int(text) not in MODES:
            raise ValueError(f"invalid modality mode {value!r}; expected one of {list(MODES)} "
                             f"(XY: X = train, Y = test; 1 text only, 2 text+image, 3 image only)")
        return cls(int(text[0]), int(text[1]))

    def modality(self, side: str) -> int:
        if side not in SIDES:
            raise ValueError(f"side must be one of {list(SIDES)}, got {side!r}")
        return self.train if side == "train" else self.test

    def uses_text(self, side: str) -> bool:
        return self.modality(side) in (1, 2)

    def uses_image(self, side: str) -> bool:
        return self.modality(side) in (2, 3)

    def __str__(self) -> str:
        return f"{self.train}{self.test}"

    def describe(self) -> str:
        return f"train {_MODALITY[self.train]}, test {_MODALITY[self.test]}"


def _blank(table: OutcomeTable, modality: int) -> OutcomeTable:
    if modality == 2:
        return table
    if modality == 1:
        return replace(table, image_paths=None)
    no_image = int((~table.has_images).sum())
    if no_image:
        log.warning("%s: image-only mode keeps %d instance(s) without an image; they carry no input",
                    table.source, no_image)
    return replace(table, questions=np.full(table.n_instances, "", dtype=object), contexts=None)


def apply_mode(table: OutcomeTable, side: str | OutcomeTable, mode: Mode | int | str,
               ) -> OutcomeTable | tuple[OutcomeTable, OutcomeTable]:
    """Blank the modality that ``mode`` does not use (see the module docstring for what that means).

    Two call forms:

    - ``apply_mode(table, "train" | "test", mode)`` -> the table for that side;
    - ``apply_mode(train_table, test_table, mode)`` -> ``(train_table, test_table)``.
    """
    mode = Mode.parse(mode)
    if isinstance(side, OutcomeTable):
        return _blank(table, mode.train), _blank(side, mode.test)
    return _blank(table, mode.modality(side))
