"""Lightning's MLFlowLogger, adapted to write into a run mmroute owns (see :mod:`.lightning`)."""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger

from mmroute.tracking.lightning import HPARAM_PREFIX

__all__ = ["ActiveRunMLFlowLogger"]

log = logging.getLogger(__name__)


class ActiveRunMLFlowLogger(MLFlowLogger):
    """MLFlowLogger that writes into a run it does not own.

    The stock ``finalize`` marks the run FINISHED when ``Trainer.fit`` returns, although the
    caller still logs final metrics and artifacts into it and ends it itself; hyperparameters
    get a prefix because MLflow refuses to change an already logged param (mmroute logs the
    router config under ``router.*``). Picklable (DDP spawns worker processes, of which rank 0
    logs): the client is rebuilt from the tracking URI on the other side.
    """

    def finalize(self, status: str = "success") -> None:
        if status not in ("success", "finished"):
            log.warning("Lightning training ended with status %r", status)

    def log_hyperparams(self, params: Any) -> None:
        from lightning.fabric.utilities.logger import _convert_params, _flatten_dict

        flat = _flatten_dict(_convert_params(params) or {})
        super().log_hyperparams({f"{HPARAM_PREFIX}{k}": v for k, v in flat.items()})

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_mlflow_client"], state["_initialized"] = None, False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        self.__dict__.update(state)
        self._mlflow_client = MlflowClient(self._tracking_uri)
