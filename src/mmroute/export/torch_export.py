"""Export a plain ``nn.Module`` with ``forward(x) -> (perf, cost)`` to one ONNX graph.

The dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``, the default of current torch,
built on ``torch.export`` and onnxscript) is used first: it is the maintained path and emits a
cleaner, optimised graph. Modules it cannot capture (data-dependent control flow, some custom ops)
fall back to the TorchScript exporter, which is deprecated but still covers them; the backend used
is reported so a run records which one produced its graph.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from pathlib import Path

import numpy as np

from mmroute.export.graph import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAMES

__all__ = ["export_module"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet_onnx_loggers():
    # onnxscript's optimiser logs every rewrite at INFO; keep them out of run logs.
    loggers = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_module(module, sample_x: np.ndarray, path: str | Path, *, opset: int = DEFAULT_OPSET,
                  dynamo: bool | None = None) -> str:
    """Write ``module`` as an ONNX graph with a dynamic batch axis.

    Parameters
    ----------
    module : torch.nn.Module whose ``forward(x)`` takes a float32 tensor (batch, d) and returns
        ``(perf, cost)``, each (batch, M). It is copied to CPU in eval mode; the original is untouched.
    sample_x : array of shape (n, d), n >= 2, used to trace the graph.
    path : where to write the graph.
    opset : ONNX opset version.
    dynamo : True/False forces an exporter; None tries dynamo then falls back to TorchScript.

    Returns
    -------
    str, the exporter that produced the graph: "torch.onnx.dynamo" or "torch.onnx.torchscript".
    """
    import torch

    sample_x = np.asarray(sample_x, dtype=np.float32)
    if sample_x.ndim != 2:
        raise ValueError(f"sample input must be 2-D (n, d), got shape {sample_x.shape}")
    if len(sample_x) < 2:
        # A batch of 1 lets torch.export specialise the batch axis to the constant 1.
        sample_x = np.repeat(sample_x, 2, axis=0)
    net = copy.deepcopy(module).to("cpu").float().eval()
    x = torch.from_numpy(np.ascontiguousarray(sample_x[:8]))
    path = Path(path)
    errors = []
    for use_dynamo in ([dynamo] if dynamo is not None else [True, False]):
        try:
            with torch.no_grad(), _quiet_onnx_loggers(), warnings.catch_warnings():
                # The tracer warns about Python-int shapes it records; the parity check that
                # follows every export is what guards against a wrong trace.
                warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
                warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
                if use_dynamo:
                    program = torch.onnx.export(
                        net, (x,), None, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), opset_version=opset,
                        dynamo=True, optimize=True, verbose=False, external_data=False)
                    program.save(str(path), external_data=False)
                    return "torch.onnx.dynamo"
                buffer = io.BytesIO()
                torch.onnx.export(
                    net, (x,), buffer, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                    dynamic_axes={n: {0: "batch"} for n in (INPUT_NAME, *OUTPUT_NAMES)},
                    opset_version=opset, dynamo=False)
                path.write_bytes(buffer.getvalue())
                return "torch.onnx.torchscript"
        except Exception as exc:  # noqa: BLE001 - both exporters raise many unrelated types
            kind = "dynamo" if use_dynamo else "TorchScript"
            log.warning("the %s ONNX exporter failed on %s: %s", kind, type(module).__name__, exc)
            errors.append(f"{kind}: {type(exc).__name__}: {exc}")
    raise RuntimeError(f"could not export {type(module).__name__} to ONNX: " + " | ".join(errors))
