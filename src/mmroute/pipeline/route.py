"""Batch routing: a file of queries through a logged router model, to a file of decisions.

``route_file`` reads queries (JSON lines, CSV or Parquet) and runs them through the same MLflow
pyfunc model that ``mlflow models serve`` serves (``mlflow.pyfunc.load_model``), in chunks, with a
progress bar, then writes one decision row per query (Parquet, CSV or JSON lines, by the output's
suffix). The output is written to a temporary name and moved into place only when every chunk has
been routed, so a failure leaves no partial file.

Query columns: those of the served model (``question``, optional ``image`` as base64 and
``context``, optional ``id``; or ``features``). An ``image_path`` column (paths relative to the
input file) is read and sent as base64 ``image``. Other columns are not sent to the model.

:func:`route_frame` is the engine-agnostic core (a pandas frame in, decisions out) that other
engines reuse per partition.
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["INPUT_FORMATS", "ROUTE_PARAMS", "read_queries", "route_frame", "route_file", "write_decisions",
           "route_params"]

log = logging.getLogger(__name__)

INPUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet",
                 ".pq": "parquet"}
QUERY_COLUMNS = ("id", "question", "image", "context", "features")
ROUTE_PARAMS = ("budget", "tradeoff", "target_cost", "target_quality", "models", "fallback")
DEFAULT_CHUNK = 512


def _format(path: Path, what: str) -> str:
    fmt = INPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{what} {path}: unknown format {path.suffix!r}; expected one of "
                         f"{sorted(INPUT_FORMATS)}")
    return fmt


def read_queries(path: str | Path):
    """The queries of a ``.jsonl`` / ``.csv`` / ``.parquet`` file as a DataFrame of model inputs."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    fmt = _format(path, "input file")
    if fmt == "jsonl":
        frame = pd.read_json(path, lines=True, dtype={"id": str})
    elif fmt == "csv":
        frame = pd.read_csv(path, dtype={"id": str, "question": str, "context": str}, keep_default_na=False,
                            na_values={"image": [""], "context": [""], "image_path": [""]})
    else:
        frame = pd.read_parquet(path)
    if frame.empty:
        raise ValueError(f"input file {path} holds no queries")
    if "image_path" in frame.columns:
        if "image" in frame.columns:
            raise ValueError(f"input file {path} has both 'image' and 'image_path'; give one")
        frame["image"] = [_b64(path.parent, p) for p in frame.pop("image_path")]
    if "id" in frame.columns:
        frame["id"] = frame["id"].astype(str)
    keep = [c for c in QUERY_COLUMNS if c in frame.columns]
    if not keep or ("question" not in keep and "features" not in keep):
        raise ValueError(f"input file {path} has columns {list(frame.columns)}; expected 'question' "
                         "(with optional 'image' / 'image_path', 'context', 'id') or 'features'")
    dropped = sorted(set(frame.columns) - set(keep))
    if dropped:
        log.info("not sent to the model: columns %s", dropped)
    return frame[keep].reset_index(drop=True)


def _b64(root: Path, value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None
    file = (root / str(value)) if not os.path.isabs(str(value)) else Path(str(value))
    if not file.is_file():
        raise FileNotFoundError(f"image_path {value!r} names no file (looked for {file})")
    return base64.b64encode(file.read_bytes()).decode("ascii")


def route_params(*, budget: float | None = None, tradeoff: float | None = None,
                 target_cost: float | None = None, target_quality: float | None = None,
                 models: str | list[str] | None = None, fallback: str | None = None) -> dict[str, Any]:
    """The request params, checked: at most one rule param; ``models`` as a comma-separated string."""
    rules = {k: v for k, v in (("budget", budget), ("tradeoff", tradeoff), ("target_cost", target_cost),
                               ("target_quality", target_quality)) if v is not None}
    if len(rules) > 1:
        raise ValueError(f"give at most one of budget, tradeoff, target_cost, target_quality; got {sorted(rules)}")
    params: dict[str, Any] = {k: float(v) for k, v in rules.items()}
    if models is not None:
        params["models"] = models if isinstance(models, str) else ",".join(map(str, models))
    if fallback is not None:
        params["fallback"] = fallback
    return params


def route_frame(model: Any, frame, params: dict[str, Any] | None = None, *, chunk_size: int = DEFAULT_CHUNK,
                progress: bool = False):
    """Decisions for every row of ``frame`` (pandas), ``chunk_size`` rows per ``model.predict``.

    ``model`` is a loaded pyfunc model (``mlflow.pyfunc.load_model``). Returns one DataFrame, row
    order kept. Any bad row fails the whole call (the model's message names it, offset by chunk).
    """
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from tqdm.auto import tqdm

    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    params = dict(params or {})
    unknown = sorted(set(params) - set(ROUTE_PARAMS))
    if unknown:
        raise ValueError(f"unknown route params {unknown}; expected any of {list(ROUTE_PARAMS)}")
    n = len(frame)
    parts = []
    with tqdm(total=n, unit="query", desc="routing", disable=not progress) as bar:
        for start in range(0, n, chunk_size):
            chunk = frame.iloc[start:start + chunk_size].reset_index(drop=True)
            try:
                out = model.predict(chunk, params=params or None)
            except MlflowException as exc:  # the model's 400s: bad rows or params, named
                raise ValueError(f"rows {start}..{start + len(chunk) - 1}: {exc.message}") from exc
            parts.append(out)
            bar.update(len(chunk))
    if not parts:
        raise ValueError("no queries to route")
    return pd.concat(parts, ignore_index=True)


def write_decisions(decisions, out: str | Path) -> Path:
    """Write decisions to ``out`` (.parquet, .csv or .jsonl) atomically (temporary name, then rename)."""
    out = Path(out)
    fmt = _format(out, "output file")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        if fmt == "parquet":
            decisions.to_parquet(tmp, index=False)
        elif fmt == "csv":
            frame = decisions.copy()
            if "ranking" in frame.columns:
                frame["ranking"] = [",".join(r) for r in frame["ranking"]]
            frame.to_csv(tmp, index=False)
        else:
            decisions.to_json(tmp, orient="records", lines=True)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def route_file(model_uri: str, input_path: str | Path, out: str | Path, params: dict[str, Any] | None = None,
               *, chunk_size: int = DEFAULT_CHUNK, progress: bool = True) -> dict[str, Any]:
    """Route every query of ``input_path`` with the model at ``model_uri`` and write ``out``.

    Returns a JSON-able summary: rows, output path, share of queries per chosen model, mean
    expected cost and accuracy of the operating point (when the model is calibrated).
    """
    import mlflow

    out = Path(out)
    _format(out, "output file")  # a bad output name fails before the model is loaded
    frame = read_queries(input_path)
    model = mlflow.pyfunc.load_model(model_uri)
    decisions = route_frame(model, frame, params, chunk_size=chunk_size, progress=progress)
    write_decisions(decisions, out)
    shares = decisions["model"].value_counts(normalize=True).sort_index()
    summary: dict[str, Any] = {"model_uri": model_uri, "input": str(input_path), "out": str(out),
                               "n_rows": int(len(decisions)), "params": dict(params or {}),
                               "shares": {str(k): round(float(v), 6) for k, v in shares.items()}}
    for key in ("expected_cost", "expected_accuracy"):
        if key in decisions.columns:
            summary[key] = float(decisions[key].iloc[0])
    if "within_target" in decisions.columns:
        summary["within_target"] = bool(decisions["within_target"].all())
    log.info("routed %d queries from %s to %s", len(decisions), input_path, out)
    return summary
