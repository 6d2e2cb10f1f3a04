"""`mmroute prepare` end to end on a tiny synthetic table: what it logs, what it writes."""

from __future__ import annotations

import json

import mlflow

from mmroute.cli import main


def test_prepare_logs_table_and_writes_it(tmp_path, capsys):
    out = tmp_path / "prepared.parquet"
    assert main(["prepare", "--data", "synthetic:n=60,seed=1", "--out", str(out),
                 "--experiment", "prep"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    client = mlflow.MlflowClient()
    run = client.get_run(summary["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "prep"
    params, tags = run.data.params, run.data.tags
    assert params["data.spec"] == "synthetic:n=60,seed=1" and params["data.n_instances"] == "60"
    assert params["data.hash"] == summary["hash"] and int(params["data.n_models"]) >= 2
    assert tags["mmroute.step"] == "prepare" and "mmroute.version" in tags
    assert run.data.metrics["data/n_instances"] == 60
    [inp] = run.inputs.dataset_inputs
    assert inp.tags[0].value == "prepare"
    assert json.loads(inp.dataset.profile)["num_rows"] == 60
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "data")}
    assert arts == {"data/summary.json", "data/prepared.parquet"}

    # The written table loads back with the same outcomes and models.
    from mmroute.data import load_table

    original = load_table("synthetic:n=60,seed=1")
    again = load_table(str(out), allow_outside_images=True)  # the images stay in the synthetic cache
    assert again.models == original.models and again.n_instances == 60
    assert list(again.ids) == list(original.ids)
    assert (again.has_images == original.has_images).all()
    import numpy as np
    np.testing.assert_array_equal(np.isnan(again.correct), np.isnan(original.correct))
    np.testing.assert_allclose(np.nan_to_num(again.cost), np.nan_to_num(original.cost))


def test_prepare_rejects_a_broken_table_before_logging(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("question,a_correct,a_cost\nq1,2.0,1.0\n")  # correctness outside [0, 1]
    assert main(["prepare", "--data", str(bad)]) == 1
    assert "a_correct" in capsys.readouterr().err
    client = mlflow.MlflowClient()
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
