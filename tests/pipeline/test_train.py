"""`mmroute train` end to end: one router, everything checked in the tracking store."""

from __future__ import annotations

import mlflow
import pytest

from helpers_pipeline import EPOCHS, TINY, artifact_paths, input_contexts, last_json
from mmroute.cli import main


def _train(router: str, *extra: str) -> int:
    return main(["train", "--router", router, "--data", TINY, "--max-epochs", str(EPOCHS),
                 "--experiment", "unit", *extra])


def test_train_lightning_router_logs_everything(capsys):
    assert _train("mlp_mf", "--set", "mlp_mf.lr=0.005 *.patience=50", "--mode", "22") == 0
    summary = last_json(capsys.readouterr().out)
    client = mlflow.MlflowClient()
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "mlp_mf"
    p, t, m = run.data.params, run.data.tags, run.data.metrics
    # configuration as params
    assert p["router.name"] == "mlp_mf" and p["router.lr"] == "0.005" and p["router.max_epochs"] == str(EPOCHS)
    assert p["router.patience"] == "50"
    assert p["data.spec"] == TINY and len(p["data.hash"]) == 16 and p["data.mode"] == "22"
    assert p["split.kind"] == "in" and p["split.train_frac"] == "0.5" and p["split.seed"] == "42"
    assert p["features.spec"] == "offline" and p["features.fusion"] == "mean"
    assert int(p["split.n_train"]) + int(p["split.n_test"]) == 90
    # tags
    assert t["mmroute.step"] == "train" and t["mmroute.router"] == "mlp_mf" and t["mmroute.mode"] == "22"
    assert t["mmroute.version"] and t["mmroute.dataset"]
    # per-epoch curves from Lightning, in the same run
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == EPOCHS
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == EPOCHS
    # final metrics, both rules, budgets, per dataset, reference points
    for rule in ("budget", "tradeoff"):
        for key in ("nAUC", "Ps", "qnc_reached", "fixed_AUC", "oracle_nAUC", "best_single_acc"):
            assert f"{rule}/{key}" in m, f"{rule}/{key}"
        assert (f"{rule}/QNC" in m) == (m[f"{rule}/qnc_reached"] == 1.0)
        assert f"{rule}/at_0.5x_best_cost/accuracy" in m
        assert 0 <= m[f"{rule}/Ps"] <= m[f"{rule}/oracle_Ps"] + 1e-9
    assert summary["budget/nAUC"] == pytest.approx(m["budget/nAUC"], abs=1e-6)
    dataset = t["mmroute.dataset"].split("+")[0]
    assert any(k.startswith(f"{dataset}/budget/") for k in m)
    assert m["fit_seconds"] > 0
    # artifacts
    arts = artifact_paths(client, run.info.run_id)
    assert {"config.yaml", "curves/budget_curve.csv", "curves/tradeoff_curve.csv", "plots/pareto_budget.png",
            "plots/pareto_tradeoff.png", "split/train_ids.txt", "split/test_ids.txt", "model/router.pkl",
            "model/features.pkl", "model/meta.json"} <= arts
    import yaml
    curve = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/curves/budget_curve.csv").splitlines()
    assert curve[0] == "threshold,cost,acc,on_frontier" and len(curve) > 2
    config = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config.yaml"))
    assert config["router"]["name"] == "mlp_mf" and config["router"]["lr"] == 0.005
    assert config["pipeline"]["mode"] == 22
    train_ids = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/split/train_ids.txt").split()
    assert len(train_ids) == int(p["split.n_train"])
    # inputs
    contexts = input_contexts(run)
    assert sorted(contexts.values()) == ["evaluation", "training"]


def test_train_sklearn_router_and_unknown_router(capsys, monkeypatch):
    # System metrics on, sampled fast enough to land within a short run.
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    assert _train("linear", "--no-log-model", "--system-metrics") == 0
    summary = last_json(capsys.readouterr().out)
    client = mlflow.MlflowClient()
    run = client.get_run(summary["run_id"])
    assert "budget/nAUC" in run.data.metrics
    assert any(k.startswith("system/") for k in run.data.metrics)
    assert client.get_metric_history(run.info.run_id, "train_loss") == []  # not a Lightning router
    assert "model/router.pkl" not in artifact_paths(client, run.info.run_id)
    assert _train("nope") == 1
    assert "unknown router(s) ['nope']" in capsys.readouterr().err


def test_unreachable_server_fails_before_any_work(monkeypatch, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    assert _train("linear") == 3
    err = capsys.readouterr().err
    assert "tracking unavailable" in err and f"127.0.0.1:{port}" in err
    import os
    from pathlib import Path
    assert not (Path(os.environ["MMROUTE_CACHE_DIR"]) / "synthetic").exists()  # no data was built
