"""``mmroute route``: a file of queries through a registered router, end to end, and its inputs."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmroute.cli import main
from mmroute.export.calibration import calibrate
from mmroute.export.pyfunc import log_router_model
from mmroute.features.types import Features
from mmroute.pipeline.route import read_queries, route_params
from mmroute.routers import create_router

MODELS = ("cheap", "mid", "strong")


@pytest.fixture()
def production(tmp_path):
    """A calibrated linear router registered as ``routed@production`` in this test's store."""
    import mlflow
    from mlflow import MlflowClient

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    correct = (x[:, :3] + np.array([-1.0, 0.0, 1.0]) > 0).astype(float)
    cost = np.tile([1.0, 3.0, 9.0], (300, 1)) * np.exp(0.2 * x[:, 2:5])
    train = Features.from_array(x[:200])
    router = create_router("linear").fit(train, correct[:200], cost[:200])
    cal = calibrate(router, train, correct[:200], cost[:200], MODELS, n_folds=2)
    with mlflow.start_run() as run:
        info, _ = log_router_model(router, Features.from_array(x[200:]), MODELS, registered_model_name="routed",
                                   calibration=cal)
    MlflowClient().set_registered_model_alias("routed", "production", str(info.registered_model_version))
    # The operating-point table is logged to the run too, as a CSV and a plot.
    logged = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "calibration")}
    assert logged == {"calibration/operating_points.csv", "calibration/operating_points.png"}
    return x[200:], router


def _write(frame: pd.DataFrame, path):
    if path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_route_file_end_to_end(production, tmp_path, capsys, suffix):
    x, router = production
    queries = _write(pd.DataFrame({"id": [f"q{i}" for i in range(len(x))], "features": [r.tolist() for r in x],
                                   "note": "not sent"}), tmp_path / f"queries{suffix}")
    out = tmp_path / "decisions.parquet"
    assert main(["route", "--model", "models:/routed@production", "--input", str(queries), "--out", str(out),
                 "--target-cost", "3.0", "--models", "cheap,mid", "--chunk-size", "17", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    decisions = pd.read_parquet(out)
    assert summary["n_rows"] == len(decisions) == len(x)
    assert decisions["id"].tolist() == [f"q{i}" for i in range(len(x))]
    assert set(decisions["model"]) <= {"cheap", "mid"} and summary["within_target"]
    assert all(list(r)[0] == m and sorted(r) == ["cheap", "mid"]
               for r, m in zip(decisions["ranking"], decisions["model"]))
    assert (decisions["expected_cost"] <= 3.0).all()
    # The same decisions as the in-process router under the operating point the model chose.
    from mmroute.export.mmroute_runtime.decide import decide

    perf, cost = router.predict(Features.from_array(x))
    rule, param = decisions["rule"][0], decisions["param"][0]
    choice, _ = decide(perf[:, :2], cost[:, :2], rule, param, "cheapest")
    assert decisions["model_index"].tolist() == choice.tolist()


def test_route_refuses_bad_requests_and_writes_nothing(production, tmp_path, capsys):
    x, _ = production
    queries = _write(pd.DataFrame({"features": [r.tolist() for r in x[:5]]}), tmp_path / "q.jsonl")
    out = tmp_path / "decisions.parquet"
    code = main(["route", "--model", "models:/routed@production", "--input", str(queries), "--out", str(out),
                 "--models", "cheap,gpt-9", "--no-progress"])
    assert code == 1 and "gpt-9" in capsys.readouterr().err and not out.exists()
    assert not list(tmp_path.glob(".decisions*"))
    with pytest.raises(SystemExit):  # argparse: the rule options exclude each other
        main(["route", "--model", "m", "--input", str(queries), "--out", str(out), "--budget", "1",
              "--target-cost", "1"])
    assert main(["route", "--model", "m", "--input", str(queries), "--out", str(tmp_path / "d.xlsx")]) == 1
    assert "unknown format '.xlsx'" in capsys.readouterr().err


def test_read_queries_formats_and_image_paths(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 4), "red").save(tmp_path / "a.png")
    pd.DataFrame({"id": [1, 2], "question": ["what?", "why?"], "image_path": ["a.png", ""],
                  "extra": [0, 1]}).to_csv(tmp_path / "q.csv", index=False)
    frame = read_queries(tmp_path / "q.csv")
    assert list(frame.columns) == ["id", "question", "image"] and frame["id"].tolist() == ["1", "2"]
    assert Image.open(io.BytesIO(base64.b64decode(frame["image"][0]))).size == (4, 4)
    assert pd.isna(frame["image"][1])
    pd.DataFrame({"text": ["x"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="expected 'question'"):
        read_queries(tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_queries(tmp_path / "missing.jsonl")


def test_route_params_checks():
    assert route_params(target_cost=1, models=["a", "b"]) == {"target_cost": 1.0, "models": "a,b"}
    with pytest.raises(ValueError, match="at most one of"):
        route_params(budget=1.0, tradeoff=0.5)


def test_route_raw_queries_with_images(tmp_path, capsys):
    """Raw text and image queries (a CSV with image paths) through a model carrying its feature pipeline."""
    from mmroute.export.pyfunc import save_router_model
    from mmroute.features import build_feature_pipeline
    from raw_models import MODELS as RAW_MODELS
    from raw_models import make_table

    table = make_table(tmp_path / "images", n=36)
    train, test = table.subset(np.arange(24)), table.subset(np.arange(24, 36))
    pipe = build_feature_pipeline("offline:dim=8", fusion="mean", use_cache=False, progress=False).fit(train)
    router = create_router("linear_mf", rank=3).fit(pipe.transform(train), train.correct, train.cost)
    save_router_model(router, pipe.transform(test), list(RAW_MODELS), tmp_path / "model", pipeline=pipe,
                      check_table=test)
    rel = [None if p is None else str(Path(p).relative_to(tmp_path)) for p in test.image_paths]
    pd.DataFrame({"id": list(test.ids), "question": list(test.questions),
                  "image_path": ["" if p is None else p for p in rel]}).to_csv(tmp_path / "q.csv", index=False)
    out = tmp_path / "d.jsonl"
    assert main(["route", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "q.csv"), "--out", str(out),
                 "--budget", "2.0", "--no-progress"]) == 0
    decisions = pd.read_json(out, lines=True, dtype={"id": str})
    assert decisions["id"].tolist() == list(test.ids)
    # The same choices as the training-time pipeline and router under that budget (the CSV sends no
    # context, so the reference encodes the questions alone).
    from mmroute.evaluation import budget_decisions

    perf, cost = router.predict(pipe.transform(_without_contexts(test)))
    assert decisions["model_index"].tolist() == budget_decisions(perf, cost, 2.0, fallback="cheapest").tolist()


def _without_contexts(table):
    import dataclasses

    return dataclasses.replace(table, contexts=None)
