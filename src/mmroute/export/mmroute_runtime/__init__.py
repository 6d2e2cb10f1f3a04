"""Serving-time helpers of a logged mmroute router, shipped inside the MLflow model.

Imported as top-level ``mmroute_runtime`` inside a loaded model (MLflow ``code_paths``) and as
``mmroute.export.mmroute_runtime`` inside mmroute. Self-contained: the standard library, numpy,
pandas, onnxruntime, tokenizers, Pillow and mlflow only, relative imports inside. Modules:
``inputs`` (parse and bound one request), ``features`` (the exported feature pipeline: raw rows ->
router input), ``decide`` (decision rules and failover ranking, shared with ``mmroute.evaluation``),
``calibration`` (calibrated operating points for ``target_cost`` / ``target_quality``).
"""
