"""Malformed tables through the loaders, validation and ``mmroute data validate``: a valid table or
one clear error naming the file; never a traceback, never a table that breaks its own invariants."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import event, given
from hypothesis import strategies as st

from fuzz_strategies import RAW_BYTES, TABLE_SUFFIXES, fuzz_settings, table_frames
from mmroute.cli import main
from mmroute.data import TableValidationError, load_table


def _write(frame: pd.DataFrame, path: Path) -> Path:
    suffix = path.suffix
    try:
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        elif suffix == ".tsv":
            frame.to_csv(path, sep="\t", index=False)
        elif suffix == ".parquet":
            frame.to_parquet(path, index=False)
        elif suffix == ".jsonl":
            frame.to_json(path, orient="records", lines=True)
        else:
            frame.to_json(path, orient="records")
    except Exception:  # e.g. parquet refuses mixed-type object columns: a CSV says the same
        path = path.with_suffix(".csv")
        frame.to_csv(path, index=False)
    return path


def _check_valid(table) -> None:
    assert table.n_instances > 0 and table.n_models > 0
    c, k = table.correct, table.cost
    assert np.all(np.isnan(c) | ((c >= 0) & (c <= 1)))
    assert np.all(np.isnan(k) | ((k >= 0) & np.isfinite(k)))
    assert not np.any(np.isnan(k) & ~np.isnan(c))
    assert len(set(table.ids)) == table.n_instances
    summary = table.summary()
    json.dumps(summary, allow_nan=False)  # no NaN: unknown accuracies are None
    for value in summary["model_accuracy"].values():
        assert value is None or (math.isfinite(value) and 0 <= value <= 1)


def _load(path: Path):
    try:
        table = load_table(path, images="ignore")
        event("valid table")
        return table, None
    except (TableValidationError, ValueError, FileNotFoundError) as exc:
        event(f"refused: {type(exc).__name__}")
        message = str(exc)
        assert message.strip(), f"empty error message for {path}"
        assert str(path) in message or path.name in message, f"error does not name the file: {message!r}"
        return None, exc


@fuzz_settings(120)
@given(frame=table_frames(), suffix=TABLE_SUFFIXES)
def test_fuzzed_tables_load_or_fail_clearly(frame, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(frame, Path(tmp) / f"table{suffix}")
        table, _ = _load(path)
        if table is not None:
            _check_valid(table)


@fuzz_settings(60)
@given(data=RAW_BYTES, suffix=st.sampled_from([".csv", ".tsv", ".json", ".jsonl", ".parquet"]))
def test_fuzzed_bytes_load_or_fail_clearly(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"raw{suffix}"
        path.write_bytes(data)
        table, _ = _load(path)
        if table is not None:
            _check_valid(table)


@fuzz_settings(40)
@given(frame=table_frames())
def test_fuzzed_tables_through_data_validate(frame):
    import contextlib
    import io

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        frame.to_csv(path, index=False)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["data", "validate", str(path), "--images", "ignore", "--json"])
        assert code in (0, 1)
        assert "Traceback" not in err.getvalue()
        if code == 0:
            summary = json.loads(out.getvalue())  # strict JSON: no bare NaN
            assert summary["n_instances"] > 0
        else:
            assert err.getvalue().startswith("mmroute data validate: ") and str(path) in err.getvalue()
