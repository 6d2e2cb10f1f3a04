"""Shared fixtures: the optional real data beside the repository, and a clean working directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The session-wide ``spark`` fixture (tests/spark_session.py), for the Spark tests of any folder.
pytest_plugins = ["spark_session"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository; tests using it are skipped where it is absent."""
    if not (SHARED_DATA / "mmlu_pro_routing.parquet").is_file():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    # Nothing a test does may land in the repository or a user's caches: caches and the default
    # tracking store go to a per-test temporary directory unless the test sets its own.
    cache = tmp_path_factory.mktemp("mmroute-cache")
    # MLflow puts a new experiment's artifacts under ./mlruns: run every test from a scratch folder.
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    monkeypatch.setenv("MMROUTE_CACHE_DIR", str(cache))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{cache / 'mlflow.db'}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    yield
    _reset_mlflow_fluent_state()


def _reset_mlflow_fluent_state() -> None:
    # mlflow's fluent API keeps the active run and experiment in module globals; a test that set
    # them must not leak them into the next test, whose tracking store is a different file.
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is None:
        return
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
    fluent._active_experiment_id = None
    # mlflow.set_tracking_uri/set_registry_uri are process-wide and win over the environment;
    # set_registry_uri also exports MLFLOW_REGISTRY_URI, which would send later registrations elsewhere.
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    mlflow.set_tracking_uri(None)
    registry = sys.modules.get("mlflow.tracking._model_registry.utils")
    if registry is not None:
        registry._registry_uri = None
    # ... and set_registry_uri also exports MLFLOW_REGISTRY_URI, which would outlive the test.
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
