"""The pipeline: plain functions behind ``mmroute prepare | train | sweep | run | evaluate``.

:class:`PipelineConfig` describes a run; :mod:`~mmroute.pipeline.data` loads, splits and embeds;
:mod:`~mmroute.pipeline.routers` trains and logs one router in the active MLflow run;
:mod:`~mmroute.pipeline.runs` are the tracked steps (what the CLI and MLproject call).
"""

from mmroute.pipeline.config import DEFAULT_DATA, PipelineConfig, expand_routers, parse_router_options, router_overrides
from mmroute.pipeline.runs import run_evaluate, run_main, run_prepare, run_sweep, run_train

__all__ = ["DEFAULT_DATA", "PipelineConfig", "expand_routers", "parse_router_options", "router_overrides",
           "run_evaluate", "run_main", "run_prepare", "run_sweep", "run_train"]
