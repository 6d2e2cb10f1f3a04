"""Validation: each malformed-table case raises once, naming the file, the column and the rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmroute.data import OutcomeTable, TableValidationError, load_table, validate_table


def _frame(n: int = 8) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"i{k}" for k in range(n)], "question": [f"q{k}" for k in range(n)],
                         "a_correct": [1.0, 0.0] * (n // 2), "a_cost": [0.5] * n,
                         "b_correct": [0.0, 1.0] * (n // 2), "b_cost": [2.0] * n})


def _problems(tmp_path: Path, frame: pd.DataFrame, name: str = "t.csv") -> TableValidationError:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    with pytest.raises(TableValidationError) as info:
        load_table(path)
    assert str(path) in str(info.value)  # the message names the file
    return info.value


def test_valid_table_passes(tmp_path: Path) -> None:
    path = tmp_path / "ok.csv"
    _frame().to_csv(path, index=False)
    assert load_table(path).n_instances == 8


def test_no_model_pairs(tmp_path: Path) -> None:
    err = _problems(tmp_path, pd.DataFrame({"question": ["a"], "score": [1.0]}))
    assert "no model columns found" in str(err) and "'score'" in str(err)


def test_correct_without_cost_and_cost_without_correct(tmp_path: Path) -> None:
    frame = _frame().drop(columns=["b_cost"]).assign(c_cost=1.0)
    err = _problems(tmp_path, frame)
    assert any("column 'b_correct'" in p and "no 'b_cost'" in p for p in err.problems)
    assert any("column 'c_cost'" in p and "no 'c_correct'" in p for p in err.problems)


def test_negative_and_non_finite_costs(tmp_path: Path) -> None:
    frame = _frame()
    frame.loc[[2, 5], "a_cost"] = -1.0
    frame.loc[3, "b_cost"] = np.inf
    frame.loc[6, "b_cost"] = np.nan  # outcome present, cost missing
    err = _problems(tmp_path, frame)
    text = str(err)
    assert "column 'a_cost': negative cost" in text and "rows 2, 5" in text
    assert "column 'b_cost': infinite cost at row 3" in text
    assert "column 'b_cost': cost missing (NaN) where 'b_correct' has an outcome, at row 6" in text


def test_nan_cost_is_allowed_where_the_outcome_is_missing(tmp_path: Path) -> None:
    frame = _frame()
    frame.loc[4, ["a_correct", "a_cost"]] = np.nan
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    table = load_table(path)
    assert table.missing[4, 0] and table.missing.sum() == 1


def test_correctness_outside_unit_interval(tmp_path: Path) -> None:
    frame = _frame()
    frame.loc[1, "a_correct"] = 1.5
    frame.loc[7, "a_correct"] = -0.2
    err = _problems(tmp_path, frame)
    assert "column 'a_correct': correctness outside [0, 1] (e.g. 1.5, -0.2) at rows 1, 7" in str(err)


def test_non_numeric_outcomes(tmp_path: Path) -> None:
    frame = _frame().astype({"a_correct": object})
    frame.loc[2, "a_correct"] = "yes"
    err = _problems(tmp_path, frame)
    assert "column 'a_correct': non-numeric values (e.g. 'yes') at row 2" in str(err)


def test_duplicate_ids(tmp_path: Path) -> None:
    frame = _frame()
    frame.loc[5, "id"] = "i1"
    err = _problems(tmp_path, frame)
    assert "column 'id': 1 duplicate id(s) ('i1') at rows 1, 5" in str(err)


def test_empty_table(tmp_path: Path) -> None:
    err = _problems(tmp_path, _frame().iloc[:0])
    assert "table is empty (0 rows)" in str(err)


def test_missing_images_error_warn_ignore(tmp_path: Path, caplog) -> None:
    frame = _frame(4).assign(img_path=["x.png", "", "y.png", "z.png"])
    (tmp_path / "y.png").write_bytes(b"not checked for content")
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(TableValidationError, match=r"column 'img_path': 2 image file\(s\) do not exist .* rows 0, 3"):
        load_table(path)
    with caplog.at_level("WARNING"):
        table = load_table(path, images="warn")
    assert "2 image file(s) do not exist" in caplog.text
    assert list(table.has_images) == [False, False, True, False]
    assert list(load_table(path, images="ignore").has_images) == [True, False, True, True]


def test_all_problems_are_collected_into_one_error(tmp_path: Path) -> None:
    frame = _frame()
    frame.loc[0, "a_cost"] = -3.0
    frame.loc[1, "b_correct"] = 2.0
    frame.loc[2, "id"] = "i3"
    err = _problems(tmp_path, frame)
    assert len(err.problems) == 3
    assert str(err).count("\n  - ") == 3


def test_rows_are_truncated_after_five(tmp_path: Path) -> None:
    frame = _frame(20)
    frame["a_cost"] = -1.0
    err = _problems(tmp_path, frame)
    assert "rows 0, 1, 2, 3, 4 and 15 more" in str(err)


def test_validate_table_on_memory_table_reports_file_rows() -> None:
    table = OutcomeTable(ids=["a", "b", "c"], datasets=["d"] * 3, questions=["x"] * 3, models=["m"],
                         correct=[[1.0], [0.0], [3.0]], cost=[[1.0], [1.0], [1.0]], source="mem",
                         extra={"row": np.array([10, 11, 12])})
    with pytest.raises(TableValidationError, match=r"(?s)mem: 1 validation problem.*row 12"):
        validate_table(table)
    assert validate_table(table.subset([0, 1])) is not None


def test_per_dataset_problems_name_each_file(tmp_path: Path) -> None:
    _frame().to_csv(tmp_path / "good.csv", index=False)
    bad = _frame()
    bad.loc[3, "a_cost"] = -1.0
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(TableValidationError, match=r"bad\.csv: column 'a_cost': negative cost .* row 3"):
        load_table(tmp_path / "good+bad")
