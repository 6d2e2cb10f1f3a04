"""MATH-V with its images: text only vs text + image, per modality mode, fusion and router.

Usage: ``python bench/mathv_modes.py [--data-dir ../shared/data] [--modes 11,22] [--fusions mean,concat,adaptive]
[--routers knn,kmeans_adaptive,fusion_mf,cmr,auto] [--image imagestats] [--train-frac 0.2]
[--set ROUTER.FIELD=VALUE ...] [--out mathv.json]``.

The table ``mathv_routing.parquet`` is loaded as is, with its images (``mathv_images/``); features
are composed per modality: MiniLM text (the row-aligned ``mathv_minilm.npy``) and the weight-free
image featuriser (``--image imagestats``) or raw pixels (``--image pixels:size=32``, the input of the
learned image tower ``--set fusion_mf.image_tower=cnn``), i.e. the encoder spec
``text=precomputed:mathv_minilm.npy,image=<image>``. Split "in", seed 42, both decision rules
(``mmroute benchmark``). Routers that fuse inside themselves (``fusion_mf``: learned gate; ``cmr``:
cross-modal attention) read the separate modalities whatever ``--fusion`` says.

Prints one JSON object: ``rows`` (one per mode x fusion x router with nAUC / fixed_AUC / Ps per rule
and what ``auto`` chose), the best single model and oracle of the split, and ``markdown``: the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def run(data_dir: Path, mode: str, fusion: str, routers: str, image: str, frac: str,
        options: list[str]) -> dict[str, Any]:
    from mmroute.pipeline import PipelineConfig
    from mmroute.pipeline.benchmark import run_benchmark

    spec = f"text=precomputed:{data_dir / 'mathv_minilm.npy'},image={image}"
    cfg = PipelineConfig(data=str(data_dir / "mathv_routing.parquet"), features=spec, fusion=fusion, split="in",
                         train_frac=float(frac), split_seed=42, mode=int(mode), routers=routers,
                         rules=("budget", "tradeoff"), images="error", router_options=tuple(options))
    return run_benchmark(cfg)


def _cell(m: dict[str, Any]) -> str:
    return "/".join(f"{m[k]:.4f}"[1:] if isinstance(m.get(k), float) else "-" for k in ("nAUC", "fixed_AUC", "Ps"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    ap.add_argument("--modes", default="11,22")
    ap.add_argument("--fusions", default="mean,concat,adaptive")
    ap.add_argument("--routers", default="knn,kmeans_adaptive,fusion_mf,cmr,auto")
    ap.add_argument("--image", default="imagestats:progress=false", help="image encoder spec")
    ap.add_argument("--train-frac", default="0.2")
    ap.add_argument("--set", dest="options", action="append", default=[], metavar="ROUTER.FIELD=VALUE")
    ap.add_argument("--label", default="", help="suffix for the router names in the table (e.g. '+cnn')")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not (args.data_dir / "mathv_routing.parquet").is_file():
        print(json.dumps({"error": f"mathv_routing.parquet not found in {args.data_dir}"}))
        return 2
    rows, reference, errors = [], {}, {}
    for mode in args.modes.split(","):
        for fusion in args.fusions.split(","):
            t0 = time.perf_counter()
            res = run(args.data_dir, mode, fusion, args.routers, args.image, args.train_frac, args.options)
            reference = res["reference"]
            errors.update({f"{k}@{mode}/{fusion}": v for k, v in res["errors"].items()})
            for name, r in res["routers"].items():
                row = {"mode": mode, "fusion": fusion, "router": name + args.label, "image": args.image,
                       "n_features": res["features"]["n_features"], "fit_seconds": round(r["fit_seconds"], 1),
                       **{rule: {k: r[rule][k] for k in ("nAUC", "fixed_AUC", "Ps", "QNC")} for rule in res["rules"]}}
                if "fit_report" in r:
                    row["auto"] = {k: r["fit_report"][k] for k in ("chosen", "rule", "members")}
                rows.append(row)
            logging.info("mode %s, %s fusion: %.0fs", mode, fusion, time.perf_counter() - t0)
    lines = ["| mode | fusion | router | budget nAUC/fixed/Ps | trade-off nAUC/fixed/Ps |", "|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['fusion']} | {r['router']}"
              f"{' (' + r['auto']['chosen'] + ', ' + r['auto']['rule'] + ')' if 'auto' in r else ''} | "
              f"{_cell(r['budget'])} | {_cell(r['tradeoff'])} |" for r in rows]
    from mmroute.evaluation import json_safe

    out = {"rows": rows, "reference": reference, "errors": errors, "markdown": "\n".join(lines)}
    text = json.dumps(json_safe(out), indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
