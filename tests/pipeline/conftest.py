"""Pipeline tests: each test gets its own MLflow store, and no MLflow state leaks between tests."""

from mlflow_store import _fresh_mlflow_state, _template_store  # noqa: F401  (fixtures)
