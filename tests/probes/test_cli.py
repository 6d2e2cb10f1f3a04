"""End to end: ``mmroute probe extract`` and ``train`` on a saved tiny model, tracked in MLflow;
the pipeline's leave-one-dataset-out and perturbation-robustness paths on a tiny Qwen2-VL."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mmroute.cli.probe import main
from mmroute.pipeline.probe import ProbeExperiment, run_probe_experiment
from probe_tiny import WORDS, HandVLInputs, tiny_bert, tiny_qwen2_vl, tiny_table


@pytest.fixture
def saved(tmp_path):
    from transformers import BertTokenizer

    # A BERT-style encoder: its WordPiece tokenizer can be built offline from a vocabulary file
    # (AutoTokenizer maps a Qwen2 config to Qwen2's BPE tokenizer, which needs real merges).
    model_dir = tmp_path / "model"
    tiny_bert(n_layers=3).save_pretrained(model_dir)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(model_dir)
    t = tiny_table(60, n_datasets=3)
    frame = pd.DataFrame({"id": t.ids, "dataset": t.datasets, "question": t.questions})
    for j, m in enumerate(t.models):
        frame[f"{m}_correct"], frame[f"{m}_cost"] = t.correct[:, j], t.cost[:, j]
    frame.loc[3, "large_correct"] = np.nan  # rows missing an outcome are left out
    frame.to_parquet(tmp_path / "table.parquet")
    return model_dir, tmp_path / "table.parquet"


@pytest.mark.slow
def test_extract_then_train_tracks_runs_writes_plots_and_onnx(saved, tmp_path, capsys):
    import mlflow

    model_dir, table = saved
    cache = tmp_path / "cache"
    # Numbers as MLproject passes them ("2.0"); empty strings mean unset.
    common = ["--data", str(table), "--model", str(model_dir), "--layer", "2.0", "--cache", str(cache),
              "--small", "small", "--large", "large"]
    assert main(["extract", *common, "--batch-size", "16"]) == 0
    assert json.loads(capsys.readouterr().out)["n_instances"] == 59
    shards = {p: p.stat().st_mtime_ns for p in cache.glob("shard-*")}

    out, onnx = tmp_path / "out", tmp_path / "onnx"
    rc = main(["train", *common, "--heads", "probe,relope", "--epochs", "2.0", "--lr", "1e-3", "--sample", "",
               "--set", "lora_r=4", "--set", "lora_alpha=8", "--set", "hidden=16",
               "--onnx-dir", str(onnx), "--out", str(out), "--experiment", "probe-test"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert {p: p.stat().st_mtime_ns for p in cache.glob("shard-*")} == shards  # cache reused
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_instances"] == 59 and set(summary["heads"]) == {"probe", "relope"}
    for head in ("probe", "relope"):
        h = summary["heads"][head]
        assert 0.0 <= h["auroc"] <= 1.0 and 0.0 < h["hybrid/area"] <= 1.0 and h["onnx/max_abs_diff"] <= 1e-4
        assert (onnx / f"{head}.onnx").is_file() and printed[head]["auroc"] == h["auroc"]
    assert (out / "hybrid.png").stat().st_size > 1000 and (out / "roc.png").is_file()

    client = mlflow.MlflowClient()
    parent = client.get_run(printed["run_id"])
    assert {"probe/auroc", "relope/hybrid_area"} <= set(parent.data.metrics)
    assert parent.data.params["backbone.layer"] == "2"
    exp = parent.info.experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["probe", "relope"]
    for child in children:
        assert {"auroc", "hybrid/area", "hybrid/acc_at_0.5"} <= set(child.data.metrics)
        assert len(client.get_metric_history(child.info.run_id, "val_auroc")) == 2  # per epoch
        assert child.data.params["probe.head"] == child.info.run_name
        arts = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
        assert arts == {"plots/hybrid.png", "plots/roc.png"}
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"plots", "summary.json"}


def test_cli_errors_name_the_problem(saved, tmp_path, capsys):
    _, table = saved
    rc = main(["train", "--data", str(table), "--cache", str(tmp_path / "none"), "--small", "small",
               "--large", "nope", "--no-tracking"])
    assert rc == 1 and "'nope' is not in the table" in capsys.readouterr().err
    rc = main(["train", "--data", str(table), "--cache", str(tmp_path / "none"), "--small", "small",
               "--large", "large", "--no-tracking", "--set", "lora_rank=4"])
    assert rc == 1 and "unknown probe training option(s) ['lora_rank']" in capsys.readouterr().err
    rc = main(["extract", "--data", str(table), "--cache", str(tmp_path / "c"), "--model",
               str(tmp_path / "nowhere"), "--layer", "1"])
    assert rc == 1 and "cannot load backbone" in capsys.readouterr().err


def test_pipeline_lodo_and_image_robustness(tmp_path):
    table = tiny_table(40, image_dir=tmp_path, n_datasets=2)
    base = dict(table="<memory>", small="small", large="large", model=None, layer=2, heads=("probe",),
                tracking=False, train={"max_epochs": 2, "hidden": 16})
    lodo = run_probe_experiment(ProbeExperiment(cache=str(tmp_path / "c1"), split="lodo", **base),
                                table=table, backbone=tiny_qwen2_vl(n_layers=3), builder=HandVLInputs())
    m = lodo["heads"]["probe"]
    assert {"lodo/d0/auroc", "lodo/d1/auroc", "lodo/mean_auroc", "auroc"} <= set(m)
    robust = run_probe_experiment(ProbeExperiment(cache=str(tmp_path / "c2"), perturb="noise:0.3,jpeg:10",
                                                  train_frac=0.5, **base),
                                  table=table, backbone=tiny_qwen2_vl(n_layers=3), builder=HandVLInputs())
    r = robust["heads"]["probe"]
    assert {"robust/gaussian_noise-0.3/auroc", "robust/jpeg-10/auroc"} <= set(r)
    assert r["robust/delta_auc"] == pytest.approx(
        r["auroc"] - (r["robust/gaussian_noise-0.3/auroc"] + r["robust/jpeg-10/auroc"]) / 2, abs=1e-5)
    assert (tmp_path / "c2" / "perturbed" / "jpeg-10" / "meta.json").is_file()
