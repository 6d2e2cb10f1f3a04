"""The model registry workflow: register the best router of a sweep, promote it through stages.

Stages are aliases (``staging``, ``production``, ``previous-production``); promotion to
production is gated on a re-evaluation of candidate and current production on one evaluation
table; every change is undone if it fails midway. MLflow is imported only when a function runs.
"""

from mmroute.registry.evaltable import EvalTable, load_eval_table, save_eval_table, score_model
from mmroute.registry.stages import (
    PREVIOUS_PRODUCTION,
    PRODUCTION,
    STAGES,
    STAGING,
    PromotionBusy,
    PromotionRefused,
    PromotionResult,
    promote,
    register_and_stage,
    rollback,
)
from mmroute.registry.versions import DEFAULT_METRIC, find_router_model, register_best, select_run, status

__all__ = ["DEFAULT_METRIC", "EvalTable", "PREVIOUS_PRODUCTION", "PRODUCTION", "STAGES", "STAGING",
           "PromotionBusy", "PromotionRefused", "PromotionResult", "find_router_model", "load_eval_table", "promote",
           "register_and_stage", "register_best", "rollback", "save_eval_table", "score_model", "select_run",
           "status"]
