"""Promote a version: --to staging (unconditional) or --to production (gated on --eval-table, --metric,
--min-delta; exit 3 when refused).

A thin wrapper over ``mmroute promote`` (:mod:`mmroute.cli.registry`, which calls
:mod:`mmroute.registry`); MLproject's ``promote`` entry point runs it. See ``--help``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from mmroute.cli.registry import main as registry_main

    return registry_main(["promote", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
