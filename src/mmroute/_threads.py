"""A scoped cap on the native thread pools (BLAS/LAPACK, OpenMP, torch's intra-op pool).

Why. Multi-threaded OpenBLAS and OpenMP spin-wait for their worker threads; on a machine whose
cores are busy with other processes those waits collapse throughput instead of adding to it.
Measured on the shared 2-core machine at load average 10-15 (one fold of MMLU-Pro 0.8, 7,700 x
384): ``linear`` 8.4-13.1 s on 2 threads vs 1.5 s on 1, ``mlp_mf`` 201 s vs 26 s, a 384 x 384
``eigh`` 1.5 s vs 0.085 s. The operations of the routers' fits are small (384-d), so one thread
loses little even on an idle machine.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

__all__ = ["native_threads"]


@contextlib.contextmanager
def native_threads(n: int | None) -> Iterator[None]:
    """Run the block with at most ``n`` native threads per pool, restored afterwards.

    ``None`` leaves the process's settings. torch's intra-op pool is capped only when torch is
    already imported (import it first to cap a block that will train a network).
    """
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        if torch is not None and before is not None and before > n:
            torch.set_num_threads(n)
        with threadpool_limits(limits=n):
            yield
    finally:
        if torch is not None and before is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)
