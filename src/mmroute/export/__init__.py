"""ONNX export of fitted routers and their packaging as MLflow pyfunc models.

``export_router(router, sample_features, path)`` writes one graph ``x -> (perf, cost)``, verified
against the native router; :mod:`mmroute.export.pyfunc` logs it as a self-contained MLflow model.
Heavy libraries (torch, onnx, onnxruntime, mlflow) are imported only when a function runs.
"""

from mmroute.export.core import (
    ExportParityError,
    ExportResult,
    NotExportableError,
    build_input,
    export_router,
    exportable_routers,
    input_layout,
    not_exportable_routers,
    router_input,
)

__all__ = ["ExportParityError", "ExportResult", "NotExportableError", "build_input", "export_router",
           "exportable_routers", "input_layout", "not_exportable_routers", "router_input"]
