"""From a real ``mmroute sweep`` to a served production version, through the CLI."""

import json

import mlflow
import pytest
from mlflow import MlflowClient

from mmroute.cli import main
from mmroute.cli.registry import EXIT_REFUSED
from mmroute.export.pyfunc import input_frame
from mmroute.registry import load_eval_table

pytestmark = pytest.mark.slow
TINY = "synthetic:n=90,seed=3"


def _last_json(text):
    """The JSON object a command printed last (pretty-printed over several lines)."""
    return json.loads(text[text.rindex("\n{") + 1:] if "\n{" in text else text)


def test_sweep_register_export_promote_and_load(store, capsys):
    assert main(["sweep", "--routers", "oracle,linear,knn", "--data", TINY, "--set", "knn.k=5",
                 "--experiment", "unit"]) == 0
    sweep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    children = sweep["children"]

    # register exports the best deployable child on the fly (the oracle ranks first but is skipped)
    assert main(["register", "--run-id", sweep["run_id"], "--model", "pipe", "--stage", "staging"]) == 0
    registered = _last_json(capsys.readouterr().out)
    assert registered["router"] in ("linear", "knn") and registered["stage"] == "staging"
    best = registered["source_run_id"]
    client = MlflowClient()
    assert {a.path for a in client.list_artifacts(best, "eval")} == {"eval/eval_table.npz"}
    assert main(["promote", "--model", "pipe", "--to", "production"]) == 0
    capsys.readouterr()

    other = children["knn" if registered["router"] == "linear" else "linear"]
    assert main(["export", "--run-id", other]) == 0
    exported = _last_json(capsys.readouterr().out)
    assert exported["max_abs_diff_perf"] <= 1e-4 and exported["input_layout"][0][0] == "fused"
    assert main(["register", "--run-id", other, "--model", "pipe", "--stage", "staging"]) == 0
    capsys.readouterr()
    # One evaluation table for both: the candidate's own; a 1.0 nAUC margin cannot be met.
    assert main(["promote", "--model", "pipe", "--to", "production", "--min-delta", "1.0"]) == EXIT_REFUSED
    assert "refused" in capsys.readouterr().err

    table = load_eval_table(f"runs:/{best}/eval/eval_table.npz")
    model = mlflow.pyfunc.load_model("models:/pipe@production")
    out = model.predict(input_frame(table.features.fused[:5]), params={"tradeoff": 0.0})
    assert len(out) == 5 and set(out["model"]) <= set(table.models)
