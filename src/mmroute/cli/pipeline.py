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
from collections.abc import Sequence
from typing import Any

from mmroute.cli._types import add_image_access, integer, optional_int, optional_str
from mmroute.cli.options import add_config_arguments, add_deprecated_alias, config_kwargs
from mmroute.vocabulary import IMAGE_POLICIES

__all__ = ["register", "main", "config_from_args"]

log = logging.getLogger(__name__)

COMMANDS = ("prepare", "train", "sweep", "evaluate", "run")


_DATA = ("data", "images", "dataset", "image_root", "allow_outside_images", "experiment")


def _add_data(p: argparse.ArgumentParser) -> dict:
    from mmroute.pipeline.config import PipelineConfig

    groups: dict = {}
    add_config_arguments(p, PipelineConfig, only=_DATA, groups=groups)
    add_deprecated_alias(p, "--table", dest="data", new="--data")
    return groups


def _add_training(p: argparse.ArgumentParser, groups: dict) -> None:
    from mmroute.pipeline.config import PipelineConfig

    add_config_arguments(p, PipelineConfig, skip=_DATA + ("routers", "select_metric"), groups=groups)
    p.add_argument("--no-log-model", dest="log_model", action="store_false", help=argparse.SUPPRESS)
    add_deprecated_alias(p, "--seed", dest="split_seed", new="--split-seed", convert=integer)
    add_deprecated_alias(p, "--options", dest="router_options", new="--set (MLproject: router_options)")


def register(subparsers: argparse._SubParsersAction) -> None:
    from mmroute.pipeline.config import PipelineConfig

    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("prepare", help="load/validate a table and log it (tracked)",
                              description=__doc__, formatter_class=fmt)
    _add_data(p)
    p.add_argument("--out", type=optional_str, default=None,
                   help="also write the table here (.parquet or .csv, generic <model>_correct/_cost columns; "
                        "image paths outside its folder are written absolute: load it back with "
                        "--allow-outside-images or --image-root)")
    p.set_defaults(func=_cmd_prepare)

    p = subparsers.add_parser("train", help="train and evaluate one router (tracked)",
                              description=__doc__, formatter_class=fmt)
    p.add_argument("--router", required=True, help="router name (see mmroute sweep --routers all)")
    _add_training(p, _add_data(p))
    p.set_defaults(func=_cmd_train)

    for name, help_ in (("sweep", "train and compare several routers: a parent run, a child per router"),
                        ("run", "the whole default pipeline: data, embed, every router, evaluate, compare")):
        p = subparsers.add_parser(name, help=help_, description=__doc__, formatter_class=fmt)
        groups = _add_data(p)
        add_config_arguments(p, PipelineConfig, only=("routers", "select_metric"), groups=groups)
        _add_training(p, groups)
        if name == "run":
            p.add_argument("--register-model", type=optional_str, default="mmroute-router",
                           help="register the best router under this name and stage it "
                                "('' to skip; default %(default)s)")
        p.set_defaults(func=_cmd_sweep if name == "sweep" else _cmd_run)

    p = subparsers.add_parser("evaluate", help="re-score a logged router on a table (tracked)",
                              description=__doc__, formatter_class=fmt)
    p.add_argument("--run-id", required=True, help="run that logged the router (a train run or a sweep child)")
    p.add_argument("--data", type=optional_str, default=None, help="table (default: the run's own data)")
    add_deprecated_alias(p, "--table", dest="data", new="--data")
    p.add_argument("--rows", choices=("test", "all"), default="test",
                   help="the run's test rows (by instance id) or every row of the table")
    p.add_argument("--images", default="warn", choices=IMAGE_POLICIES)
    add_image_access(p)
    p.add_argument("--mode", type=optional_int, default=None, help="modality mode (default: the run's)")
    p.add_argument("--cache-dir", type=optional_str, default=None)
    p.add_argument("--experiment", type=optional_str, default=None)
    p.set_defaults(func=_cmd_evaluate)


def config_from_args(args: argparse.Namespace, routers: str | Sequence[str] | None = None) -> Any:
    """The :class:`~mmroute.pipeline.config.PipelineConfig` an argument namespace describes
    (``routers`` overrides the namespace's, e.g. ``train``'s single ``--router``)."""
    from mmroute.pipeline.config import PipelineConfig

    fixed: dict[str, Any] = {}
    if routers is not None:
        fixed["routers"] = routers if isinstance(routers, str) else tuple(routers)
    kwargs = config_kwargs(args, PipelineConfig, **fixed)
    kwargs["max_epochs"] = kwargs.get("max_epochs") or None  # MLproject's 0 means "the routers' defaults"
    kwargs["devices"] = kwargs.get("devices") or None
    return PipelineConfig(**kwargs)


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
                               experiment=args.experiment, image_root=args.image_root,
                               allow_outside_images=args.allow_outside_images))


@_tracked
def _cmd_train(args: argparse.Namespace) -> int:
    from mmroute.pipeline import run_train

    return _report(run_train(config_from_args(args, (args.router,))))


@_tracked
def _cmd_sweep(args: argparse.Namespace) -> int:
    from mmroute.pipeline import run_sweep

    return _report(run_sweep(config_from_args(args)))


@_tracked
def _cmd_run(args: argparse.Namespace) -> int:
    from mmroute.pipeline import run_main

    return _report(run_main(config_from_args(args),
                            register_model=args.register_model or None))


@_tracked
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mmroute.pipeline import run_evaluate

    return _report(run_evaluate(args.run_id, data=args.data, rows=args.rows, images=args.images,
                                mode=args.mode, cache_dir=args.cache_dir, experiment=args.experiment,
                                image_root=args.image_root, allow_outside_images=args.allow_outside_images))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mmroute.cli.pipeline <command> ...`` (same as ``mmroute <command> ...``)."""
    from mmroute.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    return cli_main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
