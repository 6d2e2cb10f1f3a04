"""``mmroute embed``: encode an outcome table once and write its features to an ``.npz``.

The archive holds ``fused`` (n, d), ``text`` (n, d_text), ``image`` (n, d_image) and ``image_mask``
(n,) when the table has images, ``ids`` (n,), ``row`` (the table's source rows, when known) and
``meta`` (a JSON string: encoder identity, fusion, table source). Encoders that learn from data
(TF-IDF) and the fusion are fitted on all rows by default; pass ``--train-frac`` (with ``--split-seed``)
to fit them on the MMR-Bench "in" training rows only, as a later benchmark on that split expects.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmroute.cli._types import add_image_access
from mmroute.cli.options import add_deprecated_alias, encoder_spec
from mmroute.vocabulary import DEFAULT_DATA, FUSIONS, IMAGE_POLICIES

__all__ = ["register", "main", "run_embed"]

logger = logging.getLogger(__name__)


def _option(text: str) -> tuple[str, Any]:
    from mmroute.features.encoders import parse_kv_options

    key, sep, _ = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return next(iter(parse_kv_options(text, text).items()))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "embed", help="encode a table's texts/images into features (cached) and write an .npz",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="table path or spec (e.g. data/MMR_Bench.csv; default %(default)s)")
    p.add_argument("--features", default="offline", type=encoder_spec,
                   help="encoder spec: offline (default), openclip:MODEL[:PRETRAINED], st:NAME_OR_PATH, "
                        "precomputed:PATH.npy, column:NAME")
    add_deprecated_alias(p, "--table", dest="data", new="--data")
    add_deprecated_alias(p, "--encoder", dest="features", new="--features", convert=encoder_spec)
    add_deprecated_alias(p, "--seed", dest="split_seed", new="--split-seed", convert=int)
    p.add_argument("--fusion", default="mean", choices=FUSIONS)
    p.add_argument("--cache-dir", default=None, help="embedding cache root (default $MMROUTE_CACHE_DIR "
                   "or ./.mmroute/cache)")
    p.add_argument("--no-cache", action="store_true", help="always encode; read and write no cache")
    p.add_argument("--out", required=True, help="output .npz path")
    p.add_argument("--images", default="error", choices=IMAGE_POLICIES,
                   help="what the loader does with image paths that name no file")
    add_image_access(p)
    p.add_argument("--on-bad-image", choices=["error", "zero"], default=None,
                   help="image encoders: fail on unreadable images, or use zero vectors (logged)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--train-frac", type=float, default=None,
                   help="fit encoder/fusion on the 'in' split's training rows only (fraction)")
    p.add_argument("--split-seed", type=int, default=42, help="split seed for --train-frac (default 42)")
    p.add_argument("-o", "--option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                   help="extra encoder option, repeatable (e.g. -o dim=64 -o precision=bf16)")
    p.add_argument("--fusion-param", action="append", type=_option, default=[], metavar="KEY=VALUE",
                   help="fusion parameter, repeatable (e.g. --fusion-param temperature=0.5)")
    p.set_defaults(func=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from mmroute.data import load_table, split_in
    from mmroute.features import build_feature_pipeline

    options = dict(args.option)
    for key, value in (("on_bad_image", args.on_bad_image), ("batch_size", args.batch_size)):
        if value is not None:
            options[key] = value
    # The pipeline first: a bad encoder spec or option fails before a large table is loaded.
    pipe = build_feature_pipeline(args.features, fusion=args.fusion, cache_dir=args.cache_dir, device=args.device,
                                  fusion_params=dict(args.fusion_param), use_cache=not args.no_cache, **options)
    table = load_table(args.data, images=args.images, image_root=args.image_root,
                       allow_outside_images=args.allow_outside_images)
    arrays: dict[str, Any] = {}
    if args.train_frac is not None:
        train_idx, _ = split_in(table, args.train_frac, args.split_seed)
        pipe.fit(table.subset(train_idx))
        arrays["train_idx"] = np.asarray(train_idx, dtype=np.int64)
    else:
        pipe.fit(table)
    feats = pipe.transform(table)
    arrays.update(fused=feats.fused, text=feats.text, ids=np.asarray(table.ids, dtype=str))
    if feats.image is not None:
        arrays.update(image=feats.image, image_mask=feats.image_mask)
    if "row" in table.extra:
        arrays["row"] = np.asarray(table.extra["row"])
    meta = {"table": table.source, "n_instances": table.n_instances, "encoder": args.features,
            "fusion": args.fusion, "train_frac": args.train_frac, "seed": args.split_seed,
            **{k: v for k, v in pipe.get_params().items()}}
    arrays["meta"] = np.array(json.dumps(meta, default=str))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:  # a file handle keeps the exact name (np.savez would append .npz)
        np.savez(f, **arrays)
    logger.info("wrote %s: fused %s, text %s, image %s", out, feats.fused.shape, feats.text.shape,
                None if feats.image is None else feats.image.shape)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    from mmroute.cli import main as cli_main

    return cli_main(["embed", *(sys.argv[1:] if argv is None else argv)])
