"""Scale: wall time, CPU time and peak memory of each step at n = 10k, 100k, 1M instances (M = 10 and 30).

Usage: ``python bench/scale.py [--sizes 10000,100000,1000000] [--models 10,30] [--time-box 3600]
[--max-rss-gib 20] [--out bench/results/scale.json]``. Each (n, M) runs in a fresh process (so its
peak memory is its own), limited to ``--time-box`` seconds and to ``--max-rss-gib`` of resident
memory (the process stops itself at the cap, before the machine's OOM killer would); the steps it
finished are kept and the one it was in is named, so a size that does not fit is reported, not fatal.

The table comes from the embedded generator's latent model (:func:`mmroute.data.synthetic.sample_latents`
and its outcome model, text only: no images are drawn at these sizes). Questions follow the
generator's text model (a dataset template plus Poisson counts of words from each text skill's
vocabulary, filler and complexity words, shuffled), drawn with array operations instead of the
generator's per-row loop (``_question``: 40 s at 1M rows), so the words differ draw for draw but
not in distribution. For M beyond the generator's 8 models, the extra models are seeded
perturbations of its model specs (abilities + N(0, 0.3), prices x U(0.7, 1.4)). Steps, on an 80/20
"in" split:

- ``load``: build the outcome table; ``embed``: offline TF-IDF + SVD features, fitted on the
  training rows, for all rows;
- ``train/linear_mf``, ``train/knn`` (a faiss HNSW index from 50k training rows on, with its
  recall@k measured at fit on 1,000 training rows), ``train/fusion_mf`` (2 epochs, one member: the
  per-epoch cost is what grows), each with its default out-of-fold guard (5 folds: 6 fits of
  the same algorithm, 5x the cost of one fit at the same growth) or, with ``--guard off``, one fit;
- ``predict/knn`` on the test rows, and ``check/knn_recall``: recall@k of those predictions'
  neighbours against the exact search on 1,000 sampled test queries;
- ``sweep/budget`` and ``sweep/tradeoff`` on the test rows (knn's predictions);
- ``export/linear_mf`` and ``export/fusion_mf`` (ONNX, parity-checked on 2,000 test rows).

Per step: ``seconds`` (wall), ``cpu_seconds`` (this process, all threads: less sensitive than
wall time to other work on a shared machine), ``peak_rss_gib`` (the process's resident set,
sampled every 20 ms while the step runs: what the machine must hold at that point, earlier
steps' arrays included) and ``rss_start_gib``. Between consecutive sizes the JSON gives the growth
exponent log(t2/t1) / log(n2/n1) of each step, on wall and on CPU time; the target is <= 1.2
between 100k and 1M (n log n over a decade is 1.0 + log10(log 1M / log 100k) = 1.08).
``memory`` gives the largest size run whose peak stayed under 24 GiB (measured) and the size at
which the peak would reach 24 GiB on the line through the two largest finished sizes
(extrapolated: every step's memory is linear in n).
"""

from __future__ import annotations

import argparse
import itertools
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
MACHINE_GIB = 24.0
RECALL_QUERIES = 1000
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "scale.json"


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Monitor:
    """Samples this process's RSS every 20 ms: the peak of the current step, and a cap that ends
    the process (exit 75, after logging the step) before the machine runs out of memory."""

    EXIT_OVER_CAP = 75

    def __init__(self, log_path: Path, cap_bytes: float) -> None:
        self.log_path, self.cap = log_path, cap_bytes
        self.step, self.peak = "start", _rss()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(0.02)
            rss = _rss()
            self.peak = max(self.peak, rss)
            if rss > self.cap:
                self.write({"step": self.step, "status": f"stopped: RSS {rss / GiB:.2f} GiB over the "
                            f"{self.cap / GiB:.1f} GiB cap"})
                os._exit(self.EXIT_OVER_CAP)

    def write(self, record: dict) -> None:
        with open(self.log_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def run(self, name: str, fn):
        self.write({"step": name, "status": "started"})
        self.step, start_rss = name, _rss()
        self.peak = start_rss
        wall, cpu = time.perf_counter(), time.process_time()
        value = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        peak = max(self.peak, _rss())
        self.write({"step": name, "status": "done", "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
                    "peak_rss_gib": round(peak / GiB, 3), "rss_start_gib": round(start_rss / GiB, 3)})
        print(f"[scale] {name}: {wall:.1f} s wall, {cpu:.1f} s CPU, peak {peak / GiB:.2f} GiB",
              file=sys.stderr, flush=True)
        return value


def _questions(rng: np.random.Generator, lat) -> np.ndarray:
    """The generator's question text model (see ``mmroute.data.synthetic._question``), vectorised:
    per row a template of its dataset, Poisson(rate * skill) words of each text skill's vocabulary,
    Poisson(3) filler words and Poisson(1.2 * max(difficulty, 0)) complexity words, shuffled."""
    from mmroute.data.synthetic_spec import DATASETS, TEXT_SKILLS, VOCAB

    n = len(lat)
    groups = [(VOCAB[s], rate * lat[s].to_numpy()) for s, rate in TEXT_SKILLS.items()]
    groups += [(VOCAB["filler"], np.full(n, 3.0)),
               (VOCAB["complexity"], 1.2 * np.maximum(lat["difficulty"].to_numpy(), 0.0))]
    vocab = np.array([w for words, _ in groups for w in words], dtype=object)
    offsets = np.cumsum([0] + [len(words) for words, _ in groups])
    rows, word_ids = [], []
    for (words, lam), offset in zip(groups, offsets):
        counts = rng.poisson(lam)
        rows.append(np.repeat(np.arange(n), counts))
        word_ids.append(offset + rng.integers(len(words), size=int(counts.sum())))
    rows, word_ids = np.concatenate(rows), np.concatenate(word_ids)
    order = np.lexsort((rng.random(rows.size), rows))  # by row, shuffled within each row
    words = vocab[word_ids[order]].tolist()
    ends = np.cumsum(np.bincount(rows, minlength=n)).tolist()
    dataset = lat["dataset"].to_numpy()
    has_image = lat["has_image"].to_numpy()
    template_pick = rng.random(n)
    out = np.empty(n, dtype=object)
    start = 0
    templates = {(d, img): DATASETS[d]["templates" if img else "text_templates"]
                 for d in DATASETS for img in (False, True)}
    for i, end in enumerate(ends):
        options = templates[dataset[i], bool(has_image[i])]
        body = " ".join(words[start:end])
        out[i] = f"{options[int(template_pick[i] * len(options))]} {body}".strip() + "?"
        start = end
    return out


def build_table(n: int, n_models: int, seed: int = 0):
    """An outcome table of n text-only instances and n_models models from the generator's latent model."""
    from mmroute.data import synthetic
    from mmroute.data.synthetic_spec import IMAGE_SKILLS, MODELS, SKILLS
    from mmroute.data.table import OutcomeTable

    rng = np.random.default_rng(seed)
    lat = synthetic.sample_latents(rng, n)
    lat["has_image"] = False
    lat[list(IMAGE_SKILLS)] = 0.0
    lat["quality"] = 0.0
    questions = _questions(rng, lat)
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
    words = np.array([q.count(" ") + 1 for q in questions], dtype=np.float64)
    out_tokens = np.array([s["verbosity"] for s in specs])[None, :] * rng.lognormal(0, 0.35, logits.shape)
    cost = (np.array([s["price_in"] for s in specs]) * (40 + 1.3 * words)[:, None]
            + np.array([s["price_out"] for s in specs]) * out_tokens) / 1e6
    return OutcomeTable(ids=np.char.add("i", np.arange(n).astype(str)).astype(object),
                        datasets=lat["dataset"].to_numpy(dtype=object), questions=questions,
                        models=[s["name"] for s in specs], correct=correct, cost=cost,
                        source=f"bench/scale n={n} M={n_models}")


def run_one(n: int, n_models: int, log_path: Path, cap_gib: float, guard: str = "oof") -> None:
    """Every step once at (n, M), each step's record appended to ``log_path`` as it finishes."""
    import torch

    from mmroute.data.splits import split_in
    from mmroute.evaluation import evaluate_predictions
    from mmroute.export.core import export_router
    from mmroute.features.pipeline import build_feature_pipeline
    from mmroute.routers import create_router

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    # Import what the steps use first, so no step's time holds a first import (seconds, at any n).
    import faiss  # noqa: F401
    import lightning  # noqa: F401
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import sklearn.decomposition
    import sklearn.feature_extraction.text  # noqa: F401

    mon = _Monitor(log_path, cap_gib * GiB)
    mon.write({"n": n, "M": n_models, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "guard": guard})

    table = mon.run("load", lambda: build_table(n, n_models))
    tr, te = split_in(table.n_instances, 0.8, 0)
    train, test = table.subset(tr), table.subset(te)
    del table

    def embed():
        pipe = build_feature_pipeline("offline", use_cache=False).fit(train)
        return pipe.transform(train), pipe.transform(test)

    ftrain, ftest = mon.run("embed", embed)
    mon.write({"feature_width": int(ftrain.fused.shape[1])})
    routers = {}
    for name, opts in (("linear_mf", {}), ("knn", {}),
                       ("fusion_mf", {"max_epochs": 2, "n_ensemble": 1, "batch_size": 1024})):
        opts = {**opts, "guard": guard}
        routers[name] = mon.run(f"train/{name}", lambda name=name, opts=opts: create_router(name, **opts).fit(
            ftrain, train.correct, train.cost))
    knn = routers["knn"]
    mon.write({"knn_index": "hnsw" if knn.index_ is not None else "exact", "knn_k": knn.k_,
               **({"knn_recall_at_k_fit": knn.index_recall_} if knn.index_ is not None else {})})
    perf, pcost = mon.run("predict/knn", lambda: knn.predict(ftest))

    def recall():
        probe = np.random.default_rng(1).choice(len(ftest), size=min(RECALL_QUERIES, len(ftest)), replace=False)
        x = ftest.fused[probe]
        approx, exact = knn._neighbours(x, knn.k_), knn._neighbours(x, knn.k_, exact=True)
        hits = sum(len(np.intersect1d(a, e, assume_unique=True)) for a, e in zip(approx, exact))
        return float(hits / exact.size), len(probe)

    value, queries = mon.run("check/knn_recall", recall)
    mon.write({"knn_recall_at_k_test": value, "knn_recall_queries": queries})
    correct, cost = test.filled()
    for rule in ("budget", "tradeoff"):
        res = mon.run(f"sweep/{rule}", lambda rule=rule: evaluate_predictions(perf, pcost, correct, cost, rule=rule))
        mon.write({f"{rule}/nAUC": float(res.metrics["nAUC"]), f"{rule}/n_points": int(res.metrics["n_points"])})
    with tempfile.TemporaryDirectory() as tmp:
        check = ftest.subset(np.arange(min(2000, len(ftest))))
        for name in ("linear_mf", "fusion_mf"):
            mon.run(f"export/{name}", lambda name=name: export_router(routers[name], check, Path(tmp) / f"{name}.onnx"))
    mon.write({"status": "finished"})


def _read_log(path: Path) -> dict:
    """The child's records -> {"steps": {name: figures}, other keys, "status", "in_step"}."""
    out: dict = {"steps": {}}
    running = None
    for line in path.read_text().splitlines() if path.exists() else []:
        rec = json.loads(line)
        if "step" not in rec:
            out.update(rec)
        elif rec["status"] == "started":
            running = rec["step"]
        elif rec["status"] == "done":
            out["steps"][rec["step"]] = {k: v for k, v in rec.items() if k not in ("step", "status")}
            running = None
        else:
            out["status"], running = rec["status"], rec["step"]
    if out.get("status") != "finished" and running is not None:
        out["in_step"] = running
    return out


def _exponent(a: float, b: float, n1: int, n2: int) -> float:
    return round(math.log(max(b, 1e-3) / max(a, 1e-3)) / math.log(n2 / n1), 3)


def _exponents(results: dict, sizes: list[int]) -> dict:
    """Per pair of consecutive sizes, each step both finished: its growth exponent (wall, CPU)."""
    out = {}
    sizes = [n for n in sizes if results.get(str(n), {}).get("steps")]
    for a, b in itertools.pairwise(sizes):
        ra, rb = results[str(a)]["steps"], results[str(b)]["steps"]
        out[f"{a}->{b}"] = {s: {"wall": _exponent(ra[s]["seconds"], rb[s]["seconds"], a, b),
                                "cpu": _exponent(ra[s]["cpu_seconds"], rb[s]["cpu_seconds"], a, b)}
                            for s in ra if s in rb}
    return out


def _memory(results: dict, sizes: list[int]) -> dict:
    """Peak RSS per finished size, the largest that stayed under 24 GiB, and the size where the
    line through the two largest finished sizes reaches 24 GiB; a size that stopped early gives
    its peak so far (a lower bound) under ``peak_rss_gib_unfinished``."""
    peaks = {n: max(s["peak_rss_gib"] for s in results[str(n)]["steps"].values())
             for n in sizes if results.get(str(n), {}).get("status") == "finished"}
    partial = {str(n): max(s["peak_rss_gib"] for s in results[str(n)]["steps"].values())
               for n in sizes if str(n) in results and n not in peaks and results[str(n)].get("steps")}
    fits = [n for n, p in peaks.items() if p < MACHINE_GIB]
    out: dict = {"peak_rss_gib": {str(n): p for n, p in peaks.items()},
                 "largest_n_run_fitting_24GiB": max(fits) if fits else None}
    if partial:
        out["peak_rss_gib_unfinished"] = partial
    if len(peaks) >= 2:
        (n1, p1), (n2, p2) = sorted(peaks.items())[-2:]
        slope = (p2 - p1) / (n2 - n1)
        if slope > 0:
            out["gib_per_million_rows"] = round(slope * 1e6, 3)
            out["n_at_24GiB_extrapolated"] = int((MACHINE_GIB - p1) / slope + n1)
            out["extrapolated_from"] = [n1, n2]
    return out


def _merge(paths: list[Path], out: Path) -> int:
    """One report from several (e.g. one per M, or per guard): runs side by side, figures recomputed."""
    merged: dict = {"bench": "scale", "merged_from": [], "runs": {}}
    for path in paths:
        rep = json.loads(path.read_text())
        merged["merged_from"].append({k: v for k, v in rep.items() if k not in ("runs", "merged_from")})
        for key, run in rep["runs"].items():
            name = key if rep.get("guard", "oof") == "oof" else f"{key} guard={rep['guard']}"
            sizes = sorted(int(n) for n in run["sizes"])
            merged["runs"][name] = {"sizes": run["sizes"], "exponents": _exponents(run["sizes"], sizes),
                                    "memory": _memory(run["sizes"], sizes)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps({k: {"exponents": v["exponents"], "memory": v["memory"]} for k, v in merged["runs"].items()},
                     indent=2))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--models", default="10,30")
    ap.add_argument("--time-box", type=float, default=3600.0, help="seconds per (n, M) run")
    ap.add_argument("--max-rss-gib", type=float, default=20.0, help="resident-memory cap per (n, M) run")
    ap.add_argument("--guard", choices=("oof", "off"), default="oof",
                    help="the routers' guard: oof (their default: 5 out-of-fold refits, 5x the fit's cost "
                         "at the same growth) or off (one fit per router)")
    ap.add_argument("--merge", nargs="+", default=None, metavar="REPORT",
                    help="combine the runs of earlier reports into --out, recomputing exponents and memory")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # "n,M,LOG": run in this process
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    if args.one:
        n, m, log_path = args.one.split(",", 2)
        run_one(int(n), int(m), Path(log_path), args.max_rss_gib, args.guard)
        return 0
    if args.merge:
        return _merge([Path(p) for p in args.merge], Path(args.out))
    sizes = [int(s) for s in args.sizes.split(",")]
    report: dict = {"bench": "scale", "cpus": os.cpu_count(), "guard": args.guard, "time_box_s": args.time_box,
                    "max_rss_gib": args.max_rss_gib, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "runs": {}}
    out_path = Path(args.out)
    for m in [int(v) for v in args.models.split(",")]:
        results: dict = {}
        for n in sizes:
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                log_path = Path(tmp) / "steps.jsonl"
                cmd = [sys.executable, __file__, "--one", f"{n},{m},{log_path}", "--max-rss-gib", str(args.max_rss_gib),
                       "--guard", args.guard]
                try:
                    proc = subprocess.run(cmd, check=False, capture_output=True, text=True,
                                          timeout=args.time_box)
                    rc, tail = proc.returncode, proc.stderr[-1500:]
                except subprocess.TimeoutExpired as exc:
                    rc, tail = None, (exc.stderr or b"")[-1500:].decode(errors="replace")
                res = _read_log(log_path)
            if rc is None:
                res["status"] = f"not finished within the {args.time_box:.0f} s time box"
            elif rc != 0 and "status" not in res:
                res["status"] = f"failed (exit {rc})" + (" (killed: out of memory?)" if rc in (-9, 137) else "")
                res["stderr_tail"] = tail
            res["wall_s"] = round(time.perf_counter() - start, 1)
            results[str(n)] = res
            print(f"[scale] n={n} M={m}: {res.get('status')} in {res['wall_s']} s", file=sys.stderr, flush=True)
            report["runs"][f"M={m}"] = {"sizes": results}
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(report, indent=2) + "\n")  # after each size: a partial report survives
            if res.get("status") != "finished":
                break  # a larger size would not finish either
        report["runs"][f"M={m}"] = {"sizes": results, "exponents": _exponents(results, sizes),
                                    "memory": _memory(results, sizes)}
    text = json.dumps(report, indent=2)
    print(text)
    out_path.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
