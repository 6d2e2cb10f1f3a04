"""The team workflows on PostgreSQL behind `mlflow server`: the `mlflow run` main pipeline, two
sweeps at once, register / promote / rollback, concurrent promoters, and the UI screenshot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
TINY = "synthetic:n=90,seed=3"
pytestmark = pytest.mark.slow


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _mmroute(cwd, *args, check=True):
    proc = subprocess.run([sys.executable, "-m", "mmroute", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"mmroute {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def _last_json(text):
    lines = text.strip().splitlines()
    for start in range(len(lines) - 1, -1, -1):  # the last JSON document (may span lines)
        try:
            return json.loads("\n".join(lines[start:]))
        except json.JSONDecodeError:
            continue
    raise AssertionError(f"no JSON in {text[-2000:]}")


def test_the_server_is_backed_by_postgresql(server_uri):
    import sqlalchemy

    pg = os.environ.get("MMROUTE_TEST_POSTGRES_URI")
    if not pg:
        pytest.skip("MMROUTE_TEST_POSTGRES_URI not set")
    with sqlalchemy.create_engine(pg).connect() as con:
        assert "PostgreSQL" in con.execute(sqlalchemy.text("select version()")).scalar()
        assert con.execute(sqlalchemy.text("select count(*) from experiments")).scalar() >= 1


def test_mlflow_run_main_pipeline(on_server, tmp_path):
    name = on_server
    proc = subprocess.run([sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local",
                           "--experiment-name", f"{name}-main", "-P", f"data={TINY}", "-P", "max_epochs=2",
                           "-P", "routers=knn,linear_mf,mlp", "-P", f"register_model={name}-router"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    client = MlflowClient()
    exp = client.get_experiment_by_name(f"{name}-main")
    runs = client.search_runs([exp.experiment_id])
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED"
    assert sorted(c.data.tags["mmroute.router"] for c in children) == ["knn", "linear_mf", "mlp"]
    assert all(c.info.status == "FINISHED" and "budget/nAUC" in c.data.metrics for c in children)
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # proxied through the server
    assert "comparison/routers.csv" in {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    staged = client.get_model_version_by_alias(f"{name}-router", "staging")
    assert staged.tags["source_run_id"] in {c.info.run_id for c in children}


def test_two_sweeps_at_the_same_time(on_server, tmp_path):
    name = on_server
    env = _env()
    procs = [subprocess.Popen([sys.executable, "-m", "mmroute", "sweep", "--data", f"synthetic:n=80,seed={seed}",
                               "--routers", "knn,linear", "--experiment", f"{name}-sweeps"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (1, 2)]
    outs = [p.communicate(timeout=600) for p in procs]
    summaries = []
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        summaries.append(_last_json(out))
    client = MlflowClient()
    exp = client.get_experiment_by_name(f"{name}-sweeps")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
    for s in summaries:  # each parent has exactly its own two children
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == s["run_id"]]
        assert sorted(k.data.tags["mmroute.router"] for k in kids) == ["knn", "linear"]


@pytest.fixture
def sweep_on_server(on_server, tmp_path):
    out = _mmroute(tmp_path, "sweep", "--data", TINY, "--routers", "linear,knn", "--experiment", f"{on_server}-reg")
    return on_server, _last_json(out.stdout)


def test_register_promote_rollback(sweep_on_server, tmp_path):
    name, sweep = sweep_on_server
    model = f"{name}-router"
    first = _last_json(_mmroute(tmp_path, "register", "--run-id", sweep["run_id"], "--model", model,
                                "--stage", "staging").stdout)
    assert first["version"] == "1" and first["stage"] == "staging"
    assert _last_json(_mmroute(tmp_path, "promote", "--model", model, "--to", "production").stdout)["version"] == "1"
    second = _last_json(_mmroute(tmp_path, "register", "--run-id", sweep["children"]["knn"], "--model", model,
                                 "--stage", "staging").stdout)
    promoted = _mmroute(tmp_path, "promote", "--model", model, "--to", "production", "--min-delta", "-1")
    assert _last_json(promoted.stdout)["previous"] == "1"
    client = MlflowClient()
    aliases = {a: str(v) for a, v in client.get_registered_model(model).aliases.items()}
    assert aliases == {"staging": second["version"], "production": "2", "previous-production": "1"}
    back = _last_json(_mmroute(tmp_path, "rollback", "--model", model).stdout)
    assert back["version"] == "1" and back["previous"] == "2"
    assert {a: str(v) for a, v in client.get_registered_model(model).aliases.items()}["production"] == "1"
    status = _last_json(_mmroute(tmp_path, "status", "--model", model, "--json").stdout)
    assert status["aliases"]["production"] == "1"


def test_concurrent_promoters_on_postgresql(sweep_on_server, tmp_path):
    from concurrency_helpers import check_consistent, run_promoters
    from mmroute.pipeline.export import export_run
    from mmroute.registry import register_best

    name, sweep = sweep_on_server
    model = f"{name}-contested"
    for router in ("linear", "knn", "linear", "knn"):  # the first registration of each exports it
        register_best(sweep["children"][router], model, exporter=export_run)
    table = tmp_path / "eval_table.npz"
    import mlflow

    mlflow.artifacts.download_artifacts(f"runs:/{sweep['children']['knn']}/eval/eval_table.npz", dst_path=str(tmp_path))
    assert table.is_file()
    results = run_promoters(os.environ["MLFLOW_TRACKING_URI"], model, ["1", "2", "3", "4"], table)
    order = check_consistent(MlflowClient(), model, results)
    assert len(order) == 4


def test_ui_screenshot_of_the_server(on_server, request, tmp_path):
    if not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    name, _ = request.getfixturevalue("sweep_on_server")
    out = tmp_path / "ui.png"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "ui_screenshot.py"), "--store",
                           os.environ["MLFLOW_TRACKING_URI"], "--experiment", f"{name}-reg", "--out", str(out)],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["n_runs"] == 3 and out.stat().st_size > 20_000
