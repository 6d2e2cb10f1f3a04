"""The MMR-Bench layouts: per-dataset CSVs with image folders, and the merged ``MMR_Bench.csv``.

Per-dataset layout::

    <root>/<name>.csv        question, [answer], [img_path], <M>_correct, <M>_cost, ...
    <root>/<name>/...        images; a relative img_path is resolved against <root>/<name>/

Merged layout::

    <root>/MMR_Bench.csv     dataset_idx (e.g. SEEDBench2_Plus_0, MathVista_12), question, ...
    <root>/SEEDBenchv2Plus/0.jpg, <root>/MathVista/12.png, ...

In the merged file the dataset name is the ``dataset_idx`` prefix (``SEEDBench2_Plus``) and the image
is ``<root>/<folder>/<rest>.<ext>`` with the first of .jpg/.png/.jpeg/.webp that exists (``.jpg``
when none does, which validation then reports). Several datasets are selected with ``+``
(``<root>/ocrbench+mathvista``); names are matched ignoring case and punctuation.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from mmroute.data.images import ImageRoot
from mmroute.data.loaders import (
    canon,
    concat_tables,
    filter_datasets,
    frame_to_table,
    outside_image_problems,
    read_frame,
)
from mmroute.data.table import OutcomeTable
from mmroute.data.validate import TableValidationError, validate_table

__all__ = ["MERGED_NAME", "MANIFEST_NAME", "PREFIX_TO_DIR", "load_directory", "load_merged",
           "load_named", "load_per_dataset"]

log = logging.getLogger(__name__)

MERGED_NAME = "MMR_Bench.csv"
# Written by mmroute.data.synthetic: lists a directory's per-dataset CSVs in load order.
MANIFEST_NAME = "mmroute_dataset.json"
# dataset_idx prefix -> image folder under the root (SEED-Bench-2-Plus is the one that differs).
PREFIX_TO_DIR = {
    "MathVerse": "MathVerse",
    "MathVision": "MathVision",
    "MathVista": "MathVista",
    "OCRBench": "OCRBench",
    "RealWorldQA": "RealWorldQA",
    "MMStar": "MMStar",
    "SEEDBench2_Plus": "SEEDBenchv2Plus",
}
_ALIASES = {canon(k): k for k in PREFIX_TO_DIR} | {canon(v): k for k, v in PREFIX_TO_DIR.items()} | {
    "seedbench": "SEEDBench2_Plus", "seedbenchplus": "SEEDBench2_Plus", "seedbench2": "SEEDBench2_Plus"}
IMAGE_EXTENSIONS = (".jpg", ".png", ".jpeg", ".webp")


def _split_dataset_idx(value: str) -> tuple[str, str]:
    """``"SEEDBench2_Plus_0"`` -> ``("SEEDBench2_Plus", "0")``; unknown prefixes split at the last ``_``."""
    known = [p for p in PREFIX_TO_DIR if value.startswith(p + "_")]
    if known:
        prefix = max(known, key=len)
        return prefix, value[len(prefix) + 1:]
    if "_" in value:
        prefix, rest = value.rsplit("_", 1)
        return prefix, rest
    return value, value


def _find_image(root: Path, folder: str, stem: str) -> str:
    base = root / folder
    for ext in IMAGE_EXTENSIONS:
        candidate = base / f"{stem}{ext}"
        if candidate.is_file():
            return str(candidate.resolve())
    return str((base / f"{stem}.jpg").resolve())


def load_merged(path: Path, *, images: str = "error", dataset: Sequence[str] | None = None,
                image_root: ImageRoot | None = None) -> OutcomeTable:
    """Load ``MMR_Bench.csv``, optionally keeping only the ``dataset`` names; images are confined to
    ``image_root`` (default: the file's folder)."""
    path = Path(path)
    root = path.parent
    image_root = image_root or ImageRoot.for_table(root)
    df = read_frame(path)
    if "dataset_idx" not in df.columns:
        raise TableValidationError(str(path), [
            f"no 'dataset_idx' column: the merged MMR-Bench format needs it to name each row's dataset "
            f"and image; columns are {list(map(str, df.columns))[:12]}"])
    parts = [_split_dataset_idx(str(v)) for v in df["dataset_idx"].astype(str).tolist()]
    prefixes = np.array([p for p, _ in parts], dtype=object)
    rows = np.arange(len(df))
    if dataset:
        present = list(dict.fromkeys(prefixes.tolist()))
        by_canon = {canon(p): p for p in present} | {a: p for a, p in _ALIASES.items() if p in present}
        unknown = [d for d in dataset if canon(d) not in by_canon]
        if unknown:
            raise ValueError(f"{path}: unknown dataset(s) {unknown}; the file has {present}")
        wanted = {by_canon[canon(d)] for d in dataset}
        rows = np.flatnonzero([p in wanted for p in prefixes])
    sub = df.iloc[rows].reset_index(drop=True)
    built = frame_to_table(sub, source=str(path), default_dataset="", image_base=root, rows=rows)
    if built.table is None:
        raise TableValidationError(str(path), built.problems)
    table = built.table
    explicit = table.image_paths if table.image_paths is not None else np.full(len(rows), "", dtype=object)
    image_paths = np.array([
        explicit[i] if explicit[i] else _find_image(root, PREFIX_TO_DIR.get(prefixes[r], prefixes[r]), parts[r][1])
        for i, r in enumerate(rows)], dtype=object)
    table = replace(table, datasets=prefixes[rows], image_paths=image_paths)
    # Derived paths are confined too: a dataset_idx like "MathVista_../../x" must not leave the root.
    problems = built.problems + outside_image_problems(table, image_root, built.image_column or "dataset_idx")
    return validate_table(table, images=images, column_names=built.column_names, id_column=built.id_column,
                          extra_problems=problems)


def _csv_files(root: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(root.glob("*.csv")) if p.name != MERGED_NAME}


def load_per_dataset(root: Path, names: Sequence[str], *, images: str = "error",
                     source: str | None = None, image_root: ImageRoot | None = None) -> OutcomeTable:
    """Load ``<root>/<name>.csv`` for each name (case-insensitive) and stack them in that order.

    Problems in any file are collected and raised once, each prefixed with its file. Images are
    confined to ``image_root`` (default: ``root``).
    """
    root = Path(root)
    image_root = image_root or ImageRoot.for_table(root)
    source = source or str(root / "+".join(names))
    files = _csv_files(root)
    by_canon = {canon(stem): p for stem, p in files.items()}
    seen: set[str] = set()
    tables: list[OutcomeTable] = []
    problems: list[str] = []
    for name in names:
        path = files.get(name) or by_canon.get(canon(name))
        if path is None:
            raise FileNotFoundError(f"{root / (name + '.csv')}: no such dataset CSV; {root} has "
                                    f"{sorted(files) or 'no per-dataset CSVs'}")
        if path.stem in seen:
            raise ValueError(f"{source}: dataset {name!r} is listed twice")
        seen.add(path.stem)
        image_base = root / path.stem if (root / path.stem).is_dir() else root
        # The file is the dataset (as in the MMR-Bench reference), even if it has a category column.
        built = frame_to_table(read_frame(path), source=str(path), default_dataset=path.stem,
                               image_base=image_base, id_prefix=path.stem, dataset_columns=())
        prefix = f"{path.name}: " if len(names) > 1 else ""
        if built.table is None:
            problems += [prefix + p for p in built.problems]
            continue
        found = built.problems + outside_image_problems(built.table, image_root, built.image_column)
        try:
            tables.append(validate_table(built.table, images=images, column_names=built.column_names,
                                         id_column=built.id_column, extra_problems=found))
        except TableValidationError as err:
            problems += [prefix + p for p in err.problems]
    if problems:
        raise TableValidationError(source if len(names) > 1 else str(path), problems)
    return concat_tables(tables, source)


def load_named(root: Path, names: Sequence[str], *, images: str = "error",
               dataset: Sequence[str] | None = None, image_root: ImageRoot | None = None) -> OutcomeTable:
    """``<root>/<a>+<b>``: from the merged file when every name is an MMR-Bench dataset, else per-dataset CSVs."""
    root = Path(root)
    names = [n.strip() for n in names if n.strip()]
    if not root.is_dir() or not names:
        raise FileNotFoundError(f"{root / '+'.join(names)}: no such file or directory (expected a table "
                                f"file, a directory, or <root>/<dataset>[+<dataset>...])")
    merged = root / MERGED_NAME
    files = _csv_files(root)
    per_file = all(n in files or canon(n) in {canon(s) for s in files} for n in names)
    if merged.is_file() and not per_file and all(canon(n) in _ALIASES for n in names):
        table = load_merged(merged, images=images, dataset=names, image_root=image_root)
    else:
        table = load_per_dataset(root, names, images=images, image_root=image_root)
    return filter_datasets(table, dataset) if dataset else table


def load_directory(root: Path, *, images: str = "error", dataset: Sequence[str] | None = None,
                   image_root: ImageRoot | None = None) -> OutcomeTable:
    """A directory: its merged CSV, else the datasets its manifest lists, else all its ``*.csv``."""
    root = Path(root)
    if (root / MERGED_NAME).is_file():
        return load_merged(root / MERGED_NAME, images=images, dataset=dataset, image_root=image_root)
    manifest = root / MANIFEST_NAME
    if manifest.is_file():
        names = _manifest_datasets(manifest)
    else:
        names = list(_csv_files(root))
    if not names:
        raise FileNotFoundError(_no_table_message(root))
    if dataset:
        by_canon = {canon(n): n for n in names}
        unknown = [d for d in dataset if canon(d) not in by_canon]
        if unknown:
            raise ValueError(f"{root}: unknown dataset(s) {unknown}; the directory has {names}")
        names = [by_canon[canon(d)] for d in dataset]
    return load_per_dataset(root, names, images=images, source=str(root), image_root=image_root)


def _manifest_datasets(manifest: Path) -> list[str]:
    try:
        names = json.loads(manifest.read_text(encoding="utf-8"))["datasets"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TableValidationError(str(manifest), [
            f"unreadable dataset manifest ({type(exc).__name__}: {exc}); expected JSON with a "
            "'datasets' list"]) from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise TableValidationError(str(manifest), ["'datasets' must be a list of dataset names"])
    return names


def _no_table_message(root: Path) -> str:
    """Why a directory is not a table, saying what it looks like (e.g. a dataset's image folder)."""
    expected = (f"expected a table file, a directory with {MERGED_NAME} or per-dataset *.csv files, "
                "or <root>/<dataset>[+<dataset>...]")
    files = itertools.islice(root.rglob("*"), 5_000)  # bounded: this only words a message
    n_images = sum(1 for p in files if p.suffix.lower() in IMAGE_EXTENSIONS + (".gif", ".bmp"))
    sibling = root.parent / f"{root.name}.csv"
    merged = root.parent / MERGED_NAME
    if merged.is_file() and not sibling.is_file():
        return (f"{root} is an image folder of the merged table {merged} ({n_images} image(s)), not a "
                f"table: pass --data {root.parent} or --data {merged}; {expected}")
    if sibling.is_file():
        return (f"{root} is the image folder of dataset {root.name!r} ({n_images} image(s)), not a table: "
                f"its table is {sibling}; pass --data {sibling} (this dataset) or --data {root.parent} "
                f"(every dataset there); {expected}")
    if n_images:
        return f"{root} holds {n_images} image file(s) and no table: {expected}"
    return f"{root}: no {MERGED_NAME} and no per-dataset *.csv files in this directory; {expected}"
