"""Runs and the processes that own them: honest stops, and closing runs whose process died.

Every run mmroute opens (:func:`start_run`) is tagged with the host and pid of the process that
opened it (``mmroute.host``, ``mmroute.pid``, ``mmroute.process_start``) and remembered by that
process. :func:`stop_on_signals` turns SIGINT and SIGTERM into :class:`Stopped`, an exception that
``except Exception`` does not swallow (nor Lightning's Ctrl-C handler, which would exit 1);
:func:`mark_stopped_runs` then ends every run of this process that was still open when the signal
came as ``KILLED``. A process killed with SIGKILL, or a crashed machine, cannot do that: its runs stay
``RUNNING``. :func:`find_orphaned_runs` / :func:`close_orphaned_runs` (``mmroute runs cleanup``)
find them: a run is orphaned when its host is this machine and its pid is not alive (or is alive
but is another process, by start time), or when its host is one the caller names as gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["HOST_TAG", "PID_TAG", "START_TAG", "Stopped", "process_tags", "start_run", "opened_runs",
           "stop_on_signals", "release_interrupted", "release_if_stopped", "StopAwareRun", "stop_aware",
           "mark_stopped_runs", "OrphanedRun", "find_orphaned_runs",
           "close_orphaned_runs", "pid_alive"]

log = logging.getLogger(__name__)

HOST_TAG = "mmroute.host"
PID_TAG = "mmroute.pid"
START_TAG = "mmroute.process_start"
STOPPED_TAG = "mmroute.stopped_by"

_OPENED: list[str] = []  # run ids this process opened or resumed, in order


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, so that per-router ``except Exception`` blocks
    and Lightning's KeyboardInterrupt handling let it through to the command's top level."""

    def __init__(self, signum: int, at: float) -> None:
        self.signum, self.at = signum, at
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def signame(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them


def _process_start(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # noqa: BLE001 - no psutil, no such process, no permission: unknown
        return None


def process_tags() -> dict[str, str]:
    """The host/pid tags of this process (and its start time, to tell a reused pid apart)."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    started = _process_start(os.getpid())
    if started is not None:
        tags[START_TAG] = f"{started:.2f}"
    return tags


class StopAwareRun:
    """An MLflow ``ActiveRun`` whose ``with`` block leaves the ending of the run to the stop handler
    when :class:`Stopped` unwinds through it.

    A signal can land in the middle of a store write (a sqlite UPDATE, a PostgreSQL transaction):
    the interrupted session still holds its connection, and on sqlite its write lock, until the
    exception's frames are let go. MLflow's own ``__exit__`` would end the run as ``FAILED`` at that
    moment, wait on that lock and replace the stop with "database is locked" (exit 1 instead of
    128+N, the run left open). Here the frames are released first and the run stays open for
    :func:`mark_stopped_runs`, which ends it ``KILLED``. Any other exit is MLflow's.
    """

    def __init__(self, active_run: Any) -> None:
        self._active_run = active_run

    def __getattr__(self, name: str) -> Any:
        return getattr(self._active_run, name)

    def __enter__(self) -> Any:
        return self._active_run.__enter__()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Any:
        if isinstance(exc, Stopped):
            release_interrupted(exc)
            return False
        return self._active_run.__exit__(exc_type, exc, tb)


def stop_aware(active_run: Any) -> StopAwareRun:
    """Wrap an ``mlflow.start_run(...)`` result so that a stop unwinding its ``with`` block writes
    nothing to the store on the way out (see :class:`StopAwareRun`)."""
    return active_run if isinstance(active_run, StopAwareRun) else StopAwareRun(active_run)


def release_if_stopped(exc: BaseException) -> None:
    """Before cleanup that writes to the store in an ``except BaseException`` block: when ``exc``
    is a stop, let go of the store session it may have interrupted (see :func:`release_interrupted`)."""
    if isinstance(exc, Stopped):
        release_interrupted(exc)


def start_run(run_name: str | None = None, *, nested: bool = False, **kwargs: Any) -> StopAwareRun:
    """``mlflow.start_run`` that tags the run with this process and remembers it (same arguments).

    Returned as a :class:`StopAwareRun`: use it as MLflow's ``ActiveRun`` (``.info``, ``with``)."""
    import mlflow

    run = mlflow.start_run(run_name=run_name, nested=nested, **kwargs)
    mlflow.set_tags(process_tags())
    _OPENED.append(run.info.run_id)
    return StopAwareRun(run)


def opened_runs() -> list[str]:
    """Run ids this process opened with :func:`start_run`."""
    return list(_OPENED)


@contextlib.contextmanager
def stop_on_signals(signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Within the block, the first SIGINT/SIGTERM raises :class:`Stopped`; later ones are ignored
    until the block exits (so the cleanup that follows is not cut short). Only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = {"stopping": False}

    def handler(signum: int, _frame: Any) -> None:
        if state["stopping"]:
            return
        state["stopping"] = True
        raise Stopped(signum, time.time())

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def release_interrupted(stop: BaseException) -> None:
    """Let go of what the interrupted code held: the exception's frames keep its objects alive,
    among them a database session that a stop cut short (on sqlite that is a held write lock,
    which would block closing the runs). Clears those frames and collects them."""
    import gc
    import traceback

    seen: set[int] = set()
    exc: BaseException | None = stop
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if exc.__traceback__ is not None:
            traceback.clear_frames(exc.__traceback__)
            exc.__traceback__ = None
        exc = exc.__context__ or exc.__cause__
    gc.collect()


def mark_stopped_runs(stop: Stopped, *, client: Any = None) -> list[str]:
    """End as ``KILLED`` every run of this process that was open when ``stop`` came.

    Those are the runs still ``RUNNING``, and the ones MLflow's ``with start_run()`` blocks closed as
    ``FAILED`` while the exception unwound (ended at or after the signal). Runs that finished or
    failed before the signal keep their status. Returns the run ids marked.
    """
    import mlflow

    while mlflow.active_run() is not None:  # runs opened without a with-block
        mlflow.end_run(status="KILLED")
    client = client or mlflow.MlflowClient()
    since_ms = int(stop.at * 1000) - 1
    marked = []
    for run_id in dict.fromkeys(_OPENED):
        for attempt in range(3):  # a store busy with another writer gets two more tries
            try:
                info = client.get_run(run_id).info
                if info.status == "RUNNING" or (info.status in ("FAILED", "KILLED")
                                                and (info.end_time or 0) >= since_ms):
                    client.set_tag(run_id, STOPPED_TAG, stop.signame)
                    client.set_terminated(run_id, status="KILLED")
                    marked.append(run_id)
                break
            except Exception as exc:  # noqa: BLE001 - mark the others; `mmroute runs cleanup` can finish
                if attempt == 2:
                    log.warning("could not mark run %s KILLED: %s", run_id, exc)
                else:
                    time.sleep(0.5)
    return marked


# ---------------------------------------------------------------- orphaned runs
def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


@dataclass(frozen=True)
class OrphanedRun:
    run_id: str
    experiment_id: str
    run_name: str
    host: str
    pid: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "experiment_id": self.experiment_id, "run_name": self.run_name,
                "host": self.host, "pid": self.pid, "reason": self.reason}


def _orphan_reason(tags: dict[str, str], host: str, gone_hosts: set[str]) -> str | None:
    run_host = tags.get(HOST_TAG)
    if run_host is None:
        return None  # not opened by mmroute: nothing to judge by
    if run_host in gone_hosts:
        return f"host {run_host} named as gone"
    if run_host != host:
        return None
    try:
        pid = int(tags.get(PID_TAG, ""))
    except ValueError:
        return None
    if not pid_alive(pid):
        return f"process {pid} is not running"
    recorded, actual = tags.get(START_TAG), _process_start(pid)
    if recorded and actual is not None and abs(float(recorded) - actual) > 1.0:
        return f"pid {pid} now belongs to another process"
    return None


def find_orphaned_runs(client: Any = None, *, experiment_ids: list[str] | None = None,
                       gone_hosts: Iterable[str] = ()) -> tuple[list[OrphanedRun], list[dict[str, Any]]]:
    """``RUNNING`` runs whose process is gone, and those that cannot be judged from here.

    Returns ``(orphaned, unknown)``: ``unknown`` lists the running runs of other hosts (check them
    there, or name the host in ``gone_hosts`` when the machine is gone for good).
    """
    import mlflow

    client = client or mlflow.MlflowClient()
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    host, gone = socket.gethostname(), set(gone_hosts)
    orphaned: list[OrphanedRun] = []
    unknown: list[dict[str, Any]] = []
    if not experiment_ids:
        return orphaned, unknown
    for run in client.search_runs(experiment_ids, filter_string="attributes.status = 'RUNNING'",
                                  max_results=50000):
        tags = run.data.tags
        reason = _orphan_reason(tags, host, gone)
        pid_text = tags.get(PID_TAG, "")
        pid = int(pid_text) if pid_text.isdigit() else None
        if reason is not None:
            orphaned.append(OrphanedRun(run.info.run_id, run.info.experiment_id, run.info.run_name or "",
                                        tags.get(HOST_TAG, ""), pid, reason))
        elif tags.get(HOST_TAG) not in (None, host):
            unknown.append({"run_id": run.info.run_id, "host": tags[HOST_TAG], "pid": pid})
    return orphaned, unknown


def close_orphaned_runs(orphaned: Iterable[OrphanedRun], client: Any = None) -> list[str]:
    """End each orphaned run as ``KILLED`` (tagging ``mmroute.stopped_by=cleanup``)."""
    import mlflow

    client = client or mlflow.MlflowClient()
    closed = []
    for run in orphaned:
        client.set_tag(run.run_id, STOPPED_TAG, f"cleanup: {run.reason}")
        client.set_terminated(run.run_id, status="KILLED")
        closed.append(run.run_id)
    return closed
