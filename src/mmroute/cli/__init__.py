"""The ``mmroute`` command line: a thin dispatcher over one module per command group.

Each module in ``COMMANDS`` defines ``register(subparsers)``, which adds its sub-parser(s) and sets
``func`` (called with the parsed namespace, returning an exit code), and a ``main(argv=None)``.
Heavy libraries are imported inside the command functions, never at import time.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mmroute import __version__

if TYPE_CHECKING:
    from mmroute.tracking.processes import Stopped

# Module names under mmroute.cli, in help order.
COMMANDS = ["data", "embed", "pipeline", "registry", "route", "probe", "benchmark", "runs"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmroute", description="Train, track, export and promote "
                                     "per-query model routers for multimodal LLM pools.")
    parser.add_argument("--version", action="version", version=f"mmroute {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"mmroute.cli.{name}").register(sub)
    return parser


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity + 1, 2)  # default INFO, -v DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from mmroute.tracking.processes import Stopped, stop_on_signals

    try:
        with stop_on_signals():
            try:
                return int(args.func(args) or 0)
            except Stopped as stop:
                return _stopped(args.command, stop)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as exc:
        # User errors: one clear line, non-zero exit, no traceback (use -v for one).
        if args.verbose:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"mmroute {args.command}: error: {msg}", file=sys.stderr)
        return 1


def _stopped(command: str, stop: Stopped) -> int:
    """SIGINT/SIGTERM: close this process's open runs as KILLED, say so in one line, exit 128+N."""
    from mmroute.tracking.processes import mark_stopped_runs, release_interrupted

    release_interrupted(stop)
    try:
        marked = mark_stopped_runs(stop)
        note = f"{len(marked)} open run(s) marked KILLED" if marked else "no open runs"
    except Exception as exc:  # noqa: BLE001 - the store may be what failed; still exit cleanly
        note = f"could not mark its runs KILLED ({type(exc).__name__}); run `mmroute runs cleanup`"
    print(f"mmroute {command}: stopped by {stop.signame}; {note}", file=sys.stderr)
    return stop.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
