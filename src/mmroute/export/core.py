"""``export_router``: one verified ONNX graph per fitted router.

Each router family owns its export (the router contract, :class:`mmroute.routers.Router`): the
class declares ``deployable`` and implements ``onnx_input(features)`` (the graph input) and
``write_onnx(x_sample, path, opset=, exporter=)`` (the graph). This module only calls them.

Every graph is checked against the native router on held-out rows before it is accepted: the file
is written to a temporary name, run with onnxruntime, compared, and only then moved into place.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmroute.features.types import Features
from mmroute.routers.base import NotExportableError, Router, list_routers, router_class
from mmroute.vocabulary import EXPORTERS

__all__ = [
    "ExportResult",
    "ExportParityError",
    "NotExportableError",
    "EXPORTERS",
    "exportable_routers",
    "not_exportable_routers",
    "export_router",
    "router_input",
    "input_layout",
    "build_input",
]

log = logging.getLogger(__name__)

DEFAULT_ATOL = 1e-4
# Parts a router input can be assembled from, in the order they are tried (see input_layout).
_LAYOUTS: tuple[tuple[str, ...], ...] = (
    ("fused",), ("text",), ("text", "image", "image_mask"), ("text", "image"), ("image",),
)


class ExportParityError(RuntimeError):
    """The exported graph disagrees with the native router beyond the tolerance."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_router` wrote and how well it matched the native router."""

    path: Path
    router: str
    backend: str
    input_width: int
    n_models: int
    input_layout: tuple[tuple[str, int], ...]
    opset: int
    max_abs_diff_perf: float
    max_abs_diff_cost: float
    n_check_rows: int
    atol: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["path"] = str(self.path)
        out["input_layout"] = [list(part) for part in self.input_layout]
        return out


def exportable_routers() -> list[str]:
    """Names of the routers whose class declares ``deployable``."""
    return [n for n in list_routers() if router_class(n).deployable]


def not_exportable_routers() -> dict[str, str]:
    """Router names that cannot be deployed as ONNX graphs -> the reason their class gives."""
    return {n: router_class(n).not_deployable_reason for n in list_routers() if not router_class(n).deployable}


def _check_deployable(router: Router) -> None:
    if not isinstance(router, Router):
        raise TypeError(f"expected a fitted mmroute.routers.Router, got {type(router).__name__}")
    if not type(router).deployable:
        raise NotExportableError(f"router {router.name!r} is not exportable to ONNX: "
                                 f"{type(router).not_deployable_reason}")


def router_input(router: Router, features: Features) -> np.ndarray:
    """The graph input for ``features`` (``router.onnx_input``): float32 array of shape (n, d_in)."""
    _check_deployable(router)
    x = np.asarray(router.onnx_input(features), dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != len(features):
        raise RuntimeError(f"router input must have shape ({len(features)}, d), got {x.shape}")
    return x


def input_layout(x: np.ndarray, features: Features) -> tuple[tuple[str, int], ...]:
    """Which :class:`Features` fields, concatenated, make the router input ``x`` (n, d).

    Returns ``((part, width), ...)``, e.g. ``(("fused", 384),)`` or
    ``(("text", 384), ("image", 384), ("image_mask", 1))``, or ``(("custom", d),)`` when no known
    layout matches; the promotion gate and clients use it to rebuild inputs from features.
    """
    for layout in _LAYOUTS:
        widths = _part_widths(features, layout, x.shape[1])
        if widths is None:
            continue
        candidate = build_input(features, widths)
        if candidate.shape == x.shape and np.array_equal(candidate, x):
            return widths
    return (("custom", int(x.shape[1])),)


def _part_widths(features: Features, layout: Sequence[str], total: int) -> tuple[tuple[str, int], ...] | None:
    known = {"fused": features.fused, "text": features.text, "image": features.image,
             "image_mask": np.zeros((len(features), 1))}
    widths = [None if known[p] is None else int(np.shape(known[p])[1]) for p in layout]
    missing = [i for i, w in enumerate(widths) if w is None]
    if len(missing) > 1:
        return None
    if missing:  # one absent modality (no images in this data): it takes the remaining width
        widths[missing[0]] = total - sum(w for w in widths if w is not None)
    if any(w <= 0 for w in widths) or sum(widths) != total:
        return None
    return tuple(zip(layout, widths))


def build_input(features: Features, layout: Sequence[tuple[str, int]]) -> np.ndarray:
    """Concatenate the named :class:`Features` fields into a float32 router input (n, sum of widths).

    ``layout`` is what :func:`input_layout` returns. An absent image part is zeros (and its mask 0);
    image rows without an image (``image_mask`` False) are zeroed, as the torch routers do.
    """
    n = len(features)
    mask = features.image_mask
    if mask is None:
        mask = (np.zeros(n, dtype=bool) if features.image is None
                else np.any(np.asarray(features.image) != 0, axis=1))
    parts = []
    for name, width in layout:
        if name == "image_mask":
            arr = mask[:, None].astype(np.float32)
        elif name == "image":
            arr = (np.zeros((n, width), dtype=np.float32) if features.image is None
                   else np.where(mask[:, None], features.image, 0.0))
        elif name in ("fused", "text"):
            arr = getattr(features, name)
            if arr is None:
                raise ValueError(f"the router input needs features.{name}, which is None")
        else:
            raise ValueError(f"cannot rebuild a router input part {name!r} from features; known parts: "
                             "fused, text, image, image_mask")
        arr = np.asarray(arr, dtype=np.float32).reshape(n, -1)
        if arr.shape[1] != width:
            raise ValueError(f"features.{name} has {arr.shape[1]} columns, the router expects {width}")
        parts.append(arr)
    return np.concatenate(parts, axis=1)


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    same_nonfinite = (~np.isfinite(a)) & (a == b)
    diff = np.where(same_nonfinite, 0.0, np.abs(a - b))
    return float(np.nan_to_num(diff, nan=np.inf).max(initial=0.0))


def export_router(router: Router, sample_features: Features, path: str | Path, *,
                  check_features: Features | None = None, atol: float = DEFAULT_ATOL,
                  opset: int | None = None, exporter: str = "auto") -> ExportResult:
    """Export a fitted router to one ONNX graph ``x -> (perf, cost)`` and verify it.

    Parameters
    ----------
    router : a fitted :class:`~mmroute.routers.Router`.
    sample_features : Features of held-out rows (n >= 1); used to trace the graph and, unless
        ``check_features`` is given, for the parity check.
    path : destination ``.onnx`` file; its parent is created. Nothing is left there on failure.
    check_features : rows for the parity check (default ``sample_features``).
    atol : largest accepted absolute difference between graph and router, for perf and for cost.
    opset : ONNX opset (default :data:`mmroute.export.graph.DEFAULT_OPSET`).
    exporter : torch routers only: "dynamo" (``torch.onnx.export(dynamo=True)``, the maintained
        exporter), "torchscript" (the deprecated tracer: ~20x faster to run, same graph semantics)
        or "auto" (dynamo, falling back to torchscript if capture fails).

    Returns
    -------
    ExportResult ; the graph has input ``x`` float32 (batch, d_in) with a dynamic batch axis and
    outputs ``perf`` and ``cost`` float32 (batch, M).

    Raises
    ------
    NotExportableError : the router family has no ONNX form (its class is not ``deployable``).
    ExportParityError : the graph's outputs differ from ``router.predict`` by more than ``atol``.
    """
    from mmroute.export.graph import DEFAULT_OPSET, run_onnx

    _check_deployable(router)
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter={exporter!r} is not one of {list(EXPORTERS)}")
    router.check_fitted()
    if not isinstance(sample_features, Features) or len(sample_features) == 0:
        raise ValueError("sample_features must be a non-empty mmroute.features.Features")
    check_features = sample_features if check_features is None else check_features
    opset = int(opset or DEFAULT_OPSET)
    name = router.name

    start = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        x_sample = router_input(router, sample_features)
        backend = router.write_onnx(x_sample, tmp, opset=opset, exporter=exporter)
        guard = getattr(router, "guard_", None)
        if guard is not None and not guard.is_identity:
            # The guard is applied by the Router base after every family's prediction: once here too.
            import onnx

            from mmroute.export.graph import append_perf_affine

            tmp.write_bytes(append_perf_affine(onnx.load(str(tmp)), guard.scale, guard.shift).SerializeToString())
            backend += f" + guard ({guard.kind})"
        x_check = router_input(router, check_features)
        perf_ref, cost_ref = router.export_reference(check_features)
        perf, cost = run_onnx(tmp, x_check)
        d_perf, d_cost = _max_abs_diff(perf, perf_ref), _max_abs_diff(cost, cost_ref)
        if not (d_perf <= atol and d_cost <= atol):
            raise ExportParityError(
                f"ONNX export of router {name!r} ({backend}) disagrees with the native router on "
                f"{len(check_features)} held-out rows: max |perf diff| = {d_perf:.3g}, max |cost diff| = "
                f"{d_cost:.3g}, tolerance {atol:g}; the graph was discarded")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    result = ExportResult(
        path=path, router=name, backend=backend, input_width=int(x_sample.shape[1]),
        n_models=int(perf_ref.shape[1]), input_layout=input_layout(x_sample, sample_features),
        opset=opset, max_abs_diff_perf=d_perf, max_abs_diff_cost=d_cost,
        n_check_rows=len(check_features), atol=atol, seconds=time.perf_counter() - start)
    log.info("exported %s to %s with %s (max diff perf %.2g, cost %.2g on %d rows)", name, path,
             backend, d_perf, d_cost, len(check_features))
    return result
