"""Splits (in / out / column) and the MMR-Bench modality modes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from mmroute.data import MODES, Mode, OutcomeTable, apply_mode, split_column, split_in, split_out


def _table(n: int = 12) -> OutcomeTable:
    rng = np.random.default_rng(0)
    datasets = np.array(["OCRBench", "MathVista", "MMStar"])[np.arange(n) % 3]
    return OutcomeTable(
        ids=[f"i{k}" for k in range(n)], datasets=datasets, questions=[f"question {k}" for k in range(n)],
        models=["a", "b"], correct=rng.integers(0, 2, (n, 2)).astype(float), cost=rng.uniform(0, 1, (n, 2)),
        image_paths=[f"/img/{k}.png" if k % 4 else "" for k in range(n)],
        contexts=[f"ctx {k}" for k in range(n)], source="mem",
        extra={"split": np.array(["train", "test", "val"] * (n // 3), dtype=object), "row": np.arange(n)})


@pytest.mark.parametrize("n,frac,seed", [(10, 0.2, 42), (97, 0.8, 0), (1000, 0.5, 7), (12032, 0.2, 42)])
def test_split_in_is_exactly_train_test_split(n: int, frac: float, seed: int) -> None:
    train, test = split_in(n, frac, seed)
    ref_train, ref_test = train_test_split(np.arange(n), train_size=frac, shuffle=True, random_state=seed)
    np.testing.assert_array_equal(train, ref_train)
    np.testing.assert_array_equal(test, ref_test)
    assert train.dtype == np.int64


def test_split_in_accepts_a_table_and_validates_the_fraction() -> None:
    table = _table()
    train, test = split_in(table, 0.25, seed=3)
    assert len(train) == 3 and len(test) == 9 and set(train) | set(test) == set(range(12))
    for bad in (0.0, 1.0, 1.5, -0.1, "0.2", 12, True):
        with pytest.raises(ValueError, match="train_frac"):
            split_in(table, bad)


def test_split_out_by_dataset_names() -> None:
    table = _table()
    train, test = split_out(table, "ocrbench+mathvista", ["MMStar"])
    assert set(table.datasets[train]) == {"OCRBench", "MathVista"}
    assert set(table.datasets[test]) == {"MMStar"}
    assert np.all(np.diff(train) > 0)
    train, test = split_out(table, ["MathVista"])  # test defaults to every other dataset
    assert set(table.datasets[test]) == {"OCRBench", "MMStar"}
    with pytest.raises(ValueError, match=r"unknown train dataset\(s\) \['ChartQA'\]"):
        split_out(table, "ChartQA")
    with pytest.raises(ValueError, match="both the train and the test side"):
        split_out(table, "MMStar", "mmstar")


def test_split_column_reads_extra_and_leaves_other_values_out() -> None:
    table = _table()
    train, test = split_column(table, "split")
    np.testing.assert_array_equal(train, [0, 3, 6, 9])
    np.testing.assert_array_equal(test, [1, 4, 7, 10])
    with pytest.raises(KeyError, match="split column 'fold' not in the table"):
        split_column(table, "fold")
    with pytest.raises(ValueError, match="both must be non-empty"):
        split_column(table, "split", train_value="dev")


@pytest.mark.parametrize("value", [22, "12", " 31 ", Mode(3, 3)])
def test_mode_parse(value) -> None:
    mode = Mode.parse(value)
    assert int(str(mode)) in MODES


@pytest.mark.parametrize("value", [24, "4", "123", 0, "ab", None, 2.2, True])
def test_mode_parse_rejects_bad_values(value) -> None:
    with pytest.raises(ValueError, match=r"invalid modality mode .*expected one of \[11, 12, 13, 21"):
        Mode.parse(value)


def test_mode_sides() -> None:
    mode = Mode.parse(13)
    assert mode.uses_text("train") and not mode.uses_image("train")
    assert mode.uses_image("test") and not mode.uses_text("test")
    assert mode.describe() == "train text, test image"
    with pytest.raises(ValueError, match="side must be one of"):
        mode.uses_text("val")


def test_apply_mode_blanks_the_unused_modality() -> None:
    table = _table()
    text_only = apply_mode(table, "train", 12)
    assert text_only.image_paths is None and not text_only.has_images.any()
    assert list(text_only.questions) == list(table.questions) and text_only.contexts is not None
    both = apply_mode(table, "test", 12)
    assert both is table
    image_only = apply_mode(table, "test", "13")
    assert set(image_only.questions) == {""} and image_only.contexts is None
    assert list(image_only.image_paths) == list(table.image_paths)
    assert image_only.texts() == [""] * table.n_instances
    # the pair form applies X to the train table and Y to the test table
    train, test = apply_mode(table.subset([0, 1]), table.subset([2, 3]), 31)
    assert set(train.questions) == {""} and test.image_paths is None
    # the input is never modified
    assert table.image_paths is not None and table.questions[0] == "question 0"
