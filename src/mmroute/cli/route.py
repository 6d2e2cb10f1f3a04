"""``mmroute route``: route a file of queries with a registered router, writing the decisions.

The queries (``.jsonl``, ``.csv`` or ``.parquet``; columns ``question``, optional ``image`` as base64
or ``image_path`` relative to the file, ``context``, ``id``) go through the same MLflow model that
``mlflow models serve`` serves, in chunks, with a progress bar. The output (``.parquet``, ``.csv`` or
``.jsonl``) has one row per query: ``id``, ``model``, ``ranking``, the operating point and the
per-model predictions. It is written only when every query was routed.

``--engine spark --master local[2]`` routes a Parquet table too large for one process on Spark
(the model in ``mlflow.pyfunc.spark_udf``, loaded once per executor): the decisions go to a Parquet
folder partitioned by the chosen model, equal row for row to the local engine's.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from mmroute.cli._types import integer

__all__ = ["register", "main"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("route", help="route a file of queries with a registered router model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="model URI, e.g. models:/mmroute-router@production, runs:/RUN/router or a path")
    p.add_argument("--input", required=True, help="queries: .jsonl, .csv or .parquet")
    p.add_argument("--out", required=True, help="decisions: .parquet, .csv or .jsonl")
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--target-cost", type=float, default=None,
                      help="average USD per query: the most accurate calibrated operating point within it")
    rule.add_argument("--target-quality", type=float, default=None,
                      help="fraction of the best single model's accuracy (e.g. 0.95): the cheapest point reaching it")
    rule.add_argument("--budget", type=float, default=None, help="per-query predicted-cost budget")
    rule.add_argument("--tradeoff", type=float, default=None, help="lambda >= 0: argmax perf - lambda * cost")
    p.add_argument("--models", default=None, help="comma-separated models allowed (default: the whole pool)")
    p.add_argument("--fallback", choices=("cheapest", "first"), default=None,
                   help="--budget: what a query with no model under the budget takes (default: the model's)")
    p.add_argument("--chunk-size", type=integer, default=512, help="queries per model call (default 512)")
    p.add_argument("--engine", choices=("local", "spark"), default="local",
                   help="local: in this process; spark: mlflow.pyfunc.spark_udf on a Spark cluster, --input a "
                        "Parquet file or folder, --out a Parquet folder partitioned by the chosen model")
    p.add_argument("--master", default="local[2]",
                   help="--engine spark: the Spark master (default local[2]; e.g. spark://HOST:7077, yarn)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_route)


def run_route(args: argparse.Namespace) -> int:
    from mmroute.pipeline.route import route_file, route_params

    params = route_params(budget=args.budget, tradeoff=args.tradeoff, target_cost=args.target_cost,
                          target_quality=args.target_quality, models=args.models, fallback=args.fallback)
    if args.engine == "spark":
        from mmroute.pipeline.spark import route_spark

        summary = route_spark(args.model, args.input, args.out, master=args.master, params=params)
    else:
        summary = route_file(args.model, args.input, args.out, params, chunk_size=args.chunk_size,
                             progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from mmroute.cli import main as cli_main

    return cli_main(["route", *(argv if argv is not None else sys.argv[1:])])
