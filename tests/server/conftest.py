"""Tests against a real team server: PostgreSQL backend + `mlflow server` (scripts/mlflow_server.sh).

They run when ``MMROUTE_TEST_SERVER_URI`` names a running server (``.ci/run`` starts one and exports
it, with ``MMROUTE_TEST_POSTGRES_URI`` for the database itself) and PostgreSQL's binaries are
installed; otherwise they are skipped. The server is shared: every test uses its own names.
"""

from __future__ import annotations

import glob
import os
import uuid

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/server/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.server)


@pytest.fixture(scope="session")
def server_uri() -> str:
    uri = os.environ.get("MMROUTE_TEST_SERVER_URI", "").strip()
    if not uri:
        pytest.skip("no team server (start one: eval \"$(scripts/mlflow_server.sh start)\")")
    if not glob.glob("/usr/lib/postgresql/*/bin/postgres"):
        pytest.skip("PostgreSQL binaries are not installed")
    return uri


@pytest.fixture
def on_server(server_uri, monkeypatch):
    """Point this test (and the processes it starts) at the server; yields a unique name prefix."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server_uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", server_uri)
    mlflow.set_tracking_uri(server_uri)  # the registry follows the tracking URI
    yield f"t{uuid.uuid4().hex[:10]}"
