"""``mmroute benchmark`` end to end on a tiny table and embeddings written here."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from mmroute.cli.benchmark import main

ROUTERS = "random,oracle,knn,kmeans,linear,linear_mf"


@pytest.fixture()
def table_and_features(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 90, 5
    x = rng.normal(size=(n, d)).astype(np.float32)
    frame = {"id": [f"q{i}" for i in range(n)], "question": [f"question {i}" for i in range(n)],
             "dataset": np.where(np.arange(n) < 60, "alpha", "beta")}
    # Columns deliberately not in name order: the benchmark orders models by name, as the reference.
    for j, model in enumerate(["zeta", "beta-small", "alpha-large"]):
        p = 1 / (1 + np.exp(-(2 * x[:, j] + (j - 1))))
        correct = (rng.random(n) < p).astype(float)
        if j == 0:
            correct[:9] = np.nan
        frame[f"{model}_correct"] = correct
        frame[f"{model}_cost"] = (j + 1) * 0.001 * (1 + 0.1 * rng.random(n))
    path = tmp_path / "table.csv"
    pd.DataFrame(frame).to_csv(path, index=False)
    np.save(tmp_path / "emb.npy", x)
    return path, tmp_path / "emb.npy"


def test_benchmark_writes_metrics_per_router_and_rule(table_and_features, tmp_path, capsys):
    table, emb = table_and_features
    out = tmp_path / "res" / "results.json"
    code = main(["--data", str(table), "--features", f"precomputed:{emb}", "--split", "in", "--train-frac", "0.6",
                 "--split-seed", "3", "--routers", ROUTERS, "--set", "knn.k=7", "--set", "kmeans.n_clusters=4",
                 "--out", str(out)])
    assert code == 0
    res = json.loads(out.read_text())
    assert res["table"]["models"] == ["alpha-large", "beta-small", "zeta"]
    assert res["split"] == {"kind": "in", "train_frac": 0.6, "seed": 3, "n_train": 54, "n_test": 36,
                            "mode": None}
    assert res["rules"] == ["budget", "tradeoff"] and res["errors"] == {}
    assert list(res["routers"]) == ROUTERS.split(",")
    for name, r in res["routers"].items():
        assert r["fit_seconds"] >= 0 and r["params"]["seed"] == 3
        for rule in ("budget", "tradeoff"):
            assert set(r[rule]) == {"nAUC", "fixed_AUC", "Ps", "QNC", "n_pareto"}, (name, rule)
    assert res["routers"]["knn"]["params"]["k"] == 7
    ref = res["reference"]["budget"]
    assert ref["oracle"]["Ps"] == pytest.approx(res["routers"]["oracle"]["budget"]["Ps"])
    assert 0 < ref["best_single"]["acc"] <= ref["oracle"]["acc"] <= 1
    printed = capsys.readouterr().out
    assert "linear_mf" in printed and f"wrote {out}" in printed


def test_benchmark_out_of_domain_split_and_one_rule(table_and_features, tmp_path):
    table, emb = table_and_features
    out = tmp_path / "out.json"
    # The old spellings (--table, a bare .npy for --features, --rule) still work for one release.
    with pytest.warns(DeprecationWarning):
        code = main(["--table", str(table), "--features", str(emb), "--split", "out", "--train-datasets", "alpha",
                     "--routers", "kmeans", "--rule", "tradeoff", "--set", "kmeans.n_clusters=3", "--out", str(out)])
    assert code == 0
    res = json.loads(out.read_text())
    assert res["split"]["n_train"] == 60 and res["split"]["n_test"] == 30
    assert res["rules"] == ["tradeoff"] and set(res["routers"]["kmeans"]) >= {"tradeoff"}
    assert "budget" not in res["routers"]["kmeans"]


@pytest.mark.parametrize("argv, match", [
    (["--routers", "knn,nope"], r"unknown router\(s\) \['nope'\]; valid names: .*knn"),
    (["--routers", "knn", "--set", "knn.depth=3"], r"unknown option\(s\) \['depth'\] for router 'knn'"),
    (["--routers", "knn", "--set", "kmeans.n_clusters=3"], r"--set names router\(s\) \['kmeans'\]"),
])
def test_benchmark_user_errors_exit_non_zero_with_a_message(table_and_features, tmp_path, capsys, argv, match):
    table, emb = table_and_features
    code = main(["--data", str(table), "--features", f"precomputed:{emb}", "--out", str(tmp_path / "r.json"), *argv])
    assert code == 1
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "r.json").exists()
