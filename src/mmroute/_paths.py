"""Where mmroute keeps caches when the caller does not say (resolved at call time, never at import)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    """``$MMROUTE_CACHE_DIR`` if set, else ``./.mmroute`` under the current directory (absolute).

    Every cache lives below it: ``synthetic/`` (generated tables), ``embeddings/`` (encoder outputs).
    """
    env = os.environ.get("MMROUTE_CACHE_DIR")
    return Path(env).expanduser().resolve() if env else (Path.cwd() / ".mmroute")
