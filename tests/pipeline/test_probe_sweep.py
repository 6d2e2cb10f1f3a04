"""Probe routers beside the query-only routers: one sweep, one split, one pool [small, large], the
same metrics; a probe version through register -> staging -> gated production -> rollback."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "probes"))
from probe_tiny import WORDS, tiny_bert, tiny_table  # noqa: E402

pytestmark = pytest.mark.slow

FAST = ("probe.hidden=16", "probe.n_layers=2", "probe.lr=3e-3", "attention_probe.hidden=16",
        "attention_probe.n_layers=2", "attention_probe.lr=3e-3", "*.accelerator=cpu")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved tiny BERT (weights + WordPiece tokenizer) and a 3-model parquet table; the pool of
    the probe is [small, large] (``mid`` is dropped by --small/--large)."""
    from transformers import BertTokenizer

    root = tmp_path_factory.mktemp("probe-sweep")
    model_dir = root / "model"
    tiny_bert(n_layers=3).save_pretrained(model_dir)
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(model_dir)
    t = tiny_table(160, n_datasets=2)
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"id": t.ids, "dataset": t.datasets, "question": t.questions})
    for j, m in enumerate(t.models):
        frame[f"{m}_correct"] = t.correct[:, j]
        frame[f"{m}_cost"] = t.cost[:, j] * (1 + 0.2 * rng.random(len(t.ids)))
    frame["mid_correct"], frame["mid_cost"] = (rng.random(len(t.ids)) < 0.5).astype(float), 0.5
    frame["small_in_tokens"] = [len(q.split()) + 20 for q in t.questions]
    frame["small_out_tokens"] = 30
    frame.loc[5, "large_correct"] = np.nan  # dropped from the pool
    frame.to_parquet(root / "table.parquet")
    return model_dir, root / "table.parquet"


def _config(saved, **extra):
    from mmroute.pipeline import PipelineConfig

    model_dir, table = saved
    return PipelineConfig(data=str(table), routers=("knn", "linear_mf", "probe", "attention_probe"),
                          small="small", large="large", probe_backbone=str(model_dir), probe_layer=2,
                          train_frac=0.6, max_epochs=3, router_options=FAST, select_metric="tradeoff/nAUC",
                          experiment="probe-sweep", **extra)


@pytest.fixture(scope="module")
def sweep(saved, tmp_path_factory):
    import os

    import mlflow

    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    os.environ["MMROUTE_CACHE_DIR"] = str(root / "cache")
    try:
        from mmroute.pipeline import run_sweep

        summary = run_sweep(_config(saved))
    finally:
        mlflow.set_tracking_uri(None)
        if old is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return uri, summary


@pytest.fixture
def store(sweep, monkeypatch):
    import mlflow

    uri = sweep[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri


def test_one_parent_compares_both_families_on_the_same_metrics(sweep, store):
    import mlflow

    _, summary = sweep
    assert not summary["failed"] and set(summary["children"]) == {"knn", "linear_mf", "probe", "attention_probe"}
    client = mlflow.MlflowClient()
    parent = client.get_run(summary["run_id"])
    assert parent.data.params["pool.small"] == "small" and parent.data.params["probe.layer"] == "2"
    assert parent.data.params["data.models"] == "small,large"
    same = {"budget/nAUC", "budget/fixed_AUC", "budget/Ps", "tradeoff/nAUC", "tradeoff/fixed_AUC",
            "tradeoff/Ps", "deferral/auroc", "deferral/hybrid_area"}
    splits = set()
    for name, run_id in summary["children"].items():
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and same <= set(run.data.metrics), name
        assert 0.0 <= run.data.metrics["deferral/auroc"] <= 1.0
        splits.add(mlflow.artifacts.load_text(f"runs:/{summary['run_id']}/split/test_ids.txt"))
    probe = client.get_run(summary["children"]["probe"])
    assert len(client.get_metric_history(probe.info.run_id, "val_auroc")) >= 1  # per-epoch curves
    comparison = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=summary["run_id"], artifact_path="comparison/routers.csv"))
    assert set(comparison["router"]) == set(summary["children"])
    assert {"deferral/auroc", "tradeoff/nAUC"} <= set(comparison.columns)
    # The probe child logged a served model (raw queries in) and the gate's raw evaluation rows.
    arts = {a.path for a in client.list_artifacts(probe.info.run_id, "eval")}
    assert "eval/eval_table.npz" in arts


def test_prefill_is_billed_to_deferred_queries_of_probe_routers_only(sweep, store, saved):
    import mlflow

    _, summary = sweep
    client = mlflow.MlflowClient()
    knn = client.get_run(summary["children"]["knn"]).data.metrics
    probe = client.get_run(summary["children"]["probe"]).data.metrics
    # The large model alone costs more for a probe router (its prefill share is paid first).
    from mmroute.registry import load_eval_table

    table = load_eval_table(f"runs:/{summary['children']['probe']}/eval/eval_table.npz")
    frame = pd.read_parquet(saved[1]).set_index("id").loc[[str(i) for i in table.ids]]
    share = frame["small_in_tokens"] / (frame["small_in_tokens"] + frame["small_out_tokens"])
    np.testing.assert_allclose(table.cost[:, 1], frame["large_cost"] + share * frame["small_cost"])
    assert knn["budget/nAUC"] == knn["budget/nAUC"] and probe["tradeoff/Ps"] <= 1.0


def test_probe_version_registers_stages_passes_the_gate_and_rolls_back(sweep, store, capsys):
    import json

    import mlflow

    from mmroute.cli import main

    _, summary = sweep
    name = "probe-router"
    for child in ("probe", "attention_probe"):
        assert main(["register", "--run-id", summary["children"][child], "--model", name, "--stage", "staging",
                     "--metric", "tradeoff/nAUC"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["router"] == child and out["stage"] == "staging"
        rc = main(["promote", "--model", name, "--to", "production", "--metric", "tradeoff/nAUC",
                   "--min-delta", "-1"])
        assert rc == 0, capsys.readouterr().err
        gate = json.loads(capsys.readouterr().out)["gate"]
        assert gate["n_rows"] > 30 and gate["candidate"] == gate["candidate"]
        if child == "attention_probe":
            assert gate["production"] is not None  # both re-scored on the same raw rows
    # A gate the candidate cannot pass changes nothing.
    assert main(["promote", "--model", name, "--version", "1", "--to", "production", "--metric",
                 "tradeoff/nAUC", "--min-delta", "5"]) == 3
    capsys.readouterr()
    assert main(["rollback", "--model", name]) == 0
    capsys.readouterr()
    assert main(["status", "--model", name, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["aliases"]["production"] == "1"
    assert {v["router"] for v in status["versions"].values()} == {"probe", "attention_probe"}
    model = mlflow.pyfunc.load_model(f"models:/{name}@production")
    out = model.predict(pd.DataFrame({"question": ["what is two plus three", "the red cat sat"]}),
                        params={"defer_share": 0.5})
    assert list(out.columns)[:4] == ["defer", "p_correct", "model", "threshold"]
    assert set(out["model"]) <= {"small", "large"}


def test_probe_routers_need_the_backbone(saved):
    from mmroute.pipeline import PipelineConfig, run_sweep

    with pytest.raises(ValueError, match="read a small model's hidden states"):
        run_sweep(PipelineConfig(data=str(saved[1]), routers=("knn", "relope"), small="small", large="large"))
    with pytest.raises(ValueError, match="probe_backbone needs small and large"):
        PipelineConfig(probe_backbone="x", probe_layer=2)
