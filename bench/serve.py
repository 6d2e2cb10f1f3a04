"""Inference latency of the ``fusion_mf`` router: ONNX (onnxruntime, CPU) against PyTorch eager.

Usage: ``python bench/serve.py [--d-text 512] [--d-image 512] [--models 10] [--threads N]
[--iters 300] [--out FILE]``. Fits a real ``fusion_mf`` router (default config, one short epoch on
random inputs of CLIP ViT-B-32 widths: latency does not depend on what it learned), exports it
with :func:`mmroute.export.export_router` (parity-checked), then times single calls of the
network (``torch.inference_mode``) and of the onnxruntime session on the same inputs, both on
the same number of CPU threads, at batch 1 and batch 1024. Prints one JSON object: per batch
size and engine ``p50_ms``, ``p99_ms``, ``rows_per_s``, plus ``speedup_p50`` (eager / ONNX) and
``target_met`` (ONNX at least 2x faster than eager at batch 1). Exit code 1 when the target is
missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_SPEEDUP_BATCH1 = 2.0


def _stats(times_s: list[float], batch: int) -> dict[str, float]:
    t = np.asarray(times_s)
    return {"p50_ms": float(np.percentile(t, 50) * 1e3), "p99_ms": float(np.percentile(t, 99) * 1e3),
            "mean_ms": float(t.mean() * 1e3), "rows_per_s": float(batch / t.mean()), "calls": int(t.size)}


def _time(fn, x, iters: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn(x)
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t0)
    return out


def fit_router(d_text: int, d_image: int, n_models: int, seed: int):
    """A fitted default-config fusion_mf router and held-out Features of those widths."""
    from mmroute.features.types import Features
    from mmroute.routers import create_router

    rng = np.random.default_rng(seed)
    n = 1024 + 256
    text = rng.normal(size=(n, d_text)).astype(np.float32)
    image = rng.normal(size=(n, d_image)).astype(np.float32)
    mask = rng.random(n) < 0.7
    image[~mask] = 0.0
    features = Features(fused=text, text=text, image=image, image_mask=mask)
    correct = (rng.random((n, n_models)) < 0.5).astype(float)
    cost = np.exp(rng.normal(size=(n, n_models)))
    router = create_router("fusion_mf", max_epochs=1, val_fraction=0.0, accelerator="cpu",
                           enable_progress_bar=False, seed=seed)
    train = np.arange(256)
    router.fit(features.subset(train), correct[train], cost[train])
    return router, features.subset(np.arange(256, n))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-text", type=int, default=512)
    ap.add_argument("--d-image", type=int, default=512)
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="CPU threads for both engines (default: all cores)")
    ap.add_argument("--iters", type=int, default=300, help="timed calls at batch 1 (batch 1024: a tenth)")
    ap.add_argument("--exporter", default="dynamo", choices=("dynamo", "torchscript"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch

    from mmroute.export import export_router, router_input

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    router, held_out = fit_router(args.d_text, args.d_image, args.models, args.seed)
    net = router.network_.eval()
    with tempfile.TemporaryDirectory() as tmp:
        result = export_router(router, held_out, Path(tmp) / "fusion_mf.onnx", exporter=args.exporter)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(result.path), sess_options=options,
                                       providers=["CPUExecutionProvider"])

    def eager(x: np.ndarray):
        with torch.inference_mode():
            return net(torch.from_numpy(x))

    def onnx(x: np.ndarray):
        return session.run(["perf", "cost"], {"x": x})

    x_all = router_input(router, held_out)
    report = {"router": "fusion_mf", "input_width": int(x_all.shape[1]), "n_models": args.models,
              "threads": args.threads, "exporter": result.backend, "export_max_abs_diff":
              max(result.max_abs_diff_perf, result.max_abs_diff_cost),
              "torch": torch.__version__, "onnxruntime": ort.__version__,
              "cpu": platform.processor() or platform.machine(), "batches": {}}
    for batch, iters in ((1, args.iters), (1024, max(args.iters // 10, 10))):
        x = np.ascontiguousarray(np.resize(x_all, (batch, x_all.shape[1])))
        e = _stats(_time(eager, x, iters, warmup=max(iters // 10, 3)), batch)
        o = _stats(_time(onnx, x, iters, warmup=max(iters // 10, 3)), batch)
        report["batches"][str(batch)] = {"eager": e, "onnx": o, "speedup_p50": e["p50_ms"] / o["p50_ms"],
                                         "speedup_rows_per_s": o["rows_per_s"] / e["rows_per_s"]}
    report["target_speedup_batch1"] = TARGET_SPEEDUP_BATCH1
    report["target_met"] = bool(report["batches"]["1"]["speedup_p50"] >= TARGET_SPEEDUP_BATCH1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if report["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
