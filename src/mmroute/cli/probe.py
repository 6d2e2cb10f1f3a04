"""``mmroute probe``: probe routers on a small (M)LLM's hidden states (Probe, Attention Probe, ReLope).

    mmroute probe extract --data T --model PATH --layer L --cache DIR [--token-cap N] [--devices 2 --strategy ddp]
    mmroute probe train   --data T --small M --large M --cache DIR [--model PATH --layer L]
                          [--heads probe,attention_probe,relope] [--split in|lodo] [--onnx-dir DIR]

``extract`` writes layer l-1 token states and layer-l last-token states of the table's rows to a
sharded safetensors cache (a Lightning predict loop: ``--devices/--strategy`` shard it).
``train`` extracts first when the cache is missing (needs --model and --layer), fits each head on
the small model's ``<m>_correct``, reports AUROC and the hybrid small/large curve, optionally the
robustness Delta AUC (--perturb) and ONNX exports, all recorded in MLflow (parent run ``probe``,
one nested run per head). Numbers may be written "42.0" (MLproject passes floats); empty = unset.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from mmroute.cli._types import integer, key_value, optional_int, optional_str
from mmroute.cli.options import add_deprecated_alias
from mmroute.vocabulary import IMAGE_POLICIES

__all__ = ["register", "main"]

log = logging.getLogger(__name__)


def _devices(text: str) -> int | str:
    return int(float(text)) if text.replace(".", "", 1).isdigit() else text


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="outcome table path or spec (see mmroute data); required")
    add_deprecated_alias(p, "--table", dest="data", new="--data")
    p.add_argument("--cache", required=True, help="hidden-state cache directory")
    p.add_argument("--model", type=optional_str, default=None, help="backbone: hub name or local path")
    p.add_argument("--layer", type=optional_int, default=None, help="layer l (1-based; l-1 states are cached)")
    p.add_argument("--images", default="warn", choices=IMAGE_POLICIES)
    p.add_argument("--no-images", action="store_true", help="text only, even when the table has images")
    p.add_argument("--token-cap", type=optional_int, default=None, help="max text tokens per instance")
    p.add_argument("--sample", type=optional_int, default=None, help="seeded sample of N rows (both steps alike)")
    p.add_argument("--seed", type=integer, default=0)
    p.add_argument("--batch-size", type=integer, default=8, help="extraction batch size")
    p.add_argument("--dtype", type=optional_str, default=None, help="backbone dtype, e.g. bfloat16")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--devices", type=_devices, default=1)
    p.add_argument("--strategy", default="auto", help="Lightning strategy for extraction (ddp, ddp_spawn...)")


def register(subparsers: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    probe = subparsers.add_parser("probe", help="probe routers on a small model's hidden states",
                                  description=__doc__, formatter_class=fmt)
    sub = probe.add_subparsers(dest="probe_command", metavar="STEP")

    p = sub.add_parser("extract", help="cache hidden states of a table's rows", description=__doc__,
                       formatter_class=fmt)
    _common(p)
    p.add_argument("--small", type=optional_str, default=None, help="with --large: keep rows where both are known")
    p.add_argument("--large", type=optional_str, default=None)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("train", help="fit, evaluate, track and export probe heads", description=__doc__,
                       formatter_class=fmt)
    _common(p)
    p.add_argument("--small", required=True, help="the small model (table column prefix) whose correctness is probed")
    p.add_argument("--large", required=True, help="the large model queries are deferred to")
    p.add_argument("--heads", default="probe,attention_probe,relope", help="comma-separated heads")
    p.add_argument("--split", default="in", choices=["in", "lodo"], help="random split or leave one dataset out")
    p.add_argument("--train-frac", type=float, default=0.8)
    p.add_argument("--epochs", type=optional_int, default=None, help="max epochs (default 20)")
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default 1e-4)")
    p.add_argument("--train-batch-size", type=optional_int, default=None)
    p.add_argument("--set", dest="options", action="append", type=key_value, default=[], metavar="FIELD=VALUE",
                   help="any ProbeTrainConfig field, repeatable (e.g. --set lora_r=64 --set beta=0.5)")
    p.add_argument("--perturb", type=optional_str, default=None,
                   help="robustness: e.g. gaussian_noise:0.1,jpeg:30,gaussian_blur:2 (needs images)")
    p.add_argument("--posthoc", type=optional_str, default=None, help=".npy output embeddings for posthoc_embed")
    p.add_argument("--onnx-dir", type=optional_str, default=None, help="export each head to ONNX here")
    p.add_argument("--out", type=optional_str, default=None, help="write summary.json and PNG plots here")
    p.add_argument("--experiment", type=optional_str, default=None, help="MLflow experiment name")
    p.add_argument("--no-tracking", action="store_true", help="do not record into MLflow")
    p.set_defaults(func=_cmd_train)
    probe.set_defaults(func=lambda args: (probe.print_help(), 2)[1])


def _data(args: argparse.Namespace) -> str:
    if not args.data:
        raise ValueError("probe needs --data (the outcome table)")
    return str(args.data)


def _cmd_extract(args: argparse.Namespace) -> int:
    from mmroute.data import load_table
    from mmroute.pipeline.probe import select_rows
    from mmroute.probes.extract import extract_hidden_states
    from mmroute.probes.inputs import load_backbone

    if args.model is None or args.layer is None:
        raise ValueError("probe extract needs --model and --layer")
    table = load_table(_data(args), images=args.images)
    if args.small and args.large:
        table = table.subset(select_rows(table, args.small, args.large, args.sample, args.seed))
    elif args.sample:
        raise ValueError("--sample needs --small and --large (rows are sampled among those with both outcomes)")
    model, builder = load_backbone(args.model, token_cap=args.token_cap, dtype=args.dtype)
    cache = extract_hidden_states(model, builder, table, args.cache, layer=args.layer,
                                  with_images=not args.no_images, batch_size=args.batch_size,
                                  accelerator=args.accelerator, devices=args.devices, strategy=args.strategy,
                                  info={"model": args.model, "token_cap": args.token_cap},
                                  overwrite=args.overwrite)
    print(json.dumps({"cache": str(cache.path), "n_instances": len(cache), "layer": cache.layer,
                      "hidden_size": cache.hidden_size, "shards": len(cache.meta["shards"])}))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from mmroute.pipeline.probe import ProbeExperiment, run_probe_experiment

    train = dict(args.options)
    for key, value in (("max_epochs", args.epochs), ("lr", args.lr), ("batch_size", args.train_batch_size)):
        if value is not None:
            train[key] = value
    cfg = ProbeExperiment(
        table=_data(args), small=args.small, large=args.large, cache=args.cache, model=args.model,
        layer=args.layer, heads=tuple(h.strip() for h in args.heads.split(",") if h.strip()), split=args.split,
        train_frac=args.train_frac, seed=args.seed, sample=args.sample, images=args.images,
        with_images=not args.no_images, token_cap=args.token_cap, extract_batch_size=args.batch_size,
        accelerator=args.accelerator, devices=args.devices, strategy=args.strategy, dtype=args.dtype,
        perturb=args.perturb, posthoc=args.posthoc, onnx_dir=args.onnx_dir, out=args.out,
        experiment=args.experiment, tracking=not args.no_tracking, train=train)
    summary = run_probe_experiment(cfg)
    print(json.dumps({"run_id": summary.get("run_id"), "n_instances": summary["n_instances"],
                      **{h: {"auroc": v["auroc"], "hybrid_area": v["hybrid/area"]}
                         for h, v in summary["heads"].items()}}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from mmroute.cli import main as cli_main

    return cli_main(["probe", *(sys.argv[1:] if argv is None else argv)])
