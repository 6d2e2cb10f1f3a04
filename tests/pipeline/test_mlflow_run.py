"""`mlflow run . --env-manager local`: the MLproject entry points, run the way users run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from helpers_pipeline import artifact_paths, input_contexts

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _mlflow_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # `python` in the MLproject commands must be this interpreter (the project's environment).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _project_runs(entry_point: str):
    client = mlflow.MlflowClient()
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, f"tags.`mlflow.project.entryPoint` = '{entry_point}'")


def test_main_entry_point_parent_with_a_child_per_router(tmp_path):
    from mmroute.routers import create_router, list_routers

    _mlflow_run(tmp_path, "-P", "data=synthetic:n=90,seed=3", "-P", "max_epochs=2")
    client = mlflow.MlflowClient()
    [parent] = _project_runs("main")
    assert parent.info.status == "FINISHED" and parent.data.tags["mmroute.step"] == "main"
    assert parent.data.params["data"] == "synthetic:n=90,seed=3"  # logged by mlflow run itself
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_name = {c.data.tags["mmroute.router"]: c for c in children}
    assert sorted(by_name) == list_routers()
    assert parent.data.tags["best_child_run_id"] in {c.info.run_id for c in children}
    for name, child in by_name.items():
        m = child.data.metrics
        assert child.info.status == "FINISHED", name
        assert {"budget/nAUC", "budget/Ps", "budget/qnc_reached", "tradeoff/nAUC"} <= set(m), name
        assert ("budget/QNC" in m) == (m["budget/qnc_reached"] == 1.0)
        arts = artifact_paths(client, child.info.run_id)
        assert {"plots/pareto_budget.png", "config.yaml"} <= arts, name
        assert sorted(input_contexts(child).values()) == ["evaluation", "training"], name
        if hasattr(create_router(name), "lightning_logger"):
            history = client.get_metric_history(child.info.run_id, "train_loss")
            assert len(history) == 2, name  # one point per epoch
    assert {"comparison/routers.csv", "comparison/routers.png"} <= artifact_paths(client, parent.info.run_id)


def test_embed_entry_point_logs_the_features(tmp_path):
    # Default `out`: a temporary file (mlflow runs commands in the project directory, which must
    # stay clean), kept as the run's artifact.
    before = set(ROOT.iterdir())
    _mlflow_run(tmp_path, "-e", "embed", "-P", "data=synthetic:n=40,seed=3")
    [run] = _project_runs("embed")
    assert artifact_paths(mlflow.MlflowClient(), run.info.run_id) == {"features/features.npz"}
    assert {p for p in set(ROOT.iterdir()) - before if p.suffix == ".npz"} == set()
    import numpy as np

    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="features/features.npz",
                                               dst_path=str(tmp_path))
    with np.load(path) as z:
        assert z["fused"].shape[0] == 40 and z["ids"].shape == (40,)
