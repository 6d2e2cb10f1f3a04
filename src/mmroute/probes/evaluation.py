"""Evaluation of correctness probes: AUROC, the hybrid small/large curve, robustness, OOD splits.

- :func:`auroc`: sklearn ``roc_auc_score`` of P(small correct) against the small model's outcome.
- :func:`hybrid_curve`: accuracy of the hybrid system against the routing ratio ``h`` (share of
  queries sent to the large model, lowest predicted correctness first), and its area over h in [0, 1].
- Image perturbations (Gaussian noise, JPEG, Gaussian blur) for Delta AUC = clean AUC minus the
  mean AUC under perturbations; :func:`leave_one_dataset_out` for out-of-domain splits.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmroute.data.table import OutcomeTable

__all__ = ["auroc", "HybridCurve", "hybrid_curve", "reference_curves", "PERTURBATIONS",
           "parse_perturbations", "perturb_image", "perturb_table", "delta_auc",
           "leave_one_dataset_out", "plot_hybrid", "plot_roc"]

log = logging.getLogger(__name__)


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (n,) for binary ``labels`` (n,); NaN labels are dropped.

    Returns NaN (with a warning) when the labels hold a single class.
    """
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of equal length, got {labels.shape} and {scores.shape}")
    keep = ~np.isnan(labels)
    y = labels[keep] >= 0.5
    if y.all() or not y.any():
        log.warning("AUROC undefined: all %d labels are %s", int(keep.sum()), bool(y.all()) if y.size else "missing")
        return float("nan")
    return float(roc_auc_score(y, scores[keep]))


@dataclasses.dataclass(frozen=True)
class HybridCurve:
    """Hybrid-system accuracy against the routing ratio.

    ratios : (k,) share of queries deferred to the large model, 0..1
    accuracy : (k,) mean correctness of the hybrid system at each ratio
    area : trapezoid area under accuracy over ratios in [0, 1]
    """

    ratios: np.ndarray
    accuracy: np.ndarray
    area: float

    def at(self, ratio: float) -> float:
        return float(np.interp(ratio, self.ratios, self.accuracy))

    def to_dict(self) -> dict[str, Any]:
        return {"ratios": self.ratios.tolist(), "accuracy": self.accuracy.tolist(), "area": self.area}


def hybrid_curve(scores: np.ndarray, small_correct: np.ndarray, large_correct: np.ndarray,
                 ratios: np.ndarray | None = None) -> HybridCurve:
    """Defer the ``round(h * n)`` queries with the lowest ``scores`` to the large model.

    Parameters
    ----------
    scores : (n,) predicted correctness of the small model (higher = keep on the small model)
    small_correct, large_correct : (n,) outcomes of both models in [0, 1] (NaN not allowed)
    ratios : routing ratios in [0, 1], default 0, 0.01, ..., 1 (h = 0..100%)

    Ties in ``scores`` are broken by instance order (stable sort), so the curve is deterministic.
    """
    scores = np.asarray(scores, dtype=np.float64)
    small = np.asarray(small_correct, dtype=np.float64)
    large = np.asarray(large_correct, dtype=np.float64)
    n = scores.shape[0]
    if scores.ndim != 1 or small.shape != (n,) or large.shape != (n,) or n == 0:
        raise ValueError(f"scores, small_correct and large_correct must be non-empty and 1-D of equal length, "
                         f"got {scores.shape}, {small.shape}, {large.shape}")
    if np.isnan(small).any() or np.isnan(large).any():
        raise ValueError("hybrid_curve needs complete outcomes; fill or drop missing ones first")
    ratios = np.linspace(0.0, 1.0, 101) if ratios is None else np.asarray(ratios, dtype=np.float64)
    if ratios.ndim != 1 or (ratios < 0).any() or (ratios > 1).any():
        raise ValueError(f"ratios must be a 1-D array in [0, 1], got {ratios}")
    order = np.argsort(scores, kind="stable")
    gain = np.concatenate([[0.0], np.cumsum(large[order] - small[order])])
    k = np.rint(ratios * n).astype(int)
    acc = (small.sum() + gain[k]) / n
    area = float(np.trapezoid(acc, ratios)) if ratios.size > 1 else float(acc[0])
    return HybridCurve(ratios=ratios, accuracy=acc, area=area)


def reference_curves(small_correct: np.ndarray, large_correct: np.ndarray,
                     ratios: np.ndarray | None = None) -> dict[str, HybridCurve]:
    """``random`` (expected accuracy of uniform deferral, a straight line) and ``oracle`` (defer
    the queries the small model gets wrong and the large one right first) curves."""
    small = np.asarray(small_correct, dtype=np.float64)
    large = np.asarray(large_correct, dtype=np.float64)
    oracle = hybrid_curve(small - large, small, large, ratios)
    acc = small.mean() + oracle.ratios * (large.mean() - small.mean())
    random = HybridCurve(oracle.ratios, acc, float(np.trapezoid(acc, oracle.ratios)))
    return {"random": random, "oracle": oracle}


# ------------------------------------------------------------------ perturbations
PERTURBATIONS = {
    "gaussian_noise": "std of additive Gaussian pixel noise as a fraction of 255 (e.g. 0.1)",
    "jpeg": "JPEG quality 1..95 (lower = stronger)",
    "gaussian_blur": "Gaussian blur radius in pixels (e.g. 2)",
}
_ALIASES = {"noise": "gaussian_noise", "blur": "gaussian_blur", "jpeg_compression": "jpeg"}


def parse_perturbations(spec: str) -> list[tuple[str, float]]:
    """``"gaussian_noise:0.1,jpeg:30,blur:2"`` -> ``[("gaussian_noise", 0.1), ("jpeg", 30.0), ...]``."""
    out, problems = [], []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, value = part.partition(":")
        kind = _ALIASES.get(kind.strip(), kind.strip())
        try:
            strength = float(value)
        except ValueError:
            problems.append(f"{part!r}: strength {value!r} is not a number")
            continue
        if kind not in PERTURBATIONS:
            problems.append(f"{part!r}: unknown perturbation {kind!r}")
        else:
            out.append((kind, strength))
    if problems:
        raise ValueError(f"bad perturbation spec {spec!r}: {'; '.join(problems)}; valid kinds: "
                         f"{sorted(PERTURBATIONS)} written KIND:STRENGTH")
    return out


def perturb_image(image: Any, kind: str, strength: float, seed: int = 0) -> Any:
    """Perturbed copy of an RGB PIL image (see :data:`PERTURBATIONS` for the strengths)."""
    from PIL import Image, ImageFilter

    image = image.convert("RGB")
    if kind == "gaussian_noise":
        rng = np.random.default_rng(seed)
        arr = np.asarray(image, dtype=np.float32)
        arr = arr + rng.normal(0.0, 255.0 * strength, size=arr.shape)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if kind == "jpeg":
        quality = int(round(strength))
        if not 1 <= quality <= 95:
            raise ValueError(f"jpeg quality must be in 1..95, got {strength}")
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as img:
            return img.convert("RGB")
    if kind == "gaussian_blur":
        return image.filter(ImageFilter.GaussianBlur(radius=float(strength)))
    raise ValueError(f"unknown perturbation {kind!r}; valid: {sorted(PERTURBATIONS)}")


def perturb_table(table: OutcomeTable, kind: str, strength: float, out_dir: str | Path, *,
                  seed: int = 0) -> OutcomeTable:
    """A copy of ``table`` whose images are perturbed copies written under ``out_dir``.

    Instances without an image keep none; ids, texts and outcomes are unchanged.
    """
    from mmroute.probes.inputs import load_image

    if table.image_paths is None:
        raise ValueError(f"table {table.source} has no images to perturb")
    folder = Path(out_dir) / re.sub(r"[^A-Za-z0-9_.-]", "_", f"{kind}-{strength:g}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = np.array(table.image_paths, dtype=object)
    for r in np.flatnonzero(table.has_images):
        target = folder / f"{r}.png"
        perturb_image(load_image(paths[r]), kind, strength, seed=seed + int(r)).save(target)
        paths[r] = str(target)
    return dataclasses.replace(table, image_paths=paths, source=f"{table.source} ({kind}:{strength:g})")


def delta_auc(clean_auc: float, perturbed_aucs: Sequence[float]) -> float:
    """Robustness: clean AUROC minus the mean AUROC under perturbations (lower = more robust)."""
    if not len(perturbed_aucs):
        raise ValueError("delta_auc needs at least one perturbed AUROC")
    return float(clean_auc - np.mean(perturbed_aucs))


def leave_one_dataset_out(datasets: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``[(held_out, train_rows, test_rows), ...]``, one split per distinct dataset name."""
    datasets = np.asarray(datasets).astype(str)
    names = list(dict.fromkeys(datasets.tolist()))
    if len(names) < 2:
        raise ValueError(f"leave-one-dataset-out needs at least 2 datasets, got {names}")
    return [(d, np.flatnonzero(datasets != d), np.flatnonzero(datasets == d)) for d in names]


# -------------------------------------------------------------------------- plots
def plot_hybrid(curves: dict[str, HybridCurve], *, references: dict[str, HybridCurve] | None = None,
                small_name: str = "small", large_name: str = "large", title: str | None = None) -> Any:
    """Accuracy vs routing ratio, one line per probe (area in the legend); a matplotlib Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.subplots()
    for name, c in (references or {}).items():
        ax.plot(100 * c.ratios, c.accuracy, linestyle="--", linewidth=1, label=f"{name} ({c.area:.3f})")
    for name, c in curves.items():
        ax.plot(100 * c.ratios, c.accuracy, linewidth=1.8, label=f"{name} ({c.area:.3f})")
    ax.set_xlabel(f"queries routed to {large_name} (%)")
    ax.set_ylabel("hybrid accuracy")
    ax.set_title(title or f"{small_name} + {large_name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_roc(scores: dict[str, np.ndarray], labels: np.ndarray, *, title: str = "ROC") -> Any:
    """ROC curves of several probes on the same labels; a matplotlib Figure."""
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    labels = np.asarray(labels, dtype=np.float64)
    keep = ~np.isnan(labels)
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(labels[keep] >= 0.5, np.asarray(s)[keep])
        ax.plot(fpr, tpr, label=f"{name} ({auroc(labels, np.asarray(s)):.3f})")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
