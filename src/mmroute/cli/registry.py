"""``mmroute export | register | promote | rollback | status``: from a tracked run to serving.

    mmroute export   --run-id RUN [--name router] [--sample-rows 256] [--no-eval-table]
    mmroute register --run-id SWEEP_OR_RUN [--model NAME] [--metric budget/nAUC] [--stage staging]
    mmroute promote  [--model NAME] [--version V] --to staging|production
                     [--eval-table PATH_OR_URI] [--metric budget/nAUC] [--min-delta 0.0]
    mmroute rollback [--model NAME]
    mmroute status   [--model NAME] [--json]

Stages are registry aliases: ``staging``, ``production`` and ``previous-production``. Promotion
to production is gated: candidate and production are re-scored on one evaluation table (default:
the candidate's run artifact ``eval/eval_table.npz``) and the candidate must beat production by
``--min-delta``; otherwise the exit code is 3 and nothing changes. Serve the production version
with ``mlflow models serve -m "models:/NAME@production" --env-manager local``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from mmroute.cli._types import optional_str
from mmroute.vocabulary import DEFAULT_METRIC, EXPORTERS

__all__ = ["register", "main", "COMMANDS", "DEFAULT_MODEL_NAME", "EXIT_REFUSED"]

log = logging.getLogger(__name__)

COMMANDS = ("export", "register", "promote", "rollback", "status")
DEFAULT_MODEL_NAME = "mmroute-router"
EXIT_REFUSED = 3


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL_NAME,
                   help="registered model name (default %(default)s)")


def _metric_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", default=DEFAULT_METRIC,
                   help="<rule>/<metric> as logged by the pipeline, e.g. budget/nAUC, tradeoff/Ps, "
                        "budget/QNC (lower is better); a sweep's children are compared on its validation "
                        "twin val/<rule>/<metric> (training rows only) (default %(default)s)")


def register(subparsers: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("export", help="log a run's router as a verified ONNX MLflow model",
                              description=__doc__, formatter_class=fmt)
    p.add_argument("--run-id", required=True, help="a run that logged a router (train or sweep child)")
    p.add_argument("--name", default="router", help="logged model name (default %(default)s)")
    p.add_argument("--sample-rows", type=int, default=256, help="held-out rows to trace with (default 256)")
    p.add_argument("--exporter", default="auto", choices=EXPORTERS,
                   help="torch routers: ONNX exporter (default: dynamo, TorchScript as fallback)")
    p.add_argument("--no-eval-table", action="store_true", help="do not log eval/eval_table.npz")
    p.add_argument("--calibration-folds", type=int, default=3,
                   help="folds of the out-of-fold operating-point calibration on the training rows "
                        "(default %(default)s; 0: none, the model then refuses target_cost/target_quality)")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("register", help="register the best router of a sweep as a new version",
                              description=__doc__, formatter_class=fmt)
    p.add_argument("--run-id", required=True, help="a sweep parent run (best child by --metric) or one run")
    _model_arg(p)
    _metric_arg(p)
    p.add_argument("--stage", type=optional_str, default=None, choices=(None, "staging"),
                   help="also point this alias at the new version (only 'staging': production is gated)")
    p.add_argument("--no-export", action="store_true",
                   help="fail instead of exporting a run that has no logged ONNX model yet")
    p.set_defaults(func=cmd_register)

    p = subparsers.add_parser("promote", help="move a version to staging, or through the gate to production",
                              description=__doc__, formatter_class=fmt)
    _model_arg(p)
    p.add_argument("--version", type=optional_str, default=None,
                   help="version to promote (default: newest for staging, the staging one for production)")
    p.add_argument("--to", required=True, choices=("staging", "production"))
    p.add_argument("--eval-table", type=optional_str, default=None,
                   help="evaluation table .npz path or artifact URI (default: the candidate run's "
                        "eval/eval_table.npz)")
    _metric_arg(p)
    p.add_argument("--min-delta", type=float, default=0.0,
                   help="required improvement over production in --metric (default 0.0)")
    p.set_defaults(func=cmd_promote)

    p = subparsers.add_parser("rollback", help="restore the previous production version",
                              description=__doc__, formatter_class=fmt)
    _model_arg(p)
    p.set_defaults(func=cmd_rollback)

    p = subparsers.add_parser("status", help="aliases and versions with their metrics",
                              description=__doc__, formatter_class=fmt)
    _model_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)


def _tracking() -> None:
    import mlflow

    from mmroute.tracking import check_tracking_uri, prepare_store, resolve_tracking_uri

    location = resolve_tracking_uri()
    check_tracking_uri(location.uri)
    prepare_store(location.uri)
    mlflow.set_tracking_uri(location.uri)
    mlflow.set_registry_uri(location.uri)


def check_model(name: str, version: str | None = None, *, client: Any = None) -> None:
    """Raise a one-line ValueError unless ``name`` is a registered model (with ``version``).

    The registry's own errors for these are tracebacks of ``MlflowException``; a version must be
    a positive integer (``abc`` and ``0`` are not versions).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = client or MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models(max_results=50))
        raise ValueError(f"no registered model named {name!r}; registered models: "
                         f"{', '.join(known) if known else 'none'}") from None
    if version is None:
        return
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    listed = ", ".join(map(str, versions)) or "none"
    if not version.strip().isdigit() or int(version) < 1:
        raise ValueError(f"version {version!r} of {name!r}: expected a positive integer version number "
                         f"(versions: {listed})")
    if int(version) not in versions:
        raise ValueError(f"{name!r} has no version {version}; versions: {listed}")


def _registry_errors(command):
    """An unusable tracking location (exit 3, as the pipeline commands: :func:`_tracked`) and
    whatever the registry still raises (a version deleted meanwhile...) end in one line."""
    from mmroute.cli.pipeline import _tracked

    tracked = _tracked(command)

    def wrapper(args: argparse.Namespace) -> int:
        from mlflow.exceptions import MlflowException

        try:
            return tracked(args)
        except MlflowException as exc:
            if args.verbose:
                raise
            first = (exc.message or str(exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
            print(f"mmroute {args.command}: error: {first}", file=sys.stderr)
            return 1
    wrapper.__name__ = command.__name__
    wrapper.__doc__ = command.__doc__
    return wrapper


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


@_registry_errors
def cmd_export(args: argparse.Namespace) -> int:
    from mmroute.pipeline.export import export_run

    _tracking()
    info, result = export_run(args.run_id, name=args.name, sample_rows=args.sample_rows,
                              eval_table=not args.no_eval_table, exporter=args.exporter,
                              calibration_folds=args.calibration_folds or None)
    _print({"model_uri": info.model_uri, "run_id": args.run_id, **result.to_dict()})
    return 0


@_registry_errors
def cmd_register(args: argparse.Namespace) -> int:
    from mmroute.pipeline.register import register_run

    _tracking()
    _print(register_run(args.run_id, args.model, metric=args.metric, stage=args.stage,
                        export_missing=not args.no_export))
    return 0


@_registry_errors
def cmd_promote(args: argparse.Namespace) -> int:
    from mmroute.registry import PromotionBusy, PromotionRefused, promote

    _tracking()
    check_model(args.model, args.version)
    eval_table = args.eval_table
    if args.to == "production" and eval_table is None:
        from mmroute.pipeline.register import default_eval_table

        eval_table = default_eval_table(args.model, args.version, args.to)
    try:
        result = promote(args.model, args.version, to=args.to, eval_table=eval_table, metric=args.metric,
                         min_delta=args.min_delta)
    except PromotionRefused as exc:
        print(f"mmroute promote: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except PromotionBusy as exc:
        print(f"mmroute promote: error: {exc}", file=sys.stderr)
        return 1
    _print(result.to_dict())
    return 0


@_registry_errors
def cmd_rollback(args: argparse.Namespace) -> int:
    from mmroute.registry import PromotionBusy, rollback

    _tracking()
    check_model(args.model)
    try:
        _print(rollback(args.model).to_dict())
    except PromotionBusy as exc:
        print(f"mmroute rollback: error: {exc}", file=sys.stderr)
        return 1
    return 0


@_registry_errors
def cmd_status(args: argparse.Namespace) -> int:
    from mmroute.registry import status

    _tracking()
    check_model(args.model)
    info = status(args.model)
    if args.json:
        _print(info)
        return 0
    print(f"{info['name']}: " + (", ".join(f"{a} -> v{v}" for a, v in sorted(info["aliases"].items()))
                                 or "no aliases"))
    for version, row in info["versions"].items():
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in row["metrics"].items())
        aliases = f" [{', '.join(row['aliases'])}]" if row["aliases"] else ""
        print(f"  v{version}{aliases} {row['router']} run {row['source_run_id']} {metrics}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``mmroute export|register|promote|rollback|status ...`` as a function (scripts, tests)."""
    from mmroute.cli import main as cli_main

    return cli_main(list(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
