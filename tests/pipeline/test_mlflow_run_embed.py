"""`mlflow run . --env-manager local -e embed`: features written and logged, project directory untouched."""

from __future__ import annotations

import mlflow
import pytest

from helpers_mlflow_run import ROOT, mlflow_run, project_runs
from helpers_pipeline import artifact_paths

pytestmark = pytest.mark.slow


def test_embed_entry_point_logs_the_features(tmp_path):
    # Default `out`: a temporary file (mlflow runs commands in the project directory, which must
    # stay clean), kept as the run's artifact.
    before = set(ROOT.iterdir())
    mlflow_run(tmp_path, "-e", "embed", "-P", "data=synthetic:n=40,seed=3")
    [run] = project_runs("embed")
    assert artifact_paths(mlflow.MlflowClient(), run.info.run_id) == {"features/features.npz"}
    assert {p for p in set(ROOT.iterdir()) - before if p.suffix == ".npz"} == set()
    import numpy as np

    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="features/features.npz",
                                               dst_path=str(tmp_path))
    with np.load(path) as z:
        assert z["fused"].shape[0] == 40 and z["ids"].shape == (40,)
