"""Per-epoch curves of Lightning routers, logged into the active MLflow run.

Torch routers expose a ``lightning_logger`` attribute handed to their ``lightning.Trainer``. Binding
sets it to an :class:`~lightning.pytorch.loggers.MLFlowLogger` pointed at the *active* run (same
tracking URI, same run id), so training and validation curves land beside the router's final
metrics instead of in a separate run.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["run_logger", "bind_lightning_logger", "unbind_lightning_logger"]

log = logging.getLogger(__name__)

HPARAM_PREFIX = "lightning."


def _logger_class() -> type:
    # A module-level class (imported here, so that importing mmroute.tracking stays cheap): the
    # logger travels to DDP worker processes by pickle.
    from mmroute.tracking._mlflow_logger import ActiveRunMLFlowLogger

    return ActiveRunMLFlowLogger


def run_logger(run_id: str | None = None, tracking_uri: str | None = None) -> Any:
    """An MLFlowLogger bound to ``run_id`` (default: the active run) at ``tracking_uri``.

    Checkpoints are never logged as models (``log_model=False``).
    """
    import mlflow

    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise RuntimeError("no active MLflow run to bind the Lightning logger to; "
                               "call inside mlflow.start_run() or pass run_id=")
        run_id = active.info.run_id
    uri = tracking_uri or mlflow.get_tracking_uri()
    return _logger_class()(tracking_uri=uri, run_id=run_id, log_model=False)


def bind_lightning_logger(router: Any, run_id: str | None = None) -> bool:
    """Set ``router.lightning_logger`` to a logger of the active run.

    Returns True when the router trains with Lightning (has the attribute), False otherwise.
    """
    if not hasattr(router, "lightning_logger"):
        return False
    router.lightning_logger = run_logger(run_id)
    return True


def unbind_lightning_logger(router: Any) -> None:
    """Drop the logger (it holds an MLflow client) before a router is pickled or reused."""
    if hasattr(router, "lightning_logger"):
        router.lightning_logger = None
