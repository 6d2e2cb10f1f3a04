"""A fresh MLflow store per test, copied from a session template (for MLflow-heavy test folders).

Creating a SQLite tracking store runs MLflow's schema migrations (seconds); a template store is
built once per session and copied into each test's ``tmp_path`` instead. A folder's conftest
activates it with ``from mlflow_store import _template_store, _fresh_mlflow_state``.
"""

from __future__ import annotations

import shutil
import sqlite3

import pytest


@pytest.fixture(scope="session")
def _template_store(tmp_path_factory):
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def _fresh_mlflow_state(monkeypatch, tmp_path, _template_store):
    import mlflow

    db = tmp_path / "mlflow.db"
    shutil.copyfile(_template_store, db)
    # MLflow fixed the Default experiment's artifact location when the template was created; point
    # the copy at this test's directory so nothing lands in the template's (or the repo's) mlruns.
    with sqlite3.connect(db) as con:
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                    ((tmp_path / "mlruns" / "0").as_uri(),))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    mlflow.set_tracking_uri(f"sqlite:///{db}")  # the process-wide URI wins over the env variable
    # Experiment ids, active runs and URIs left by a test are reset by tests/conftest.py.
