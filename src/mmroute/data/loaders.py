"""Load an outcome table from whatever the user points at.

:func:`load_table` dispatches on its argument:

- ``synthetic`` / ``synthetic:n=2000,seed=0,image_size=64``: the embedded default, generated once into
  a cache directory (:mod:`mmroute.data.synthetic`) and loaded from there;
- a directory: its ``MMR_Bench.csv`` (merged MMR-Bench format) if present, else the per-dataset CSVs
  listed in a synthetic manifest, else every ``*.csv`` in it, each as one dataset;
- ``<root>/<name>`` or ``<root>/<a>+<b>`` (not an existing file): the named datasets, from
  ``<root>/MMR_Bench.csv`` when all names are MMR-Bench datasets and that file exists, else from the
  per-dataset CSVs ``<root>/<name>.csv`` (:mod:`mmroute.data.mmrbench`);
- a file (``.csv``, ``.tsv``, ``.parquet``, ``.json``, ``.jsonl``, ``.pkl``): the merged MMR-Bench
  format if it is named ``MMR_Bench.csv``; RouterBench's wide format if it has ``<M>|total_cost``
  columns; otherwise the ``<M>_correct`` / ``<M>_cost`` convention (MMR-Bench per-dataset CSVs and
  generic tables alike).

Every table keeps ``extra["row"]``: the 0-based row position in the source file (for several
per-dataset CSVs, the position in their concatenation, in load order), so that row-aligned
precomputed embeddings can be matched after subsetting. Every other non-model column is kept in
``extra`` under its own name.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from mmroute.data.images import ImageRoot
from mmroute.data.table import OutcomeTable
from mmroute.data.validate import (
    TableValidationError,
    check_image_policy,
    format_rows,
    model_column_problems,
    validate_table,
)

__all__ = ["load_table", "read_frame", "frame_to_table", "query_inputs", "image_base_for", "FrameTable",
           "filter_datasets", "concat_tables", "canon", "parse_dataset_filter", "outside_image_problems"]

log = logging.getLogger(__name__)

# Recognised column roles, first present wins.
ID_COLUMNS = ("id", "sample_id", "dataset_idx", "question_id", "uid", "index")
DATASET_COLUMNS = ("dataset", "dataset_name", "category", "eval_name", "task", "subject")
QUESTION_COLUMNS = ("question", "prompt", "query", "text", "input")
IMAGE_COLUMNS = ("img_path", "image_path", "image")
CONTEXT_COLUMNS = ("options", "choices", "context", "hint")
ROUTERBENCH_COST = "|total_cost"
ROUTERBENCH_DROP = ("|model_response",)
SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".json", ".jsonl", ".pkl", ".pickle")


def canon(name: str) -> str:
    """Case- and punctuation-insensitive form of a dataset name (``SEEDBench2_Plus`` -> ``seedbench2plus``)."""
    return re.sub(r"[^a-z0-9]+", "", str(name).lower())


def parse_dataset_filter(dataset: str | Sequence[str] | None) -> list[str] | None:
    """``"a+b"`` or ``["a", "b"]`` -> ``["a", "b"]``; None stays None."""
    if dataset is None:
        return None
    parts = dataset.split("+") if isinstance(dataset, str) else [str(d) for d in dataset]
    names = [p.strip() for p in parts if p.strip()]
    if not names:
        raise ValueError(f"dataset filter {dataset!r} names no dataset")
    return names


def read_frame(path: str | Path) -> pd.DataFrame:
    """Read a table file into a DataFrame, choosing the reader by suffix.

    Pickles (``.pkl``, RouterBench's distribution format) can run code when loaded: only load
    files you trust.
    """
    path = Path(path)
    try:
        return _read_frame(path)
    except pd.errors.EmptyDataError:
        raise TableValidationError(str(path), [
            "the file is empty (no header row); expected a header with a question column and "
            "'<model>_correct' / '<model>_cost' pairs"]) from None
    except FileNotFoundError:
        raise
    except (ValueError, OSError, TypeError, pd.errors.ParserError) as exc:
        # Parser errors (pandas, pyarrow, json) rarely say which file they were reading.
        if isinstance(exc, TableValidationError) or str(path) in str(exc):
            raise
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TableValidationError(str(path), [f"cannot read the file as {path.suffix or 'a table'} "
                                               f"({type(exc).__name__}: {detail})"]) from None


def _read_frame(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    id_dtypes = {c: str for c in ID_COLUMNS}  # keep "007" as "007", not 7
    if suffix == ".csv":
        return pd.read_csv(path, dtype=id_dtypes)
    if suffix == ".tsv":
        return pd.read_csv(path, sep="\t", dtype=id_dtypes)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=id_dtypes)
    if suffix == ".json":
        return pd.read_json(path, dtype=id_dtypes)
    if suffix in (".pkl", ".pickle"):
        obj = pd.read_pickle(path)
        if not isinstance(obj, pd.DataFrame):
            raise ValueError(f"{path}: expected a pickled pandas DataFrame, got {type(obj).__name__}")
        return obj
    raise ValueError(f"{path}: unsupported file type {suffix!r}; expected one of {list(SUFFIXES)}")


def _first_present(df: pd.DataFrame, candidates: Sequence[str]) -> str | None:
    return next((c for c in candidates if c in df.columns), None)


def _is_missing(v: object) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and np.isnan(v))


def _str_column(values: pd.Series) -> np.ndarray:
    return np.array(["" if _is_missing(v) else str(v) for v in values.tolist()], dtype=object)


def _numeric(df: pd.DataFrame, col: str, problems: list[str], rows: np.ndarray) -> np.ndarray:
    """Column as float64; values that are present but not numbers are reported (by file row)."""
    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce")
    bad = np.flatnonzero(num.isna().to_numpy() & raw.notna().to_numpy())
    if bad.size:
        examples = ", ".join(repr(v) for v in raw.iloc[bad[:3]].tolist())
        problems.append(f"column '{col}': non-numeric values (e.g. {examples}) at {format_rows(rows[bad])}")
    return num.to_numpy(dtype=np.float64)


def _resolve_image(value: str, base: Path) -> str:
    # Resolved (symlinks followed) so that outside_image_problems sees where a path really leads.
    if not value:
        return ""
    p = Path(value).expanduser()
    return str((p if p.is_absolute() else base / p).resolve())


def outside_image_problems(table: OutcomeTable, image_root: ImageRoot, column: str | None) -> list[str]:
    """One message for the rows whose (resolved) image path leaves ``image_root``; [] when none do."""
    if table.image_paths is None or image_root.allow_outside:
        return []
    bad = [i for i, p in enumerate(table.image_paths) if isinstance(p, str) and not image_root.contains(p)]
    if not bad:
        return []
    raw = table.extra.get(column) if column else None
    shown = []
    for i in bad[:3]:
        original = "" if raw is None or _is_missing(raw[i]) else str(raw[i])
        resolved = table.image_paths[i]
        shown.append(f"{original!r} -> {resolved!r}" if original and original != resolved else repr(resolved))
    rows = table.extra.get("row")
    file_rows = [int(rows[i]) for i in bad] if rows is not None else bad
    return [image_root.outside_problem(column or "img_path", file_rows, shown)]


def query_inputs(df: pd.DataFrame, image_base: Path) -> tuple[list[str], list[str | None] | None]:
    """The texts and image paths an encoder sees for the rows of a table frame, exactly as
    :func:`frame_to_table` + :meth:`OutcomeTable.texts` build them (for engines that embed a
    table chunk by chunk, e.g. on Spark): ``(texts, image paths or None)``; a row without an image
    has None."""
    qcol = _first_present(df, QUESTION_COLUMNS)
    if qcol is None:
        raise ValueError(f"no question column: expected one of {list(QUESTION_COLUMNS)}, got {list(df.columns)}")
    questions = _str_column(df[qcol])
    ccol = _first_present(df, CONTEXT_COLUMNS)
    if ccol is None:
        texts = [str(q) for q in questions]
    else:
        texts = [f"{q}\n{c}" if c not in (None, "") and c == c else str(q)
                 for q, c in zip(questions, _str_column(df[ccol]))]
    icol = _first_present(df, IMAGE_COLUMNS)
    if icol is None:
        return texts, None
    paths = [_resolve_image(v, image_base) for v in _str_column(df[icol])]
    return texts, [p or None for p in paths]


def image_base_for(path: Path) -> Path:
    """Where relative image paths of the table file ``path`` are resolved (as :func:`load_table` does)."""
    return path.parent / path.stem if (path.parent / path.stem).is_dir() else path.parent


class FrameTable(NamedTuple):
    """What :func:`frame_to_table` built, with what validation messages need to quote."""

    table: OutcomeTable | None  # None when the columns are too broken to build a table
    column_names: dict[str, tuple[str, str]]  # model -> (correctness column, cost column)
    id_column: str  # the column ids came from ("row" when none)
    problems: list[str]  # column-level problems: unpaired columns, non-numeric values, no question
    image_column: str | None = None  # the column image paths came from


def frame_to_table(df: pd.DataFrame, *, source: str, default_dataset: str, image_base: Path,
                   id_prefix: str | None = None, rows: np.ndarray | None = None,
                   dataset_columns: Sequence[str] = DATASET_COLUMNS) -> FrameTable:
    """Build an :class:`OutcomeTable` from a frame in the pairs or RouterBench convention.

    Datasets come from the first of ``dataset_columns`` present, else ``default_dataset``; relative
    image paths are resolved against ``image_base``; ``id_prefix`` (per-dataset CSVs) makes ids
    unique across datasets (``ocr_12``); ``rows`` gives the frame's row positions in its file when
    it was filtered (default ``0..n-1``), kept as ``extra["row"]``. The table is not value-validated here (see
    :func:`~mmroute.data.validate.validate_table`).
    """
    columns = [str(c) for c in df.columns]
    df = df.set_axis(columns, axis=1)
    if any(c.endswith(ROUTERBENCH_COST) for c in columns):
        models, problems = _routerbench_models(columns)
        names = {m: (m, f"{m}{ROUTERBENCH_COST}") for m in models}
        model_cols = set(columns) & ({c for m in models for c in names[m]}
                                     | {c for c in columns if c.endswith(ROUTERBENCH_DROP)})
    else:
        models, problems = model_column_problems(columns)
        names = {m: (f"{m}_correct", f"{m}_cost") for m in models}
        model_cols = {c for c in columns if c.endswith("_correct") or c.endswith("_cost")}

    qcol = _first_present(df, QUESTION_COLUMNS)
    if qcol is None:
        problems.append(f"no question column: expected one of {list(QUESTION_COLUMNS)}")
    idcol = _first_present(df, ID_COLUMNS)
    if not models or qcol is None:
        return FrameTable(None, names, idcol or "row", problems)

    n = len(df)
    rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    correct = np.column_stack([_numeric(df, names[m][0], problems, rows) for m in models]) if n else \
        np.zeros((0, len(models)))
    cost = np.column_stack([_numeric(df, names[m][1], problems, rows) for m in models]) if n else \
        np.zeros((0, len(models)))

    raw_ids = _str_column(df[idcol]) if idcol else np.array([str(i) for i in range(n)], dtype=object)
    if id_prefix is not None:
        raw_ids = np.array([r if r.startswith(f"{id_prefix}_") else f"{id_prefix}_{r}" for r in raw_ids],
                           dtype=object)
    dcol = _first_present(df, dataset_columns)
    datasets = _str_column(df[dcol]) if dcol else np.full(n, default_dataset, dtype=object)
    icol = _first_present(df, IMAGE_COLUMNS)
    image_paths = None
    if icol is not None:
        resolved, unusable = [], []
        for i, value in enumerate(_str_column(df[icol])):
            try:
                resolved.append(_resolve_image(value, image_base))
            except (ValueError, OSError, RuntimeError):  # a NUL byte, a symlink loop, a name too long
                resolved.append("")
                unusable.append(i)
        if unusable:
            problems.append(f"column '{icol}': unusable image path(s) (e.g. "
                            f"{str(df[icol].iloc[unusable[0]])!r}) at {format_rows(rows[unusable])}")
        image_paths = np.array(resolved, dtype=object)
    ccol = _first_present(df, CONTEXT_COLUMNS)
    contexts = _str_column(df[ccol]) if ccol else None

    extra: dict[str, np.ndarray] = {}
    for c in columns:
        if c in model_cols or c == qcol:
            continue
        extra["source_row" if c == "row" else c] = df[c].to_numpy()
    extra["row"] = rows
    table = OutcomeTable(ids=raw_ids, datasets=datasets, questions=_str_column(df[qcol]), models=models,
                         correct=correct, cost=cost, image_paths=image_paths, contexts=contexts,
                         source=source, extra=extra)
    return FrameTable(table, names, idcol or "row", problems, icol)


def _routerbench_models(columns: list[str]) -> tuple[list[str], list[str]]:
    colset = set(columns)
    costed = [c[: -len(ROUTERBENCH_COST)] for c in columns if c.endswith(ROUTERBENCH_COST)]
    models = [m for m in costed if m in colset]
    problems = [f"column '{m}{ROUTERBENCH_COST}': model {m!r} has no score column '{m}'"
                for m in costed if m not in colset]
    problems += [f"column '{c}': model {c[: -len(suffix)]!r} has no '{c[: -len(suffix)]}{ROUTERBENCH_COST}' column"
                 for c in columns for suffix in ROUTERBENCH_DROP
                 if c.endswith(suffix) and f"{c[: -len(suffix)]}{ROUTERBENCH_COST}" not in colset]
    return models, problems


def concat_tables(tables: Sequence[OutcomeTable], source: str) -> OutcomeTable:
    """Stack tables row-wise; models are the union (first-seen order), absent outcomes are NaN.

    ``extra["row"]`` becomes the position in the concatenation.
    """
    if len(tables) == 1:
        from dataclasses import replace

        return replace(tables[0], source=source)
    models: list[str] = []
    for t in tables:
        models += [m for m in t.models if m not in models]
    blocks_c, blocks_k = [], []
    for t in tables:
        c = np.full((t.n_instances, len(models)), np.nan)
        k = np.full((t.n_instances, len(models)), np.nan)
        cols = [models.index(m) for m in t.models]
        c[:, cols], k[:, cols] = t.correct, t.cost
        blocks_c.append(c)
        blocks_k.append(k)

    def cat_opt(attr: str) -> np.ndarray | None:
        if all(getattr(t, attr) is None for t in tables):
            return None
        return np.concatenate([getattr(t, attr) if getattr(t, attr) is not None
                               else np.full(t.n_instances, "", dtype=object) for t in tables])

    keys: list[str] = []
    for t in tables:
        keys += [k for k in t.extra if k not in keys]
    extra = {k: np.concatenate([np.asarray(t.extra[k], dtype=object) if k in t.extra
                                else np.full(t.n_instances, None, dtype=object) for t in tables])
             for k in keys if k != "row"}
    extra["row"] = np.arange(sum(t.n_instances for t in tables), dtype=np.int64)
    return OutcomeTable(
        ids=np.concatenate([t.ids for t in tables]), datasets=np.concatenate([t.datasets for t in tables]),
        questions=np.concatenate([t.questions for t in tables]), models=tuple(models),
        correct=np.concatenate(blocks_c), cost=np.concatenate(blocks_k),
        image_paths=cat_opt("image_paths"), contexts=cat_opt("contexts"), source=source, extra=extra)


def filter_datasets(table: OutcomeTable, names: Sequence[str]) -> OutcomeTable:
    """Rows whose dataset matches one of ``names`` (compared with :func:`canon`)."""
    available = table.dataset_names
    by_canon = {canon(d): d for d in available}
    unknown = [n for n in names if canon(n) not in by_canon]
    if unknown:
        raise ValueError(f"{table.source}: unknown dataset(s) {unknown}; the table has {available}")
    wanted = {by_canon[canon(n)] for n in names}
    return table.subset(np.array([d in wanted for d in table.datasets], dtype=bool))


def load_file(path: Path, *, images: str, dataset: Sequence[str] | None,
              image_root: ImageRoot | None = None) -> OutcomeTable:
    """One table file (not the merged MMR-Bench CSV), validated; images confined to ``image_root``
    (default: the file's folder)."""
    df = read_frame(path)
    stem = path.stem
    image_root = image_root or ImageRoot.for_table(path.parent)
    built = frame_to_table(df, source=str(path), default_dataset=stem, image_base=image_base_for(path))
    if built.table is None:
        raise TableValidationError(str(path), built.problems)
    problems = built.problems + outside_image_problems(built.table, image_root, built.image_column)
    table = validate_table(built.table, images=images, column_names=built.column_names,
                           id_column=built.id_column, extra_problems=problems)
    return filter_datasets(table, dataset) if dataset else table


def load_table(path_or_spec: str | os.PathLike[str], *, images: str = "error",
               dataset: str | Sequence[str] | None = None, cache_dir: str | os.PathLike[str] | None = None,
               image_root: str | os.PathLike[str] | None = None, allow_outside_images: bool = False,
               ) -> OutcomeTable:
    """Load and validate an outcome table (see the module docstring for the accepted forms).

    Parameters
    ----------
    path_or_spec : str or path
        A file, a directory, ``<root>/<name>[+<name>...]``, or ``synthetic[:key=value,...]``.
    images : {"error", "warn", "ignore"}
        What to do with image paths that name no file: fail, warn and treat those instances as
        text-only, or not check.
    dataset : str or list of str, optional
        Keep only these datasets (``"ocrbench+mathvista"`` or a list; case and punctuation ignored).
    cache_dir : path, optional
        Where ``synthetic`` specs are generated (default :func:`~mmroute.data.synthetic.default_cache_dir`).
    image_root : path, optional
        The folder every image path must resolve into (default: the folder holding the table
        file, or the directory for the directory layouts). Relative paths are still resolved
        against the table's own image folder.
    allow_outside_images : bool
        Accept image paths that resolve outside the image root (``../..``, absolute paths,
        symlinks out): only for tables you trust.

    Returns
    -------
    OutcomeTable
        With ``extra["row"]`` = row position in the source file.

    Raises
    ------
    TableValidationError
        Listing every problem found (file, column, rows).
    FileNotFoundError
        When the path names nothing loadable.
    """
    from mmroute.data import mmrbench, synthetic

    check_image_policy(images)
    names = parse_dataset_filter(dataset)
    spec = os.fspath(path_or_spec)

    def root(folder: Path) -> ImageRoot:
        return ImageRoot.for_table(folder, image_root, allow_outside_images)

    # An existing path wins over the spec (e.g. a folder written by `mmroute data synth synthetic`).
    if synthetic.is_synthetic_spec(spec) and not os.path.exists(spec):
        path = synthetic.ensure_synthetic(spec, cache_dir=cache_dir)
        table = mmrbench.load_directory(path, images=images, dataset=names, image_root=root(path))
        log.info("loaded %s: %d instances x %d models", spec, table.n_instances, table.n_models)
        return table
    path = Path(spec).expanduser()
    if path.is_dir():
        table = mmrbench.load_directory(path, images=images, dataset=names, image_root=root(path))
    elif path.is_file():
        if path.name.lower() == mmrbench.MERGED_NAME.lower():
            table = mmrbench.load_merged(path, images=images, dataset=names, image_root=root(path.parent))
        else:
            table = load_file(path, images=images, dataset=names, image_root=root(path.parent))
    else:
        table = mmrbench.load_named(path.parent, path.name.split("+"), images=images, dataset=names,
                                    image_root=root(path.parent) if path.parent.is_dir() else None)
    log.info("loaded %s: %d instances x %d models", spec, table.n_instances, table.n_models)
    return table


