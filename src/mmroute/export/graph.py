"""Small ONNX graph utilities: a graph builder, lookup graphs, running a graph.

Every router graph has one float32 input ``x`` of shape (batch, d) and two float32 outputs
``perf`` and ``cost`` of shape (batch, M). Graphs built here compute in float64 internally (one
Cast in, one Cast per output), so they agree with the float64 numpy routers to ~1e-7 and
nearest-neighbour / nearest-centre choices are not flipped by float32 rounding of distances.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "DEFAULT_OPSET",
    "GraphBuilder",
    "run_onnx",
    "affine_graph",
    "knn_mean_graph",
    "cluster_lookup_graph",
    "nearest_centre",
    "parallel_outputs",
    "save_model",
    "sklearn_graph",
]

log = logging.getLogger(__name__)

INPUT_NAME = "x"
OUTPUT_NAMES = ("perf", "cost")
# Opset 18 is read by every onnxruntime >= 1.14 and written by skl2onnx >= 1.15.
DEFAULT_OPSET = 18


def run_onnx(model: str | Path | bytes, x: np.ndarray, *, providers: Sequence[str] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Run a router graph on ``x`` of shape (n, d); returns ``(perf, cost)`` each (n, M) float32."""
    import onnxruntime as ort

    source = str(model) if isinstance(model, Path) else model
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(source, sess_options=options,
                                   providers=list(providers or ["CPUExecutionProvider"]))
    perf, cost = session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})
    return perf, cost


def save_model(model: Any, path: str | Path) -> None:
    """Write an ``onnx.ModelProto`` to ``path``."""
    Path(path).write_bytes(model.SerializeToString())


def sklearn_graph(estimator: Any, width: int, opset: int = DEFAULT_OPSET) -> Any:
    """A fitted sklearn ``estimator`` converted by skl2onnx with a float64 input (batch, width)."""
    from skl2onnx import to_onnx

    return to_onnx(estimator, np.zeros((1, width), dtype=np.float64), target_opset=opset)


class GraphBuilder:
    """Builds a router graph node by node; ``x64`` is the input already cast to float64.

    ``op`` adds a node and returns its output name(s); ``const`` adds an initializer;
    ``embed`` splices in another model (e.g. one converted by skl2onnx); ``finish`` casts the
    perf and cost tensors to float32 outputs and checks the model.
    """

    def __init__(self, width: int, *, opset: int = DEFAULT_OPSET) -> None:
        from onnx import TensorProto

        self.width, self.opset = int(width), int(opset)
        self.nodes: list = []
        self.inits: list = []
        self.domains: dict[str, int] = {"": self.opset}
        self._count = 0
        self.x64 = self.op("Cast", INPUT_NAME, to=TensorProto.DOUBLE)

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value, dtype=np.float64) -> str:
        from onnx import numpy_helper

        name = self._name("c")
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(np.asarray(value, dtype=dtype)), name))
        return name

    def op(self, op_type: str, *inputs: str, n_out: int = 1, **attrs):
        from onnx import helper

        outputs = [self._name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, **attrs))
        return outputs[0] if n_out == 1 else outputs

    def cols(self, tensor: str, start: int, stop: int) -> str:
        """``tensor[:, start:stop]``."""
        return self.op("Slice", tensor, self.const([start], np.int64), self.const([stop], np.int64),
                       self.const([1], np.int64))

    def mean_over(self, tensor: str, axis: int) -> str:
        return self.op("ReduceMean", tensor, self.const([axis], np.int64), keepdims=0)

    def sum_over(self, tensor: str, axis: int, keepdims: int = 0) -> str:
        return self.op("ReduceSum", tensor, self.const([axis], np.int64), keepdims=keepdims)

    def l2_normalize(self, tensor: str, eps: float = 1e-12) -> str:
        """Rows divided by max(norm, eps): zero rows stay zero (as mmroute's fusion does)."""
        norm = self.op("ReduceL2", tensor, self.const([1], np.int64), keepdims=1)
        return self.op("Div", tensor, self.op("Max", norm, self.const(eps)))

    def embed(self, model, inputs: dict[str, str], prefix: str) -> dict[str, str]:
        """Splice ``model`` in, feeding its inputs from ``inputs`` (its input name -> tensor here).

        Returns its output names mapped to the tensor names they have in this graph.
        """
        from onnx import compose

        model = compose.add_prefix(model, prefix)
        for graph_input in model.graph.input:
            original = graph_input.name[len(prefix):]
            if original not in inputs:
                raise ValueError(f"embedded graph input {original!r} is not fed; fed: {sorted(inputs)}")
            self.nodes.append(_identity(inputs[original], graph_input.name))
        self.nodes.extend(model.graph.node)
        self.inits.extend(model.graph.initializer)
        for entry in model.opset_import:
            self.domains[entry.domain] = max(self.domains.get(entry.domain, 0), int(entry.version))
        return {o.name[len(prefix):]: o.name for o in model.graph.output}

    def finish(self, perf: str, cost: str):
        import onnx
        from onnx import TensorProto, helper

        nodes = self.nodes + [helper.make_node("Cast", [perf], ["perf"], to=TensorProto.FLOAT),
                              helper.make_node("Cast", [cost], ["cost"], to=TensorProto.FLOAT)]
        graph = helper.make_graph(
            nodes, "router",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", self.width])],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", None]) for n in OUTPUT_NAMES],
            initializer=self.inits)
        opsets = [helper.make_opsetid(d, v) for d, v in self.domains.items()]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="mmroute")
        # make_model stamps the newest IR version, which onnxruntime may not read yet.
        model.ir_version = int(helper.find_min_ir_version_for(opsets, ignore_unknown=True))
        onnx.checker.check_model(model)
        return model


def _identity(src: str, dst: str):
    from onnx import helper
    return helper.make_node("Identity", [src], [dst])


def _split_halves(g: GraphBuilder, both: str, m: int) -> tuple[str, str]:
    return tuple(g.op("Split", both, g.const([m, m], np.int64), n_out=2, axis=1))


def affine_graph(weight: np.ndarray, bias: np.ndarray, *, opset: int = DEFAULT_OPSET):
    """``[perf | cost] = x @ W + b`` in float64.

    Parameters
    ----------
    weight : array of shape (d, 2 * M); the first M columns give perf, the last M cost.
    bias : array of shape (2 * M,)
    """
    weight = np.asarray(weight, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64)
    d, two_m = weight.shape
    if two_m % 2 or bias.shape != (two_m,):
        raise ValueError(f"affine graph needs W (d, 2M) and b (2M,), got {weight.shape} and {bias.shape}")
    g = GraphBuilder(d, opset=opset)
    y = g.op("Add", g.op("MatMul", g.x64, g.const(weight)), g.const(bias))
    return g.finish(*_split_halves(g, y, two_m // 2))


def _masked_mean_lookup(g: GraphBuilder, idx: str, perf_table: np.ndarray, cost_table: np.ndarray,
                        perf_fallback: np.ndarray, cost_fallback: np.ndarray) -> tuple[str, str]:
    """Mean over axis 1 of table rows ``idx`` (batch, k), ignoring NaN entries; a model whose k
    values are all NaN takes its fallback. Returns (perf, cost) tensors (batch, M), float64."""
    values = np.concatenate([perf_table, cost_table], axis=1).astype(np.float64)
    fallback = np.concatenate([perf_fallback, cost_fallback]).astype(np.float64)
    m = values.shape[1] // 2
    observed = ~np.isnan(values)
    picked = g.op("Gather", g.const(np.where(observed, values, 0.0)), idx, axis=0)   # (batch, k, 2M)
    if observed.all():
        return _split_halves(g, g.mean_over(picked, 1), m)
    counts = g.sum_over(g.op("Gather", g.const(observed.astype(np.float64)), idx, axis=0), 1)
    sums = g.sum_over(picked, 1)
    mean = g.op("Div", sums, g.op("Max", counts, g.const(1.0)))
    seen = g.op("Greater", counts, g.const(0.0))
    return _split_halves(g, g.op("Where", seen, mean, g.const(fallback)), m)


def knn_mean_graph(train_x: np.ndarray, perf_table: np.ndarray, cost_table: np.ndarray, k: int, *,
                   metric: str = "cosine", perf_fallback: np.ndarray | None = None,
                   cost_fallback: np.ndarray | None = None, opset: int = DEFAULT_OPSET):
    """Mean outcomes of the ``k`` nearest training rows, as one float64 graph.

    Parameters
    ----------
    train_x : array of shape (n_train, d), the neighbour index.
    perf_table, cost_table : arrays of shape (n_train, M), averaged over the neighbours; NaN
        entries (missing outcomes) are left out of a model's mean.
    k : number of neighbours (clipped to n_train).
    metric : "cosine" (largest cosine similarity) or "euclidean" (smallest distance).
    perf_fallback, cost_fallback : (M,) values for a model none of the k neighbours observed
        (default 0).

    Ties are broken towards the lower training index (ONNX TopK is specified that way).
    """
    train_x = np.asarray(train_x, dtype=np.float64)
    n_train, d = train_x.shape
    perf_table, cost_table = np.asarray(perf_table, np.float64), np.asarray(cost_table, np.float64)
    for name, table in (("perf_table", perf_table), ("cost_table", cost_table)):
        if table.ndim != 2 or table.shape[0] != n_train:
            raise ValueError(f"{name} must have shape ({n_train}, M), got {table.shape}")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"unsupported metric {metric!r}; expected 'cosine' or 'euclidean'")
    k = int(min(k, n_train))
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    m = perf_table.shape[1]
    g = GraphBuilder(d, opset=opset)
    if metric == "cosine":
        norms = np.linalg.norm(train_x, axis=1, keepdims=True)
        unit_t = (train_x / np.where(norms > 0, norms, 1.0)).T
        score, largest = g.op("MatMul", g.l2_normalize(g.x64), g.const(unit_t)), 1
    else:
        # ||x - t||^2 = ||x||^2 - 2 x.t + ||t||^2; the per-row ||x||^2 does not change the order.
        xt = g.op("MatMul", g.x64, g.const(train_x.T))
        score = g.op("Add", g.op("Mul", xt, g.const(-2.0)), g.const((train_x ** 2).sum(axis=1)))
        largest = 0
    _, idx = g.op("TopK", score, g.const([k], np.int64), n_out=2, axis=1, largest=largest, sorted=1)
    perf, cost = _masked_mean_lookup(
        g, idx, perf_table, cost_table,
        np.zeros(m) if perf_fallback is None else perf_fallback,
        np.zeros(m) if cost_fallback is None else cost_fallback)
    return g.finish(perf, cost)


def nearest_centre(g: GraphBuilder, x64: str, centers: np.ndarray) -> str:
    """Index (batch,) of the nearest row of ``centers`` (Euclidean; ties -> lowest index)."""
    centers = np.asarray(centers, dtype=np.float64)
    xc = g.op("MatMul", x64, g.const(centers.T))
    dist = g.op("Add", g.op("Mul", xc, g.const(-2.0)), g.const((centers ** 2).sum(axis=1)))
    return g.op("ArgMin", dist, axis=1, keepdims=0, select_last_index=0)


def cluster_lookup_graph(centers: np.ndarray, perf_table: np.ndarray, cost_table: np.ndarray, *,
                         opset: int = DEFAULT_OPSET):
    """Nearest cluster centre (Euclidean) -> that cluster's row of per-cluster means, in float64.

    Parameters
    ----------
    centers : array of shape (n_clusters, d)
    perf_table, cost_table : arrays of shape (n_clusters, M)
    """
    centers = np.asarray(centers, dtype=np.float64)
    values = np.concatenate([np.asarray(perf_table, np.float64), np.asarray(cost_table, np.float64)], axis=1)
    if values.shape[0] != centers.shape[0]:
        raise ValueError(f"per-cluster tables must have {centers.shape[0]} rows (one per centre), "
                         f"got {values.shape[0]}")
    g = GraphBuilder(centers.shape[1], opset=opset)
    row = g.op("Gather", g.const(values), nearest_centre(g, g.x64, centers), axis=0)
    return g.finish(*_split_halves(g, row, values.shape[1] // 2))


def parallel_outputs(perf_model, cost_model, *, perf_output: str | None = None,
                     cost_output: str | None = None, opset: int = DEFAULT_OPSET):
    """Join two single-input graphs reading the same ``x`` (batch, d) into one router graph.

    ``perf_output`` / ``cost_output`` name the output (batch, M) of each to expose (default:
    each graph's first output). Each graph's input is fed ``x`` in its own element type.
    """
    width = perf_model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    g = GraphBuilder(width, opset=opset)
    outs = []
    for prefix, model, out in (("perf_", perf_model, perf_output), ("cost_", cost_model, cost_output)):
        if len(model.graph.input) != 1:
            raise ValueError(f"{prefix[:-1]} graph must have exactly one input, has "
                             f"{[i.name for i in model.graph.input]}")
        elem = model.graph.input[0].type.tensor_type.elem_type
        feed = g.op("Cast", INPUT_NAME, to=elem)
        produced = g.embed(model, {model.graph.input[0].name: feed}, prefix)
        name = out or model.graph.output[0].name
        if name not in produced:
            raise ValueError(f"{prefix[:-1]} graph has no output {name!r}; outputs: {sorted(produced)}")
        outs.append(produced[name])
    return g.finish(*outs)


def append_perf_affine(model, scale: np.ndarray, shift: np.ndarray):
    """``perf <- perf * scale + shift`` (per model, (M,) each) appended to a router graph.

    The router's guard (:mod:`mmroute.routers.guard`) is computed in float64, as the routers do,
    then cast back to the float32 ``perf`` output. Returns a new, checked model.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    producers = [node for node in graph.node if "perf" in node.output]
    if len(producers) != 1:
        raise ValueError("router graph has no single node producing 'perf'")
    node = producers[0]
    node.output[list(node.output).index("perf")] = "perf_unguarded"
    for name, value in (("guard_scale", scale), ("guard_shift", shift)):
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.float64).reshape(1, -1), name))
    graph.node.extend([
        helper.make_node("Cast", ["perf_unguarded"], ["perf_unguarded64"], to=TensorProto.DOUBLE),
        helper.make_node("Mul", ["perf_unguarded64", "guard_scale"], ["perf_scaled64"]),
        helper.make_node("Add", ["perf_scaled64", "guard_shift"], ["perf_guarded64"]),
        helper.make_node("Cast", ["perf_guarded64"], ["perf"], to=TensorProto.FLOAT),
    ])
    onnx.checker.check_model(model)
    return model
