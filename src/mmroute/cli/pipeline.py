"""``mmroute prepare | train | sweep | evaluate | run``: the tracked pipeline steps.

Every command records into MLflow (``MLFLOW_TRACKING_URI``, default ``sqlite:///mlflow.db`` with
artifacts in ``./mlartifacts``) and checks the tracking location before doing any work. Under
``mlflow run`` the project's run is reused (``MLFLOW_RUN_ID``): ``train`` logs into it, ``sweep``
and ``run`` make it the parent of one child run per router.

- ``prepare``: load and validate a table (default: the embedded synthetic one), log its summary and
  the dataset input; ``--out FILE.parquet`` also writes it in the generic pairs format;
- ``train``: one router; ``sweep``: several routers, one nested run each, plus a comparison;
- ``run``: the whole default pipeline (data -> embed -> every router -> evaluate -> compare);
- ``evaluate``: re-score the router a run logged (pickled feature pipeline + router) on a table.

Router options: ``--set knn.k=20 --set '*.max_epochs=5'`` (several per ``--set``, space-separated).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Sequence

from mmroute.cli._types import boolean, integer, optional_int, optional_str
from mmroute.vocabulary import DEFAULT_METRIC, FUSIONS, IMAGE_POLICIES

__all__ = ["register", "main", "config_from_args"]

log = logging.getLogger(__name__)

COMMANDS = ("prepare", "train", "sweep", "evaluate", "run")


def _add_data(p: argparse.ArgumentParser) -> None:
    from mmroute.pipeline.config import DEFAULT_DATA

    g = p.add_argument_group("data")
    g.add_argument("--data", default=DEFAULT_DATA,
                   help="table path or spec (default %(default)s; e.g. data/MMR_Bench.csv, root/ocrbench+mathvista)")
    g.add_argument("--images", default="warn", choices=IMAGE_POLICIES,
                   help="image paths that name no file: fail, warn and drop the image, or skip the check")
    g.add_argument("--dataset", type=optional_str, default=None, help="keep only these datasets ('a+b')")
    g.add_argument("--experiment", type=optional_str, default=None,
                   help="MLflow experiment name (default: mmroute, or the mlflow run's experiment)")


def _add_training(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("split and modality")
    g.add_argument("--split", default="in", choices=("in", "out", "column"))
    g.add_argument("--train-frac", type=float, default=0.5, help="'in' split: training share (default %(default)s)")
    g.add_argument("--split-seed", type=integer, default=42, help="'in' split seed (default %(default)s)")
    g.add_argument("--train-datasets", default="", help="'out' split: training datasets (comma-separated)")
    g.add_argument("--test-datasets", default="", help="'out' split: test datasets (comma-separated)")
    g.add_argument("--split-column", default="split", help="'column' split: the column (default %(default)s)")
    g.add_argument("--mode", type=optional_int, default=None, help="MMR-Bench modality mode 11..33")
    g = p.add_argument_group("features")
    g.add_argument("--features", default="offline", help="encoder spec (default %(default)s)")
    g.add_argument("--fusion", default="mean", choices=FUSIONS)
    g.add_argument("--cache-dir", type=optional_str, default=None, help="embedding cache root")
    g.add_argument("--device", type=optional_str, default=None, help="encoder device (default: auto)")
    g = p.add_argument_group("routers and tracking")
    g.add_argument("--set", dest="options", action="append", default=[], metavar="ROUTER.FIELD=VALUE",
                   help="router option, repeatable; several space-separated per flag; '*.' = every router")
    g.add_argument("--max-epochs", type=optional_int, default=None,
                   help="cap the epochs of every Lightning router (0 or empty: router defaults)")
    g.add_argument("--rules", default="budget,tradeoff", help="decision rules (default %(default)s)")
    g.add_argument("--system-metrics", type=boolean, nargs="?", const=True, default=False,
                   help="also log CPU/GPU/memory system metrics")
    g.add_argument("--no-log-model", action="store_true",
                   help="do not log the fitted feature pipeline and router (evaluate needs them)")


def register(subparsers: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("prepare", help="load/validate a table and log it (tracked)",
                              description=__doc__, formatter_class=fmt)
    _add_data(p)
    p.add_argument("--out", type=optional_str, default=None,
                   help="also write the table here (.parquet or .csv, generic <model>_correct/_cost columns)")
    p.set_defaults(func=_cmd_prepare)

    p = subparsers.add_parser("train", help="train and evaluate one router (tracked)",
                              description=__doc__, formatter_class=fmt)
    p.add_argument("--router", required=True, help="router name (see mmroute sweep --routers all)")
    _add_data(p)
    _add_training(p)
    p.set_defaults(func=_cmd_train)

    for name, help_ in (("sweep", "train and compare several routers: a parent run, a child per router"),
                        ("run", "the whole default pipeline: data, embed, every router, evaluate, compare")):
        p = subparsers.add_parser(name, help=help_, description=__doc__, formatter_class=fmt)
        p.add_argument("--routers", default="all", help="router names, comma-separated, or 'all' (default)")
        p.add_argument("--select-metric", default=DEFAULT_METRIC,
                       help="metric naming the best child (default %(default)s)")
        _add_data(p)
        _add_training(p)
        if name == "run":
            p.add_argument("--register-model", type=optional_str, default="mmroute-router",
                           help="register the best router under this name and stage it "
                                "('' to skip; default %(default)s)")
        p.set_defaults(func=_cmd_sweep if name == "sweep" else _cmd_run)

    p = subparsers.add_parser("evaluate", help="re-score a logged router on a table (tracked)",
                              description=__doc__, formatter_class=fmt)
    p.add_argument("--run-id", required=True, help="run that logged the router (a train run or a sweep child)")
    p.add_argument("--data", type=optional_str, default=None, help="table (default: the run's own data)")
    p.add_argument("--rows", choices=("test", "all"), default="test",
                   help="the run's test rows (by instance id) or every row of the table")
    p.add_argument("--images", default="warn", choices=IMAGE_POLICIES)
    p.add_argument("--mode", type=optional_int, default=None, help="modality mode (default: the run's)")
    p.add_argument("--cache-dir", type=optional_str, default=None)
    p.add_argument("--experiment", type=optional_str, default=None)
    p.set_defaults(func=_cmd_evaluate)


def config_from_args(args: argparse.Namespace, routers: str | Sequence[str]) -> Any:
    """The :class:`~mmroute.pipeline.config.PipelineConfig` an argument namespace describes."""
    from mmroute.pipeline.config import PipelineConfig, split_list

    options = [item for chunk in args.options for item in chunk.split()]
    return PipelineConfig(
        data=args.data, images=args.images, dataset=args.dataset, split=args.split,
        train_frac=args.train_frac, split_seed=args.split_seed,
        train_datasets=tuple(split_list(args.train_datasets)), test_datasets=tuple(split_list(args.test_datasets)),
        split_column=args.split_column, mode=args.mode, features=args.features, fusion=args.fusion,
        cache_dir=args.cache_dir, device=args.device,
        routers=routers if isinstance(routers, str) else tuple(routers), router_options=tuple(options),
        max_epochs=args.max_epochs or None, rules=tuple(split_list(args.rules)),
        select_metric=getattr(args, "select_metric", DEFAULT_METRIC), experiment=args.experiment,
        system_metrics=args.system_metrics, log_model=not args.no_log_model)


def _report(summary: dict[str, Any]) -> int:
    # The one line a user (or a calling script) reads: run ids and headline metrics.
    sys.stdout.write(json.dumps(summary, default=str) + "\n")
    return 1 if summary.get("failed") else 0


def _tracked(command):
    """Turn an unusable tracking location into one clear line and exit status 3 (no traceback)."""
    def wrapper(args: argparse.Namespace) -> int:
        from mmroute.tracking import TrackingUnavailableError

        try:
            return command(args)
        except TrackingUnavailableError as exc:
            if args.verbose:
                raise
            sys.stderr.write(f"mmroute {args.command}: tracking unavailable: {exc}\n")
            return 3
    wrapper.__name__ = command.__name__
    return wrapper


@_tracked
def _cmd_prepare(args: argparse.Namespace) -> int:
    from mmroute.pipeline import run_prepare

    return _report(run_prepare(args.data, images=args.images, dataset=args.dataset, out=args.out,
                               experiment=args.experiment))


@_tracked
def _cmd_train(args: argparse.Namespace) -> int:
    from mmroute.pipeline import run_train

    return _report(run_train(config_from_args(args, (args.router,))))


@_tracked
def _cmd_sweep(args: argparse.Namespace) -> int:
    from mmroute.pipeline import run_sweep

    return _report(run_sweep(config_from_args(args, args.routers)))


@_tracked
def _cmd_run(args: argparse.Namespace) -> int:
    from mmroute.pipeline import run_main

    return _report(run_main(config_from_args(args, args.routers),
                            register_model=args.register_model or None))


@_tracked
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mmroute.pipeline import run_evaluate

    return _report(run_evaluate(args.run_id, data=args.data, rows=args.rows, images=args.images,
                                mode=args.mode, cache_dir=args.cache_dir, experiment=args.experiment))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mmroute.cli.pipeline <command> ...`` (same as ``mmroute <command> ...``)."""
    from mmroute.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    return cli_main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
