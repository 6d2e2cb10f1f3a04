"""Issue 14's command-line rows: each bad input ends in one clear line, a non-zero exit, and nothing
run, written or registered."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlflow_store import _fresh_mlflow_state, _template_store  # noqa: F401  (a fresh store per test)
from mmroute.cli import main

TINY = "synthetic:n=60,seed=3"


def _runs() -> list:
    client = mlflow.MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def _one_line(err: str, *needles: str) -> str:
    # MLflow's own INFO log lines (creating a new store's tables) are not part of the error.
    lines = [line for line in err.strip().splitlines() if line.strip() and " INFO " not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("command", [["train", "--router", "knn"], ["sweep", "--routers", "knn,linear"]])
def test_set_for_a_router_not_in_the_run_runs_nothing(command, capsys):
    assert main([*command, "--data", TINY, "--set", "nosuch.k=3", "--experiment", "bad"]) == 1
    _one_line(capsys.readouterr().err, "nosuch.k=3", "not in this run")
    assert _runs() == []


def test_set_with_a_bad_field_fails_before_the_run(capsys):
    assert main(["train", "--router", "knn", "--data", TINY, "--set", "knn.depth=3"]) == 1
    _one_line(capsys.readouterr().err, "unknown option(s) ['depth'] for router 'knn'")
    assert _runs() == []


@pytest.mark.parametrize("frac", ["1.0", "1", "0", "-0.5", "nan", "inf", "2.5"])
def test_train_frac_must_be_a_share_or_a_count_that_leaves_test_rows(frac, capsys, monkeypatch):
    import mmroute.pipeline.data as pdata

    monkeypatch.setattr(pdata, "load", lambda *a, **k: pytest.fail("the table must not be loaded"))
    assert main(["train", "--router", "knn", "--data", TINY, "--train-frac", frac]) == 1
    _one_line(capsys.readouterr().err, f"train_frac={float(frac)!r}", "a share in (0, 1)")
    assert _runs() == []


def test_train_frac_row_count_larger_than_the_table(capsys):
    assert main(["train", "--router", "knn", "--data", TINY, "--train-frac", "500"]) == 1
    _one_line(capsys.readouterr().err, "row count", "500")
    assert _runs() == []


@pytest.fixture
def registered():
    """A registered model ``known`` with versions 1 and 2 (no artifacts needed for these checks)."""
    client = mlflow.MlflowClient()
    client.create_registered_model("known")
    for _ in range(2):
        client.create_model_version("known", source=Path.cwd().as_uri())
    client.set_registered_model_alias("known", "staging", "2")
    return client


@pytest.mark.parametrize("argv, needles", [
    (["status", "--model", "nosuch"], ["no registered model named 'nosuch'", "known"]),
    (["rollback", "--model", "nosuch"], ["no registered model named 'nosuch'"]),
    (["promote", "--model", "nosuch", "--to", "staging"], ["no registered model named 'nosuch'"]),
    (["promote", "--model", "known", "--version", "99", "--to", "staging"], ["has no version 99", "1, 2"]),
    (["promote", "--model", "known", "--version", "abc", "--to", "staging"], ["'abc'", "positive integer"]),
    (["promote", "--model", "known", "--version", "0", "--to", "production"], ["'0'", "positive integer"]),
    (["promote", "--model", "known", "--version", "99", "--to", "production"], ["has no version 99"]),
])
def test_registry_commands_with_unknown_names_or_versions(registered, argv, needles, capsys):
    before = registered.get_registered_model("known").aliases
    assert main(argv) == 1
    _one_line(capsys.readouterr().err, f"mmroute {argv[0]}: error:", *needles)
    assert registered.get_registered_model("known").aliases == before


def _without_write_override() -> list[str]:
    # Root ignores file modes; dropping CAP_DAC_OVERRIDE makes a read-only file read-only for it too.
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only file cannot be made read-only")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


def test_read_only_tracking_database_fails_before_the_data_loads(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    db = folder / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{db}").search_experiments()  # a real, migrated store
    db.chmod(0o444)
    cache = tmp_path / "cache"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "MMROUTE_CACHE_DIR": str(cache)}
    proc = subprocess.run([*_without_write_override(), sys.executable, "-m", "mmroute", "prepare",
                           "--data", TINY], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    _one_line(proc.stderr, "read-only", str(db))
    assert not (cache / "synthetic").exists()  # failed before generating or loading the data


def test_data_validate_reports_a_model_without_outcomes(tmp_path, capsys):
    path = tmp_path / "t.csv"
    pd.DataFrame({"question": ["a", "b"], "x_correct": [1.0, 0.0], "x_cost": [1.0, 1.0],
                  "y_correct": [np.nan, np.nan], "y_cost": [np.nan, np.nan]}).to_csv(path, index=False)
    assert main(["data", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    [row_y] = [line for line in out.splitlines() if line.startswith("y ")]
    assert "no outcomes" in row_y and "0.0000" not in row_y
    assert "1 model(s) have no outcome at all: y" in out


@pytest.mark.parametrize("command", [["data", "validate"], ["prepare", "--data"]])
def test_empty_csv_and_no_input_tables_fail_naming_the_file(command, tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main([*command, str(empty)]) == 1
    err = capsys.readouterr().err
    assert str(empty) in err.splitlines()[0] and "empty (no header row)" in err and "Traceback" not in err
    blank = tmp_path / "blank.csv"
    pd.DataFrame({"question": ["", ""], "a_correct": [1, 0], "a_cost": [1, 1]}).to_csv(blank, index=False)
    assert main([*command, str(blank)]) == 1
    err = capsys.readouterr().err
    assert str(blank) in err and "every question is empty and no row has an image" in err
    assert _runs() == []


def test_data_pointing_at_a_datasets_image_folder(tmp_path, capsys):
    from mmroute.data import make_synthetic

    root = make_synthetic(tmp_path / "bench", n_instances=30, seed=0, image_size=16)
    assert main(["prepare", "--data", str(root / "ocr")]) == 1
    line = _one_line(capsys.readouterr().err, "is the image folder of dataset 'ocr'", str(root / "ocr.csv"))
    assert "expected a table file" in line
    assert _runs() == []


def test_image_outside_the_table_folder_through_the_cli(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    (tmp_path / "data").mkdir()
    table = tmp_path / "data" / "t.csv"
    pd.DataFrame({"question": ["q1", "q2"], "img_path": ["", "../secret.png"], "a_correct": [1, 0],
                  "a_cost": [1, 1]}).to_csv(table, index=False)
    assert main(["data", "validate", str(table)]) == 1
    err = capsys.readouterr().err
    assert "'../secret.png'" in err and "row 1" in err and "outside the table's folder" in err
    assert main(["data", "validate", str(table), "--allow-outside-images"]) == 0
    assert main(["data", "validate", str(table), "--image-root", str(tmp_path)]) == 0
