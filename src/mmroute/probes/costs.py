"""What a probe router's decisions cost: the small model reads every query first.

A probe router routes over the pool ``[small, large]``. The probe needs the small model's hidden
states, so *every* query pays the small model's prefill (reading the prompt up to layer ``l``).
The convention, per instance ``i``:

- kept on the small model: ``cost_small[i]`` (its prefill is part of its own answer);
- deferred to the large model: ``share[i] * cost_small[i] + cost_large[i]`` (the prefill that
  was spent to decide, then the large model's whole answer).

``share`` is the prefill's part of the small model's cost. It comes from the table's token counts
when it has them (``<small>_in_tokens`` and ``<small>_out_tokens``: ``in / (in + out)``, i.e. a
price per token equal for prompt and output, as for self-hosted models), else from a fixed
fraction. Query-only routers (knn, linear_mf, ...) never run the small model on a query they send
to the large one, so they are scored on the table's costs unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

__all__ = ["PREFILL_MODES", "DEFAULT_PREFILL_FRACTION", "prefill_share", "deferral_costs", "parse_prefill"]

log = logging.getLogger(__name__)

PREFILL_MODES = ("auto", "tokens")
DEFAULT_PREFILL_FRACTION = 0.5


def parse_prefill(value: Any) -> str | float:
    """``"auto"``, ``"tokens"`` or a fraction in [0, 1] (also written as a string)."""
    if isinstance(value, str) and value.strip().lower() in PREFILL_MODES:
        return value.strip().lower()
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"prefill={value!r}: expected 'auto', 'tokens' or a fraction in [0, 1]") from None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"prefill={value!r}: a prefill fraction must lie in [0, 1]")
    return fraction


def prefill_share(table: Any, small: str, prefill: Any = "auto", *,
                  fraction: float = DEFAULT_PREFILL_FRACTION) -> np.ndarray:
    """The prefill's share of the small model's cost per instance, shape (n,), values in [0, 1].

    ``prefill``: ``"tokens"`` (needs ``<small>_in_tokens`` and ``<small>_out_tokens`` in
    ``table.extra``), a fixed fraction, or ``"auto"`` (tokens when the table has them, else
    ``fraction``).
    """
    mode = parse_prefill(prefill)
    n = table.n_instances
    if isinstance(mode, float):
        return np.full(n, mode)
    cols = (f"{small}_in_tokens", f"{small}_out_tokens")
    have = [c for c in cols if c in table.extra]
    if len(have) < 2:
        if mode == "tokens":
            raise ValueError(f"prefill='tokens' needs the columns {list(cols)} in table {table.source}; "
                             f"it has {sorted(k for k in table.extra if k.endswith('_tokens'))[:10]}")
        log.info("table %s has no %s: the prefill is %.2f of %s's cost", table.source, " / ".join(cols),
                 fraction, small)
        return np.full(n, float(fraction))
    tokens_in = np.asarray(table.extra[cols[0]], dtype=np.float64)
    tokens_out = np.asarray(table.extra[cols[1]], dtype=np.float64)
    total = tokens_in + tokens_out
    share = np.where(total > 0, tokens_in / np.where(total > 0, total, 1.0), float(fraction))
    return np.clip(np.nan_to_num(share, nan=float(fraction)), 0.0, 1.0)


def deferral_costs(table: Any, small: str, large: str, prefill: Any = "auto", *,
                   fraction: float = DEFAULT_PREFILL_FRACTION) -> np.ndarray:
    """Billed costs of the pool ``[small, large]`` under the probe convention, shape (n, 2).

    Column 0 is ``cost_small``; column 1 is ``share * cost_small + cost_large`` (module docstring).
    Missing costs stay NaN.
    """
    for name in (small, large):
        if name not in table.models:
            raise KeyError(f"model {name!r} is not in the table; it has {list(table.models)}")
    cs = table.cost[:, table.models.index(small)]
    cl = table.cost[:, table.models.index(large)]
    share = prefill_share(table, small, prefill, fraction=fraction)
    return np.column_stack([cs, cl + share * cs])
