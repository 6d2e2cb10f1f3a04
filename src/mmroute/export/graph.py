"""Small ONNX graph utilities: run a graph, join per-output graphs, build lookup graphs.

Every router graph has one float32 input ``x`` of shape (batch, d) and two float32 outputs
``perf`` and ``cost`` of shape (batch, M). The helpers here assemble such graphs from pieces
(a skl2onnx-converted estimator per output, hand-built nearest-neighbour and cluster lookups) and
run them with onnxruntime.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "run_onnx",
    "parallel_outputs",
    "knn_mean_graph",
    "cluster_lookup_graph",
    "affine_graph",
    "DEFAULT_OPSET",
]

log = logging.getLogger(__name__)

INPUT_NAME = "x"
OUTPUT_NAMES = ("perf", "cost")
# Opset 18 is supported by every onnxruntime >= 1.14 and by skl2onnx >= 1.15.
DEFAULT_OPSET = 18


def run_onnx(model: str | Path | bytes, x: np.ndarray, *, providers: Sequence[str] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Run a router graph on ``x`` of shape (n, d); returns ``(perf, cost)`` each (n, M) float32."""
    import onnxruntime as ort

    source = str(model) if isinstance(model, Path) else model
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: provider fallbacks are reported by the caller
    session = ort.InferenceSession(source, sess_options=options,
                                   providers=list(providers or ["CPUExecutionProvider"]))
    perf, cost = session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})
    return perf, cost


def _opset_of(model, domain: str = "") -> int:
    for entry in model.opset_import:
        if entry.domain == domain:
            return int(entry.version)
    return 0


def parallel_outputs(perf_model, cost_model, *, perf_output: str | None = None,
                     cost_output: str | None = None):
    """Join two single-input graphs that read the same ``x`` into one graph with outputs perf, cost.

    Parameters
    ----------
    perf_model, cost_model : onnx.ModelProto
        Graphs with one input of shape (batch, d); ``perf_output`` / ``cost_output`` name the output
        to expose (default: each graph's first output), of shape (batch, M).

    Returns
    -------
    onnx.ModelProto with input ``x`` (float32, (batch, d)) and outputs ``perf``, ``cost``
    (float32, (batch, M)).
    """
    import onnx
    from onnx import TensorProto, compose, helper

    parts = []
    for prefix, model, out in (("perf_", perf_model, perf_output), ("cost_", cost_model, cost_output)):
        if len(model.graph.input) != 1:
            raise ValueError(f"{prefix[:-1]} graph must have exactly one input, has "
                             f"{[i.name for i in model.graph.input]}")
        out = out or model.graph.output[0].name
        if out not in [o.name for o in model.graph.output]:
            raise ValueError(f"{prefix[:-1]} graph has no output {out!r}; outputs: "
                             f"{[o.name for o in model.graph.output]}")
        prefixed = compose.add_prefix(model, prefix)
        parts.append((prefixed, prefixed.graph.input[0].name, prefix + out))

    width = _static_width(perf_model.graph.input[0])
    nodes, initializers, value_info = [], [], []
    for (model, inp, out), name in zip(parts, OUTPUT_NAMES):
        nodes.append(helper.make_node("Identity", [INPUT_NAME], [inp], name=f"{inp}_feed"))
        nodes.extend(model.graph.node)
        nodes.append(helper.make_node("Cast", [out], [name], to=TensorProto.FLOAT, name=f"{name}_out"))
        initializers.extend(model.graph.initializer)
        value_info.extend(model.graph.value_info)
    graph = helper.make_graph(
        nodes, "router",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", None]) for n in OUTPUT_NAMES],
        initializer=initializers, value_info=value_info)
    domains: dict[str, int] = {}
    for model in (perf_model, cost_model):
        for entry in model.opset_import:
            domains[entry.domain] = max(domains.get(entry.domain, 0), int(entry.version))
    domains[""] = max(domains.get("", 0), 13)  # Cast/Identity need nothing newer
    opsets = [helper.make_opsetid(d, v) for d, v in domains.items()]
    merged = helper.make_model(graph, opset_imports=opsets, producer_name="mmroute")
    merged.ir_version = max(perf_model.ir_version, cost_model.ir_version, _min_ir(opsets))
    onnx.checker.check_model(merged)
    return merged


def _static_width(value_info) -> int | str:
    dims = value_info.type.tensor_type.shape.dim
    if len(dims) != 2:
        raise ValueError(f"graph input {value_info.name!r} must be 2-D (batch, d), has {len(dims)} dims")
    return dims[1].dim_value if dims[1].HasField("dim_value") else "d"


def _finish(nodes, initializers, width: int, opset: int):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "router",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", None]) for n in OUTPUT_NAMES],
        initializer=initializers)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="mmroute")
    # make_model stamps the newest IR version, which onnxruntime may not read yet.
    model.ir_version = _min_ir(opsets)
    onnx.checker.check_model(model)
    return model


def _min_ir(opsets) -> int:
    from onnx import helper
    return int(helper.find_min_ir_version_for(opsets, ignore_unknown=True))


def _tensor(name: str, array: np.ndarray):
    from onnx import numpy_helper
    return numpy_helper.from_array(np.ascontiguousarray(array), name=name)


def affine_graph(weight: np.ndarray, bias: np.ndarray, *, opset: int = DEFAULT_OPSET):
    """``perf, cost = x @ W + b`` split in two, computed in float64.

    Parameters
    ----------
    weight : array of shape (d, 2 * M); the first M columns give perf, the last M cost.
    bias : array of shape (2 * M,)
    """
    from onnx import TensorProto, helper

    weight = np.asarray(weight, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64)
    d, two_m = weight.shape
    if two_m % 2 or bias.shape != (two_m,):
        raise ValueError(f"affine graph needs W (d, 2M) and b (2M,), got {weight.shape} and {bias.shape}")
    m = two_m // 2
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["x64"], to=TensorProto.DOUBLE),
        helper.make_node("MatMul", ["x64", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["y64"]),
        helper.make_node("Split", ["y64", "split"], ["perf64", "cost64"], axis=1),
        helper.make_node("Cast", ["perf64"], ["perf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["cost64"], ["cost"], to=TensorProto.FLOAT),
    ]
    inits = [_tensor("W", weight), _tensor("b", bias), _tensor("split", np.array([m, m], dtype=np.int64))]
    return _finish(nodes, inits, d, opset)


def knn_mean_graph(train_x: np.ndarray, perf_table: np.ndarray, cost_table: np.ndarray, k: int, *,
                   metric: str = "cosine", opset: int = DEFAULT_OPSET):
    """Mean outcomes of the ``k`` nearest training rows, as one graph computed in float64.

    Parameters
    ----------
    train_x : array of shape (n_train, d), the fitted neighbour index.
    perf_table, cost_table : arrays of shape (n_train, M), the value averaged over neighbours.
    k : number of neighbours (clipped to n_train).
    metric : "cosine" (largest cosine similarity) or "euclidean" (smallest squared distance).

    Ties are broken towards the lower training index (ONNX TopK is specified that way).
    """
    from onnx import TensorProto, helper

    train_x = np.asarray(train_x, dtype=np.float64)
    n_train, d = train_x.shape
    for name, table in (("perf_table", perf_table), ("cost_table", cost_table)):
        if np.shape(table)[0] != n_train or np.ndim(table) != 2:
            raise ValueError(f"{name} must have shape ({n_train}, M), got {np.shape(table)}")
    k = int(min(k, n_train))
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    values = np.concatenate([np.asarray(perf_table, np.float64), np.asarray(cost_table, np.float64)], axis=1)
    m = values.shape[1] // 2
    nodes = [helper.make_node("Cast", [INPUT_NAME], ["x64"], to=TensorProto.DOUBLE)]
    inits = [_tensor("values", values), _tensor("k", np.array([k], dtype=np.int64)),
             _tensor("split", np.array([m, m], dtype=np.int64))]
    if metric == "cosine":
        norms = np.linalg.norm(train_x, axis=1, keepdims=True)
        inits.append(_tensor("train_t", (train_x / np.where(norms > 0, norms, 1.0)).T))
        nodes += [
            helper.make_node("LpNormalization", ["x64"], ["xn"], axis=1, p=2),
            helper.make_node("MatMul", ["xn", "train_t"], ["score"]),
        ]
        largest = 1
    elif metric == "euclidean":
        # ||x - t||^2 = ||x||^2 - 2 x.t + ||t||^2; the per-row ||x||^2 does not change the order.
        inits += [_tensor("train_t", train_x.T), _tensor("train_sq", (train_x ** 2).sum(axis=1)),
                  _tensor("minus2", np.array(-2.0))]
        nodes += [
            helper.make_node("MatMul", ["x64", "train_t"], ["xt"]),
            helper.make_node("Mul", ["xt", "minus2"], ["m2xt"]),
            helper.make_node("Add", ["m2xt", "train_sq"], ["score"]),
        ]
        largest = 0
    else:
        raise ValueError(f"unsupported metric {metric!r}; expected 'cosine' or 'euclidean'")
    nodes += [
        helper.make_node("TopK", ["score", "k"], ["top_vals", "top_idx"], axis=1, largest=largest, sorted=1),
        helper.make_node("Gather", ["values", "top_idx"], ["picked"], axis=0),  # (batch, k, 2M)
        helper.make_node("ReduceMean", ["picked"], ["mean64"], axes=[1], keepdims=0)
        if opset < 18 else
        helper.make_node("ReduceMean", ["picked", "axis1"], ["mean64"], keepdims=0),
        helper.make_node("Split", ["mean64", "split"], ["perf64", "cost64"], axis=1),
        helper.make_node("Cast", ["perf64"], ["perf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["cost64"], ["cost"], to=TensorProto.FLOAT),
    ]
    if opset >= 18:
        inits.append(_tensor("axis1", np.array([1], dtype=np.int64)))
    return _finish(nodes, inits, d, opset)


def cluster_lookup_graph(centers: np.ndarray, perf_table: np.ndarray, cost_table: np.ndarray, *,
                         metric: str = "euclidean", opset: int = DEFAULT_OPSET):
    """Nearest cluster centre -> that cluster's row of per-cluster mean outcomes, in float64.

    Parameters
    ----------
    centers : array of shape (n_clusters, d)
    perf_table, cost_table : arrays of shape (n_clusters, M)
    metric : "euclidean" (KMeans assignment) or "cosine" (largest cosine similarity).
    """
    from onnx import TensorProto, helper

    centers = np.asarray(centers, dtype=np.float64)
    k, d = centers.shape
    values = np.concatenate([np.asarray(perf_table, np.float64), np.asarray(cost_table, np.float64)], axis=1)
    if values.shape[0] != k:
        raise ValueError(f"per-cluster tables must have {k} rows (one per centre), got {values.shape[0]}")
    m = values.shape[1] // 2
    inits = [_tensor("values", values), _tensor("split", np.array([m, m], dtype=np.int64))]
    nodes = [helper.make_node("Cast", [INPUT_NAME], ["x64"], to=TensorProto.DOUBLE)]
    if metric == "euclidean":
        inits += [_tensor("centers_t", centers.T), _tensor("centers_sq", (centers ** 2).sum(axis=1)),
                  _tensor("minus2", np.array(-2.0))]
        nodes += [
            helper.make_node("MatMul", ["x64", "centers_t"], ["xc"]),
            helper.make_node("Mul", ["xc", "minus2"], ["m2xc"]),
            helper.make_node("Add", ["m2xc", "centers_sq"], ["dist"]),
            helper.make_node("ArgMin", ["dist"], ["label"], axis=1, keepdims=0, select_last_index=0),
        ]
    elif metric == "cosine":
        norms = np.linalg.norm(centers, axis=1, keepdims=True)
        inits.append(_tensor("centers_t", (centers / np.where(norms > 0, norms, 1.0)).T))
        nodes += [
            helper.make_node("LpNormalization", ["x64"], ["xn"], axis=1, p=2),
            helper.make_node("MatMul", ["xn", "centers_t"], ["sim"]),
            helper.make_node("ArgMax", ["sim"], ["label"], axis=1, keepdims=0, select_last_index=0),
        ]
    else:
        raise ValueError(f"unsupported metric {metric!r}; expected 'euclidean' or 'cosine'")
    nodes += [
        helper.make_node("Gather", ["values", "label"], ["row64"], axis=0),
        helper.make_node("Split", ["row64", "split"], ["perf64", "cost64"], axis=1),
        helper.make_node("Cast", ["perf64"], ["perf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["cost64"], ["cost"], to=TensorProto.FLOAT),
    ]
    return _finish(nodes, inits, d, opset)
