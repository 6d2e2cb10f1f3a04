"""A lock per registered model, shared by every client of one tracking store.

Promotions and rollbacks read the current aliases, decide, then move several aliases and tags: two
promoters doing that at the same time lose an update (both read "production = 1", both write). The
lock serialises them. It must work for every store mmroute records into (a local sqlite file, a
PostgreSQL database, an ``mlflow server`` over HTTP), so it is built on the one atomic operation all
of them offer: creating a registered model whose name is unique. Holding the lock means having
created the registered model ``<name>.promotion-lock``; releasing it deletes that model.

The lock model carries its owner (a random token), host, pid and an expiry time as tags. A waiter
that finds a lock past its expiry (its holder was killed) breaks it, after re-reading that it is
still the same expired lock. The holder re-checks its ownership right before it changes anything
(:meth:`RegistryLock.verify`), so a holder that outlived its lease fails instead of writing.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from typing import Any

__all__ = ["LOCK_SUFFIX", "PromotionBusy", "RegistryLock", "lock_name"]

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".promotion-lock"
DEFAULT_WAIT_S = 300.0
DEFAULT_LEASE_S = 900.0


class PromotionBusy(RuntimeError):
    """Another promotion of the same registered model held the lock for longer than we waited."""


def lock_name(model_name: str) -> str:
    return f"{model_name}{LOCK_SUFFIX}"


def _already_exists(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "") or ""
    return code in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS") or "already exists" in str(exc).lower()


def _not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "") or ""
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


class RegistryLock:
    """``with RegistryLock(client, "mmroute-router"): ...`` holds the model's promotion lock.

    Parameters
    ----------
    wait_s : float
        How long to keep retrying while another client holds the lock (``MMROUTE_LOCK_WAIT_S``);
        then :class:`PromotionBusy` names the holder.
    lease_s : float
        After this many seconds a lock counts as abandoned and may be broken (``MMROUTE_LOCK_LEASE_S``).
    """

    def __init__(self, client: Any, model_name: str, *, wait_s: float | None = None,
                 lease_s: float | None = None) -> None:
        self.client, self.model_name, self.name = client, model_name, lock_name(model_name)
        self.wait_s = float(os.environ.get("MMROUTE_LOCK_WAIT_S", DEFAULT_WAIT_S)) if wait_s is None else wait_s
        self.lease_s = float(os.environ.get("MMROUTE_LOCK_LEASE_S", DEFAULT_LEASE_S)) if lease_s is None else lease_s
        self.token = uuid.uuid4().hex
        self.held = False

    # ------------------------------------------------------------ protocol
    def __enter__(self) -> RegistryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _tags(self) -> dict[str, str]:
        return {"mmroute.lock.owner": self.token, "mmroute.lock.host": socket.gethostname(),
                "mmroute.lock.pid": str(os.getpid()), "mmroute.lock.acquired": f"{time.time():.3f}",
                "mmroute.lock.expires": f"{time.time() + self.lease_s:.3f}"}

    def _read(self) -> dict[str, str] | None:
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_registered_model(self.name).tags or {})
        except MlflowException as exc:
            if _not_found(exc):
                return None
            raise

    def acquire(self) -> None:
        from mlflow.exceptions import MlflowException

        deadline = time.monotonic() + self.wait_s
        delay, holder = 0.05, None
        while True:
            try:
                self.client.create_registered_model(
                    self.name, tags=self._tags(),
                    description=f"held while a promotion/rollback of {self.model_name} runs; deleted after")
            except MlflowException as exc:
                # Taken (or, on sqlite, a writer collision): see who holds it, then retry.
                transient = not _already_exists(exc)
                holder = self._read()
                if holder is not None and holder.get("mmroute.lock.owner") == self.token:
                    self.held = True  # created, but the answer was lost: it is ours
                    return
                if holder is not None and self._expired(holder):
                    self._break(holder)
                    continue
                if holder is None and not transient:
                    continue  # released between our attempt and the read
                if transient and holder is None:
                    log.debug("lock %s: transient error %s", self.name, exc)
            else:
                if (self._read() or {}).get("mmroute.lock.owner") == self.token:
                    self.held = True
                    log.debug("acquired %s", self.name)
                    return
            if time.monotonic() > deadline:
                who = (f"{holder.get('mmroute.lock.host')}:{holder.get('mmroute.lock.pid')}"
                       if holder else "unknown")
                raise PromotionBusy(
                    f"another promotion of {self.model_name!r} is in progress (lock {self.name!r} held by "
                    f"{who}); waited {self.wait_s:g} s; retry later, or delete the registered model "
                    f"{self.name!r} if its holder is gone")
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 1.5, 1.0)

    def _expired(self, tags: dict[str, str]) -> bool:
        try:
            return float(tags.get("mmroute.lock.expires", "inf")) < time.time()
        except ValueError:
            return False

    def _break(self, stale: dict[str, str]) -> None:
        from mlflow.exceptions import MlflowException

        current = self._read()
        if current is None or current.get("mmroute.lock.owner") != stale.get("mmroute.lock.owner"):
            return  # someone else broke or re-took it already
        log.warning("breaking the expired lock %s of %s:%s", self.name, stale.get("mmroute.lock.host"),
                    stale.get("mmroute.lock.pid"))
        try:
            self.client.delete_registered_model(self.name)
        except MlflowException as exc:
            if not _not_found(exc):
                raise

    def verify(self) -> None:
        """Raise :class:`PromotionBusy` unless this client still holds the lock."""
        tags = self._read()
        if not self.held or tags is None or tags.get("mmroute.lock.owner") != self.token:
            self.held = False
            raise PromotionBusy(f"lost the promotion lock of {self.model_name!r} (held longer than its "
                                f"{self.lease_s:g} s lease); nothing was changed")

    def release(self) -> None:
        from mlflow.exceptions import MlflowException

        if not self.held:
            return
        self.held = False
        try:
            tags = self._read()
            if tags is not None and tags.get("mmroute.lock.owner") == self.token:
                self.client.delete_registered_model(self.name)
        except MlflowException as exc:  # the lease expires anyway; say so rather than mask an error
            log.warning("could not release %s (%s); it expires after %g s", self.name, exc, self.lease_s)
