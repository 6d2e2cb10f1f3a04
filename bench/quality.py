"""Quality targets: mmroute's routers and ``auto`` against the MMR-Bench reference anchors.

Usage: ``python bench/quality.py [--data-dir ../shared/data] [--tables mmlupro_0.2,mmlupro_0.8,mathv_0.2]
[--routers auto,ensemble,knn,kmeans,linear,linear_mf] [--set ROUTER.FIELD=VALUE ...] [--out quality.json]``.

Each table is the shared outcome table with its row-aligned MiniLM embeddings (``--features``), split
"in" with seed 42, text-only mode 11, both decision rules (the benchmark step,
:func:`mmroute.pipeline.benchmark.run_benchmark`, what ``mmroute benchmark`` calls), compared with
``anchors.json``:

- ``mmlupro_<f>``: ``mmlu_pro_routing.parquet`` + ``mmlu_pro_minilm.npy`` at train fraction f;
- ``mathv_<f>``: ``mathv_routing.parquet`` + ``mathv_minilm.npy`` (MATH-V, text only here; the
  multimodal report is ``bench/mathv_modes.py``).

Prints one JSON object:

- ``table``: table -> router -> rule -> {nAUC, fixed_AUC, Ps, QNC, n_pareto} (+ fit_seconds,
  validation: the out-of-fold scores on the training rows);
- ``auto``: table -> what ``auto`` chose (option, rule, members, out-of-fold nAUC per option,
  cross-validation seconds per candidate, the guard);
- ``reference``: table -> the anchors' best router figures, best single model and oracle;
- ``targets``: one entry per requirement with ``pass``:

  * ``reproduce/<router>@<table>``: ``linear_mf``, ``knn``, ``kmeans`` without the guard
    (``guard=off``: the reference routers as they are) within +-0.01 nAUC of the anchor, budget rule;
  * ``auto@<table>``: ``auto`` under the rule it chose on its training rows has nAUC and fixed_AUC
    >= the best reference router's (picked with hindsight) and Ps >= the best single model's test
    accuracy - 0.002; ``margin_nAUC`` and ``goal_met`` (+0.02);
  * ``never_worse/<router>@<table>``: every router's Ps, both rules, >= best single - 0.002;
- ``passed``: all ``reproduce`` and ``auto`` targets pass (``never_worse`` is reported).

Exit code 0 when they pass, 1 otherwise, 2 when the data is missing. Nothing here is tuned: the
routers run with their defaults, and ``auto`` chooses on training rows only.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
REPRODUCE = {"linear_mf": "linearmf", "knn": "knn", "kmeans": "kmeans"}
TOLERANCE = 0.01
GOAL = 0.02
PS_SLACK = 0.002
BASELINES = ("oracle", "random")
TABLES = {"mmlupro": ("mmlu_pro_routing.parquet", "mmlu_pro_minilm.npy"),
          "mathv": ("mathv_routing.parquet", "mathv_minilm.npy")}
DEFAULT_ROUTERS = "auto,ensemble,knn,kmeans,linear,linear_mf"


def _num(v: Any) -> float:
    if v is None:
        return math.nan
    if isinstance(v, str):
        return math.inf if v == "inf" else -math.inf if v == "-inf" else float(v)
    return float(v)


def run_table(data_dir: Path, key: str, routers: str, options: list[str]) -> dict[str, Any]:
    from mmroute.pipeline import PipelineConfig
    from mmroute.pipeline.benchmark import run_benchmark

    kind, _, frac = key.partition("_")
    if kind not in TABLES or not frac:
        raise SystemExit(f"unknown table {key!r}; expected <{'|'.join(TABLES)}>_<train fraction>, e.g. mathv_0.2")
    table, emb = TABLES[kind]
    cfg = PipelineConfig(data=str(data_dir / table), features=f"precomputed:{data_dir / emb}", split="in",
                         train_frac=float(frac), split_seed=42, mode=11, routers=routers,
                         rules=("budget", "tradeoff"), images="ignore", router_options=tuple(options))
    return run_benchmark(cfg)


def _ref_best(anchors: dict[str, Any]) -> tuple[float, float]:
    return (max(a["nAUC"] for a in anchors.values() if "nAUC" in a),
            max(a["fixed_AUC"] for a in anchors.values() if "fixed_AUC" in a))


def targets(key: str, result: dict[str, Any], raw: dict[str, Any], anchors: dict[str, Any]) -> dict[str, Any]:
    """The targets of one table (see the module docstring)."""
    out: dict[str, Any] = {}
    for ours, theirs in REPRODUCE.items():
        if ours in raw["routers"] and theirs in anchors:
            got, want = _num(raw["routers"][ours]["budget"]["nAUC"]), anchors[theirs]["nAUC"]
            out[f"reproduce/{ours}@{key}"] = {"nAUC": got, "anchor": want, "diff": round(got - want, 4),
                                             "pass": abs(got - want) <= TOLERANCE}
    best_nauc, best_fixed = _ref_best(anchors)
    best_single = _num(result["reference"]["budget"]["best_single"]["acc"])
    if "auto" in result["routers"]:
        auto = result["routers"]["auto"]
        rule = auto["fit_report"]["rule"]
        m = auto[rule]
        nauc, fixed, ps = _num(m["nAUC"]), _num(m["fixed_AUC"]), _num(m["Ps"])
        out[f"auto@{key}"] = {
            "rule": rule, "chosen": auto["fit_report"]["chosen"], "nAUC": nauc, "fixed_AUC": fixed, "Ps": ps,
            "QNC": _num(m["QNC"]), "other_rule": {r: auto[r] for r in result["rules"] if r != rule},
            "reference_best_nAUC": best_nauc, "reference_best_fixed_AUC": best_fixed,
            "best_single_acc": best_single,
            "margin_nAUC": round(nauc - best_nauc, 4), "margin_fixed_AUC": round(fixed - best_fixed, 4),
            "margin_Ps": round(ps - best_single, 4), "goal_met": nauc - best_nauc >= GOAL,
            "pass": nauc >= best_nauc and fixed >= best_fixed and ps >= best_single - PS_SLACK,
        }
    for name, r in result["routers"].items():
        if name in BASELINES:
            continue
        ps = {rule: _num(r[rule]["Ps"]) for rule in result["rules"] if rule in r}
        out[f"never_worse/{name}@{key}"] = {"Ps": ps, "best_single_acc": best_single,
                                            "pass": all(v >= best_single - PS_SLACK for v in ps.values())}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    ap.add_argument("--tables", default="mmlupro_0.2,mmlupro_0.8,mathv_0.2")
    ap.add_argument("--routers", default=DEFAULT_ROUTERS, help=f"comma-separated names or 'all' "
                    f"(default {DEFAULT_ROUTERS})")
    ap.add_argument("--set", dest="options", action="append", default=[], metavar="ROUTER.FIELD=VALUE")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    anchors_path = args.data_dir / "anchors.json"
    keys = [k.strip() for k in args.tables.split(",") if k.strip()]
    missing = [TABLES.get(k.partition("_")[0], ("?",))[0] for k in keys]
    if not anchors_path.is_file() or not all((args.data_dir / f).is_file() for f in missing):
        print(json.dumps({"error": f"shared data not found in {args.data_dir}"}))
        return 2
    anchors = json.loads(anchors_path.read_text())
    out: dict[str, Any] = {"table": {}, "auto": {}, "reference": {}, "targets": {}, "errors": {}, "seconds": {}}
    for key in keys:
        t0 = time.perf_counter()
        result = run_table(args.data_dir, key, args.routers, args.options)
        raw = run_table(args.data_dir, key, ",".join(REPRODUCE), ["*.guard=off"])
        out["seconds"][key] = round(time.perf_counter() - t0, 1)
        out["table"][key] = {name: {"fit_seconds": round(r["fit_seconds"], 2), "validation": r.get("validation"),
                                    **{rule: r[rule] for rule in result["rules"] if rule in r}}
                             for name, r in result["routers"].items()}
        out["table"][key].update({f"{name} (guard off)": {rule: r[rule] for rule in raw["rules"]}
                                  for name, r in raw["routers"].items()})
        if "auto" in result["routers"]:
            out["auto"][key] = result["routers"]["auto"]["fit_report"]
        out["errors"].update({f"{k}@{key}": v for k, v in {**result["errors"], **raw["errors"]}.items()})
        anchor = anchors.get(key, {})
        if anchor:
            out["targets"].update(targets(key, result, raw, anchor))
            best_nauc, best_fixed = _ref_best(anchor)
            any_anchor = next(iter(anchor.values()))
            out["reference"][key] = {
                "best_nAUC": best_nauc, "best_fixed_AUC": best_fixed, "best_single_acc": any_anchor["best_single_acc"],
                "oracle_nAUC": any_anchor["oracle_nAUC"], "oracle_Ps": any_anchor["oracle_Ps"],
                "routers": {k: {m: a.get(m) for m in ("nAUC", "fixed_AUC", "Ps", "QNC")} for k, a in anchor.items()}}
    required = {k: v for k, v in out["targets"].items() if not k.startswith("never_worse/")}
    out["passed"] = bool(required) and all(t["pass"] for t in required.values())
    out["status"] = {k: t["pass"] for k, t in out["targets"].items()}
    from mmroute.evaluation import json_safe

    text = json.dumps(json_safe(out), indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
