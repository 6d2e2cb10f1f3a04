"""Experiment tracking with MLflow: where runs go, what each run records, sweep comparisons.

- :mod:`~mmroute.tracking.location`: ``resolve_tracking_uri``, ``check_tracking_uri`` (fail fast),
  ``setup_tracking`` (URI + experiment with a local artifact root);
- :mod:`~mmroute.tracking.records`: params, tags, final metrics (naming scheme in its docstring),
  curve CSVs, split ids, dataset inputs;
- :mod:`~mmroute.tracking.lightning`: Lightning's ``MLFlowLogger`` bound to the active run;
- :mod:`~mmroute.tracking.compare`: the comparison table and best child of a sweep;
- :mod:`~mmroute.tracking.processes`: runs tagged with their host and pid, closed ``KILLED`` on
  SIGINT/SIGTERM, and orphaned runs of dead processes found and closed.

MLflow itself is imported inside the functions, so importing this package stays cheap.
"""

from mmroute.tracking.compare import DEFAULT_SELECT_METRIC, comparison_frame, log_comparison, pick_best
from mmroute.tracking.lightning import bind_lightning_logger, run_logger, unbind_lightning_logger
from mmroute.tracking.location import (
    DEFAULT_EXPERIMENT,
    SERVER_HOWTO,
    TrackingLocation,
    TrackingUnavailableError,
    check_tracking_uri,
    prepare_store,
    resolve_tracking_uri,
    setup_tracking,
)
from mmroute.tracking.processes import (
    Stopped,
    mark_stopped_runs,
    release_if_stopped,
    start_run,
    stop_aware,
    stop_on_signals,
)
from mmroute.tracking.records import (
    BUDGET_FRACTIONS,
    curve_readout,
    eval_metrics,
    finite_metrics,
    flatten_params,
    git_commit,
    log_curves,
    log_metrics,
    log_params,
    log_split_ids,
    log_table_input,
    metric_key,
    run_tags,
    table_frame,
)

__all__ = [
    "BUDGET_FRACTIONS", "DEFAULT_EXPERIMENT", "DEFAULT_SELECT_METRIC", "SERVER_HOWTO",
    "TrackingLocation", "TrackingUnavailableError", "bind_lightning_logger", "check_tracking_uri",
    "comparison_frame", "curve_readout", "eval_metrics", "finite_metrics", "flatten_params",
    "git_commit", "log_comparison", "log_curves", "log_metrics", "log_params", "log_split_ids",
    "log_table_input", "mark_stopped_runs", "metric_key", "pick_best", "prepare_store", "resolve_tracking_uri",
    "run_logger", "run_tags",
    "release_if_stopped", "setup_tracking", "start_run", "stop_aware",
    "stop_on_signals", "Stopped", "table_frame", "unbind_lightning_logger",
]
