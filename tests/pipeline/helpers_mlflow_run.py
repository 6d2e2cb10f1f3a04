"""Running `mlflow run . --env-manager local` from the tests, and finding the runs it made."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow

ROOT = Path(__file__).resolve().parents[2]


def mlflow_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`mlflow run <repo> --env-manager local *args` from ``tmp_path`` with this environment."""
    env = dict(os.environ)
    # `python` in the MLproject commands must be this interpreter (the project's environment).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"mlflow run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def project_runs(entry_point: str):
    """Runs that `mlflow run` made for ``entry_point`` in the current store."""
    client = mlflow.MlflowClient()
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, f"tags.`mlflow.project.entryPoint` = '{entry_point}'")
