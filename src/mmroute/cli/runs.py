"""``mmroute runs cleanup``: close runs left RUNNING by a process that died (SIGKILL, a crash).

Every run mmroute opens is tagged with its host and pid (``mmroute.host``, ``mmroute.pid``). A run
still RUNNING whose host is this machine and whose process is gone is ended as KILLED (tag
``mmroute.stopped_by``). Runs of other hosts cannot be judged from here: they are listed; run the
command on that host, or pass ``--gone-host NAME`` when that machine is gone for good.

    mmroute runs cleanup [--dry-run] [--experiment NAME] [--gone-host HOST ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["register", "main"]


def register(subparsers: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("runs", help="tracked runs: close those whose process died",
                              description=__doc__, formatter_class=fmt)
    sub = p.add_subparsers(dest="runs_command", metavar="SUBCOMMAND", required=True)
    c = sub.add_parser("cleanup", help="mark RUNNING runs of dead processes KILLED",
                       description=__doc__, formatter_class=fmt)
    c.add_argument("--dry-run", action="store_true", help="list them, change nothing")
    c.add_argument("--experiment", default=None,
                   help="only this experiment (name); default: every active experiment")
    c.add_argument("--gone-host", action="append", default=[], metavar="HOST",
                   help="treat RUNNING runs of this host as dead (repeatable); for machines that crashed")
    c.set_defaults(func=_cmd_cleanup)


def _cmd_cleanup(args: argparse.Namespace) -> int:
    import mlflow

    from mmroute.tracking import check_tracking_uri, resolve_tracking_uri
    from mmroute.tracking.processes import close_orphaned_runs, find_orphaned_runs

    location = resolve_tracking_uri()
    check_tracking_uri(location.uri)
    client = mlflow.MlflowClient(location.uri)
    experiment_ids = None
    if args.experiment is not None:
        found = client.get_experiment_by_name(args.experiment)
        if found is None:
            raise ValueError(f"no experiment named {args.experiment!r} in {location.uri}")
        experiment_ids = [found.experiment_id]
    orphaned, unknown = find_orphaned_runs(client, experiment_ids=experiment_ids, gone_hosts=args.gone_host)
    closed = [] if args.dry_run else close_orphaned_runs(orphaned, client)
    out = {"dry_run": args.dry_run, "orphaned": [o.to_dict() for o in orphaned], "closed": closed,
           "other_hosts": unknown}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from mmroute.cli import main as cli_main

    return cli_main(list(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
