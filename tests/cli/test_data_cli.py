"""``mmroute data validate`` and ``mmroute data synth`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mmroute.cli import data as data_cli
from mmroute.cli import main

REAL_TABLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mmlu_pro_routing.parquet"


def test_synth_then_validate(tmp_path: Path, capsys) -> None:
    out = tmp_path / "syn"
    assert main(["data", "synth", str(out), "--n", "45", "--seed", "2", "--image-size", "16"]) == 0
    assert "wrote 45 instances x 8 models" in capsys.readouterr().out
    assert (out / "ocr.csv").is_file() and any((out / "vqa").glob("*.png"))

    assert data_cli.main(["validate", str(out)]) == 0
    text = capsys.readouterr().out
    assert "45 instances x 8 models" in text
    assert "datasets (3): ocr" in text and "api-pro" in text and "missing outcomes:" in text

    assert data_cli.main(["validate", str(out), "--dataset", "math", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert list(summary["datasets"]) == ["math"] and summary["n_models"] == 8
    assert set(summary["missing_per_model"]) == set(summary["model_accuracy"])


@pytest.mark.parametrize("mutate,expected", [
    (lambda f: f.drop(columns=["b_cost"]), "no 'b_cost' column"),
    (lambda f: f.assign(a_cost=[-1.0, 1.0]), "column 'a_cost': negative cost"),
    (lambda f: f.assign(a_correct=[2.0, 1.0]), "correctness outside [0, 1]"),
    (lambda f: f.assign(id=["x", "x"]), "duplicate id"),
    (lambda f: f.iloc[:0], "table is empty"),
    (lambda f: f.assign(img_path=["gone.png", ""]), "image file(s) do not exist"),
])
def test_validate_malformed_exits_nonzero_naming_the_problem(tmp_path: Path, capsys, mutate, expected) -> None:
    frame = pd.DataFrame({"id": ["x", "y"], "question": ["q1", "q2"], "a_correct": [1.0, 0.0], "a_cost": [1.0, 1.0],
                          "b_correct": [0.0, 1.0], "b_cost": [2.0, 2.0]})
    path = tmp_path / "bad.csv"
    mutate(frame).to_csv(path, index=False)
    assert main(["data", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert expected in err and str(path) in err


def test_validate_missing_path_is_a_clean_error(tmp_path: Path, capsys) -> None:
    assert main(["data", "validate", str(tmp_path / "nothing" / "x+y")]) == 1
    assert "no such file or directory" in capsys.readouterr().err


def test_images_warn_accepts_missing_images(tmp_path: Path, capsys) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"question": ["q"], "img_path": ["gone.png"], "a_correct": [1.0], "a_cost": [1.0]}).to_csv(
        path, index=False)
    assert main(["data", "validate", str(path), "--images", "warn"]) == 0
    assert "instances with an image: 0" in capsys.readouterr().out


@pytest.mark.shared_data
@pytest.mark.skipif(not REAL_TABLE.is_file(), reason="../shared/data/mmlu_pro_routing.parquet not available")
def test_validate_real_mmlu_pro_table(capsys) -> None:
    assert main(["data", "validate", str(REAL_TABLE)]) == 0
    text = capsys.readouterr().out
    assert "12032 instances x 29 models" in text
    assert "datasets (14):" in text
    assert "missing outcomes: 1713 (DeepSeek-Coder-V2 1681, gemini-1.5-flash-002 20, gemini-1.5-pro-002 12)" in text
