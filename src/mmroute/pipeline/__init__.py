"""The pipeline: plain functions behind ``mmroute prepare | train | sweep | run | evaluate``.

:class:`PipelineConfig` describes a run; :mod:`~mmroute.pipeline.data` loads, splits and embeds;
:mod:`~mmroute.pipeline.routers` trains and logs one router in the active MLflow run;
:mod:`~mmroute.pipeline.runs` are the tracked steps (what the CLI and MLproject call);
:mod:`~mmroute.pipeline.export` and :mod:`~mmroute.pipeline.register` take a run to an ONNX model
and a registered version; :mod:`~mmroute.pipeline.benchmark` is the untracked benchmark.
"""

from mmroute.pipeline.config import DEFAULT_DATA, PipelineConfig, expand_routers, parse_router_options, router_overrides
from mmroute.pipeline.export import export_run
from mmroute.pipeline.register import default_eval_table, register_run
from mmroute.pipeline.runs import run_evaluate, run_main, run_prepare, run_sweep, run_train

__all__ = ["DEFAULT_DATA", "PipelineConfig", "default_eval_table", "expand_routers", "export_run",
           "parse_router_options", "register_run", "router_overrides", "run_evaluate", "run_main", "run_prepare",
           "run_sweep", "run_train"]
