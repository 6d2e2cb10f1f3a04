"""Scale: wall time and peak memory of each step at n = 10k, 100k, 1M instances (M = 10 and 30).

Usage: ``python bench/scale.py [--sizes 10000,100000,1000000] [--models 10,30] [--time-box 600]
[--out FILE]``. Each (n, M) runs in a fresh process (so peak memory is its own) limited to
``--time-box`` seconds; a run that does not finish is reported as such (nothing is extrapolated).

The table comes from the embedded generator's latent model (:func:`mmroute.data.synthetic.sample_latents`,
its question text and its outcome model, text only: no images are drawn at these sizes); for M
beyond the generator's 8 models, the extra models are seeded perturbations of its model specs
(abilities + N(0, 0.3), prices x U(0.7, 1.4)). Steps, on an 80/20 "in" split:

- ``load``: build the outcome table; ``embed``: offline TF-IDF + SVD features, fitted on the
  training rows, for all rows;
- ``train/linear_mf``, ``train/knn`` (a faiss HNSW index from 50k training rows on, with its
  measured recall@k), ``train/fusion_mf`` (2 epochs, one member: the per-epoch cost is what grows);
- ``sweep/budget`` and ``sweep/tradeoff`` on the test rows (knn's predictions);
- ``export/linear_mf`` and ``export/fusion_mf`` (ONNX, parity-checked).

Peak memory is the process's peak resident set during the step (sampled every 20 ms). Between
consecutive sizes the JSON gives the growth exponent log(t2/t1) / log(n2/n1) per step; the target
is <= 1.2 between 100k and 1M. ``largest_n_fitting_24GiB`` is the largest size run whose peak
stayed under 24 GiB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

GiB = 1024 ** 3


class _Peak:
    """Peak RSS of this process while the ``with`` block runs."""

    def __enter__(self):
        self.peak, self._stop = _rss(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.start = time.perf_counter()
        return self

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build_table(n: int, n_models: int, seed: int = 0):
    """An outcome table of n text-only instances and n_models models from the generator's latent model."""
    from mmroute.data import synthetic
    from mmroute.data.synthetic_spec import MODELS, SKILLS
    from mmroute.data.table import OutcomeTable

    rng = np.random.default_rng(seed)
    lat = synthetic.sample_latents(rng, n)
    lat["has_image"] = False
    image_cols = [c for c in SKILLS if c in ("glyph", "count", "detail")]
    lat[image_cols] = 0.0
    lat["quality"] = 0.0
    questions = np.array([synthetic._question(rng, row) for row in lat.to_dict("records")], dtype=object)
    specs = [dict(MODELS[j % len(MODELS)]) for j in range(n_models)]
    for j in range(len(MODELS), n_models):
        specs[j]["ability"] = tuple(np.asarray(specs[j]["ability"]) + rng.normal(0, 0.3, len(SKILLS)))
        specs[j]["price_in"] *= rng.uniform(0.7, 1.4)
        specs[j]["price_out"] *= rng.uniform(0.7, 1.4)
        specs[j]["name"] = f"{specs[j]['name']}-v{j}"
    skills = lat[list(SKILLS)].to_numpy(np.float64)
    ability = np.array([s["ability"] for s in specs])
    bias = np.array([s["bias"] for s in specs])
    logits = bias[None, :] + skills @ ability.T - lat["difficulty"].to_numpy()[:, None]
    correct = (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float64)
    words = np.array([len(q.split()) for q in questions], dtype=np.float64)
    out_tokens = np.array([s["verbosity"] for s in specs])[None, :] * rng.lognormal(0, 0.35, logits.shape)
    cost = (np.array([s["price_in"] for s in specs]) * (40 + 1.3 * words)[:, None]
            + np.array([s["price_out"] for s in specs]) * out_tokens) / 1e6
    return OutcomeTable(ids=np.array([f"i{k}" for k in range(n)], dtype=object),
                        datasets=lat["dataset"].to_numpy(dtype=object), questions=questions,
                        models=[s["name"] for s in specs], correct=correct, cost=cost,
                        source=f"bench/scale n={n} M={n_models}")


def run_one(n: int, n_models: int) -> dict:
    """Every step once at (n, M); returns {step: {"seconds", "peak_rss_gib"}} and details."""
    import torch

    from mmroute.data.splits import split_in
    from mmroute.evaluation import evaluate_predictions
    from mmroute.export.core import export_router
    from mmroute.features.pipeline import build_feature_pipeline
    from mmroute.routers import create_router

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    steps: dict = {}
    extra: dict = {}

    def step(name, fn):
        with _Peak() as p:
            value = fn()
        steps[name] = {"seconds": round(p.seconds, 3), "peak_rss_gib": round(p.peak / GiB, 3)}
        print(f"[scale n={n} M={n_models}] {name}: {p.seconds:.1f} s, peak {p.peak / GiB:.2f} GiB",
              file=sys.stderr, flush=True)
        return value

    table = step("load", lambda: build_table(n, n_models))
    tr, te = split_in(table.n_instances, 0.8, 0)
    train, test = table.subset(tr), table.subset(te)

    def embed():
        pipe = build_feature_pipeline("offline", use_cache=False).fit(train)
        return pipe.transform(train), pipe.transform(test)

    ftrain, ftest = step("embed", embed)
    extra["feature_width"] = int(ftrain.fused.shape[1])
    routers = {}
    for name, opts in (("linear_mf", {}), ("knn", {}),
                       ("fusion_mf", {"max_epochs": 2, "n_ensemble": 1, "batch_size": 1024})):
        # Defaults bind this iteration's name and options to the closure (step calls it at once anyway).
        routers[name] = step(f"train/{name}", lambda name=name, opts=opts: create_router(name, **opts).fit(
            ftrain, train.correct, train.cost))
    knn = routers["knn"]
    extra["knn_index"] = "hnsw" if knn.index_ is not None else "exact"
    if knn.index_ is not None:
        extra["knn_recall_at_k"] = knn.index_recall_
    perf, pcost = step("predict/knn", lambda: knn.predict(ftest))
    correct, cost = test.filled()
    for rule in ("budget", "tradeoff"):
        res = step(f"sweep/{rule}", lambda rule=rule: evaluate_predictions(perf, pcost, correct, cost, rule=rule))
        extra[f"{rule}/nAUC"] = float(res.metrics["nAUC"])
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("linear_mf", "fusion_mf"):
            check = ftest.subset(np.arange(min(2000, len(ftest))))
            step(f"export/{name}",
                 lambda name=name, check=check: export_router(routers[name], check, Path(tmp) / f"{name}.onnx"))
    return {"steps": steps, **extra}


def _exponents(results: dict, sizes: list[int]) -> dict:
    out = {}
    done = [n for n in sizes if "steps" in results.get(str(n), {})]
    for a, b in zip(done, done[1:]):
        ra, rb = results[str(a)]["steps"], results[str(b)]["steps"]
        out[f"{a}->{b}"] = {s: round(math.log(max(rb[s]["seconds"], 1e-6) / max(ra[s]["seconds"], 1e-6))
                                     / math.log(b / a), 3) for s in ra if s in rb}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--models", default="10,30")
    ap.add_argument("--time-box", type=float, default=600.0, help="seconds per (n, M) run")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # "n,M": run in this process
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.one:
        n, m = (int(v) for v in args.one.split(","))
        print(json.dumps(run_one(n, m)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    report: dict = {"bench": "scale", "cpus": os.cpu_count(), "time_box_s": args.time_box, "runs": {}}
    for m in [int(v) for v in args.models.split(",")]:
        results: dict = {}
        for n in sizes:
            start = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, __file__, "--one", f"{n},{m}"], capture_output=True,
                                      text=True, timeout=args.time_box)
                if proc.returncode == 0:
                    results[str(n)] = json.loads(proc.stdout.strip().splitlines()[-1])
                else:
                    results[str(n)] = {"status": f"failed (exit {proc.returncode})",
                                       "stderr_tail": proc.stderr[-800:]}
            except subprocess.TimeoutExpired as exc:
                done = [ln for ln in (exc.stderr or b"").decode(errors="replace").splitlines() if "[scale" in ln]
                results[str(n)] = {"status": f"not finished within the {args.time_box:.0f} s time box",
                                   "steps_done": done}
            results[str(n)]["wall_s"] = round(time.perf_counter() - start, 1)
        fits = [n for n in sizes if "steps" in results[str(n)]
                and max(s["peak_rss_gib"] for s in results[str(n)]["steps"].values()) < 24]
        report["runs"][f"M={m}"] = {"sizes": results, "exponents": _exponents(results, sizes),
                                    "largest_n_run_fitting_24GiB": max(fits) if fits else None}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
