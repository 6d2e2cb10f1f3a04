"""``mmroute benchmark``: train routers on one split and write their cost-accuracy metrics as JSON.

    mmroute benchmark --table PATH_OR_SPEC [--features EMB.npy | --encoder SPEC] [--fusion mean]
                      [--split in --train-frac F | --split out --train-datasets A+B [--test-datasets C]]
                      [--seed S] [--mode 11] --routers NAMES|all [--rule budget|tradeoff|both]
                      [--set ROUTER.FIELD=VALUE ...] --out results.json

Per router and rule the JSON holds nAUC, fixed_AUC, Ps, QNC and n_pareto, with fit and predict
seconds; per rule the split's best single model and oracle figures. As in the MMR-Bench reference:
``--seed`` is both the split's ``random_state`` and every router's seed (override with
``--set ROUTER.seed=N``), models are ordered by name (``--model-order table`` keeps the file's
order; the budget rule breaks ties and falls back by model index), and missing actual outcomes
are filled with column means over the whole table before scoring (``--fill test``: over the
test rows). Training always masks missing outcomes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence
from mmroute.vocabulary import FALLBACKS, FUSIONS, IMAGE_POLICIES

__all__ = ["register", "main", "run_benchmark", "format_results"]

log = logging.getLogger(__name__)

METRIC_KEYS = ("nAUC", "fixed_AUC", "Ps", "QNC", "n_pareto")


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("benchmark", help="train routers on one split and write their metrics as JSON",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", required=True, help="outcome table: a file, a directory, <root>/<a>+<b>, "
                   "or synthetic[:n=..,seed=..]")
    feats = p.add_mutually_exclusive_group()
    feats.add_argument("--features", default=None, metavar="EMB.npy",
                       help="precomputed embeddings, row-aligned with the table file")
    feats.add_argument("--encoder", default="offline", help="encoder spec when no --features (default offline)")
    p.add_argument("--fusion", choices=FUSIONS, default="mean")
    p.add_argument("--split", choices=("in", "out"), default="in")
    p.add_argument("--train-frac", type=float, default=0.2, help="split in: training share (default 0.2)")
    p.add_argument("--train-datasets", default=None, help="split out: training datasets joined by '+'")
    p.add_argument("--test-datasets", default=None, help="split out: test datasets (default: all others)")
    p.add_argument("--seed", type=int, default=42, help="split random_state and router seed (default 42)")
    p.add_argument("--mode", default=None, help="modality mode XY (11, 12, ..., 33); default: none applied")
    p.add_argument("--routers", default="all", help="comma-separated router names, or 'all' (default)")
    p.add_argument("--rule", choices=("budget", "tradeoff", "both"), default="both")
    p.add_argument("--fallback", choices=FALLBACKS, default="first",
                   help="budget rule: pick of an instance with no model under the budget (reference: first)")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="ROUTER.FIELD=VALUE",
                   help="router option, repeatable; '*' applies to every router with that field")
    p.add_argument("--model-order", choices=("sorted", "table"), default="sorted")
    p.add_argument("--fill", choices=("table", "test"), default="table",
                   help="fill missing actual outcomes with column means over the whole table or the test rows")
    p.add_argument("--images", choices=IMAGE_POLICIES, default="warn")
    p.add_argument("--cache-dir", default=None, help="embedding cache directory")
    p.add_argument("--device", default=None, help="encoder device (e.g. cuda); default: the encoder's choice")
    p.add_argument("--out", required=True, help="where to write the results JSON")
    p.set_defaults(func=cmd_benchmark)
    return p


def _router_options(names: Sequence[str], items: Sequence[str], seed: int) -> dict[str, dict[str, Any]]:
    """Typed config overrides per router: ``seed`` first, then ``*`` options, then the router's own."""
    import dataclasses
    import typing

    from mmroute.pipeline.config import convert_value, parse_router_options
    from mmroute.routers import router_class

    parsed = parse_router_options(items)
    unknown = sorted(set(parsed) - set(names) - {"*"})
    if unknown:
        raise ValueError(f"--set names router(s) {unknown} that are not benchmarked; benchmarked: {list(names)}")
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        cls = router_class(name).config_class
        hints = typing.get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls)}
        raw = {k: v for k, v in parsed.get("*", {}).items() if k in fields}
        own = parsed.get(name, {})
        bad = sorted(set(own) - fields)
        if bad:
            raise ValueError(f"unknown option(s) {bad} for router {name!r}; valid: {sorted(fields)}")
        raw.update(own)
        out[name] = {"seed": seed, **{k: convert_value(v, hints[k], f"{name}.{k}") for k, v in raw.items()}}
    return out


def _resolve_routers(spec: str) -> list[str]:
    from mmroute.routers import list_routers

    known = list_routers()
    names = known if spec.strip() == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise KeyError(f"unknown router(s) {unknown or [spec]}; valid names: {', '.join(known)} (or 'all')")
    return list(dict.fromkeys(names))


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Load, split, embed, then fit and evaluate every requested router; returns the JSON dict."""
    import numpy as np

    from mmroute.data import apply_mode, load_table, split_in, split_out
    from mmroute.evaluation import json_safe
    from mmroute.features import build_feature_pipeline
    from mmroute.routers import create_router
    from mmroute.routers.experiment import fit_and_evaluate

    rules = ("budget", "tradeoff") if args.rule == "both" else (args.rule,)
    names = _resolve_routers(args.routers)
    options = _router_options(names, args.options, args.seed)

    table = load_table(args.table, images=args.images)
    if args.model_order == "sorted":
        table = table.select_models(sorted(table.models))
    if args.split == "in":
        frac = int(args.train_frac) if args.train_frac >= 1 else args.train_frac
        train_idx, test_idx = split_in(table, frac, args.seed)
        split = {"kind": "in", "train_frac": args.train_frac, "seed": args.seed}
    else:
        if not args.train_datasets:
            raise ValueError("--split out needs --train-datasets")
        train_idx, test_idx = split_out(table, args.train_datasets, args.test_datasets)
        split = {"kind": "out", "train_datasets": args.train_datasets,
                 "test_datasets": args.test_datasets or "all others"}
    train, test = table.subset(train_idx), table.subset(test_idx)
    if args.mode is not None:
        train, test = apply_mode(train, test, args.mode)
    split.update(n_train=len(train_idx), n_test=len(test_idx), mode=args.mode)
    log.info("split %s: %d train / %d test rows", args.split, len(train_idx), len(test_idx))

    spec = f"precomputed:{args.features}" if args.features else args.encoder
    t0 = time.perf_counter()
    pipe = build_feature_pipeline(spec, fusion=args.fusion, cache_dir=args.cache_dir, device=args.device)
    pipe.fit(train)
    train_f, test_f = pipe.transform(train), pipe.transform(test)
    log.info("features %s (%s fusion): %d dims in %.1fs", spec, args.fusion, train_f.n_features,
             time.perf_counter() - t0)

    if args.fill == "table":
        correct, cost = table.filled()
        outcomes = (correct[test_idx], cost[test_idx])
    else:
        outcomes = None

    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    reference: dict[str, Any] = {}
    for i, name in enumerate(names, 1):
        log.info("[%d/%d] %s %s", i, len(names), name, options[name])
        try:
            router = create_router(name, **options[name])
            res = fit_and_evaluate(router, train_f, train, test_f, test, rules=rules, fallback=args.fallback,
                                   outcomes=outcomes, per_dataset=False)
        except (ValueError, RuntimeError, KeyError, TypeError, MemoryError) as err:
            # One failing router must not cost the others' results; the exit code reports it.
            log.error("%s failed: %s", name, err)
            errors[name] = f"{type(err).__name__}: {err}"
            continue
        results[name] = {"fit_seconds": res.fit_seconds, "predict_seconds": res.predict_seconds,
                         "params": res.params, **res.metrics(METRIC_KEYS)}
        for rule, ev in res.results.items():
            m = ev.metrics
            reference.setdefault(rule, {
                "best_single": {"model": ev.singles.name(ev.singles.best_index), "acc": m["best_single_acc"],
                                "cost": m["best_single_cost"]},
                "cost_range": [m["cost_range_lo"], m["cost_range_hi"]],
                "oracle": {"nAUC": m["oracle_nAUC"], "Ps": m["oracle_Ps"], "fixed_AUC": m["oracle_fixed_AUC"],
                           "acc": m["oracle_acc"], "cost": m["oracle_cost"]},
                "random": {"acc": m["random_acc"], "cost": m["random_cost"]},
            })
    return json_safe({
        "table": {"source": table.source, "n_instances": table.n_instances, "n_models": table.n_models,
                  "models": list(table.models)},
        "split": split,
        "features": {"spec": spec, "fusion": args.fusion, "n_features": train_f.n_features},
        "rules": list(rules), "fallback": args.fallback, "fill": args.fill,
        "reference": reference, "routers": results, "errors": errors,
        "n_test_rows": int(np.asarray(test_idx).size),
    })


def format_results(out: dict[str, Any]) -> str:
    """A plain-text table: one line per router and rule."""
    lines = [f"{'router':<16} {'rule':<9} {'nAUC':>7} {'fixedAUC':>8} {'Ps':>7} {'QNC':>7} {'fit s':>7}"]

    def num(v: Any) -> str:
        return f"{v:7.4f}" if isinstance(v, (int, float)) else f"{str(v):>7}"

    for name, r in out["routers"].items():
        for rule in out["rules"]:
            m = r.get(rule, {})
            lines.append(f"{name:<16} {rule:<9} {num(m.get('nAUC'))} {num(m.get('fixed_AUC')):>8} "
                         f"{num(m.get('Ps'))} {num(m.get('QNC'))} {r['fit_seconds']:7.1f}")
    for rule, ref in out["reference"].items():
        lines.append(f"{rule}: best single {ref['best_single']['model']} acc {ref['best_single']['acc']:.4f}; "
                     f"oracle nAUC {ref['oracle']['nAUC']:.4f} Ps {ref['oracle']['Ps']:.4f}")
    return "\n".join(lines)


def cmd_benchmark(args: argparse.Namespace) -> int:
    out = run_benchmark(args)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(format_results(out))
    print(f"wrote {path}")
    if out["errors"]:
        print(f"mmroute benchmark: {len(out['errors'])} router(s) failed: "
              + "; ".join(f"{k}: {v}" for k, v in out["errors"].items()), file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from mmroute.cli import main as cli_main

    return cli_main(["benchmark", *(sys.argv[1:] if argv is None else argv)])
