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
from typing import Sequence

from mmroute import __version__

# Module names under mmroute.cli, in help order.
COMMANDS = ["data", "embed", "pipeline", "registry", "route", "probe", "benchmark"]


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
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as exc:
        # User errors: one clear line, non-zero exit, no traceback (use -v for one).
        if args.verbose:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"mmroute {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
