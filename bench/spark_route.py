"""Batch routing throughput: ``mmroute route --engine spark`` (local[2]) against the in-process pyfunc.

Usage: ``python bench/spark_route.py [--sizes 100000,1000000] [--master local[2]] [--width 32]
[--models 10] [--time-box 900] [--out FILE]``. Fits a ``linear`` router on synthetic features,
saves it as the served MLflow model, writes a Parquet table of N queries (``id``, ``features``) and
routes it (budget rule) twice: on Spark through :func:`mmroute.pipeline.spark.route_spark`
(``mlflow.pyfunc.spark_udf``, decisions written as Parquet partitioned by model) and in this
process through :func:`mmroute.pipeline.route.route_frame` (the pyfunc, 1,024 rows per call). The
decisions are compared row for row. A size whose in-process or Spark run would start after the
time box is reported as not run (nothing is extrapolated). Prints one JSON object.
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


def _model(tmp: Path, width: int, n_models: int) -> tuple[str, list[str]]:
    from mmroute.export.pyfunc import save_router_model
    from mmroute.features.types import Features
    from mmroute.routers import create_router

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, width)).astype(np.float32)
    w = rng.normal(size=(width, n_models))
    correct = (x @ w + rng.normal(size=(2000, n_models)) > 0).astype(float)
    cost = np.exp(0.3 * x[:, :n_models] + np.linspace(0, 3, n_models)) * 1e-4
    models = [f"model-{j}" for j in range(n_models)]
    router = create_router("linear").fit(Features.from_array(x), correct, cost)
    path = tmp / "model"
    save_router_model(router, Features.from_array(x[:64]), models, path)
    return str(path), models


def _queries(path: Path, n: int, width: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    writer = None
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        x = rng.normal(size=(m, width))
        batch = pa.table({"id": pa.array([f"q{i}" for i in range(start, start + m)]),
                          "features": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), width).cast(
                              pa.list_(pa.float64()))})
        writer = writer or pq.ParquetWriter(path, batch.schema)
        writer.write_table(batch, row_group_size=50_000)
    writer.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--budget", type=float, default=2e-4)
    ap.add_argument("--time-box", type=float, default=900.0, help="seconds; later sizes are not started")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    import mlflow
    import pandas as pd

    from mmroute.export.spark import spark_session
    from mmroute.pipeline.route import route_frame
    from mmroute.pipeline.spark import route_spark

    t_begin = time.perf_counter()
    report = {"bench": "spark_route", "master": args.master, "width": args.width, "models": args.models,
              "cpus": os.cpu_count(), "python": platform.python_version(), "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="mmroute-bench-spark-") as tmp:
        tmp = Path(tmp)
        model_uri, models = _model(tmp, args.width, args.models)
        t0 = time.perf_counter()
        spark = spark_session(args.master, conf={"spark.driver.memory": "4g"})
        spark.sparkContext.setLogLevel("ERROR")
        report["spark_session_start_s"] = round(time.perf_counter() - t0, 2)
        pyfunc = mlflow.pyfunc.load_model(model_uri)
        params = {"budget": args.budget}
        for n in [int(s) for s in args.sizes.split(",")]:
            entry: dict = {}
            if time.perf_counter() - t_begin > args.time_box:
                report["sizes"][str(n)] = {"status": f"not run: the {args.time_box:.0f} s time box was spent"}
                continue
            source = tmp / f"q{n}.parquet"
            _queries(source, n, args.width)
            t0 = time.perf_counter()
            res = route_spark(model_uri, str(source), str(tmp / f"out{n}"), params=params, spark=spark)
            entry["spark_s"] = round(time.perf_counter() - t0, 2)
            entry["spark_rows_per_s"] = round(res["rows"] / entry["spark_s"], 1)
            report["sizes"][str(n)] = entry
            if args.out:
                Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
            if time.perf_counter() - t_begin > args.time_box:
                entry["in_process"] = f"not run: the {args.time_box:.0f} s time box was spent"
                report["sizes"][str(n)] = entry
                continue
            frame = pd.read_parquet(source)
            t0 = time.perf_counter()
            local = route_frame(pyfunc, frame[["features"]], params, chunk_size=1024)
            entry["in_process_s"] = round(time.perf_counter() - t0, 2)
            entry["in_process_rows_per_s"] = round(n / entry["in_process_s"], 1)
            entry["spark_over_in_process"] = round(entry["in_process_s"] / entry["spark_s"], 3)
            got = pd.read_parquet(tmp / f"out{n}", columns=["id", "model"]).astype({"model": str})
            got = got.set_index("id").loc[frame["id"]]
            entry["decisions_equal"] = bool((got["model"].to_numpy() == local["model"].to_numpy()).all())
            report["sizes"][str(n)] = entry
            del frame, local, got
            if args.out:  # what was measured survives a kill by an outer time limit
                Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        spark.stop()
    report["total_s"] = round(time.perf_counter() - t_begin, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
