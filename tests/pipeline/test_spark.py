"""Batch routing and counterfactual replay on local Spark (loopback), against the in-process pyfunc."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mmroute.features.types import Features

pytestmark = pytest.mark.slow

MODELS = ("small", "medium", "large", "frontier")
WIDTH = 8


def _outcomes(x, rng):
    skill = x[:, :4] + np.array([-1.0, -0.3, 0.3, 1.0])
    correct = (skill + rng.normal(scale=0.5, size=skill.shape) > 0).astype(float)
    cost = np.array([1.0, 2.0, 5.0, 12.0]) * np.exp(0.2 * x[:, 4:8]) * 1e-3
    return correct, cost


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """(tracking URI, model name): two versions of a fitted `linear` router, v1 in production and
    v2 (trained on other rows, with a shrunk signal) in staging."""
    import mlflow
    from mlflow import MlflowClient

    from mmroute.export.pyfunc import log_router_model
    from mmroute.features.pipeline import build_feature_pipeline
    from mmroute.routers import create_router

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, WIDTH)).astype(np.float32)
    correct, cost = _outcomes(x, rng)
    root = tmp_path_factory.mktemp("spark-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    name = "spark-router"
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("spark", artifact_location=(root / "art").as_uri())
        client = MlflowClient(uri)
        for version, (rows, alias) in enumerate(((slice(0, 300), "production"), (slice(300, 600), "staging")), 1):
            router = create_router("linear").fit(Features.from_array(x[rows]), correct[rows], cost[rows])
            with mlflow.start_run(experiment_id=exp):
                log_router_model(router, Features.from_array(x[:50]), MODELS, registered_model_name=name)
            client.set_registered_model_alias(name, alias, str(version))
        # A raw-query model: its fitted offline feature pipeline travels inside it.
        table = _text_table(600, rng)
        pipe = build_feature_pipeline("offline", use_cache=False).fit(table.subset(np.arange(500)))
        router = create_router("linear").fit(pipe.transform(table.subset(np.arange(500))),
                                             table.correct[:500], table.cost[:500])
        with mlflow.start_run(experiment_id=exp):
            log_router_model(router, pipe.transform(table.subset(np.arange(500, 600))), MODELS,
                             registered_model_name="spark-raw-router", pipeline=pipe,
                             check_table=table.subset(np.arange(500, 600)))
    finally:
        mlflow.set_tracking_uri(None)
    return uri, name


WORDS = ["solve", "integral", "read", "sign", "count", "apples", "chart", "total", "receipt", "colour",
         "car", "triangle", "area", "sum", "numbers", "street", "what", "how", "many", "the"]


def _questions(n, rng):
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))) + "?" for _ in range(n)]


def _text_table(n, rng):
    from mmroute.data.table import OutcomeTable

    questions = _questions(n, rng)
    signal = np.array([[q.count("solve") + q.count("sum"), q.count("read"), q.count("count"), 1.0]
                       for q in questions])
    correct = (signal + rng.normal(scale=0.7, size=(n, 4)) > 0.8).astype(float)
    cost = np.tile([1.0, 2.0, 5.0, 12.0], (n, 1)) * 1e-3 * rng.uniform(0.8, 1.2, (n, 4))
    return OutcomeTable(ids=[f"t{i}" for i in range(n)], datasets=["toy"] * n, questions=questions,
                        models=MODELS, correct=correct, cost=cost, source="spark-raw")


@pytest.fixture
def store(registered, monkeypatch):
    """The module's registry as this test's tracking store (the process-wide URI wins over env)."""
    import mlflow

    uri, name = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return uri, name


def _queries(n, seed, tmp_path, *, outcomes=False, served=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, WIDTH))
    frame = pd.DataFrame({"id": [f"q{i}" for i in range(n)], "features": list(x)})
    if outcomes:
        correct, cost = _outcomes(x, rng)
        for j, m in enumerate(MODELS):
            # A live log knows some outcomes only: a third of them are missing.
            known = rng.random(n) > 0.33
            frame[f"{m}_correct"] = np.where(known, correct[:, j], np.nan)
            frame[f"{m}_cost"] = np.where(known, cost[:, j], np.nan)
    if served:
        frame["served_model"] = rng.choice(MODELS, size=n)
    path = tmp_path / f"queries-{n}.parquet"
    frame.to_parquet(path, row_group_size=max(1, n // 4))
    return path, frame


def test_spark_routing_equals_in_process_pyfunc(spark, store, tmp_path, capsys):
    from mmroute.cli import main
    from mmroute.pipeline.spark import route_in_process

    uri, name = store
    model_uri = "models:/spark-raw-router/1"   # raw queries: question (+ context), id
    params = {"budget": 0.004}
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"id": [f"q{i}" for i in range(10_000)], "question": _questions(10_000, rng),
                          "context": [None if i % 3 else f"option {i % 5}" for i in range(10_000)]})
    source = tmp_path / "raw-queries.parquet"
    frame.to_parquet(source, row_group_size=2_500)
    out = tmp_path / "decisions"
    # The CLI's spark engine reuses the fixture's session (getOrCreate).
    assert main(["route", "--model", model_uri, "--input", str(source), "--out", str(out), "--engine", "spark",
                 "--master", "local[2]", "--budget", str(params["budget"])]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 10_000
    # Partitioned by the chosen model, one folder per model chosen.
    chosen_dirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert chosen_dirs and all(d.startswith("model=") for d in chosen_dirs)
    assert not list(tmp_path.glob(".decisions.tmp-*"))

    got = pd.read_parquet(out).astype({"model": str}).sort_values("id").reset_index(drop=True)
    want = route_in_process(model_uri, frame, params=params).sort_values("id").reset_index(drop=True)
    assert len(got) == len(want) == 10_000
    assert (got["id"].to_numpy() == want["id"].to_numpy()).all()
    assert (got["model"].to_numpy() == want["model"].to_numpy()).all()
    assert (got["model_index"].to_numpy() == want["model_index"].to_numpy()).all()
    assert (got["within_budget"].to_numpy() == want["within_budget"].to_numpy()).all()
    assert [list(r) for r in got["ranking"]] == [list(r) for r in want["ranking"]]
    assert (got["rule"].to_numpy() == want["rule"].to_numpy()).all()
    np.testing.assert_array_equal(got["predicted_cost"].to_numpy(), want["predicted_cost"].to_numpy())
    np.testing.assert_array_equal(got["predicted_perf"].to_numpy(), want["predicted_perf"].to_numpy())
    # The ranking starts with the chosen model, and more than one model is used.
    assert all(r[0] == m for r, m in zip(got["ranking"], got["model"]))
    assert got["model"].nunique() > 1


def test_spark_routing_refuses_bad_input(spark, store, tmp_path):
    from mmroute.pipeline.spark import route_spark

    uri, name = store
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"id": ["a"], "prompt": ["hi"]}).to_parquet(bad)
    with pytest.raises(ValueError, match=r"has none of the columns .* reads; it has \['id', 'prompt'\]"):
        route_spark(f"models:/{name}@production", str(bad), str(tmp_path / "o1"), spark=spark)
    assert not (tmp_path / "o1").exists()
    (tmp_path / "o2").mkdir()
    with pytest.raises(FileExistsError, match="o2 already exists"):
        route_spark(f"models:/{name}@production", str(bad), str(tmp_path / "o2"), spark=spark)


def _expected_side(frame, choice):
    """Pandas reference of the replay aggregates for one routing ``choice`` (names per row)."""
    correct = np.array([frame.at[i, f"{m}_correct"] for i, m in enumerate(choice)])
    cost = np.array([frame.at[i, f"{m}_cost"] for i, m in enumerate(choice)])
    known = ~np.isnan(correct) & ~np.isnan(cost)
    share = pd.Series(choice).value_counts(normalize=True).to_dict()
    return {"accuracy": correct[known].mean(), "cost": cost[known].mean(), "coverage": known.mean(),
            "total_cost": cost[known].sum(), "share": share}


def test_replay_of_staged_version_is_logged_like_an_evaluation(spark, store, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from mmroute.pipeline.spark import route_in_process, run_replay

    uri, name = store
    source, frame = _queries(2_000, 2, tmp_path, outcomes=True, served=True)
    params = {"budget": 0.004}
    staged, prod = f"models:/{name}@staging", f"models:/{name}@production"
    result = run_replay(staged, str(source), baseline_uri=prod, params=params, experiment="replay",
                        spark=spark)

    cand = route_in_process(staged, frame, params=params)["model"].to_numpy()
    base = route_in_process(prod, frame, params=params)["model"].to_numpy()
    for side, choice in (("candidate", cand), ("baseline", base)):
        want = _expected_side(frame, choice)
        for key in ("accuracy", "cost", "coverage", "total_cost"):
            assert result[side][key] == pytest.approx(want[key], rel=1e-9)
        assert result[side]["share"] == pytest.approx(want["share"])
    assert result["agreement"] == pytest.approx(float(np.mean(cand == base)))

    run = MlflowClient(uri).get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    assert m["replay/accuracy"] == pytest.approx(result["candidate"]["accuracy"])
    assert m["baseline/cost"] == pytest.approx(result["baseline"]["cost"])
    assert m["delta/accuracy"] == pytest.approx(result["candidate"]["accuracy"] - result["baseline"]["accuracy"])
    assert sum(v for k, v in m.items() if k.startswith("replay/share/")) == pytest.approx(1.0)
    assert run.data.params["replay.model_uri"] == staged
    arts = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id, "replay")}
    assert {"replay/summary.json", "replay/replay.png"} <= arts
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == [source.name]
    assert run.inputs.dataset_inputs[0].tags[0].value == "evaluation"
    summary = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/replay/summary.json"))
    assert summary["n_rows"] == 2_000

    # Against what production actually served (the log's column), too.
    served = run_replay(staged, str(source), served_column="served_model", params=params,
                        experiment="replay", spark=spark)
    want = _expected_side(frame, frame["served_model"].to_numpy())
    assert served["baseline"]["accuracy"] == pytest.approx(want["accuracy"], rel=1e-9)
    assert served["baseline_kind"] == "served_column"


def test_promotion_gate_replays_both_versions_on_a_traffic_log(spark, store, tmp_path):
    """Last in this module: it moves the module registry's production alias to version 2."""
    from mlflow import MlflowClient

    from mmroute.pipeline.spark import route_in_process
    from mmroute.registry import promote
    from mmroute.registry.replay import ReplayLog

    uri, name = store
    source, frame = _queries(1_500, 3, tmp_path, outcomes=True)
    params = {"budget": 0.004}
    acc = {v: _expected_side(frame, route_in_process(f"models:/{name}/{v}", frame, params=params)
                             ["model"].to_numpy())["accuracy"] for v in ("1", "2")}
    delta = acc["2"] - acc["1"]
    result = promote(name, to="production", eval_table=ReplayLog(str(source), params=params),
                     metric="replay/accuracy", min_delta=delta - 1e-6, tracking_uri=uri)
    assert result.gate["candidate"] == pytest.approx(acc["2"], rel=1e-9)
    assert result.gate["production"] == pytest.approx(acc["1"], rel=1e-9)
    aliases = MlflowClient(uri).get_registered_model(name).aliases
    assert str(aliases["production"]) == "2" and str(aliases["previous-production"]) == "1"
