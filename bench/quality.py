"""Quality target: mmroute's routers against the MMR-Bench reference anchors on MMLU-Pro.

Usage: ``python bench/quality.py [--data-dir ../shared/data] [--routers all] [--fractions 0.2,0.8]
[--set ROUTER.FIELD=VALUE ...] [--out quality.json]``.

Runs the benchmark step (:func:`mmroute.pipeline.benchmark.run_benchmark`, what ``mmroute benchmark``
calls) on ``mmlu_pro_routing.parquet`` with the row-aligned MiniLM embeddings
(``features="precomputed:mmlu_pro_minilm.npy"``), split "in" with seed 42, text-only mode 11, at each training
fraction, every router, both decision rules; then compares with ``anchors.json``. Prints one
JSON object:

- ``table``: fraction -> router -> rule -> {nAUC, fixed_AUC, Ps, QNC, n_pareto} (+ fit_seconds);
- ``reference``: fraction -> the anchors' best router figures, best single model and oracle;
- ``checks``: one entry per requirement with ``pass``:
  ``reproduce/<router>@<f>`` (``linear_mf``, ``knn``, ``kmeans`` within +-0.01 nAUC of the anchor,
  budget rule) and ``best@<f>`` (the best (router, rule) by nAUC, oracle and random excluded, has
  nAUC and fixed_AUC >= the best reference router's and a finite QNC), with ``margin_nAUC``
  (the +0.02 goal is reported as ``goal_met``);
- ``passed``: all checks pass.
Exit code 0 when every check passes, 1 otherwise, 2 when the data is missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
REPRODUCE = {"linear_mf": "linearmf", "knn": "knn", "kmeans": "kmeans"}
TOLERANCE = 0.01
GOAL = 0.02
BASELINES = ("oracle", "random")


def _num(v: Any) -> float:
    if v is None:
        return math.nan
    if isinstance(v, str):
        return math.inf if v == "inf" else -math.inf if v == "-inf" else float(v)
    return float(v)


def run_fraction(data_dir: Path, frac: float, routers: str, options: list[str]) -> dict[str, Any]:
    from mmroute.pipeline import PipelineConfig
    from mmroute.pipeline.benchmark import run_benchmark

    cfg = PipelineConfig(data=str(data_dir / "mmlu_pro_routing.parquet"),
                         features=f"precomputed:{data_dir / 'mmlu_pro_minilm.npy'}", split="in", train_frac=frac,
                         split_seed=42, mode=11, routers=routers, rules=("budget", "tradeoff"), images="ignore",
                         router_options=tuple(options))
    return run_benchmark(cfg)


def compare(frac: float, result: dict[str, Any], anchors: dict[str, Any]) -> tuple[dict, dict]:
    """Checks for one fraction and the reference summary."""
    checks: dict[str, Any] = {}
    routers = result["routers"]
    for ours, theirs in REPRODUCE.items():
        if ours not in routers:
            continue
        got, want = _num(routers[ours]["budget"]["nAUC"]), anchors[theirs]["nAUC"]
        checks[f"reproduce/{ours}@{frac}"] = {"nAUC": got, "anchor": want, "diff": round(got - want, 4),
                                              "pass": abs(got - want) <= TOLERANCE}
    ref_best_nauc = max(a["nAUC"] for a in anchors.values() if "nAUC" in a)
    ref_best_fixed = max(a["fixed_AUC"] for a in anchors.values() if "fixed_AUC" in a)
    candidates = [(name, rule, r[rule]) for name, r in routers.items() if name not in BASELINES
                  for rule in result["rules"] if rule in r and not math.isnan(_num(r[rule]["nAUC"]))]
    if candidates:
        name, rule, m = max(candidates, key=lambda c: _num(c[2]["nAUC"]))
        nauc, fixed, qnc = _num(m["nAUC"]), _num(m["fixed_AUC"]), _num(m["QNC"])
        checks[f"best@{frac}"] = {
            "router": name, "rule": rule, "nAUC": nauc, "fixed_AUC": fixed, "QNC": qnc,
            "reference_best_nAUC": ref_best_nauc, "reference_best_fixed_AUC": ref_best_fixed,
            "margin_nAUC": round(nauc - ref_best_nauc, 4), "margin_fixed_AUC": round(fixed - ref_best_fixed, 4),
            "goal_met": nauc - ref_best_nauc >= GOAL,
            "pass": nauc >= ref_best_nauc and fixed >= ref_best_fixed and math.isfinite(qnc),
        }
    any_anchor = next(iter(anchors.values()))
    reference = {"best_nAUC": ref_best_nauc, "best_fixed_AUC": ref_best_fixed,
                 "best_single_acc": any_anchor["best_single_acc"], "oracle_nAUC": any_anchor["oracle_nAUC"],
                 "oracle_Ps": any_anchor["oracle_Ps"],
                 "routers": {k: {m: a.get(m) for m in ("nAUC", "fixed_AUC", "Ps", "QNC")} for k, a in anchors.items()}}
    return checks, reference


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    ap.add_argument("--routers", default="all", help="comma-separated names or 'all' (default)")
    ap.add_argument("--fractions", default="0.2,0.8")
    ap.add_argument("--set", dest="options", action="append", default=[], metavar="ROUTER.FIELD=VALUE")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    anchors_path = args.data_dir / "anchors.json"
    if not (args.data_dir / "mmlu_pro_routing.parquet").is_file() or not anchors_path.is_file():
        print(json.dumps({"error": f"shared data not found in {args.data_dir}"}))
        return 2
    anchors = json.loads(anchors_path.read_text())
    out: dict[str, Any] = {"table": {}, "reference": {}, "checks": {}, "errors": {}}
    for frac in (float(f) for f in args.fractions.split(",")):
        result = run_fraction(args.data_dir, frac, args.routers, args.options)
        out["table"][str(frac)] = {name: {"fit_seconds": round(r["fit_seconds"], 2),
                                          **{rule: r[rule] for rule in result["rules"] if rule in r}}
                                   for name, r in result["routers"].items()}
        out["errors"].update({f"{k}@{frac}": v for k, v in result["errors"].items()})
        anchor = anchors.get(f"mmlupro_{frac}", {})
        if anchor:
            checks, reference = compare(frac, result, anchor)
            out["checks"].update(checks)
            out["reference"][str(frac)] = reference
    out["passed"] = bool(out["checks"]) and all(c["pass"] for c in out["checks"].values())
    from mmroute.evaluation import json_safe

    text = json.dumps(json_safe(out), indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
