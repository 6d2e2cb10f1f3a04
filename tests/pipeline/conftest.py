"""Pipeline tests: MLflow's in-process state must not leak from one test's store into the next."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fresh_mlflow_state(monkeypatch):
    import mlflow

    # mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID; each test has its own store.
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
