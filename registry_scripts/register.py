"""Register the best router of a sweep (by the validation twin of --metric, val/<rule>/<metric>)
as a new version of --model; --stage staging also stages it.

A thin wrapper over ``mmroute register`` (:mod:`mmroute.cli.registry`, which calls
:mod:`mmroute.registry`); MLproject's ``register`` entry point runs it. See ``--help``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from mmroute.cli.registry import main as registry_main

    return registry_main(["register", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
