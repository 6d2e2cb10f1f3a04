"""``mmroute benchmark``: fit routers on one split and write their cost-accuracy metrics as JSON (untracked).

    mmroute benchmark --data PATH_OR_SPEC [--features precomputed:EMB.npy | --features SPEC]
                      [--fusion mean] [--split in --train-frac F | --split out --train-datasets A,B
                      [--test-datasets C]] [--split-seed S] [--mode 11] --routers NAMES|all
                      [--rules budget,tradeoff] [--set ROUTER.FIELD=VALUE ...] --out results.json

The flags are the pipeline's (``mmroute train --help``) plus ``--fallback``, ``--model-order`` and
``--fill``; the recipe is :func:`mmroute.pipeline.benchmark.run_benchmark`. Per router and rule the
JSON holds nAUC, fixed_AUC, Ps, QNC and n_pareto, with fit and predict seconds, the router's
out-of-fold ``validation`` scores on its training rows and, for ``auto``, its ``fit_report`` (what it
chose, under which rule, cross-validation scores and seconds per candidate); per rule the split's
best single model and oracle figures. As in the MMR-Bench reference: ``--split-seed`` is both the
split's ``random_state`` and every router's seed (override with ``--set ROUTER.seed=N``), models are
ordered by name (``--model-order table`` keeps the file's order), and missing actual outcomes are
filled with column means over the whole table before scoring (``--fill test``: over the test rows).
Old spellings (``--table``, ``--seed``, ``--encoder``, ``--rule both``, ``--features EMB.npy``) work
for one more release with a deprecation warning.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmroute.cli._types import integer
from mmroute.cli.options import add_config_arguments, add_deprecated_alias, config_kwargs, encoder_spec

__all__ = ["register", "main", "cmd_benchmark"]

_SKIP = ("experiment", "system_metrics", "log_model", "select_metric")


def _rule(text: str) -> str:
    """The old ``--rule budget|tradeoff|both``."""
    if text not in ("budget", "tradeoff", "both"):
        raise argparse.ArgumentTypeError(f"expected budget, tradeoff or both, got {text!r}")
    return "budget,tradeoff" if text == "both" else text


def register(subparsers: Any) -> argparse.ArgumentParser:
    from mmroute.pipeline.benchmark import BenchmarkOptions
    from mmroute.pipeline.config import PipelineConfig

    p = subparsers.add_parser("benchmark", help="train routers on one split and write their metrics as JSON",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    groups: dict = {}
    add_config_arguments(p, PipelineConfig, skip=_SKIP, defaults={"train_frac": 0.2}, groups=groups)
    add_config_arguments(p, BenchmarkOptions, groups=groups)
    add_deprecated_alias(p, "--table", dest="data", new="--data")
    add_deprecated_alias(p, "--seed", dest="split_seed", new="--split-seed", convert=integer)
    add_deprecated_alias(p, "--encoder", dest="features", new="--features", convert=encoder_spec)
    add_deprecated_alias(p, "--rule", dest="rules", new="--rules", convert=_rule)
    p.add_argument("--out", required=True, help="where to write the results JSON")
    p.set_defaults(func=cmd_benchmark)
    return p


def cmd_benchmark(args: argparse.Namespace) -> int:
    from mmroute.pipeline.benchmark import BenchmarkOptions, format_results, run_benchmark
    from mmroute.pipeline.config import PipelineConfig

    out = run_benchmark(PipelineConfig(**config_kwargs(args, PipelineConfig)),
                        BenchmarkOptions(**config_kwargs(args, BenchmarkOptions)))
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
