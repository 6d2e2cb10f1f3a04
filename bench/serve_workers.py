"""Serving scale-out: ``mlflow models serve --workers N`` for N = 1, 2, 4 on raw queries.

Usage: ``python bench/serve_workers.py [--workers 1,2,4] [--concurrency 8] [--requests 400]
[--rows 1] [--out FILE]``. Saves a raw-query router model (a ``linear`` router behind its fitted
``offline`` feature pipeline, which travels inside the model), then for each N starts
``mlflow models serve --workers N`` on loopback, waits for ``/health``, and sends ``--requests``
POSTs of ``--rows`` raw questions from ``--concurrency`` client threads (a bounded load: each
client waits for its answer before sending the next). Reports requests/s and rows/s over the
wall time, and the p50 / p99 latency of the requests. The served model is stateless (nothing is
written at request time), so N workers on one host, or replicas on several hosts behind a load
balancer, answer identically. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

WORDS = ["solve", "integral", "read", "sign", "count", "apples", "chart", "total", "receipt", "colour",
         "car", "triangle", "area", "sum", "numbers", "street", "what", "how", "many", "the"]


def _questions(n: int, rng) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 12)))) + "?" for _ in range(n)]


def _model(path: Path) -> None:
    from mmroute.data.table import OutcomeTable
    from mmroute.export.pyfunc import save_router_model
    from mmroute.features.pipeline import build_feature_pipeline
    from mmroute.routers import create_router

    rng = np.random.default_rng(0)
    n = 1500
    questions = _questions(n, rng)
    correct = rng.integers(0, 2, (n, 4)).astype(float)
    cost = np.tile([1.0, 2.0, 5.0, 12.0], (n, 1)) * 1e-3
    table = OutcomeTable(ids=[f"t{i}" for i in range(n)], datasets=["toy"] * n, questions=questions,
                         models=["small", "medium", "large", "frontier"], correct=correct, cost=cost,
                         source="bench/serve_workers")
    train, test = table.subset(np.arange(1200)), table.subset(np.arange(1200, n))
    pipe = build_feature_pipeline("offline", use_cache=False).fit(train)
    router = create_router("linear").fit(pipe.transform(train), train.correct, train.cost)
    save_router_model(router, pipe.transform(test), list(table.models), path, pipeline=pipe, check_table=test)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: bytes) -> float:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
    return time.perf_counter() - start


def _bench(model: Path, workers: int, concurrency: int, requests: int, rows: int) -> dict:
    port = _port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model),
                             "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port),
                             "--workers", str(workers)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve --workers {workers} did not come up")
            time.sleep(0.5)
        rng = np.random.default_rng(workers)
        bodies = [json.dumps({"dataframe_records": [{"question": q} for q in _questions(rows, rng)],
                              "params": {"budget": 0.004}}).encode() for _ in range(64)]
        url = f"http://127.0.0.1:{port}/invocations"
        for b in bodies[:8]:  # warm every worker's first request path
            _post(url, b)
        latencies: list[float] = []
        lock = threading.Lock()
        counter = iter(range(requests))

        def client():
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t = _post(url, bodies[i % len(bodies)])
                with lock:
                    latencies.append(t)

        start = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        lat = np.asarray(latencies)
        return {"workers": workers, "requests": int(lat.size), "wall_s": round(wall, 2),
                "requests_per_s": round(lat.size / wall, 1), "rows_per_s": round(lat.size * rows / wall, 1),
                "p50_ms": round(float(np.percentile(lat, 50) * 1e3), 1),
                "p99_ms": round(float(np.percentile(lat, 99) * 1e3), 1)}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--rows", type=int, default=1, help="raw questions per request")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    report = {"bench": "serve_workers", "cpus": os.cpu_count(), "concurrency": args.concurrency,
              "rows_per_request": args.rows, "runs": []}
    with tempfile.TemporaryDirectory(prefix="mmroute-serve-workers-") as tmp:
        model = Path(tmp) / "model"
        _model(model)
        for n in (int(v) for v in args.workers.split(",")):
            report["runs"].append(_bench(model, n, args.concurrency, args.requests, args.rows))
    base = report["runs"][0]["requests_per_s"]
    for r in report["runs"]:
        r["speedup_vs_first"] = round(r["requests_per_s"] / base, 2)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
