"""Batch routing throughput: ``mmroute route --engine spark`` (local[2]) against the in-process pyfunc.

Usage: ``python bench/spark_route.py [--sizes 100000,1000000] [--master local[2]] [--width 32]
[--models 10] [--time-box 900] [--in-process-sample 0] [--out FILE]``. Fits a ``linear`` router on
synthetic features, saves it as the served MLflow model, writes a Parquet table of N queries
(``id``, ``features``) and routes it (budget rule) twice: on Spark through
:func:`mmroute.pipeline.spark.route_spark` (``mlflow.pyfunc.spark_udf``, decisions written as
Parquet partitioned by model) and in this process through :func:`mmroute.pipeline.route.route_frame`
(the pyfunc in 1,024-row calls, the model's logged ``max_rows``; and in 10,000-row calls, the row
batches Spark hands to the model on a local master), one Parquet row group at a time so the driver
never holds a whole large table. The chosen models are compared row for row (in-process against
Spark on every row routed in process).

What is timed apart: ``spark_session_start_s`` (the JVM), ``spark_warmup_s`` (one 20,000-row job:
Python workers start, import mlflow, load the model), then per size ``spark_s`` (route_spark: read,
route, write, count) and the in-process runs. ``--in-process-sample K`` routes only the first K
rows in process for sizes above K (rows/s of that sample, said so in the entry). The 1-minute load
average before and after each Spark run is reported: the machine may be shared. A size whose run
would start after the time box is reported as not run (nothing is extrapolated). Prints one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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


def _in_process(pyfunc, source: Path, params: dict, chunk: int, limit: int) -> tuple[float, int, np.ndarray]:
    """(seconds, rows, chosen models) of the in-process pyfunc on the first ``limit`` rows of
    ``source``, read one row group at a time; only the routing calls are timed."""
    import pyarrow.parquet as pq

    from mmroute.pipeline.route import route_frame

    seconds, chosen = 0.0, []
    rows = 0
    for batch in pq.ParquetFile(source).iter_batches(batch_size=100_000, columns=["features"]):
        frame = batch.to_pandas()
        frame = frame.iloc[:limit - rows]
        t0 = time.perf_counter()
        out = route_frame(pyfunc, frame, params, chunk_size=chunk)
        seconds += time.perf_counter() - t0
        chosen.append(out["model"].to_numpy(dtype=object))
        rows += len(frame)
        if rows >= limit:
            break
    return seconds, rows, np.concatenate(chosen)


def _load() -> float:
    return round(os.getloadavg()[0], 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--budget", type=float, default=2e-4)
    ap.add_argument("--time-box", type=float, default=900.0, help="seconds; later sizes are not started")
    ap.add_argument("--in-process-sample", type=int, default=0,
                    help="route at most this many rows in process per size (0: all)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    import mlflow
    import pandas as pd

    from mmroute.export.spark import spark_session
    from mmroute.pipeline.spark import route_spark

    t_begin = time.perf_counter()
    report = {"bench": "spark_route", "master": args.master, "width": args.width, "models": args.models,
              "cpus": os.cpu_count(), "python": platform.python_version(), "sizes": {}}

    def save() -> None:  # what was measured survives a kill by an outer time limit
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="mmroute-bench-spark-") as tmp:
        tmp = Path(tmp)
        model_uri, _ = _model(tmp, args.width, args.models)
        params = {"budget": args.budget}
        t0 = time.perf_counter()
        spark = spark_session(args.master, conf={"spark.driver.memory": "4g",
                                                 "spark.ui.showConsoleProgress": "false"})
        spark.sparkContext.setLogLevel("ERROR")
        report["spark_session_start_s"] = round(time.perf_counter() - t0, 2)
        _queries(tmp / "warmup.parquet", 20_000, args.width)
        t0 = time.perf_counter()
        route_spark(model_uri, str(tmp / "warmup.parquet"), str(tmp / "out-warmup"), params=params, spark=spark)
        report["spark_warmup_s"] = round(time.perf_counter() - t0, 2)
        pyfunc = {1024: mlflow.pyfunc.load_model(model_uri),
                  10_000: mlflow.pyfunc.load_model(model_uri, model_config={"max_rows": 10_000})}
        for n in [int(s) for s in args.sizes.split(",")]:
            entry: dict = {}
            if time.perf_counter() - t_begin > args.time_box:
                report["sizes"][str(n)] = {"status": f"not run: the {args.time_box:.0f} s time box was spent"}
                continue
            source = tmp / f"q{n}.parquet"
            _queries(source, n, args.width)
            entry["partitions"] = spark.read.parquet(str(source)).rdd.getNumPartitions()
            entry["load_avg_before"] = _load()
            t0 = time.perf_counter()
            res = route_spark(model_uri, str(source), str(tmp / f"out{n}"), params=params, spark=spark)
            entry["spark_s"] = round(time.perf_counter() - t0, 2)
            entry["load_avg_after"] = _load()
            entry["spark_rows_per_s"] = round(res["rows"] / entry["spark_s"], 1)
            report["sizes"][str(n)] = entry
            save()
            limit = n if args.in_process_sample <= 0 else min(n, args.in_process_sample)
            if limit < n:
                entry["in_process_rows"] = f"the first {limit} of {n} rows (--in-process-sample)"
            chosen = None
            for chunk, key in ((1024, "in_process"), (10_000, "in_process_10k")):
                if time.perf_counter() - t_begin > args.time_box:
                    entry[key] = f"not run: the {args.time_box:.0f} s time box was spent"
                    continue
                seconds, rows, got_local = _in_process(pyfunc[chunk], source, params, chunk, limit)
                entry[f"{key}_s"] = round(seconds, 2)
                entry[f"{key}_rows_per_s"] = round(rows / seconds, 1)
                entry[f"spark_over_{key}"] = round(entry["spark_rows_per_s"] / entry[f"{key}_rows_per_s"], 3)
                if chosen is None:
                    chosen = got_local
                else:
                    entry["in_process_calls_agree"] = bool((chosen == got_local).all())
                save()
            if chosen is not None:
                ids = pd.read_parquet(source, columns=["id"])["id"].iloc[:len(chosen)]
                got = pd.read_parquet(tmp / f"out{n}", columns=["id", "model"]).astype({"model": str})
                got = got.set_index("id")["model"].reindex(ids).to_numpy(dtype=object)
                entry["decisions_compared"] = len(chosen)
                entry["decisions_equal"] = bool((got == chosen).all())
                del ids, got, chosen
            report["sizes"][str(n)] = entry
            save()
            shutil.rmtree(tmp / f"out{n}", ignore_errors=True)
            source.unlink()
        spark.stop()
    report["total_s"] = round(time.perf_counter() - t_begin, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
